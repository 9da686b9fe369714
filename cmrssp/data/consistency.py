"""Physical consistency of a prepared cache against the original ground truth (issue 11, item 4).

A wrong voxel size passes every shape check: the arrays look right and only the millimetres are
wrong. Two measurements catch it, per labelled volume (ED, ES, ...) and class (LV, MYO, RV):

(a) **Volume**: the class volume in mL of the prepared canvas labels (each canvas pixel
    ``spacing x spacing`` mm in-plane, slice thickness the cache's ``spacing_native[2]``) against
    the volume of the original ground truth measured by the caller *independently of the
    toolkit's geometry code* (e.g. nibabel's pixdim, what ITK-SNAP shows). A wrong in-plane or
    slice spacing changes the prepared volume by the square of the in-plane factor times the
    slice factor; the nearest-neighbour resampling of protocol 3.5 preserves the true volume
    to ~1 %. Tolerance: ``VOLUME_TOLERANCE``.
(b) **Round trip**: the prepared labels, taken through the evaluation's own inverse mapping
    (the evaluation window, one-hot as 4-channel "logits", :func:`cmrssp.prediction.logits_to_native`,
    argmax; protocol 5.3), reproduce the original labels: 3D Dice (:func:`cmrssp.metrics.dice_3d`)
    >= ``DICE_THRESHOLD`` per class, wherever the original in-plane grid is not finer than the
    target grid (a finer original loses detail in the forward resample that no inverse restores).

The original files are read without the toolkit's readers and geometry rule, so that the check
cannot share a mistake with the code it checks: :func:`read_acdc_reference` reads an ACDC
subject's ground truth with nibabel (raw array, pixdim voxel size); other datasets pass their own
reference arrays. Labels are canonical (0 background, 1 LV, 2 MYO, 3 RV).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from cmrssp.data.cache import Cache
from cmrssp.data.subject import CLASS_NAMES, LV, MYO, RV
from cmrssp.data.subject_meta import SubjectMeta
from cmrssp.errors import InputError
from cmrssp.measures import checked_spacing, class_volumes_ml
from cmrssp.metrics import dice_3d
from cmrssp.prediction import logits_to_native

CLASSES = (LV, MYO, RV)
N_CHANNELS = 4  # background + the three cardiac classes, as the segmentation network's logits
VOLUME_TOLERANCE = 0.02  # |prepared / original - 1| per class and volume
DICE_THRESHOLD = 0.98  # round-trip 3D Dice per class, original grid not finer than the target


def prepared_spacing(meta: SubjectMeta) -> np.ndarray:
    """(3,) voxel size in mm of the canvas labels (Z, C, C): (spacing, spacing, slice thickness)."""
    return np.array([meta.spacing, meta.spacing, meta.spacing_native[2]], dtype=np.float64)


def prepared_volumes_ml(cache: Cache, key: str) -> np.ndarray:
    """Class volumes of the prepared canvas labels, float64 (L, 3): label volume x (LV, MYO, RV).

    The whole canvas counts (not only the evaluation window): this is what the cache holds.
    """
    labels = _canvas_labels(cache, key)
    spacing = prepared_spacing(cache.meta(key))
    return np.stack([class_volumes_ml(volume, spacing) for volume in labels])


def round_trip_volume(window_labels: np.ndarray, meta: SubjectMeta) -> np.ndarray:
    """Evaluation-window labels (Z, S, S) mapped to the original grid, uint8 (X, Y, Z).

    One-hot to float "logits" (Z, 4, S, S), :func:`cmrssp.prediction.logits_to_native` (bicubic,
    border padding, as a prediction is mapped back), argmax over the 4 channels.
    """
    logits = F.one_hot(torch.from_numpy(np.asarray(window_labels, dtype=np.int64)), N_CHANNELS)
    logits = logits.permute(0, 3, 1, 2).float()  # (Z, S, S, 4) -> (Z, 4, S, S)
    native = logits_to_native(logits, meta).argmax(dim=1)  # (Z, X, Y)
    return np.ascontiguousarray(native.to(torch.uint8).permute(1, 2, 0).numpy())


def round_trip_labels(cache: Cache, key: str) -> np.ndarray:
    """Every label volume of ``key`` through the round trip, uint8 (X, Y, Z, L)."""
    meta = cache.meta(key)
    start, stop = (int(v) for v in meta.evaluation_window)
    labels = _canvas_labels(cache, key)
    volumes = [round_trip_volume(volume[:, start:stop, start:stop], meta) for volume in labels]
    return np.stack(volumes, axis=3)


def subject_report(
    cache: Cache, key: str, reference_labels: np.ndarray, reference_spacing
) -> list[dict[str, Any]]:
    """Checks (a) and (b) of one subject against its independently read ground truth.

    Args:
        cache: the prepared cache holding ``key``.
        key: a labelled subject.
        reference_labels: canonical integer labels (X, Y, Z, L) read from the original files,
            L in the order of meta ``label_phases``.
        reference_spacing: (3,) voxel size in mm of the original files, read without the
            toolkit (e.g. nibabel ``header.get_zooms()[:3]``).

    Returns:
        One dict per (label volume, class), L x 3 rows: ``key``, ``phase``, ``class`` ("LV",
        "MYO", "RV"), ``reference_ml``, ``prepared_ml``, ``volume_error`` (prepared / reference
        - 1; 0 when both are empty, inf when only the reference is), ``dice`` (round trip vs
        reference), ``native_match`` (the cache's original-grid labels equal the reference for
        this class), ``reference_inplane_mm`` (finest in-plane reference spacing),
        ``target_mm`` and ``finer`` (reference in-plane spacing finer than the target, so the
        Dice threshold does not apply).
    """
    meta = cache.meta(key)
    reference = np.asarray(reference_labels)
    spacing = checked_spacing(reference_spacing)
    phases = [str(phase) for phase in meta.label_phases]
    expected = tuple(int(n) for n in meta.native_shape[:3]) + (len(phases),)
    if reference.dtype.kind not in "iub" or reference.shape != expected:
        raise InputError(
            cache.array_path(key, "labels.npy"),
            f"reference labels are {reference.dtype} {reference.shape}, expected integer {expected} "
            f"(native grid x label volumes {phases})",
        )
    prepared = prepared_volumes_ml(cache, key)
    returned = round_trip_labels(cache, key)
    native = cache.labels_native(key)
    inplane = float(min(spacing[:2]))
    target = float(meta.spacing)
    rows = []
    for volume, phase in enumerate(phases):
        truth = reference[..., volume]
        reference_ml = class_volumes_ml(truth, spacing)
        dice = dice_3d(returned[..., volume], truth, labels=CLASSES)
        for position, label in enumerate(CLASSES):
            rows.append({
                "key": key,
                "phase": phase,
                "class": CLASS_NAMES[label - 1].upper(),
                "reference_ml": float(reference_ml[position]),
                "prepared_ml": float(prepared[volume, position]),
                "volume_error": _relative_error(prepared[volume, position], reference_ml[position]),
                "dice": float(dice[position]),
                "native_match": bool(np.array_equal(native[..., volume] == label, truth == label)),
                "reference_inplane_mm": inplane,
                "target_mm": target,
                "finer": inplane < target,
            })
    return rows


def violations(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of rows breaking each threshold: ``volume`` (|volume_error| > VOLUME_TOLERANCE) and
    ``dice`` (dice < DICE_THRESHOLD among rows whose reference is not finer than the target)."""
    return {
        "volume": sum(abs(row["volume_error"]) > VOLUME_TOLERANCE for row in rows),
        "dice": sum(row["dice"] < DICE_THRESHOLD for row in rows if not row["finer"]),
    }


