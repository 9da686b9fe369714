"""The phantom's surroundings: torso, fat, chest wall, lungs, liver, stomach, spine, aorta.

phantom.md E. Unlike the heart, these are modelled in world (RAS) coordinates relative to the LV
base centre, as vertical cylinders cut by the oblique short-axis planes: the torso, spine and
aorta are axial ellipses extruded along z; the lungs end, and the liver and stomach begin, at two
diaphragm domes. Evaluating them at each pixel's world position therefore gives the elongated
oblique cross-sections, the drift of the spine between slices and the liver appearing in the
inferior (apical) slices that real SAX stacks show. Edges are analytic area fractions (a ramp
one pixel wide on the first-order distance to each ellipse), as for the heart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrssp.data.phantom_coverage import edge_cover, paint

# Relative bSSFP signal (blood = 1) of each tissue; drawn per subject in phantom.py (recipe F).
TISSUES = ("blood", "myocardium", "fat", "muscle", "soft", "lung", "vessel", "liver", "stomach", "marrow", "cortex")


@dataclass(frozen=True)
class BodyParams:
    """Geometry of the surroundings in mm, world axes (x right, y anterior, z superior) about the LV base."""

    torso_centre: tuple[float, float]
    torso_axes: tuple[float, float]
    fat: float  # subcutaneous fat rim
    muscle: float  # chest wall
    dome_right: float  # z of the right (liver) hemidiaphragm top
    dome_left: float
    dome_radius: float  # curvature radius of the domes
    stomach_centre: tuple[float, float]
    stomach_radius: float
    spine_centre: tuple[float, float]
    spine_radius: float
    aorta_centre: tuple[float, float]
    aorta_radius: float
    vessels_per_lung: int


def draw_body(rng: np.random.Generator, male: bool) -> BodyParams:
    """Body size, fat and organ positions (phantom.md E, G)."""
    u = rng.uniform
    lateral, ap = u(150, 200) if male else u(140, 185), u(105, 140) if male else u(100, 130)
    fat = u(5, 20) if male else u(8, 25)
    # The LV base centre sits left of the midline, 85-110 mm behind the skin of the anterior chest.
    centre = (u(25, 50), u(85, 110) - ap)
    spine_radius = u(15, 20)
    spine = (centre[0] + u(-5, 5), centre[1] - ap + fat + u(45, 60))
    return BodyParams(
        torso_centre=centre,
        torso_axes=(lateral, ap),
        fat=fat,
        muscle=u(5, 15),
        dome_right=u(-50, -30),
        dome_left=u(-75, -55),
        dome_radius=u(110, 150),
        stomach_centre=(centre[0] - 0.6 * lateral, centre[1] + u(-0.2, 0.1) * ap),
        stomach_radius=u(30, 45),
        spine_centre=spine,
        spine_radius=spine_radius,
        aorta_centre=(spine[0] - u(18, 28), spine[1] + spine_radius + u(5, 15)),
        aorta_radius=u(10, 15),
        vessels_per_lung=int(rng.integers(5, 21)),
    )


def _ellipse_depth(x, y, centre, axes) -> np.ndarray:
    """First-order signed distance (mm) inside an axis-aligned ellipse (positive inside).

    ``(1 - rho) * rho / |grad rho|`` with ``rho`` the normalised radius; computed in place (the
    same operations in the same order as the plain expression).
    """
    dx = x - centre[0]
    dx /= axes[0]
    dy = y - centre[1]
    dy /= axes[1]
    rho = dx * dx
    rho += dy * dy
    np.sqrt(rho, out=rho)
    dx /= axes[0]
    dx *= dx
    dy /= axes[1]
    dy *= dy
    dx += dy
    gradient = np.sqrt(dx, out=dx)
    gradient += 1e-9
    depth = 1.0 - rho
    depth *= rho
    depth /= gradient
    return depth


def _squared_distance(x, y, centre) -> np.ndarray:
    """``(x - cx)**2 + (y - cy)**2`` (mm^2), computed in place."""
    dx = x - centre[0]
    dx *= dx
    dy = y - centre[1]
    dy *= dy
    dx += dy
    return dx


def _distance(x, y, centre) -> np.ndarray:
    """Distance (mm) of (x, y) from ``centre``."""
    squared = _squared_distance(x, y, centre)
    return np.sqrt(squared, out=squared)


def _dome_height(x, y, top: float, peak: tuple[float, float], radius: float) -> np.ndarray:
    """z of a diaphragm dome (a paraboloid cap) over (x, y)."""
    fall = _squared_distance(x, y, peak)
    fall /= 2 * radius
    return top - fall


def body_signal(body: BodyParams, values: dict[str, float], x, y, z, pixel: float):
    """Noise-free signal of the surroundings at world points (any equal shapes, float32).

    Returns ``(signal, lung)``: the signal and the lung coverage (for placing lung vessels).
    """
    inv = 1.0 / pixel
    cx, cy = body.torso_centre
    lateral, ap = body.torso_axes
    torso = _ellipse_depth(x, y, body.torso_centre, body.torso_axes)
    value = np.zeros(x.shape, np.float32)
    paint(value, edge_cover(torso, inv), values["fat"])
    paint(value, edge_cover(torso - body.fat, inv), values["muscle"])
    inner = edge_cover(torso - body.fat - body.muscle, inv)
    paint(value, inner, values["soft"])

    right_peak = (cx + 0.35 * lateral, cy)
    left_peak = (cx - 0.35 * lateral, cy)
    right_dome = _dome_height(x, y, body.dome_right, right_peak, body.dome_radius)
    left_dome = _dome_height(x, y, body.dome_left, left_peak, body.dome_radius)
    lung = np.zeros(x.shape, np.float32)
    for side, dome in ((1.0, right_dome), (-1.0, left_dome)):
        centre = (cx + side * 0.5 * lateral, cy - 0.05 * ap)
        one = edge_cover(_ellipse_depth(x, y, centre, (0.42 * lateral, 0.8 * ap)), inv) * edge_cover(z - dome, inv)
        np.maximum(lung, one, out=lung)
    lung *= inner
    paint(value, lung, values["lung"])

    # Below the right dome: liver; below the left dome: the stomach, fluid-filled or air.
    liver_extent = _ellipse_depth(x, y, (cx + 0.3 * lateral, cy - 0.05 * ap), (0.7 * lateral, 0.85 * ap))
    liver = edge_cover(right_dome - z, inv) * edge_cover(liver_extent, inv) * inner
    paint(value, liver, values["liver"])
    stomach_depth = body.stomach_radius - _distance(x, y, body.stomach_centre)
    paint(value, edge_cover(stomach_depth, inv) * edge_cover(left_dome - z, inv) * inner, values["stomach"])

    spine_distance = _distance(x, y, body.spine_centre)
    paint(value, edge_cover(body.spine_radius - spine_distance, inv), values["cortex"])
    paint(value, edge_cover(body.spine_radius - 2.5 - spine_distance, inv), values["marrow"])
    aorta_distance = _distance(x, y, body.aorta_centre)
    paint(value, edge_cover(body.aorta_radius - aorta_distance, inv), values["blood"] * 0.95)
    return value, lung


def add_lung_vessels(
    rng: np.random.Generator, signal: np.ndarray, lung: np.ndarray, count: int, pixel: float, value: float
) -> None:
    """Paint ``count`` bright vessel dots (2-5 mm) per slice inside the lungs, in place.

    ``signal`` and ``lung`` are (Z, X, Y); dots are stamped in small windows (cheap).
    """
    inv = 1.0 / pixel
    for z in range(signal.shape[0]):
        candidates = np.flatnonzero(lung[z] > 0.95)
        if len(candidates) == 0:
            continue
        for flat in rng.choice(candidates, size=min(2 * count, len(candidates)), replace=False):
            radius = rng.uniform(1.0, 2.5)
            i, j = np.unravel_index(flat, lung[z].shape)
            half = int(np.ceil(radius * inv)) + 1
            i0, i1 = max(i - half, 0), min(i + half + 1, signal.shape[1])
            j0, j1 = max(j - half, 0), min(j + half + 1, signal.shape[2])
            offset_i, offset_j = rng.uniform(-0.5, 0.5, size=2)
            di = (np.arange(i0, i1) - i - offset_i)[:, None] * pixel
            dj = (np.arange(j0, j1) - j - offset_j)[None, :] * pixel
            cover = edge_cover(radius - np.sqrt(di * di + dj * dj), inv) * lung[z, i0:i1, j0:j1]
            paint(signal[z, i0:i1, j0:j1], cover, value)
