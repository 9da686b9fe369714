"""LV and RV area fractions of one frame at a given scale, and the scale that meets a volume.

phantom.md B-D: the LV endocardium and the RV crescent of frame t are scaled by ``c(t)`` and
``c_rv(t)``, solved so that the *label* volumes follow the volume curves (``solve_scale``, a
safeguarded Newton/bisection on pixel counts). The myocardium is incompressible: its area at
depth u is the ED area times ``L_ed / L(t)``, so ``r_epi = sqrt(r_endo^2 + A / pi)``.

Per-pixel arrays are (N,) float32 over a frame's pixel list (``phantom_heart_pixels``); per-slice
values are (Z,). ``calibrate_frame`` checks every fraction it computes against the list's reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrssp.data.phantom_coverage import edge_cover, label_argmax, shape_cover
from cmrssp.data.phantom_heart_frame import FrameFields
from cmrssp.data.phantom_heart_geometry import HeartGeometry
from cmrssp.data.phantom_heart_params import RV_TRABECULA_MAX_FRACTION, SEPTAL_GAP_MM
from cmrssp.data.phantom_heart_pixels import HeartReach


def lv_fields(geometry: HeartGeometry, frame: FrameFields, u: np.ndarray, scale: float, ed: bool = False):
    """Per-pixel endocardial and epicardial radii (N,), the compacted band (N,) mm and the slices
    holding myocardium (Z,)."""
    heart, per_pixel = geometry.heart, frame.pixels.per_pixel
    endo, area = geometry.lv_radii(u, frame.t, scale, ed)
    endo_field = per_pixel(endo.astype(np.float32))
    endo_field *= frame.endo_shape
    # The modulation follows the frame's mean wall thickness, so it thickens with the wall.
    wall = per_pixel((np.sqrt(endo * endo + area / np.pi) - endo).astype(np.float32))
    epi_field = endo_field * endo_field
    epi_field += per_pixel((area / np.pi).astype(np.float32))
    np.sqrt(epi_field, out=epi_field)
    wall *= frame.wall_shape
    epi_field += wall
    band = (heart.wall_thickness(u) * (area > 0)).astype(np.float32)
    band *= np.float32(heart.myo_es_gain * geometry.motion.lv_ejected[frame.t])
    return endo_field, epi_field, per_pixel(band), area > 0


def lv_fractions(geometry: HeartGeometry, frame: FrameFields, scale: float, inv_pixel: float, ed: bool = False):
    """LV label (cavity, ``label_margin`` into the muscle) and myocardium fractions of the central sub-slice."""
    endo_field, epi_field, band, present = lv_fields(geometry, frame, frame.u_centre, scale, ed)
    label = endo_field - band
    label += np.float32(geometry.heart.label_margin) * (endo_field > 0)  # no margin where there is no cavity
    inside = shape_cover(np.minimum(label, epi_field, out=label), frame.metric, inv_pixel)
    wall = shape_cover(epi_field, frame.metric, inv_pixel)
    wall -= inside
    np.maximum(wall, 0.0, out=wall)
    wall *= frame.myo_kept
    return inside, wall, epi_field, present


def rv_fraction(frame: FrameFields, thickness: np.ndarray, epi: np.ndarray, present: np.ndarray, inv_pixel: float,
                trabeculae=None, gaps=None, gap_fade=None, margin: float = 0.0):
    """RV pool area fraction (the label's, ``margin`` mm into the free wall) for a crescent of
    ``thickness`` (Z,) float32 mm on its axis; with ``trabeculae`` (per-pixel heights, mm; their
    detached ``gaps`` fading in as ``gap_fade``) also the fraction of the pool they cover, limited
    to ``RV_TRABECULA_MAX_FRACTION`` of the local thickness."""
    per_pixel, metric = frame.pixels.per_pixel, frame.metric
    inner = epi + np.float32(SEPTAL_GAP_MM)
    local = per_pixel(thickness)
    local *= frame.rv_profile
    outer = inner + local
    outer -= metric  # depth inside the free-wall edge
    if margin:
        outer += np.float32(margin) * (local > 0)
    if trabeculae is not None:
        height = local * np.float32(RV_TRABECULA_MAX_FRACTION)
        np.minimum(trabeculae, height, out=height)
        trabeculae = edge_cover(height - outer, inv_pixel)
        fade = height * inv_pixel
        trabeculae *= np.clip(fade, 0.0, 1.0, out=fade)
        detached = np.minimum(gaps, height)
        detached -= outer
        edge_cover(detached, inv_pixel, out=detached)
        detached *= gap_fade
        trabeculae *= np.subtract(1.0, detached, out=detached)
    depth_inside = metric - inner
    np.minimum(depth_inside, outer, out=depth_inside)
    # A crescent thinner than a pixel fades out with its thickness (no half-covered ring).
    pool = edge_cover(depth_inside, inv_pixel, out=depth_inside)
    fade = local * inv_pixel
    pool *= np.clip(fade, 0.0, 1.0, out=fade)
    pool *= per_pixel(present)
    return pool if trabeculae is None else (pool, trabeculae)


def solve_scale(volume_of, target: float, guess: float, power: float, tolerance: float) -> float:
    """Scale c with volume_of(c) ~= target for a non-decreasing step function volume_of.

    Newton steps on V ~ c^power, safeguarded by a bisection bracket (pixel counts are steps).
    """
    low, high = 0.0, np.inf
    scale, best = guess, (np.inf, guess)
    for _ in range(12):
        volume = volume_of(scale)
        error = volume / target - 1.0
        if abs(error) < best[0]:
            best = (abs(error), scale)
        if abs(error) <= tolerance:
            break
        if volume < target:
            low = scale
        else:
            high = scale
        step = scale * (target / max(volume, 1e-3 * target)) ** (1.0 / power)
        if not low < step < high:
            step = 0.5 * (low + high) if np.isfinite(high) else 2.0 * scale
        scale = step
    return best[1]


def rv_thickness(geometry: HeartGeometry, scale: float, profile: np.ndarray) -> np.ndarray:
    """RV crescent thickness on its axis (Z,) float32 mm at scale ``scale``, relative size ``profile`` (Z,)."""
    reference_thickness = geometry.heart.rv_thickness * (geometry.basal_radius + geometry.heart.wall)
    return (scale * reference_thickness * profile).astype(np.float32)


@dataclass(frozen=True)
class Calibration:
    """A frame's calibrated scales, its labels (N,) uint8 and the RV thickness (Z,) of each sub-slice."""

    lv_scale: float
    rv_scale: float
    labels: np.ndarray
    rv_thickness: list[np.ndarray]


def calibrate_frame(geometry: HeartGeometry, reach: HeartReach, frame: FrameFields, depth: np.ndarray,
                    sub_profiles: list[np.ndarray], lv_guess: float, rv_guess: float, voxel_ml: float,
                    inv_pixel: float) -> Calibration:
    """Solve frame t's LV scale, then its RV scale, so that the label volumes meet the volume curves.

    At ED (t = 0) the LV's basal radius is fixed for the later frames (``geometry.basal_radius``).
    Every fraction is first checked against the pixel list (``NeedMorePixels``); ``depth`` (Z,)
    are the slice centres' ED depths, ``sub_profiles`` the RV's relative size at each sub-slice.
    """
    heart, motion, t, pixels = geometry.heart, geometry.motion, frame.t, frame.pixels
    u_centre, ed = frame.u_centre, frame.t == 0

    def lv_volume(scale: float) -> float:
        pixels.require(reach.lv(u_centre, t, scale, ed))
        inside, wall, _, _ = lv_fractions(geometry, frame, scale, inv_pixel, ed)
        won = (inside > 1.0 - inside - wall) & (inside >= wall)
        return float(np.count_nonzero(won)) * voxel_ml

    tolerance = max(0.003, 1.5 * voxel_ml / motion.lv_volume[t])
    lv_scale = solve_scale(lv_volume, motion.lv_volume[t], lv_guess, 2.0, tolerance)
    if ed:
        geometry.basal_radius = lv_scale * geometry.nominal_radius
    pixels.require(reach.lv(u_centre, t, lv_scale))
    inside, wall, epi_centre, present_centre = lv_fractions(geometry, frame, lv_scale, inv_pixel)
    epi_reach = reach.epicardium(u_centre, t, lv_scale)
    rv_centre = geometry.rv_profile(depth, t)

    def rv_label(scale: float) -> np.ndarray:
        thickness = rv_thickness(geometry, scale, rv_centre)
        pixels.require(*reach.rv(epi_reach, thickness, heart.rv_label_margin))
        return rv_fraction(frame, thickness, epi_centre, present_centre, inv_pixel, margin=heart.rv_label_margin)

    def rv_volume(scale: float) -> float:
        pool = rv_label(scale)
        won = (pool > 1.0 - inside - wall - pool) & (pool > inside) & (pool > wall)
        return float(np.count_nonzero(won)) * voxel_ml

    tolerance = max(0.003, 1.5 * voxel_ml / motion.rv_volume[t])
    rv_scale = solve_scale(rv_volume, motion.rv_volume[t], rv_guess, 1.3, tolerance)
    labels = label_argmax(inside, wall, rv_label(rv_scale))
    thickness = [rv_thickness(geometry, rv_scale, profile) for profile in sub_profiles]
    return Calibration(lv_scale, rv_scale, labels, thickness)
