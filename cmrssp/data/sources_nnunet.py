"""nnU-Net raw dataset reader: ``dataset.json``, ``imagesTr/<case>_0000``, ``labelsTr/<case>``.

Layout (data-formats.md 1.6): one 3D volume per case, one file per channel (only ``_0000`` is
accepted: these are single-channel cine frames), labels without the channel suffix.
``dataset.json["labels"]`` is name->int (v2) or int->name (v1); label values are mapped to the
canonical order by NAME through ``LABEL_ALIASES`` (case-, space-, ``_``- and ``-``-insensitive),
since conversions disagree on the order (ACDC's ``{"RV":1,"MLV":2,"LVC":3}`` vs M&Ms'
``{"LVBP":1,"LVM":2,"RV":3}``).

Cases named ``<subject>_frameNN`` (how the official ACDC and M&Ms conversions name ED/ES frames)
are grouped into one subject whose image stacks the frames along t in NN order; with exactly two
labelled frames the one with the larger LV cavity is ED. Other cases are one-frame subjects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from cmrssp.data.nifti import find_nifti, read_image, read_labels
from cmrssp.data.sources import SubjectRef, check_shape, check_same_grid, geometry_notices, nifti_pattern
from cmrssp.data.subject import BACKGROUND, LV, MYO, RV, Subject
from cmrssp.errors import InputError

DATASET = "nnunet"
LOOKED_FOR = "looked for imagesTr/<case>_0000.nii[.gz]"
IMAGE_PATTERN = re.compile(r"(.+)_(\d{4})\.nii(?:\.gz)?")
NIFTI = nifti_pattern(r".+")
FRAME_CASE = re.compile(r"(.+)_frame(\d+)")

# Normalised label name -> canonical label (names from the nnU-Net conversions of ACDC and M&Ms,
# the challenges' own wording, and common spellings).
LABEL_ALIASES: dict[str, int] = {
    **dict.fromkeys(("background", "bg", "bck", "clear label"), BACKGROUND),
    **dict.fromkeys(
        (
            "lv", "lvbp", "lvc", "lv blood pool", "lv bloodpool", "lv cavity", "lv pool", "left ventricle",
            "left ventricle blood pool", "left ventricle cavity", "left ventricular cavity",
            "left ventricular blood pool", "lv endocardium",
        ),
        LV,
    ),
    **dict.fromkeys(
        (
            "myo", "lvm", "mlv", "myocardium", "lv myocardium", "lv myo", "left ventricular myocardium",
            "left ventricle myocardium", "myocardium lv", "lv wall",
        ),
        MYO,
    ),
    **dict.fromkeys(
        (
            "rv", "rvc", "rvbp", "rv blood pool", "rv bloodpool", "rv cavity", "right ventricle",
            "right ventricle blood pool", "right ventricle cavity", "right ventricular cavity",
            "right ventricular blood pool",
        ),
        RV,
    ),
}


def normalise_label_name(name: str) -> str:
    return " ".join(re.sub(r"[_\-]", " ", name).lower().split())


def label_map(dataset_json: Path, labels: object) -> dict[int, int]:
    """``dataset.json["labels"]`` (v2 name->int or v1 int->name) -> {dataset value: canonical}."""
    if not isinstance(labels, dict) or not labels:
        raise InputError(dataset_json, "'labels' must be a non-empty mapping of label names and values")
    v1 = all(re.fullmatch(r"\d+", str(key)) for key in labels) and all(isinstance(v, str) for v in labels.values())
    if v1:
        pairs = [(int(key), name) for key, name in labels.items()]
    else:
        pairs = [(value, name) for name, value in labels.items()]
    mapping: dict[int, int] = {}
    by_class: dict[int, str] = {}
    for value, name in pairs:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(
                dataset_json,
                f"label {name!r} has value {value!r}; expected a non-negative integer "
                "(region-based labels are not supported)",
            )
        canonical = LABEL_ALIASES.get(normalise_label_name(str(name)))
        if canonical is None:
            raise InputError(
                dataset_json,
                f"unknown label name {name!r}; expected background, LV (blood pool), MYO (myocardium) or RV names "
                "such as LV/LVBP/LVC, MYO/LVM/MLV, RV/RVC",
            )
        if canonical in by_class and canonical != BACKGROUND:
            raise InputError(dataset_json, f"labels {by_class[canonical]!r} and {name!r} both name the same structure")
        by_class[canonical] = str(name)
        mapping[value] = canonical
    if mapping.get(0, BACKGROUND) != BACKGROUND:
        raise InputError(dataset_json, "label value 0 must be background")
    mapping.setdefault(0, BACKGROUND)
    return mapping


def read_dataset_json(root: Path) -> tuple[Path, dict[int, int]]:
    path = root / "dataset.json"
    if not path.is_file():
        raise InputError(path, "not found (an nnU-Net raw dataset needs dataset.json)")
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not readable JSON ({error})") from None
    if not isinstance(description, dict) or "labels" not in description:
        raise InputError(path, "missing the 'labels' entry")
    return path, label_map(path, description["labels"])


def discover(root: Path) -> list[SubjectRef]:
    dataset_json, mapping = read_dataset_json(root)
    images_folder, labels_folder = root / "imagesTr", root / "labelsTr"
    if not images_folder.is_dir():
        raise InputError(images_folder, "folder not found (an nnU-Net raw dataset keeps its images in imagesTr)")
    # subject -> list of (frame number or None, case, image path)
    groups: dict[str, list[tuple[int | None, str, Path]]] = {}
    for path in sorted(images_folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not NIFTI.fullmatch(path.name):
            continue
        match = IMAGE_PATTERN.fullmatch(path.name)
        if match is None:
            raise InputError(path, "image name lacks the 4-digit channel suffix (expected <case>_0000.nii.gz)")
        case, channel = match.group(1), match.group(2)
        if channel != "0000":
            raise InputError(path, f"multi-channel case (channel {channel}); one channel (_0000) expected")
        frame = FRAME_CASE.fullmatch(case)
        subject, number = (frame.group(1), int(frame.group(2))) if frame else (case, None)
        groups.setdefault(subject, []).append((number, case, path))

    refs = []
    for subject, cases in groups.items():
        if len(cases) > 1 and any(number is None for number, _, _ in cases):
            raise InputError(images_folder, f"subject {subject!r} has both a plain case and _frameNN cases")
        cases.sort(key=lambda item: (item[0] if item[0] is not None else -1))
        numbers = [number for number, _, _ in cases]
        if len(set(numbers)) != len(numbers):
            names = [case for _, case, _ in cases]
            raise InputError(images_folder, f"subject {subject!r} has two cases with the same frame number: {names}")
        files = [("dataset_json", str(dataset_json))]
        for index, (_, case, path) in enumerate(cases):
            files.append((f"frame{index}_image", str(path)))
            label = find_nifti(labels_folder, case) if labels_folder.is_dir() else None
            if label is not None:
                files.append((f"frame{index}_labels", str(label)))
        meta = (
            ("n_frames", len(cases)),
            ("cases", tuple(case for _, case, _ in cases)),
            ("frame_numbers", tuple(numbers) if numbers[0] is not None else None),
            ("label_map", tuple(sorted(mapping.items()))),
        )
        refs.append(SubjectRef(DATASET, subject, tuple(files), meta))
    return refs


def load(ref: SubjectRef, geometry: str = "auto") -> Subject:
    mapping = dict(ref.get("label_map"))
    lookup = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for value, canonical in mapping.items():
        lookup[value] = canonical
    valid = tuple(sorted(mapping))
    n_frames = ref.get("n_frames")
    numbers = ref.get("frame_numbers")

    frames, label_volumes, label_frames = [], [], []
    source = [str(ref.path("dataset_json"))]
    first_path = affine = first_geometry = None
    for index in range(n_frames):
        image_path = ref.path(f"frame{index}_image")
        frame, frame_geometry = read_image(image_path, ndim=3, geometry=geometry)
        frame_affine = frame_geometry.affine
        source.append(str(image_path))
        if first_path is None:
            first_path, affine, first_geometry = image_path, frame_affine, frame_geometry
        elif frame.shape != frames[0].shape:
            raise InputError(
                image_path, f"frame shape {frame.shape} differs from {frames[0].shape} of {first_path} (same subject)"
            )
        elif not np.allclose(frame_affine, affine, rtol=0, atol=1e-3):
            raise InputError(
                image_path, f"affine differs from that of {first_path}; frames of one subject must share their geometry"
            )
        frames.append(frame)
        label_path = ref.path(f"frame{index}_labels")
        if label_path is not None:
            labels, label_geometry = read_labels(label_path, ndim=3, valid_labels=valid, geometry=geometry)
            source.append(str(label_path))
            check_shape(label_path, labels.shape, image_path, frame.shape)
            check_same_grid(label_path, label_geometry.affine, image_path, frame_affine)
            label_volumes.append(lookup[labels])
            label_frames.append(index)

    def phase_name(index: int) -> str:
        return f"frame{(numbers[index] if numbers else index):02d}"

    label_phases = [phase_name(index) for index in label_frames]
    ed = es = None
    if n_frames == 2 and len(label_frames) == 2:
        # ED is the frame with the larger LV cavity (then more foreground; then the earlier one).
        sizes = [(int((volume == LV).sum()), int((volume > 0).sum())) for volume in label_volumes]
        ed, es = (0, 1) if sizes[0] >= sizes[1] else (1, 0)
        label_volumes, label_frames, label_phases = [label_volumes[ed], label_volumes[es]], [ed, es], ["ED", "ES"]

    return Subject(
        dataset=DATASET,
        subject_id=ref.subject_id,
        image=np.stack(frames, axis=3),
        affine=affine,
        labels=np.stack(label_volumes, axis=3) if label_volumes else None,
        label_frames=tuple(label_frames),
        label_phases=tuple(label_phases),
        ed=ed,
        es=es,
        source=tuple(source),
        extra={"cases": list(ref.get("cases")), "frame_numbers": list(numbers) if numbers else None,
               "label_map": {str(value): canonical for value, canonical in mapping.items()}},
        geometry=first_geometry,
        notices=geometry_notices(first_geometry),
    )
