"""M&Ms (MnM-1, MICCAI 2020) reader: 4D ``<CODE>_sa`` cine + 4D ``_sa_gt`` labelled at ED and ES.

Layouts accepted (data-formats.md 1.2): the challenge's
``OpenDataset/{Training/Labeled,Training/Unlabeled,Validation,Testing}/<CODE>/<CODE>_sa.nii.gz``
and the flattened ``dataset/<CODE>/`` copy used by qcardia-data; ``<CODE>_sa.nii[.gz]`` is found
recursively. Metadata come from the information CSV (``*M&Ms*Dataset*nformation*.csv``, in the
root, below it, or beside it): ``External code``, ``Vendor``, ``ED``, ``ES`` (0-based) are
required; ``VendorName``, ``Centre``, ``Pathology`` (211230 version only), ``Age``, ``Sex``,
``Height``, ``Weight`` are kept when present.

ED/ES: the CSV is not trusted blindly. When the GT labels exactly two frames, the one with more
foreground is ED (qcardia-data's rule) and overrides the CSV with a warning. An all-zero GT
(``Training/Unlabeled``) or a missing GT gives an unlabelled subject. Labels are already in the
canonical order (1 LV, 2 MYO, 3 RV).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from cmrssp.data.nifti import find_nifti, read_image, read_labels
from cmrssp.data.sources import (
    SubjectRef,
    check_shape,
    check_same_grid,
    find_files,
    geometry_notices,
    nifti_pattern,
    optional_value,
    parse_int,
    read_csv_table,
)
from cmrssp.data.subject import Subject
from cmrssp.errors import InputError

DATASET = "mnms"
LOOKED_FOR = "looked for <CODE>/<CODE>_sa.nii[.gz] recursively"
CSV_PATTERN = re.compile(r".*m&ms.*dataset.*nformation.*\.csv", re.IGNORECASE)
REQUIRED_COLUMNS = ("External code", "Vendor", "ED", "ES")
# CSV column -> metadata key, for the optional columns.
OPTIONAL_COLUMNS = {
    "VendorName": "vendor_name",
    "Centre": "centre",
    "Pathology": "pathology",
    "Age": "age",
    "Sex": "sex",
    "Height": "height",
    "Weight": "weight",
}
CINE_PATTERN = nifti_pattern(r"(.+)_sa")


def find_information_csv(root: Path) -> Path:
    """The information CSV in ``root`` (recursively) or in its parent (``root`` = ``dataset/``).

    Several versions may sit side by side (201014, 211006, 211230); their names start with the
    date, so the last in name order is the newest and the only one with a Pathology column.
    """
    inside = [path for path in root.rglob("*.csv") if CSV_PATTERN.fullmatch(path.name) and path.is_file()]
    beside = [path for path in root.parent.glob("*.csv") if CSV_PATTERN.fullmatch(path.name) and path.is_file()]
    candidates = inside or beside
    if not candidates:
        raise InputError(
            root, "no M&Ms information CSV (*M&Ms*Dataset*nformation*.csv) found in this folder or its parent"
        )
    return max(candidates, key=lambda path: (path.name, str(path)))


def read_information(csv_path: Path) -> dict[str, tuple[tuple[str, object], ...]]:
    """CSV rows keyed by subject code, as metadata pairs (vendor, ed, es, ...)."""
    table = {}
    for number, row in enumerate(read_csv_table(csv_path, REQUIRED_COLUMNS), start=2):
        code = row["External code"]
        if not code:
            raise InputError(csv_path, f"line {number}: empty 'External code'")
        if code in table:
            raise InputError(csv_path, f"subject {code} is listed twice")
        meta = [
            ("vendor", optional_value(row["Vendor"])),
            ("ed", parse_int(row["ED"], csv_path, f"line {number} ({code}): ED")),
            ("es", parse_int(row["ES"], csv_path, f"line {number} ({code}): ES")),
        ]
        meta += [(key, optional_value(row[column])) for column, key in OPTIONAL_COLUMNS.items() if column in row]
        table[code] = tuple(meta)
    return table


def discover(root: Path) -> list[SubjectRef]:
    cines = find_files(root, CINE_PATTERN)
    if not cines:
        return []
    csv_path = find_information_csv(root)
    information = read_information(csv_path)
    refs = []
    for cine in cines:
        code = CINE_PATTERN.fullmatch(cine.name).group(2)
        files = [("image", str(cine))]
        gt = find_nifti(cine.parent, f"{code}_sa_gt")
        if gt is not None:
            files.append(("labels", str(gt)))
        files.append(("csv", str(csv_path)))
        meta = information.get(code)
        in_csv = meta is not None
        # The release folder (Training/Labeled, Validation, ...) tells the challenge split.
        release_folder = cine.parent.relative_to(root).parent
        release = "" if release_folder == Path(".") else release_folder.as_posix()
        meta = (meta or ()) + (("in_csv", in_csv), ("release_folder", release))
        refs.append(SubjectRef(DATASET, code, tuple(files), meta))
    return refs


def _phases_from_gt(foreground: np.ndarray) -> tuple[int, int] | None:
    """(ED, ES) from a GT labelled at exactly two frames: ED has more foreground; None otherwise."""
    frames = np.flatnonzero(foreground)
    if len(frames) != 2:
        return None
    first, second = (int(t) for t in frames)
    # On a tie the earlier frame is ED (cines start at or near the R wave).
    return (first, second) if foreground[first] >= foreground[second] else (second, first)


def load(ref: SubjectRef, geometry: str = "auto") -> Subject:
    image_path, gt_path, csv_path = ref.path("image"), ref.path("labels"), ref.path("csv")
    image, image_geometry = read_image(image_path, ndim=4, geometry=geometry)
    affine = image_geometry.affine
    n_frames = image.shape[3]
    in_csv = bool(ref.get("in_csv"))
    csv_ed, csv_es = ref.get("ed"), ref.get("es")
    source = [str(image_path)]

    labels = None
    label_frames: tuple[int, ...] = ()
    label_phases: tuple[str, ...] = ()
    ed, es = csv_ed, csv_es
    if gt_path is not None:
        gt, gt_geometry = read_labels(gt_path, ndim=4, geometry=geometry)
        source.append(str(gt_path))
        check_shape(gt_path, gt.shape, image_path, image.shape)
        check_same_grid(gt_path, gt_geometry.affine, image_path, affine)
        foreground = (gt > 0).sum(axis=(0, 1, 2))
        labelled = [int(t) for t in np.flatnonzero(foreground)]
        from_gt = _phases_from_gt(foreground)
        if from_gt is not None:
            if in_csv and from_gt != (csv_ed, csv_es):
                warnings.warn(
                    f"M&Ms subject {ref.subject_id}: CSV says ED={csv_ed}, ES={csv_es} but {gt_path} "
                    f"labels frames ED={from_gt[0]}, ES={from_gt[1]}; using the GT frames",
                    UserWarning,
                    stacklevel=2,
                )
            ed, es = from_gt
            label_frames, label_phases = from_gt, ("ED", "ES")
        elif labelled:
            # One or more than two labelled frames: keep them all in time order, naming ED/ES by the CSV.
            names = {csv_ed: "ED", csv_es: "ES"} if in_csv else {}
            label_frames = tuple(labelled)
            label_phases = tuple(names.get(t, f"frame{t:02d}") for t in labelled)
        if label_frames:
            labels = np.ascontiguousarray(gt[..., list(label_frames)])
    if not in_csv:
        found = f"using ED={ed}, ES={es} from the labelled frames of {gt_path}" if ed is not None else "ED/ES unknown"
        warnings.warn(
            f"M&Ms subject {ref.subject_id} is not in {csv_path}: vendor unknown, {found}", UserWarning, stacklevel=2
        )

    for name, index in (("ED", ed), ("ES", es)):  # GT-derived values are always in range
        if index is not None and not 0 <= index < n_frames:
            raise InputError(
                csv_path, f"{name}={index} for {ref.subject_id} is outside the cine's frames 0..{n_frames - 1}"
            )
    source.append(str(csv_path))

    meta = ref.meta_dict
    extra = {
        key: meta[key]
        for key in ("vendor_name", "centre", "age", "sex", "height", "weight", "release_folder")
        if meta.get(key) is not None
    }
    extra["csv_ed_es"] = [csv_ed, csv_es] if in_csv else None
    return Subject(
        dataset=DATASET,
        subject_id=ref.subject_id,
        image=image,
        affine=affine,
        labels=labels,
        label_frames=tuple(label_frames),
        label_phases=tuple(label_phases),
        ed=ed,
        es=es,
        vendor=meta.get("vendor"),
        pathology=meta.get("pathology"),
        source=tuple(source),
        extra=extra,
        geometry=image_geometry,
        notices=geometry_notices(image_geometry),
    )
