"""M&Ms-2 (STACOM 2021) reader: 4D ``<NNN>_SA_CINE`` + 3D ``_SA_ED``/``_SA_ES`` frames and labels.

Layout (data-formats.md 1.3): ``dataset_information.csv`` (``SUBJECT_CODE, DISEASE, VENDOR,
SCANNER, FIELD``; an Excel export padded with empty ``,,,,`` rows, which are dropped) in the root,
its parent or below the root, and ``<root>/**/<NNN>/<NNN>_SA_CINE.nii[.gz]`` with
``<NNN>_SA_ED``, ``_SA_ES`` (3D frames copied out of the cine) and ``_SA_ED_gt``, ``_SA_ES_gt``
(3D labels, canonical 1 LV, 2 MYO, 3 RV) beside it; ``.nii`` and ``.nii.gz`` both occur. Long-axis
files (``_LA_*``) are ignored.

The CSV has no ED/ES indices: each is located in the cine by frame matching (exact equality first,
as qcardia-data does; else the closest frame, with a warning; an error when even that is poor).
A subject folder without its ``_SA_CINE`` is read from its ED and ES frame files as a two-frame
cine (ED at index 0, ES at 1), labelled like any other subject; a notice says that pretraining
sees only those frames.
"""

from __future__ import annotations

import warnings
from pathlib import Path


from cmrssp.data.nifti import find_nifti, read_image
from cmrssp.data.sources import (
    SubjectRef,
    find_files,
    geometry_notices,
    match_frame,
    nifti_pattern,
    optional_value,
    parse_int,
    read_csv_table,
    read_frame_files,
    read_phase_labels,
)
from cmrssp.data.subject import Subject
from cmrssp.errors import InputError

DATASET = "mnms2"
LOOKED_FOR = "looked for <NNN>/<NNN>_SA_CINE.nii[.gz] or <NNN>/<NNN>_SA_ED.nii[.gz] recursively"
CSV_NAME = "dataset_information.csv"
REQUIRED_COLUMNS = ("SUBJECT_CODE", "VENDOR", "DISEASE")
CINE_PATTERN = nifti_pattern(r"(\d+)_SA_CINE")
FRAME_PATTERN = nifti_pattern(r"(\d+)_SA_E[DS]")
PHASES = ("ED", "ES")


def vendor_letter(vendor: str | None) -> str | None:
    """M&Ms vendor letter (A Siemens, B Philips, C GE; data-formats.md 1.2/1.3) of a CSV string."""
    if not vendor:
        return None
    name = vendor.strip().lower()
    if "siemens" in name:
        return "A"
    if "philips" in name:
        return "B"
    if name == "ge" or name.startswith("ge ") or "general electric" in name:
        return "C"
    if "canon" in name or "toshiba" in name:
        return "D"
    return None


def find_information_csv(root: Path) -> Path:
    for folder in (root, root.parent):
        if (folder / CSV_NAME).is_file():
            return folder / CSV_NAME
    below = sorted(path for path in root.rglob(CSV_NAME) if path.is_file())
    if below:
        return below[0]
    raise InputError(root, f"no {CSV_NAME} found in this folder, below it or in its parent")


def read_information(csv_path: Path) -> dict[str, tuple[tuple[str, object], ...]]:
    """CSV rows keyed by zero-padded subject id ("001"), as metadata pairs."""
    table = {}
    for number, row in enumerate(read_csv_table(csv_path, REQUIRED_COLUMNS), start=2):
        subject_id = f"{parse_int(row['SUBJECT_CODE'], csv_path, f'line {number}: SUBJECT_CODE'):03d}"
        if subject_id in table:
            raise InputError(csv_path, f"subject {subject_id} is listed twice")
        vendor = optional_value(row["VENDOR"])
        vendor = None if vendor is None else str(vendor)
        table[subject_id] = (
            ("vendor", vendor),
            ("vendor_letter", vendor_letter(vendor)),
            ("pathology", optional_value(row["DISEASE"])),
            ("scanner", optional_value(row.get("SCANNER"))),
            ("field", optional_value(row.get("FIELD"))),
        )
    return table


