"""The numbers a cardiologist reads from a short-axis cine segmentation, and their agreement (issue 13).

A CMR report does not give Dice: it gives LV/RV end-diastolic and end-systolic volumes, stroke
volumes, ejection fractions and LV mass, indexed to body surface area. The conventions are those
of the SCMR post-processing guideline (Schulz-Menger et al., "Standardized image interpretation and
post-processing in cardiovascular magnetic resonance - 2020 update", JCMR 22:19, 2020):

* volumes by **disc summation** over the short-axis stack: here the sum of voxel volumes of a
  class, each voxel ``spacing[0] x spacing[1] x spacing[2]`` mm (:func:`class_volumes_ml`). There is
  no partial-volume or slice-gap model: slices are taken as contiguous at the slice spacing, which
  is exactly how disc summation treats them (slice thickness + gap = slice spacing);
* SV = EDV - ESV (mL); EF = (EDV - ESV) / EDV x 100 (%);
* LV mass = 1.05 g/mL (myocardial density) x LV myocardial volume at end-diastole (g);
* indexed values = value / BSA, BSA by Mosteller (N Engl J Med 317:1098, 1987):
  sqrt(height_cm x weight_kg / 3600) m².

ED and ES, when only a cine is segmented, are the frames of largest and smallest LV cavity volume
(:func:`detect_ed_es`, the guideline's volumetric definition).

Agreement of predicted against reference measures (:func:`agreement`, :func:`agreement_table`) is
reported as Bland & Altman (Lancet 1:307-310, 1986) do: bias (mean difference, predicted minus
reference), SD of the differences and 95 % limits of agreement bias ± 1.96 SD, with the MAE and
Pearson's r alongside.

Labels are canonical (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity;
:mod:`cmrssp.data.subject`). Every function is pure; bad input raises :class:`InputError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cmrssp.data.subject import LV, MYO, RV
from cmrssp.errors import InputError

MYOCARDIUM_DENSITY_G_PER_ML = 1.05  # Schulz-Menger et al. 2020, LV mass
CLASSES = (LV, MYO, RV)
# The measures whose agreement with the reference is reported (predicted vs manual labels).
MEASURES = ("lvef_pct", "rvef_pct", "lvedv_ml", "lvesv_ml", "rvedv_ml", "rvesv_ml", "lvmass_g")
LIMITS_OF_AGREEMENT_Z = 1.96  # 95 % limits for normally distributed differences (Bland & Altman 1986)


def class_volumes_ml(labels: np.ndarray, spacing) -> np.ndarray:
    """Volume in mL of each class (LV, MYO, RV) of one canonical label volume.

    The volume is a voxel sum: voxel count x voxel volume. No partial-volume or slice-gap model;
    slices are taken as contiguous at the slice spacing, which is how CMR reports compute disc
    summation volumes (Schulz-Menger et al. 2020).

    Args:
        labels: integer labels of any 3D layout, e.g. (X, Y, Z) or (Z, C, C).
        spacing: (3,) voxel size in mm, in any order (only the product is used).

    Returns:
        float64 (3,): voxel count of class 1, 2, 3 times the voxel volume, / 1000 (mm³ -> mL).
    """
    voxel_mm3 = float(np.prod(checked_spacing(spacing)))
    labels = np.asarray(labels)
    counts = np.array([np.count_nonzero(labels == label) for label in CLASSES], dtype=np.float64)
    return counts * voxel_mm3 / 1000.0


def volume_curve(labels, spacing) -> np.ndarray:
    """Class volumes of every frame of a cine segmentation.

    Args:
        labels: canonical integer labels (X, Y, Z, T), time on the last axis as in
            :class:`cmrssp.data.subject.Subject`; or a sequence of T 3D label volumes.
        spacing: (3,) voxel size in mm of the spatial axes.

    Returns:
        float64 (T, 3): LV, MYO, RV volume in mL per frame.
    """
    if isinstance(labels, np.ndarray) or hasattr(labels, "ndim"):
        labels = np.asarray(labels)
        if labels.ndim != 4:
            raise InputError(None, f"a cine segmentation is (X, Y, Z, T), got shape {labels.shape}")
        frames = [labels[..., t] for t in range(labels.shape[3])]
    else:
        frames = [np.asarray(frame) for frame in labels]
        if any(frame.ndim != 3 for frame in frames):
            shapes = [frame.shape for frame in frames]
            raise InputError(None, f"a cine segmentation as a sequence needs 3D frames, got shapes {shapes}")
    if not frames:
        raise InputError(None, "a cine segmentation needs at least one frame, got none")
    return np.stack([class_volumes_ml(frame, spacing) for frame in frames])


def detect_ed_es(lv_volumes) -> tuple[int, int]:
    """End-diastole and end-systole from an LV cavity volume curve.

    ED is the frame of largest LV volume, ES the frame of smallest (Schulz-Menger et al. 2020);
    ties go to the first frame (a flat curve gives (0, 0)).

    Args:
        lv_volumes: (T,) LV cavity volume per frame, e.g. ``volume_curve(labels, spacing)[:, 0]``.

    Returns:
        (ed, es) frame indices.
    """
    volumes = np.asarray(lv_volumes, dtype=np.float64)
    if volumes.ndim != 1 or volumes.size < 2:
        raise InputError(
            None, f"ED/ES detection needs an LV volume curve of at least 2 frames, got shape {volumes.shape}"
        )
    if not np.all(np.isfinite(volumes)):
        raise InputError(None, "ED/ES detection: the LV volume curve holds NaN or inf")
    if not np.any(volumes):
        raise InputError(None, "ED/ES detection: the LV volume is zero in every frame (no LV predicted)")
    return int(np.argmax(volumes)), int(np.argmin(volumes))


def bsa_mosteller(height_cm, weight_kg) -> float | None:
    """Body surface area in m² by Mosteller (1987): sqrt(height_cm x weight_kg / 3600).

    A missing height or weight (None, NaN, inf, zero or negative) gives None: demographics are
    optional in every dataset, so their absence is missing data, not an error.
    """
    height, weight = _optional_positive(height_cm, "height_cm"), _optional_positive(weight_kg, "weight_kg")
    if height is None or weight is None:
        return None
    return math.sqrt(height * weight / 3600.0)


@dataclass(frozen=True)
class CardiacMeasures:
    """One subject's report values (Schulz-Menger et al. 2020).

    Attributes:
        lv_edv, lv_esv, lv_sv: LV cavity volume at ED and ES and their difference, mL.
        lv_ef: (EDV - ESV) / EDV x 100, %; NaN when EDV is 0.
        rv_edv, rv_esv, rv_sv, rv_ef: the same for the RV cavity.
        lv_mass: LV myocardial volume at ED x 1.05 g/mL, g.
        bsa: body surface area (Mosteller), m², or None when height or weight is missing.
        lv_edvi, lv_esvi, rv_edvi, rv_esvi: volumes / BSA, mL/m² (None without BSA).
        lv_massi: LV mass / BSA, g/m² (None without BSA).
        ed_frame, es_frame: the frames the volumes were measured at, when known.
    """

    lv_edv: float
    lv_esv: float
    lv_sv: float
    lv_ef: float
    rv_edv: float
    rv_esv: float
    rv_sv: float
    rv_ef: float
    lv_mass: float
    bsa: float | None = None
    lv_edvi: float | None = None
    lv_esvi: float | None = None
    rv_edvi: float | None = None
    rv_esvi: float | None = None
    lv_massi: float | None = None
    ed_frame: int | None = None
    es_frame: int | None = None

    def as_row(self) -> dict[str, float | None]:
        """The values under stable column names with units (one table row, :data:`ROW_COLUMNS`)."""
        values = (self.lv_edv, self.lv_esv, self.lv_sv, self.lv_ef, self.rv_edv, self.rv_esv, self.rv_sv,
                  self.rv_ef, self.lv_mass, self.bsa, self.lv_edvi, self.lv_esvi, self.rv_edvi, self.rv_esvi,
                  self.lv_massi, self.ed_frame, self.es_frame)
        return dict(zip(ROW_COLUMNS, values, strict=True))


# The column names of CardiacMeasures.as_row, in its field order, with units.
ROW_COLUMNS = ("lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct", "rvedv_ml", "rvesv_ml", "rvsv_ml", "rvef_pct",
               "lvmass_g", "bsa_m2", "lvedvi_ml_m2", "lvesvi_ml_m2", "rvedvi_ml_m2", "rvesvi_ml_m2",
               "lvmassi_g_m2", "ed_frame", "es_frame")


def cardiac_measures(
    ed_labels,
    es_labels,
    spacing,
    height_cm=None,
    weight_kg=None,
    ed_frame: int | None = None,
    es_frame: int | None = None,
) -> CardiacMeasures:
    """Report values of one subject from its ED and ES label volumes.

    Args:
        ed_labels, es_labels: canonical integer labels of one shape, e.g. (X, Y, Z).
        spacing: (3,) voxel size in mm (shared by both volumes).
        height_cm, weight_kg: for BSA indexing; None (or NaN) when unknown.
        ed_frame, es_frame: recorded in the result only (which frames were measured).

    Returns:
        :class:`CardiacMeasures`; EF is NaN where EDV is 0, indexed values None without BSA.
    """
    ed_labels, es_labels = np.asarray(ed_labels), np.asarray(es_labels)
    if ed_labels.shape != es_labels.shape:
        raise InputError(None, f"ED labels {ed_labels.shape} and ES labels {es_labels.shape} differ in shape")
    lv_edv, myo_ed, rv_edv = (float(v) for v in class_volumes_ml(ed_labels, spacing))
    lv_esv, _, rv_esv = (float(v) for v in class_volumes_ml(es_labels, spacing))
    lv_mass = MYOCARDIUM_DENSITY_G_PER_ML * myo_ed
    bsa = bsa_mosteller(height_cm, weight_kg)
    index = (lambda value: None) if bsa is None else (lambda value: value / bsa)
    return CardiacMeasures(
        lv_edv=lv_edv,
        lv_esv=lv_esv,
        lv_sv=lv_edv - lv_esv,
        lv_ef=ejection_fraction(lv_edv, lv_esv),
        rv_edv=rv_edv,
        rv_esv=rv_esv,
        rv_sv=rv_edv - rv_esv,
        rv_ef=ejection_fraction(rv_edv, rv_esv),
        lv_mass=lv_mass,
        bsa=bsa,
        lv_edvi=index(lv_edv),
        lv_esvi=index(lv_esv),
        rv_edvi=index(rv_edv),
        rv_esvi=index(rv_esv),
        lv_massi=index(lv_mass),
        ed_frame=None if ed_frame is None else int(ed_frame),
        es_frame=None if es_frame is None else int(es_frame),
    )


def ejection_fraction(edv: float, esv: float) -> float:
    """(EDV - ESV) / EDV x 100, in %; NaN when EDV is 0 (no cavity at ED: EF undefined)."""
    return 100.0 * (edv - esv) / edv if edv > 0 else float("nan")


def agreement(predicted, reference) -> dict[str, float | int]:
    """Bland-Altman agreement of paired measurements (Bland & Altman 1986).

    Args:
        predicted, reference: (N,) paired values; None counts as NaN. Pairs with a NaN on either
            side are dropped (counted in ``n_dropped``).

    Returns:
        ``n`` (pairs used), ``n_dropped``, ``mae`` (mean |predicted - reference|), ``bias`` (mean
        of predicted - reference), ``sd`` (of the differences, ddof=1), ``loa_low`` / ``loa_high``
        (bias ∓ 1.96 sd), ``pearson_r``. sd, limits and r are NaN when n < 2; r also when either
        side has zero variance; mae and bias are NaN when n = 0.
    """
    pred, ref = _values(predicted, "predicted"), _values(reference, "reference")
    if pred.shape != ref.shape:
        raise InputError(None, f"agreement needs paired values, got {pred.size} predicted and {ref.size} reference")
    kept = np.isfinite(pred) & np.isfinite(ref)
    pred, ref = pred[kept], ref[kept]
    n = int(pred.size)
    nan = float("nan")
    differences = pred - ref
    bias = float(differences.mean()) if n else nan
    sd = float(differences.std(ddof=1)) if n >= 2 else nan
    return {
        "n": n,
        "n_dropped": int(kept.size - n),
        "mae": float(np.abs(differences).mean()) if n else nan,
        "bias": bias,
        "sd": sd,
        "loa_low": bias - LIMITS_OF_AGREEMENT_Z * sd,
        "loa_high": bias + LIMITS_OF_AGREEMENT_Z * sd,
        "pearson_r": _pearson(pred, ref),
    }


def agreement_table(
    rows_pred: Sequence[Mapping], rows_ref: Sequence[Mapping], measures: Sequence[str] = MEASURES
) -> list[dict]:
    """Agreement per measure of predicted against reference rows (e.g. ``CardiacMeasures.as_row()``).

    Rows are paired by position (row i of both lists is the same subject). A value of None or NaN
    drops that pair for that measure only.

    Returns:
        One dict per measure, in order: ``measure`` and the fields of :func:`agreement`.
    """
    if len(rows_pred) != len(rows_ref):
        raise InputError(None, f"agreement table needs paired rows, got {len(rows_pred)} predicted and "
                               f"{len(rows_ref)} reference")
    table = []
    for measure in measures:
        columns = []
        for side, rows in (("predicted", rows_pred), ("reference", rows_ref)):
            missing = [i for i, row in enumerate(rows) if measure not in row]
            if missing:
                raise InputError(None, f"{side} row {missing[0]} has no column {measure!r}")
            columns.append([row[measure] for row in rows])
        table.append({"measure": measure, **agreement(*columns)})
    return table


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    norm = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / norm if norm > 0 else float("nan")


def _values(values, name: str) -> np.ndarray:
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(None, f"agreement: {name} values must be numbers (or None), got {values!r}") from None


def _optional_positive(value, name: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(None, f"{name} must be a number or None, got {value!r}") from None
    return number if math.isfinite(number) and number > 0 else None


def checked_spacing(spacing) -> np.ndarray:
    """(3,) float64 voxel size in mm; InputError unless 3 positive finite numbers."""
    try:
        values = np.asarray(spacing, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (3,) or not np.all(np.isfinite(values) & (values > 0)):
        raise InputError(None, f"voxel spacing must be 3 positive finite numbers (mm), got {spacing!r}")
    return values
