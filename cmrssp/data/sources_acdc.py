"""ACDC (MICCAI 2017) reader: ``patientXXX_4d`` cine, ``Info.cfg``, ED/ES ``frameYY[_gt]`` files.

Layout (data-formats.md 1.4): ``<root>/**/patientXXX/`` holding ``Info.cfg`` (``key: value``
lines ``ED``, ``ES`` (1-based frame numbers), ``Group``, ``Height``, ``NbFrame``, ``Weight``),
``patientXXX_4d.nii[.gz]`` and ``patientXXX_frameYY.nii[.gz]`` / ``_frameYY_gt`` for YY = ED, ES.

A patient folder without its 4D cine (common: the cine is by far the largest file, and copies
often leave it out) is read from its ED and ES frame files as a two-frame cine (ED at index 0,
ES at 1), labelled like any other subject; a notice says that pretraining sees only those
frames. With the cine, the frame images are compared once with the cine frame Info.cfg points
at, which catches an off-by-one ED/ES (warning only).

ACDC labels 1 RV cavity, 2 myocardium, 3 LV cavity (the trap of data-formats.md 1.1) are remapped
to the canonical order with {1->3, 2->2, 3->1}. Every real ACDC file carries a placeholder sform
(1 x 1 x 1 mm) with the true voxel size in pixdim: :mod:`cmrssp.data.geometry` resolves it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from cmrssp.data.nifti import find_nifti, read_image
from cmrssp.data.sources import (
    FRAME_MATCH_TOLERANCE,
    SubjectRef,
    check_shape,
    find_files,
    frame_difference,
    geometry_notices,
    nifti_pattern,
    optional_value,
    parse_int,
    read_frame_files,
    read_phase_labels,
)
from cmrssp.data.subject import Subject
from cmrssp.errors import InputError

DATASET = "acdc"
LOOKED_FOR = "looked for patientXXX/Info.cfg with patientXXX_4d.nii[.gz] or patientXXX_frameYY.nii[.gz] recursively"
CINE_PATTERN = nifti_pattern(r"(.+)_4d")
PATIENT_FOLDER = re.compile(r"patient\d+")
REQUIRED_KEYS = ("ED", "ES", "Group", "NbFrame")
# ACDC label value -> canonical value (index = ACDC value).
ACDC_TO_CANONICAL = np.array([0, 3, 2, 1], dtype=np.uint8)
PHASES = ("ED", "ES")


def read_info(path: Path) -> dict[str, str]:
    """``key: value`` lines of an Info.cfg; the required keys must be present."""
    if not path.is_file():
        raise InputError(path, "Info.cfg not found (ACDC patient folders need it for ED/ES)")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InputError(path, f"cannot read ({error})") from None
    info = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    for key in REQUIRED_KEYS:
        if key not in info:
            raise InputError(path, f"missing key {key!r} (found: {', '.join(info) or 'none'})")
    return info


def discover(root: Path) -> list[SubjectRef]:
    # A patient is a folder with a cine, or a patientXXX folder with an Info.cfg.
    patients: dict[Path, str] = {}
    for cine in find_files(root, CINE_PATTERN):
        patients[cine.parent] = CINE_PATTERN.fullmatch(cine.name).group(2)
    for config in find_files(root, re.compile(r"Info\.cfg")):
        if PATIENT_FOLDER.fullmatch(config.parent.name):
            patients.setdefault(config.parent, config.parent.name)
    refs = []
    for folder, patient in sorted(patients.items()):
        config = folder / "Info.cfg"
        info = read_info(config)
        numbers = {phase: parse_int(info[phase], config, phase) for phase in PHASES}
        files = [("info", str(config))]
        cine = find_nifti(folder, f"{patient}_4d")
        if cine is not None:
            files.append(("image", str(cine)))
        for phase, number in numbers.items():
            for role, suffix in ((f"{phase}_frame", ""), (f"{phase}_labels", "_gt")):
                found = find_nifti(folder, f"{patient}_frame{number:02d}{suffix}")
                if found is not None:
                    files.append((role, str(found)))
        if cine is None and not any(role.endswith("_frame") for role, _ in files):
            expected = ", ".join(f"{patient}_frame{numbers[p]:02d}.nii[.gz]" for p in PHASES)
            raise InputError(folder, f"no {patient}_4d.nii[.gz] cine and none of its ED/ES frame files ({expected})")
        meta = (
            ("ed_number", numbers["ED"]),
            ("es_number", numbers["ES"]),
            ("group", optional_value(info["Group"])),
            ("nb_frame", parse_int(info["NbFrame"], config, "NbFrame")),
            ("height", optional_value(info.get("Height"))),
            ("weight", optional_value(info.get("Weight"))),
            ("release_folder", folder.relative_to(root).parent.as_posix()),
        )
        refs.append(SubjectRef(DATASET, patient, tuple(files), meta))
    return refs


def load(ref: SubjectRef, geometry: str = "auto") -> Subject:
    config = ref.path("info")
    if ref.path("image") is not None:
        image, image_geometry, indices, source, notices = _read_cine(ref, geometry)
    else:
        image, image_geometry, indices, source, notices = _read_frames(ref, geometry)
    affine = image_geometry.affine
    image_path = Path(source[0])

    label_files = [(phase, ref.path(f"{phase}_labels"), indices[phase]) for phase in PHASES
                   if ref.path(f"{phase}_labels") is not None and phase in indices]
    labels, label_frames, label_phases = read_phase_labels(
        label_files, image_path, image.shape, affine, geometry, source, lookup=ACDC_TO_CANONICAL
    )
    source.append(str(config))

    meta = ref.meta_dict
    extra = {key: meta[key] for key in ("height", "weight", "nb_frame") if meta.get(key) is not None}
    extra["info_ed_es"] = [meta["ed_number"], meta["es_number"]]  # 1-based, as in Info.cfg
    extra["cine"] = ref.path("image") is not None
    if meta["release_folder"] != ".":
        extra["release_folder"] = meta["release_folder"]
    return Subject(
        dataset=DATASET,
        subject_id=ref.subject_id,
        image=image,
        affine=affine,
        labels=labels,
        label_frames=label_frames,
        label_phases=label_phases,
        ed=indices.get("ED"),
        es=indices.get("ES"),
        vendor=None,
        pathology=meta.get("group"),
        source=tuple(source),
        extra=extra,
        geometry=image_geometry,
        notices=notices,
    )


def _read_cine(ref: SubjectRef, geometry: str):
    """The 4D cine, ED/ES as 0-based indices into it, checked against the frame files."""
    image_path, config = ref.path("image"), ref.path("info")
    image, image_geometry = read_image(image_path, ndim=4, geometry=geometry)
    n_frames = image.shape[3]
    if ref.get("nb_frame") != n_frames:
        warnings.warn(
            f"{config}: NbFrame={ref.get('nb_frame')} but {image_path} has {n_frames} frames; using the image",
            UserWarning,
            stacklevel=3,
        )
    indices = {}
    for phase in PHASES:
        number = ref.get(f"{phase.lower()}_number")
        if not 1 <= number <= n_frames:
            raise InputError(config, f"{phase}: {number} is outside the cine's frames 1..{n_frames} (1-based)")
        indices[phase] = number - 1
    source = [str(image_path)]
    for phase in PHASES:
        frame_path = ref.path(f"{phase}_frame")
        if frame_path is not None:
            frame, _ = read_image(frame_path, ndim=3, geometry=geometry)
            source.append(str(frame_path))
            _check_frame(frame, frame_path, image, image_path, indices[phase], phase)
    return image, image_geometry, indices, source, geometry_notices(image_geometry)


def _read_frames(ref: SubjectRef, geometry: str):
    """No cine: the ED and ES frame files stacked as a short cine (ED first), with a notice."""
    frames = [(phase, ref.path(f"{phase}_frame")) for phase in PHASES if ref.path(f"{phase}_frame") is not None]
    return read_frame_files(frames, geometry, f"{ref.subject_id}_4d.nii[.gz]")


def _check_frame(
    frame: np.ndarray, frame_path: Path, image: np.ndarray, image_path: Path, index: int, phase: str
) -> None:
    """Warn when a frame file is not (close to) the cine frame Info.cfg points at."""
    check_shape(frame_path, frame.shape, image_path, image.shape[:3], what="frame")
    difference = frame_difference(image[..., index : index + 1], frame)[0]
    if difference > FRAME_MATCH_TOLERANCE:
        warnings.warn(
            f"{frame_path}: differs by {100 * difference:.2f}% from frame {index} of {image_path}, "
            f"the {phase} frame according to Info.cfg",
            UserWarning,
            stacklevel=3,
        )
