"""Painting one through-plane sub-slice of the phantom heart over its surroundings.

phantom.md B-E, F.2: from the outside in - paracardiac fat, the myocardium-like shell, epicardial
fat (thinner over the RV free wall), the RV wall and trabeculated pool, the LV wall (blood in the
LVOT gap), the LV cavity with its apical darkening, and the muscle inside it (trabecular strands,
the band compacted at ES, papillary muscles), then the great vessels above the base. The
renderer averages the sub-slices with the slice profile.

Per-pixel arrays are (N,) float32 over the frame's pixel list (``phantom_heart_pixels``), cut
down to the pixels the painting can cover (``painted_pixels``; the others keep their
surroundings).
"""

from __future__ import annotations

import numpy as np

from cmrssp.data.phantom_coverage import edge_cover, paint, shape_cover
from cmrssp.data.phantom_heart_fractions import Calibration, lv_fields, rv_fraction
from cmrssp.data.phantom_heart_frame import FrameFields, FrameTissue, ListedScene, frame_tissue, subset
from cmrssp.data.phantom_heart_geometry import HeartGeometry
from cmrssp.data.phantom_heart_params import SEPTAL_GAP_MM
from cmrssp.data.phantom_heart_pixels import HeartReach, painted_pixels
from cmrssp.data.phantom_heart_vessels import paint_great_vessels, vessel_growth


def paint_sub_slice(geometry: HeartGeometry, frame: FrameFields, scene: ListedScene, tissue: FrameTissue,
                    u: np.ndarray, sub_depth: np.ndarray, lv_scale: float, rv_thickness: np.ndarray,
                    inv_pixel: float) -> np.ndarray:
    """The signal (N,) of the sub-slice at depths u (Z,) (ED depth ``sub_depth``, mm) of frame t.

    ``rv_thickness`` (Z,) float32 is the RV crescent thickness on its axis at this sub-slice.
    """
    heart, metric, per_pixel = geometry.heart, frame.metric, frame.pixels.per_pixel
    endo_field, epi_field, band, present = lv_fields(geometry, frame, u, lv_scale)
    present3 = per_pixel(present)
    wall_outer = epi_field + np.float32(SEPTAL_GAP_MM)
    wall_outer *= present3
    rv_present = rv_thickness > 0
    rv_wall = per_pixel(rv_thickness + np.float32(heart.rv_wall) * rv_present)
    rv_wall *= scene.wall_profile
    wall_outer += rv_wall
    value = scene.background.copy()
    work = np.empty_like(value)  # paint's scratch
    # Thin fat or shell fades out with its thickness (no half-pixel rim where there is none).
    fat, shell = tissue.fat, tissue.shell
    layers = wall_outer + fat
    layers += shell
    cover = layers + tissue.outer_fat
    cover -= metric
    edge_cover(cover, inv_pixel, out=cover)
    cover *= tissue.outer_fade
    cover *= present3
    paint(value, cover, scene.fat, work)
    edge_cover(np.subtract(layers, metric, out=cover), inv_pixel, out=cover)
    cover *= tissue.shell_fade
    cover *= present3
    paint(value, cover, scene.shell, work)
    cover = np.multiply(fat, scene.fat_rv, out=cover)
    cover += wall_outer
    cover -= metric
    edge_cover(cover, inv_pixel, out=cover)
    cover *= tissue.fat_fade
    cover *= scene.fat_rv
    cover *= present3
    paint(value, cover, scene.fat, work)
    edge_cover(np.subtract(wall_outer, metric, out=cover), inv_pixel, out=cover)
    cover *= per_pixel(rv_present)
    paint(value, cover, scene.myocardium, work)
    pool, rv_muscle = rv_fraction(frame, rv_thickness, epi_field, present, inv_pixel, tissue.rv_trabeculae,
                                  tissue.rv_gaps, tissue.rv_gap_fade)
    paint(value, pool, scene.rv_blood, work)
    paint(value, np.multiply(pool, rv_muscle, out=rv_muscle), scene.myocardium, work)
    paint(value, shape_cover(epi_field, metric, inv_pixel), tissue.wall_value, work)
    darkening = (1.0 - heart.apical_darkening * np.clip(u, 0, 1) ** 2).astype(np.float32)
    cavity = shape_cover(endo_field, metric, inv_pixel)
    paint(value, cavity, scene.blood * per_pixel(darkening), work)
    from_wall = endo_field - metric  # depth inside the compact wall's endocardium
    strands = edge_cover(tissue.trabeculae - from_wall, inv_pixel)
    strands *= tissue.trabecula_fade
    detached = edge_cover(np.subtract(tissue.gaps, from_wall, out=cover), inv_pixel, out=cover)
    detached *= tissue.gap_fade
    strands *= np.subtract(1.0, detached, out=detached)  # detached strands: blood below the gap
    compacted = edge_cover(np.subtract(band, from_wall, out=from_wall), inv_pixel, out=from_wall)
    fade = band * inv_pixel
    compacted *= np.clip(fade, 0, 1, out=fade)
    muscle = np.maximum(strands, compacted, out=strands)
    np.maximum(muscle, tissue.papillary, out=muscle)
    muscle *= cavity
    paint(value, muscle, scene.myocardium, work)
    growth = vessel_growth(scene.vessels.slices, geometry.motion.base[frame.t] - sub_depth, len(u))
    paint_great_vessels(value, scene.vessels, growth, scene.myocardium, inv_pixel)
    return value


def paint_frame(geometry: HeartGeometry, reach: HeartReach, frame: FrameFields, listed: ListedScene, texture,
                calibration: Calibration, u_sub: np.ndarray, sub_depth: np.ndarray, sub_weights: np.ndarray,
                blood: float, inv_pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame t's signal averaged over its sub-slices (``u_sub``, ``sub_depth`` (Z, S), weights (S,)).

    Returns ``(flat, signal)``: the box indices (M,) of the pixels it paints and their signal (M,)
    float32; every other box pixel keeps its surroundings. ``blood`` is the LV blood signal.
    """
    t = frame.t
    growing = np.any([vessel_growth(listed.vessels.slices, geometry.motion.base[t] - sub_depth[:, k], len(u_sub)) > 0
                      for k in range(u_sub.shape[1])], axis=0)
    painted = painted_pixels(reach, frame, u_sub, calibration.lv_scale, calibration.rv_thickness, listed.wall_profile)
    painted[listed.vessels.pixels[growing[listed.vessels.slice_of]]] = True
    frame, listed = subset(frame, listed, np.flatnonzero(painted))
    endo_centre = geometry.lv_radii(frame.u_centre, t, calibration.lv_scale)[0]
    tissue = frame_tissue(geometry.heart, geometry.motion, texture, frame, listed, blood, endo_centre, inv_pixel)
    accumulated = np.zeros(len(frame.metric), np.float32)
    for k, weight in enumerate(sub_weights):
        value = paint_sub_slice(geometry, frame, listed, tissue, u_sub[:, k], sub_depth[:, k], calibration.lv_scale,
                                calibration.rv_thickness[k], inv_pixel)
        accumulated += weight * value
    return frame.pixels.flat, accumulated