def discover(root: Path) -> list[SubjectRef]:
    # A subject is a folder with a cine, or else with an ED or ES frame file.
    subjects: dict[Path, str] = {}
    for cine in find_files(root, CINE_PATTERN):
        subjects[cine.parent] = CINE_PATTERN.fullmatch(cine.name).group(2)
    for frame in find_files(root, FRAME_PATTERN):
        subjects.setdefault(frame.parent, FRAME_PATTERN.fullmatch(frame.name).group(2))
    if not subjects:
        return []
    csv_path = find_information_csv(root)
    information = read_information(csv_path)
    refs = []
    for folder, prefix in sorted(subjects.items()):
        subject_id = f"{int(prefix):03d}"
        cine = find_nifti(folder, f"{prefix}_SA_CINE")
        files = [] if cine is None else [("image", str(cine))]
        for phase in PHASES:
            for role, suffix in ((f"{phase}_frame", ""), (f"{phase}_labels", "_gt")):
                found = find_nifti(folder, f"{prefix}_SA_{phase}{suffix}")
                if found is not None:
                    files.append((role, str(found)))
        files.append(("csv", str(csv_path)))
        meta = information.get(subject_id)
        meta = (meta or ()) + (("in_csv", meta is not None),)
        refs.append(SubjectRef(DATASET, subject_id, tuple(files), meta))
    return refs


def load(ref: SubjectRef, geometry: str = "auto") -> Subject:
    csv_path = ref.path("csv")
    if ref.path("image") is not None:
        image, image_geometry, frames, source, notices = _read_cine(ref, geometry)
    else:
        image, image_geometry, frames, source, notices = _read_frames(ref, geometry)
    affine = image_geometry.affine
    image_path = Path(source[0])
    label_files = []
    for phase in PHASES:
        label_path = ref.path(f"{phase}_labels")
        if label_path is None:
            continue
        if phase not in frames:
            raise InputError(
                label_path, f"cannot place this {phase} label in the cine: the {phase} frame image is missing"
            )
        label_files.append((phase, label_path, frames[phase]))
    labels, label_frames, label_phases = read_phase_labels(label_files, image_path, image.shape, affine, geometry, source)
    source.append(str(csv_path))

    meta = ref.meta_dict
    if not meta.get("in_csv"):
        warnings.warn(
            f"M&Ms-2 subject {ref.subject_id} is not in {csv_path}: vendor and disease unknown",
            UserWarning,
            stacklevel=2,
        )
    extra = {key: meta[key] for key in ("vendor_letter", "scanner", "field") if meta.get(key) is not None}
    extra["cine"] = ref.path("image") is not None
    return Subject(
        dataset=DATASET,
        subject_id=ref.subject_id,
        image=image,
        affine=affine,
        labels=labels,
        label_frames=label_frames,
        label_phases=label_phases,
        ed=frames.get("ED"),
        es=frames.get("ES"),
        vendor=meta.get("vendor"),
        pathology=meta.get("pathology"),
        source=tuple(source),
        extra=extra,
        geometry=image_geometry,
        notices=notices,
    )


def _read_cine(ref: SubjectRef, geometry: str):
    """The 4D cine and the indices of its ED/ES frames, found by frame matching."""
    image_path = ref.path("image")
    image, image_geometry = read_image(image_path, ndim=4, geometry=geometry)
    source, frames = [str(image_path)], {}
    for phase in PHASES:
        frame_path = ref.path(f"{phase}_frame")
        if frame_path is not None:
            frame, _ = read_image(frame_path, ndim=3, geometry=geometry)
            source.append(str(frame_path))
            frames[phase] = match_frame(image, frame, frame_path, image_path)
    return image, image_geometry, frames, source, geometry_notices(image_geometry)


def _read_frames(ref: SubjectRef, geometry: str):
    """No cine: the ED and ES frame files stacked as a short cine (ED first), with a notice."""
    frames = [(phase, ref.path(f"{phase}_frame")) for phase in PHASES if ref.path(f"{phase}_frame") is not None]
    if not frames:
        labels = ref.path("ED_labels") or ref.path("ES_labels")
        raise InputError(labels.parent if labels else None, "no _SA_CINE and no _SA_ED/_SA_ES frame image")
    return read_frame_files(frames, geometry, f"{ref.subject_id}_SA_CINE.nii[.gz]")
