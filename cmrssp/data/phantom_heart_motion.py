"""Cardiac motion of the phantom heart: LV and RV volume curves, base descent, twist (phantom.md C)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from cmrssp.data.phantom_heart_params import HeartParams


def volume_curve(edv: float, ef: float, phi_es: float, fill: tuple[float, ...], n_frames: int) -> np.ndarray:
    """Volume (mL) at phases t / T, ED at t = 0 (phantom.md C).

    Systole: ``EDV * (1 - EF * (1 - cos(pi * phi / phi_es)) / 2)``. Diastole: the refilled
    fraction of the stroke volume follows a monotone spline through the end of rapid filling,
    diastasis and the atrial kick, reaching EDV again at phi = 1.
    """
    phi = np.arange(n_frames) / n_frames
    esv = edv * (1 - ef)
    volume = np.empty(n_frames)
    systole = phi <= phi_es
    volume[systole] = edv * (1 - ef * (1 - np.cos(np.pi * phi[systole] / phi_es)) / 2)
    rapid_phase, rapid_fraction, atrial_phase, atrial_fraction = fill
    knots = np.array([phi_es, max(rapid_phase, phi_es + 0.05), max(atrial_phase, phi_es + 0.1), 1.0])
    knots = np.maximum.accumulate(knots + np.arange(4) * 1e-6)
    refill = PchipInterpolator(knots, [0.0, rapid_fraction, atrial_fraction, 1.0])(phi[~systole])
    volume[~systole] = esv + (edv - esv) * np.clip(refill, 0, 1)
    return volume


@dataclass(frozen=True)
class Motion:
    """Per-frame heart state in phase order (ED = frame 0). Volumes are calibration targets."""

    lv_volume: np.ndarray  # (T,) mL
    rv_volume: np.ndarray  # (T,) mL
    base: np.ndarray  # (T,) mm descent of the base plane toward the apex
    length: np.ndarray  # (T,) mm endocardial length
    twist: np.ndarray  # (T,) rad basal rotation
    es: int  # ES frame (phase order)
    lv_ejected: np.ndarray  # (T,) fraction of the LV stroke volume ejected (0 at ED, 1 at ES)
    rv_ejected: np.ndarray  # (T,) the same for the RV


def heart_motion(heart: HeartParams, n_frames: int) -> Motion:
    """Volume curves and longitudinal motion; ES is snapped to a frame so EF is sampled exactly."""
    es = int(np.clip(round(heart.phi_es * n_frames), 1, n_frames - 2))
    phi_es = es / n_frames
    lv = volume_curve(heart.lv_edv, heart.lv_ef, phi_es, heart.fill, n_frames)
    rv_fill = tuple(min(v + heart.rv_delay, 0.97) if i % 2 == 0 else v for i, v in enumerate(heart.fill))
    rv = volume_curve(heart.rv_edv, heart.rv_ef, min(phi_es + heart.rv_delay, 0.6), rv_fill, n_frames)
    ejected = (heart.lv_edv - lv) / (heart.lv_edv * heart.lv_ef)  # 0 at ED, 1 at ES
    rv_ejected = np.clip((heart.rv_edv - rv) / max(heart.rv_edv * heart.rv_ef, 1e-6), 0, 1)
    base = heart.base_descent * ejected
    return Motion(lv, rv, base, heart.length - base, heart.twist * ejected, es, ejected, rv_ejected)
