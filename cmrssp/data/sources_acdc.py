"""ACDC (MICCAI 2017) reader: ``patientXXX_4d`` cine, ``Info.cfg``, ED/ES ``frameYY[_gt]`` files.

Layout (data-formats.md 1.4): ``<root>/**/patientXXX/`` holding ``Info.cfg`` (``key: value``
lines ``ED``, ``ES`` (1-based frame numbers), ``Group``, ``Height``, ``NbFrame``, ``Weight``),
``patientXXX_4d.nii[.gz]`` and ``patientXXX_frameYY.nii[.gz]`` / ``_frameYY_gt`` for YY = ED, ES.

ACDC labels 1 RV cavity, 2 myocardium, 3 LV cavity (the trap of data-formats.md 1.1) are remapped
to the canonical order with {1->3, 2->2, 3->1}. The frame images are compared once with the cine
frame the Info.cfg points at, which catches an off-by-one ED/ES (warning only).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from cmrssp.data.nifti import find_nifti, read_image, read_labels
from cmrssp.data.sources import (
    FRAME_MATCH_TOLERANCE,
    SubjectRef,
    check_shape,
    check_same_grid,
    find_files,
    frame_difference,
    nifti_pattern,
    optional_value,
    parse_int,
)
from cmrssp.data.subject import Subject
from cmrssp.errors import InputError

DATASET = "acdc"
LOOKED_FOR = "looked for patientXXX/patientXXX_4d.nii[.gz] and patientXXX/Info.cfg recursively"
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
    cines = find_files(root, CINE_PATTERN)
    # Patient folders with an Info.cfg but no cine are reported, not skipped silently.
    folders = {cine.parent for cine in cines}
    for config in find_files(root, re.compile(r"Info\.cfg")):
        if PATIENT_FOLDER.fullmatch(config.parent.name) and config.parent not in folders:
            raise InputError(config.parent, f"no {config.parent.name}_4d.nii[.gz] cine in this patient folder")
    refs = []
    for cine in cines:
        folder = cine.parent
        patient = CINE_PATTERN.fullmatch(cine.name).group(2)
        config = folder / "Info.cfg"
        info = read_info(config)
        numbers = {phase: parse_int(info[phase], config, phase) for phase in PHASES}
        files = [("image", str(cine)), ("info", str(config))]
        for phase, number in numbers.items():
            for role, suffix in ((f"{phase}_frame", ""), (f"{phase}_labels", "_gt")):
                found = find_nifti(folder, f"{patient}_frame{number:02d}{suffix}")
                if found is not None:
                    files.append((role, str(found)))
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


def load(ref: SubjectRef) -> Subject:
    image_path, config = ref.path("image"), ref.path("info")
    image, affine = read_image(image_path, ndim=4)
    n_frames = image.shape[3]
    source = [str(image_path), str(config)]
    if ref.get("nb_frame") != n_frames:
        warnings.warn(
            f"{config}: NbFrame={ref.get('nb_frame')} but {image_path} has {n_frames} frames; using the image",
            UserWarning,
            stacklevel=2,
        )
    indices = {}
    for phase in PHASES:
        number = ref.get(f"{phase.lower()}_number")
        if not 1 <= number <= n_frames:
            raise InputError(config, f"{phase}: {number} is outside the cine's frames 1..{n_frames} (1-based)")
        indices[phase] = number - 1

    label_volumes, label_frames, label_phases = [], [], []
    for phase in PHASES:
        frame_path, label_path = ref.path(f"{phase}_frame"), ref.path(f"{phase}_labels")
        if frame_path is not None:
            frame, _ = read_image(frame_path, ndim=3)
            source.append(str(frame_path))
            _check_frame(frame, frame_path, image, image_path, indices[phase], phase)
        if label_path is not None:
            acdc_labels, label_affine = read_labels(label_path, ndim=3)
            source.append(str(label_path))
            check_shape(label_path, acdc_labels.shape, image_path, image.shape[:3])
            check_same_grid(label_path, label_affine, image_path, affine)
            label_volumes.append(ACDC_TO_CANONICAL[acdc_labels])
            label_frames.append(indices[phase])
            label_phases.append(phase)

    meta = ref.meta_dict
    extra = {key: meta[key] for key in ("height", "weight", "nb_frame") if meta.get(key) is not None}
    if meta["release_folder"] != ".":
        extra["release_folder"] = meta["release_folder"]
    return Subject(
        dataset=DATASET,
        subject_id=ref.subject_id,
        image=image,
        affine=affine,
        labels=np.stack(label_volumes, axis=3) if label_volumes else None,
        label_frames=tuple(label_frames),
        label_phases=tuple(label_phases),
        ed=indices["ED"],
        es=indices["ES"],
        vendor=None,
        pathology=meta.get("group"),
        source=tuple(source),
        extra=extra,
    )


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
