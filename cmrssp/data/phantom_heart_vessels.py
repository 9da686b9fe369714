"""Atria, aortic root and RV outflow tract: the bright structures above the phantom's base plane.

phantom.md D/E: slices above the (moving) base plane cut the great vessels and atria instead of
the ventricles. They are drawn as thin-walled discs at fixed positions relative to the RV
direction, growing in over the first 6 mm above the base, and left unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrssp.data.phantom_coverage import edge_cover, paint


def vessel_slices(heart, slice_depth: np.ndarray, sub_offsets: np.ndarray) -> np.ndarray:
    """The slices (indices) whose sub-slices can lie above the base plane at some frame."""
    return np.flatnonzero(slice_depth - np.abs(sub_offsets).max() < heart.base_descent)


def vessel_discs(heart, nominal_radius: float) -> list[tuple[float, float, float]]:
    """(along the RV direction, across it, radius) mm of each atrium or great vessel."""
    reference = nominal_radius + heart.wall
    return [(along * reference, across * reference, float(radius * reference))
            for along, across, radius in heart.great_vessels]


@dataclass(frozen=True)
class ListedVessels:
    """The great vessels over a pixel list: the listed pixels a vessel can cover, their slice,
    blood signal and distance (mm) to each vessel's centre, with its radius."""

    slices: np.ndarray  # (V,) vessel slice indices (``vessel_slices``)
    pixels: np.ndarray  # (M,) positions in the pixel list
    slice_of: np.ndarray  # (M,) slice of each
    blood: np.ndarray  # (M,) blood signal
    distances: list[tuple[np.ndarray, float]]  # per vessel: (M,) float32 distance, radius


def vessel_distances(slices: np.ndarray, discs, radial: np.ndarray, tangential: np.ndarray):
    """Per vessel: (distance (Z, H, W) mm of every box pixel to its centre, inf off the vessel
    slices; its radius), from the box's (Z, H, W) mm along and across the RV direction."""
    distances = []
    for along, across, radius in discs:
        distance = np.full(radial.shape, np.inf, np.float32)
        distance[slices] = np.sqrt((radial[slices] - along) ** 2 + (tangential[slices] - across) ** 2)
        distances.append((distance, radius))
    return distances


def list_vessels(slices: np.ndarray, distances, near: np.ndarray, pixels, blood: np.ndarray) -> ListedVessels:
    """The vessels over a ``PixelList``, from the box's ``vessel_distances`` and the (Z, H, W) mask
    of pixels ``near`` one (the others no vessel covers); ``blood`` (N,) over the list."""
    listed = np.flatnonzero(pixels.gather(near))
    flat = pixels.flat[listed]
    return ListedVessels(slices, listed, pixels.slice_of[listed], blood[listed],
                         [(distance.reshape(-1)[flat], radius) for distance, radius in distances])


def subset_vessels(vessels: ListedVessels, positions: np.ndarray) -> ListedVessels:
    """The vessels over the sub-list at sorted ``positions`` of their pixel list."""
    where = np.minimum(np.searchsorted(positions, vessels.pixels), max(len(positions) - 1, 0))
    kept = np.flatnonzero(positions[where] == vessels.pixels) if len(positions) else np.zeros(0, int)
    return ListedVessels(vessels.slices, where[kept], vessels.slice_of[kept], vessels.blood[kept],
                         [(distance[kept], radius) for distance, radius in vessels.distances])


def vessel_growth(slices: np.ndarray, height_above_base: np.ndarray, n_slices: int) -> np.ndarray:
    """Per slice (Z,) float32: how far each vessel has grown in (0 below the base, 1 from 6 mm above it)."""
    growth = np.zeros(n_slices, np.float32)
    growth[slices] = np.sqrt(np.clip(height_above_base[slices] / 6.0, 0, 1)).astype(np.float32)
    return growth


def paint_great_vessels(value: np.ndarray, vessels: ListedVessels, growth: np.ndarray, myocardium: float,
                        inv_pixel: float) -> None:
    """Atria, aortic root and RV outflow above the base plane: bright, thin-walled, unlabelled.

    ``value`` (N,) is painted in place; ``growth`` (Z,) from ``vessel_growth``.
    """
    if len(vessels.slices) == 0 or not growth[vessels.slices].any():
        return
    grown = growth[vessels.slice_of]
    inside = grown > 0
    part = value[vessels.pixels]
    for distance, radius in vessels.distances:
        paint(part, edge_cover(grown * (radius + 2.0) - distance, inv_pixel) * inside, myocardium)
        paint(part, edge_cover(grown * radius - distance, inv_pixel) * inside, vessels.blood)
    value[vessels.pixels] = part
