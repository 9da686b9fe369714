"""The phantom's heart: LV/RV geometry, cardiac motion, volume calibration and rendering.

Follows phantom.md B (LV), C (motion) and D (RV), with the parameters that the real ACDC labels
and images fix (issue 14; ``benchmarks/phantom_vs_real.py``, notes/phantom-calibration.md) drawn
from the distributions measured there. Each short-axis slice is a 2D problem in the (right,
anterior) mm frame about the LV long axis; ``s`` is the depth of a plane below the ED base plane
(mm, toward the apex). At frame t the base has descended by ``base[t]`` and the LV cavity spans
``u = (s - base[t]) / length[t]`` in [0, 1]:

- LV endocardium: an ellipse (ellipticity e, twisted about the axis) of area-radius
  ``c(t) * R_b * sqrt(1 - u^p)`` (p = 2 is recipe B's half-ellipsoid; ACDC's LV is more
  cylindrical basally, p ~ 3), made irregular by a few angular harmonics per slice (the
  hand-drawn contours of real labels are not ellipses); ``c(t)`` is solved so that the LV
  *label* volume follows the volume curve (a safeguarded Newton/bisection on pixel counts).
- Myocardium: ED wall thickness w(u), linear from a thick base to a thin apex, modulated around
  the circumference (septal/lateral differences, asymmetric HCM), plus an apical cap. At frame t
  the myocardial area at depth u is ``A_ed(u) * L_ed / L(t)`` (incompressible wall, C), so
  ``r_epi = sqrt(r_endo^2 + A / pi)``. As in the ACDC annotations (MYO label volume ES/ED 1.15),
  the trabecular layer compacts during systole into a solid band ``gain * w(u) * ejected(t)``
  thick inside the endocardium that is drawn and labelled as myocardium: the LV label ends at
  ``r_endo - band``, and small apical cavities close at ES. Basal slices lose a small
  anteroseptal arc of the wall to the LVOT.
- Inside the LV label (ACDC rule: papillary muscles and trabeculae belong to the cavity):
  trabeculae, dark fingers of muscle rising from the endocardium, denser toward the apex, and two
  or three papillary muscles close to the wall in mid and apical slices.
- RV blood pool: a crescent wrapped around the septal side of the LV, from 1 mm outside the LV
  epicardium outward, thickest on the RV axis and thinning to its horns (the RV insertion points)
  at +-``rv_wrap``. It has its own base (slightly below the LV's, descending further at ES: TAPSE
  exceeds MAPSE), tapers linearly to ``rv_extent`` of the LV length and is scaled by its own
  ``c_rv(t)``, calibrated against its own volume curve (never rescaled with the LV). Its blood is
  darker than the LV's and trabeculated along the free wall.
- Around the heart: patchy epicardial fat and a shell of myocardium-like soft tissue
  (pericardium, mediastinum, diaphragm), so that, as in real scans, the epicardial border is
  often low in contrast instead of always bright fat or dark lung.

Shapes are drawn as analytic signed distances turned into per-pixel area fractions (a linear
ramp one pixel wide), so a pixel's coverage is exact where an edge is straight and no fine grid
is needed; through-plane partial volume averages ``S`` sub-slices, and labels are the argmax of
the area fractions of the central sub-slice (recipe F.6). Angular detail (contour harmonics,
trabeculae, fat) is stored per slice as a table over ``N_ANGLES`` angles (:class:`HeartTexture`)
and looked up at each pixel's angle about the LV axis.

Every value drawn for a pixel depends on that pixel alone, so each frame is drawn only on the
box pixels its shapes can reach (bounded per slice from its radii); the others read the
surroundings, exactly as if they had been drawn.

The parts live in sibling modules, this one holds the scene and the frame loop and re-exports the
public names:

- ``phantom_heart_params``: the parameters and the ACDC ranges they are drawn from;
- ``phantom_heart_texture``: per-slice angular tables; ``phantom_heart_motion``: volume curves;
- ``phantom_heart_geometry``: radii along the long axis, the LV pixel frame, the LVOT;
- ``phantom_heart_fractions``: LV/RV area fractions and the volume calibration of a frame;
- ``phantom_heart_paint``: painting a frame's sub-slices; ``phantom_heart_blood_pool``:
  papillary muscles; ``phantom_heart_vessels``: atria and great vessels;
- ``phantom_heart_pixels``: the reach of a frame and its pixel list; ``phantom_heart_frame``:
  the scene and per-frame fields over that list; ``phantom_coverage``: area fractions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrssp.data.phantom_heart_fractions import Calibration, calibrate_frame, rv_thickness
from cmrssp.data.phantom_heart_frame import box_statics, frame_fields, list_scene
from cmrssp.data.phantom_heart_geometry import HeartGeometry
from cmrssp.data.phantom_heart_motion import Motion, heart_motion, volume_curve
from cmrssp.data.phantom_heart_paint import paint_frame
from cmrssp.data.phantom_heart_params import PHENOTYPE_RANGES, PHENOTYPES, RV_FLOW_TEXTURE, HeartParams, draw_heart
from cmrssp.data.phantom_heart_pixels import BoxPixels, HeartReach, NeedMorePixels, near_vessels
from cmrssp.data.phantom_heart_texture import N_ANGLES, HeartTexture, draw_texture
from cmrssp.data.phantom_heart_vessels import vessel_discs, vessel_distances, vessel_slices

__all__ = [
    "N_ANGLES", "PHENOTYPES", "PHENOTYPE_RANGES", "RV_FLOW_TEXTURE", "HeartParams", "HeartScene", "HeartTexture",
    "Motion", "draw_heart", "draw_texture", "heart_motion", "render_heart", "volume_curve",
]

# A frame's pixel list reaches this much farther than it needs (relative, plus a pixel), so that
# the next frames mostly fit in it; a list more than SHRINK too long for a frame is cut back.
GROW = 0.03
SHRINK = 0.85


@dataclass
class HeartScene:
    """Where the heart is drawn: a pixel box per slice and what lies under it.

    Arrays are (Z, H, W) over the box pixels of each slice (Z slices base->apex).
    """

    right: np.ndarray  # mm from the LV axis toward the patient's right
    anterior: np.ndarray  # mm toward anterior
    slice_depth: np.ndarray  # (Z,) ED depth s of each slice centre below the base plane
    sub_offsets: np.ndarray  # (S,) through-plane sub-slice offsets (odd S, centre at S // 2)
    sub_weights: np.ndarray  # (S,) slice profile, sums to 1
    pixel: float  # in-plane spacing (mm)
    slice_spacing: float
    background: np.ndarray  # static surroundings under the heart (signal)
    blood_texture: np.ndarray  # multiplicative low-frequency blood texture
    rv_texture: np.ndarray  # multiplicative low-frequency RV flow texture (on top of blood_texture)
    blood: float
    myocardium: float
    fat: float
    shell: float  # signal of the soft-tissue shell around the heart


def render_heart(heart: HeartParams, motion: Motion, scene: HeartScene, texture: HeartTexture):
    """Render the heart box of every frame (phase order).

    Each frame is calibrated and painted on the box pixels it can reach (``phantom_heart_pixels``);
    the others read the surroundings averaged over the sub-slices, exactly what drawing them would
    give them.

    Returns:
        signal: float32 (T, Z, H, W) noise-free signal over the box, surroundings included;
        labels: uint8 (T, Z, H, W) canonical labels (1 LV, 2 MYO, 3 RV) of the central sub-slice;
        scales: float (T, 2) calibrated LV and RV scale factors.
    """
    geometry = HeartGeometry(heart, motion)
    inv_pixel = 1.0 / scene.pixel
    voxel_ml = scene.pixel**2 * scene.slice_spacing / 1000.0
    depth = scene.slice_depth.astype(np.float64)
    sub_depth = depth[:, None] + scene.sub_offsets[None, :]  # (Z, S) ED depth of each sub-slice
    n_frames = len(motion.lv_volume)
    statics = box_statics(heart, geometry.nominal_radius, scene.right, scene.anterior)
    vessels = vessel_slices(heart, scene.slice_depth, scene.sub_offsets)
    distances = vessel_distances(vessels, vessel_discs(heart, geometry.nominal_radius), statics.radial,
                                 statics.tangential)
    near = near_vessels(distances, scene.right.shape, scene.pixel)
    reach = HeartReach(heart, geometry, texture, scene.pixel)
    box = BoxPixels(scene.right, scene.anterior, statics.wall_profile, reach.metric_to_distance, near)
    surroundings = np.zeros(scene.right.shape, np.float32)  # what a pixel no shape reaches reads
    for weight in scene.sub_weights:
        surroundings += weight * scene.background
    signal = np.empty((n_frames,) + scene.right.shape, np.float32)
    labels = np.zeros((n_frames,) + scene.right.shape, np.uint8)
    scales = np.zeros((n_frames, 2))
    limits = listed = None  # the (heart, rv) reaches of the current pixel list, and its scene
    for t in range(n_frames):
        u_centre = (depth - motion.base[t]) / motion.length[t]
        u_sub = (sub_depth - motion.base[t]) / motion.length[t]
        shape_sum = np.sum(np.pi * geometry.nominal_radius**2 * heart.cavity_profile(u_centre) ** 2)
        lv_guess = np.sqrt(motion.lv_volume[t] * 1000 / max(shape_sum * scene.slice_spacing, 1e-6))
        rv_guess = scales[t - 1, 1] * (motion.rv_volume[t] / motion.rv_volume[t - 1]) if t else 1.0
        sub_profiles = [geometry.rv_profile(depth + offset, t) for offset in scene.sub_offsets]
        if limits is None:  # a first guess from the initial scales
            thickness = [rv_thickness(geometry, rv_guess, profile) for profile in sub_profiles]
            limits = [_grown(part, scene.pixel) for part in _painted_reach(reach, t, u_sub, lv_guess, thickness)]
        while True:  # until the frame fits in its pixel list
            pixels = box.within(*limits)
            if listed is None or listed.pixels is not pixels:
                listed = list_scene(heart, scene, statics, pixels, vessels, distances, near)
            frame = frame_fields(heart, texture, listed, t, motion.twist[t], u_centre, inv_pixel)
            try:
                calibration: Calibration = calibrate_frame(geometry, reach, frame, depth, sub_profiles, lv_guess,
                                                           rv_guess, voxel_ml, inv_pixel)
                needed = _painted_reach(reach, t, u_sub, calibration.lv_scale, calibration.rv_thickness)
                pixels.require(*needed)
                break
            except NeedMorePixels as more:
                limits = [np.maximum(limit, _grown(part, scene.pixel))
                          for limit, part in zip(limits, (more.heart, more.rv))]
        scales[t] = calibration.lv_scale, calibration.rv_scale
        labels[t].reshape(-1)[pixels.flat] = calibration.labels
        # Image: every sub-slice painted over the surroundings, averaged with the slice profile.
        flat, value = paint_frame(geometry, reach, frame, listed, texture, calibration, u_sub, sub_depth,
                                  scene.sub_weights, scene.blood, inv_pixel)
        signal[t] = surroundings
        signal[t].reshape(-1)[flat] = value
        targets = [_grown(part, scene.pixel) for part in needed]
        limits = [np.where(target < SHRINK * limit, target, limit) for target, limit in zip(targets, limits)]
    return signal, labels, scales


def _grown(reach: np.ndarray, pixel: float) -> np.ndarray:
    return reach * (1 + GROW) + pixel


def _painted_reach(reach: HeartReach, t: int, u_sub: np.ndarray, lv_scale: float, thickness: list[np.ndarray]):
    """(heart, rv) reaches (Z,) of the painting of frame t over all its sub-slices (``u_sub`` (Z, S))."""
    around = rv = np.zeros(len(u_sub))
    for k in range(u_sub.shape[1]):
        around_k, rv_k = reach.painted(u_sub[:, k], t, lv_scale, thickness[k])
        around, rv = np.maximum(around, around_k), np.maximum(rv, rv_k)
    return around, rv
