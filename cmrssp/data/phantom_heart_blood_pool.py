"""Muscle inside the phantom's LV blood pool: the papillary muscles.

ACDC's rule (phantom.md B, data-formats.md): papillary muscles and trabeculae belong to the LV
cavity label, so they darken the blood pool without changing the labels. Per-pixel arrays are
(N,) float32 over a frame's pixel list, in the LV frame of ``phantom_heart_geometry.lv_frame``.
"""

from __future__ import annotations

import numpy as np

from cmrssp.data.phantom_coverage import edge_cover
from cmrssp.data.phantom_heart_geometry import direction
from cmrssp.data.phantom_heart_motion import Motion
from cmrssp.data.phantom_heart_params import HeartParams


def papillary_cover(heart: HeartParams, motion: Motion, t: int, along, across, endo, u_centre, inv_pixel,
                    ranges) -> np.ndarray:
    """Coverage of the 2-3 papillary muscles (dark blobs near the wall, labelled LV) in mid and apical slices.

    Their cross-section grows as the ventricle shortens (incompressible muscle); they stay clear
    of the centre of small apical cavities. ``ranges[z]`` selects slice z's pixels.
    """
    cover = np.zeros(along.shape, np.float32)
    radius = heart.papillary_radius * float(np.sqrt(heart.length / motion.length[t]))
    for z in np.flatnonzero((u_centre > 0.2) & (u_centre < 0.85)):
        part = ranges[z]
        size = min(radius, 0.35 * float(endo[z]))
        offset = max(float(endo[z]) - 1.1 * size, 0.45 * float(endo[z]))
        for angle in heart.papillary_angles:
            dx, dy = direction(heart, angle)
            distance = np.sqrt((along[part] - offset * dx) ** 2 + (across[part] - offset * dy) ** 2)
            np.maximum(cover[part], edge_cover(size - distance, inv_pixel), out=cover[part])
    return cover
