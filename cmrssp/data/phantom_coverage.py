"""Area fractions from signed distances, the painter's algorithm and the label argmax.

The phantom draws every shape (heart and surroundings) as an analytic signed distance turned into
a per-pixel area fraction - a linear ramp one pixel wide (phantom.md F.6) - so a pixel's coverage
is exact where an edge is straight and no fine grid is needed. Tissues are then painted from the
outside in, each over what lies below it.
"""

from __future__ import annotations

import numpy as np


def edge_cover(distance_inside: np.ndarray, inv_pixel: float, out: np.ndarray | None = None) -> np.ndarray:
    """Area fraction of a pixel whose centre lies ``distance_inside`` mm inside an edge (into ``out``,
    which may be ``distance_inside`` itself)."""
    out = np.multiply(distance_inside, inv_pixel, out=out)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def shape_cover(radius: np.ndarray, metric: np.ndarray, inv_pixel: float) -> np.ndarray:
    """Area fraction of a shape of size ``radius`` given a distance-like ``metric`` (per pixel, float32).

    The edge ramp alone would leave a half-covered pixel at the centre of a vanishing shape, so
    shapes smaller than a pixel fade out with their size.
    """
    radius = np.asarray(radius, np.float32)
    cover = edge_cover(radius - metric, inv_pixel)
    fade = 2.0 * radius
    fade *= inv_pixel
    cover *= np.clip(fade, 0.0, 1.0, out=fade)
    return cover


def paint(value: np.ndarray, coverage: np.ndarray, tissue, scratch: np.ndarray | None = None) -> None:
    """Painter's algorithm: ``value <- value + coverage * (tissue - value)`` in place (``scratch``: an
    optional work array of value's shape)."""
    delta = np.subtract(tissue, value, out=scratch)
    delta *= coverage
    value += delta


def label_argmax(lv: np.ndarray, myo: np.ndarray, rv: np.ndarray) -> np.ndarray:
    """Argmax of the area fractions (background, LV, MYO, RV); ties go to the lower label."""
    background = 1.0 - lv - myo - rv
    labels = np.zeros(lv.shape, np.uint8)
    best = background
    for label, fraction in ((1, lv), (2, myo), (3, rv)):
        wins = fraction > best
        labels[wins] = label
        best = np.where(wins, fraction, best)
    return labels