def _canvas_labels(cache: Cache, key: str) -> np.ndarray:
    """The subject's canvas labels (L, Z, C, C), checked to hold canonical classes only."""
    labels = cache.labels(key)
    if labels is None:
        raise InputError(cache.array_path(key, "meta.json"), f"subject {key} has no labels to check")
    if labels.size and int(labels.max()) >= N_CHANNELS:
        raise InputError(
            cache.array_path(key, "labels.npy"), f"holds label {int(labels.max())}; canonical labels are 0..3"
        )
    return labels


def _relative_error(value: float, reference: float) -> float:
    if reference == 0:
        return 0.0 if value == 0 else float("inf")
    return float(value / reference - 1.0)


# ACDC label value -> canonical (1 LV, 2 MYO, 3 RV), written out from the dataset's own definition
# (1 RV cavity, 2 myocardium, 3 LV cavity) rather than imported, to stay independent of the reader.
ACDC_REFERENCE_LABELS = np.array([0, 3, 2, 1], dtype=np.uint8)


def read_acdc_reference(meta: SubjectMeta) -> tuple[np.ndarray, np.ndarray]:
    """The original ground truth of one prepared ACDC subject, read without the toolkit.

    The patient folder is the one holding the Info.cfg listed in meta ``source``; its ED/ES frame
    numbers name ``patientXXX_frameYY_gt.nii.gz``, one per meta ``label_phases`` entry.

    Returns:
        (labels uint8 (X, Y, Z, L) canonical, spacing float64 (3,) from pixdim).
    """
    info_path = next((Path(s) for s in meta.source if Path(s).name == "Info.cfg"), None)
    if info_path is None:
        raise InputError(None, f"{meta.key}: no Info.cfg among the cache's source files")
    info = dict(
        (part.strip() for part in line.split(":", 1)) for line in info_path.read_text().splitlines() if ":" in line
    )
    patient = info_path.parent.name
    volumes, spacings = [], []
    for phase in meta.label_phases:
        path = info_path.parent / f"{patient}_frame{int(info[phase]):02d}_gt.nii.gz"
        image = nib.load(path)
        raw = np.asanyarray(image.dataobj)
        values = np.unique(raw)
        if raw.ndim != 3 or not np.all(np.isin(values, (0, 1, 2, 3))):
            raise InputError(path, f"not a 3D ACDC label volume (shape {raw.shape}, values {values[:8]})")
        volumes.append(ACDC_REFERENCE_LABELS[raw.astype(np.intp)])
        spacings.append(np.asarray(image.header.get_zooms()[:3], dtype=np.float64))
    if any(not np.array_equal(s, spacings[0]) for s in spacings):
        raise InputError(info_path.parent, f"ED/ES ground truth disagree on pixdim: {spacings}")
    return np.stack(volumes, axis=3), spacings[0]
