"""Geometry of the phantom heart's walls: LV/RV radii along the long axis, the LV pixel frame, LVOT.

phantom.md B-D (see ``phantom_heart`` for the model). Depth ``u`` is the position along the LV
cavity at frame t, 0 at the (moving) base plane and 1 at the endocardial apex; radii are in mm.
Per-pixel arrays are float32 over a frame's pixel list (N,) (``phantom_heart_pixels``), per-slice
values (Z,).
"""

from __future__ import annotations

import numpy as np

from cmrssp.data.phantom_coverage import edge_cover
from cmrssp.data.phantom_heart_motion import Motion
from cmrssp.data.phantom_heart_params import HeartParams


class HeartGeometry:
    """Geometry of one heart; radii as functions of depth u and frame."""

    def __init__(self, heart: HeartParams, motion: Motion):
        self.heart, self.motion = heart, motion
        self.nominal_radius = heart.nominal_radius
        self.basal_radius = self.nominal_radius  # R_b at ED, fixed after the ED calibration
        self.apical_wall = float(heart.wall_thickness(1.0))

    def myo_area_ed(self, u: np.ndarray, basal_radius: float) -> np.ndarray:
        """ED myocardial cross-section area (mm^2) at depth u: a ring above u = 1, a cap beyond."""
        length = self.heart.length
        endo = basal_radius * self.heart.cavity_profile(u)
        ring = np.pi * ((endo + self.heart.wall_thickness(u)) ** 2 - endo**2)
        cap = np.pi * np.clip(self.apical_wall**2 - ((u - 1) * length) ** 2, 0, None)
        return np.where(u < 0, 0.0, np.where(u <= 1, ring, cap))

    def lv_radii(self, u: np.ndarray, t: int, scale: float, calibrating_ed: bool = False):
        """(endocardial area-radius (mm), compact myocardial area (mm^2)) at depths u of frame t."""
        basal = scale * self.nominal_radius
        squeeze = 1 - self.heart.apical_contraction * self.motion.lv_ejected[t] * np.clip(u, 0, 1) ** 2
        endo = basal * self.heart.cavity_profile(u) * squeeze
        reference = basal if calibrating_ed else self.basal_radius
        area = self.myo_area_ed(u, reference) * (self.heart.length / self.motion.length[t])
        return endo, area

    def rv_profile(self, depth: np.ndarray, t: int) -> np.ndarray:
        """RV size along the long axis at ED depths ``depth`` of frame t: 1 at its base, 0 at its apex.

        The RV base lies ``rv_base_offset`` below the LV's at ED and descends with the RV's
        ejection by the LV's descent plus ``rv_extra_descent``; the apex stays put.
        """
        heart = self.heart
        base = heart.rv_base_offset + self.motion.rv_ejected[t] * (heart.base_descent + heart.rv_extra_descent)
        apex = heart.rv_extent * heart.length
        return np.clip((apex - depth) / max(apex - base, 1.0), 0, 1) * (depth >= base)


def crescent_profile(angle: np.ndarray, half_angle: float) -> np.ndarray:
    """Relative RV crescent thickness at ``angle`` from its axis: flat-topped, 0 at +-half_angle."""
    return np.sqrt(np.clip(1.0 - (angle / half_angle) ** 3, 0.0, None)).astype(np.float32)


def lv_frame(heart: HeartParams, right: np.ndarray, anterior: np.ndarray, twist: float, u_centre: np.ndarray,
             per_pixel):
    """Pixel coordinates along/across the (twisted) LV ellipse axes, the ellipse metric and angle.

    ``right``, ``anterior`` are the pixels' mm from the LV axis; ``per_pixel`` spreads a per-slice
    (Z,) value over them. The metric ``sqrt(along^2 / e + across^2 * e)`` is the area-radius of
    the ellipse through a pixel, so ``radius - metric`` approximates the signed distance to an
    ellipse of area pi r^2; the angle is that of the pixel on the ellipse-normalised circle, in
    [-pi, pi].
    """
    angle = heart.ellipse_angle + twist * (1 - 2 * np.clip(u_centre, 0, 1))
    cos_a = per_pixel(np.cos(angle).astype(np.float32))
    sin_a = per_pixel(np.sin(angle).astype(np.float32))
    along = right * cos_a + anterior * sin_a
    across = -right * sin_a + anterior * cos_a
    e = np.float32(heart.ellipticity)
    root = np.sqrt(e)
    return along, across, np.sqrt(along * along / e + across * across * e), np.arctan2(across * root, along / root)


def direction(heart: HeartParams, angle: float) -> tuple[float, float]:
    """Unit vector of an anatomical direction (from +right toward +anterior) in the LV frame."""
    relative = angle - heart.ellipse_angle
    return float(np.cos(relative)), float(np.sin(relative))


def lvot_gap(heart: HeartParams, u_centre, along, across, inv_pixel, ranges) -> np.ndarray:
    """Fraction of myocardium kept: basal slices show a ring open toward the LVOT.

    ``ranges[z]`` selects slice z's pixels of the per-pixel arrays.

    The opening's half-angle shrinks linearly from ``lvot_half_angle`` at the base plane to 0 at
    ``lvot_depth``, so the myocardial area rises smoothly from the base instead of stepping (no
    jump in the ED and ES label mass). ACDC's most basal labelled slices keep nearly full rings.
    """
    kept = np.ones(along.shape, np.float32)
    halfwidth = heart.lvot_half_angle * np.clip(1 - u_centre / heart.lvot_depth, 0, 1) * (u_centre >= 0)
    dx, dy = direction(heart, heart.lvot_angle)
    for z in np.flatnonzero(halfwidth > 0):
        part = ranges[z]
        radius = np.sqrt(along[part] ** 2 + across[part] ** 2)
        angle = np.arccos(np.clip((along[part] * dx + across[part] * dy) / (radius + 1e-6), -1, 1))
        kept[part] = edge_cover(radius * (angle - np.float32(halfwidth[z])), inv_pixel)
    return kept
