"""A frame of the phantom heart on its pixel list: the listed scene and the per-frame fields.

``render_heart`` draws each frame on a list of box pixels (``phantom_heart_pixels``). This module
gathers what the drawing needs at those pixels: the static scene (``ListedScene``, gathered once
per list), the frame's LV coordinates and angular lookups (``FrameFields``, phantom.md B) and the
detail painted into it (``FrameTissue``). Every array is (N,) over the list; per-slice values are
spread over it with ``PixelList.per_pixel``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrssp.data.phantom_heart_blood_pool import papillary_cover
from cmrssp.data.phantom_heart_geometry import crescent_profile, lv_frame, lvot_gap
from cmrssp.data.phantom_heart_motion import Motion
from cmrssp.data.phantom_heart_params import FAT_OVER_RV, TRABECULA_SYSTOLIC_GROWTH, HeartParams
from cmrssp.data.phantom_heart_pixels import PixelList
from cmrssp.data.phantom_heart_texture import N_ANGLES, HeartTexture
from cmrssp.data.phantom_heart_vessels import ListedVessels, list_vessels, subset_vessels


@dataclass(frozen=True)
class BoxStatics:
    """Per-pixel (Z, H, W) arrays of the whole box that no frame changes (the RV does not twist)."""

    radial: np.ndarray  # mm along the RV direction
    tangential: np.ndarray  # mm across it
    rv_profile: np.ndarray  # relative RV crescent thickness at each pixel's angle
    wall_profile: np.ndarray  # the same for the RV free wall (a little wider)
    fat_rv: np.ndarray  # epicardial fat thickness factor, less over the RV free wall


def box_statics(heart: HeartParams, nominal_radius: float, right: np.ndarray, anterior: np.ndarray) -> BoxStatics:
    """The static arrays of a box of pixels at ``right``, ``anterior`` mm from the LV axis."""
    # Angle of each pixel about the LV axis from the RV direction (static: the RV does not twist).
    radial = right * np.float32(np.cos(heart.rv_angle)) + anterior * np.float32(np.sin(heart.rv_angle))
    tangential = -right * np.float32(np.sin(heart.rv_angle)) + anterior * np.float32(np.cos(heart.rv_angle))
    angle = np.abs(np.arctan2(tangential, radial))
    rv_profile = crescent_profile(angle, heart.rv_wrap)
    wall_profile = crescent_profile(angle, heart.rv_wrap + heart.rv_wall / (nominal_radius + heart.wall))
    fat_rv = 1.0 - np.float32(1.0 - FAT_OVER_RV) * wall_profile  # less epicardial fat over the RV free wall
    return BoxStatics(radial, tangential, rv_profile, wall_profile, fat_rv)


@dataclass(frozen=True)
class ListedScene:
    """The static scene over a pixel list: coordinates, surroundings, tissue signals, RV profiles."""

    pixels: PixelList
    right: np.ndarray  # mm from the LV axis toward the patient's right
    anterior: np.ndarray  # mm toward anterior
    background: np.ndarray  # signal of the surroundings
    blood: np.ndarray  # LV blood signal with its low-frequency texture
    rv_blood: np.ndarray  # RV blood signal (darker, with the RV flow texture)
    rv_profile: np.ndarray  # relative RV crescent thickness at each pixel's angle
    wall_profile: np.ndarray  # the same for the RV free wall
    fat_rv: np.ndarray  # epicardial fat thickness factor
    vessels: ListedVessels
    myocardium: float
    fat: float
    shell: float


def list_scene(heart: HeartParams, scene, statics: BoxStatics, pixels: PixelList, vessels: np.ndarray, distances,
               near: np.ndarray) -> ListedScene:
    """``scene`` (a ``HeartScene``) and the ``statics`` over ``pixels``, with the great vessels
    (``phantom_heart_vessels.list_vessels``)."""
    blood_texture = pixels.gather(scene.blood_texture)
    blood = scene.blood * blood_texture
    return ListedScene(
        pixels=pixels,
        right=pixels.gather(scene.right),
        anterior=pixels.gather(scene.anterior),
        background=pixels.gather(scene.background),
        blood=blood,
        rv_blood=scene.blood * np.float32(heart.rv_blood) * blood_texture * pixels.gather(scene.rv_texture),
        rv_profile=pixels.gather(statics.rv_profile),
        wall_profile=pixels.gather(statics.wall_profile),
        fat_rv=pixels.gather(statics.fat_rv),
        vessels=list_vessels(vessels, distances, near, pixels, blood),
        myocardium=scene.myocardium,
        fat=scene.fat,
        shell=scene.shell,
    )


@dataclass(frozen=True)
class FrameFields:
    """One frame's per-pixel LV frame and angular lookups on its pixel list.

    Attributes:
        t: frame (phase order); u_centre: (Z,) depth u of each slice centre.
        pixels: the pixel list every (N,) array is over.
        along, across, metric: LV-frame coordinates and ellipse metric (mm, ``lv_frame``).
        index: flat index into the (Z, N_ANGLES) texture tables at each pixel's angle.
        endo_shape, wall_shape: the endocardial and wall tables there.
        myo_kept: myocardium kept outside the LVOT opening (``lvot_gap``).
        rv_profile: relative RV crescent thickness at each pixel's angle (static).
    """

    t: int
    u_centre: np.ndarray
    pixels: PixelList
    along: np.ndarray
    across: np.ndarray
    metric: np.ndarray
    index: np.ndarray
    endo_shape: np.ndarray
    wall_shape: np.ndarray
    myo_kept: np.ndarray
    rv_profile: np.ndarray


def lookup(table: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """Per-pixel values of a (Z, N_ANGLES) table at precomputed flat indices (N,)."""
    return table.ravel()[flat_index]


def frame_fields(heart: HeartParams, texture: HeartTexture, listed: ListedScene, t: int, twist: float,
                 u_centre: np.ndarray, inv_pixel: float) -> FrameFields:
    """Frame t's fields over ``listed``'s pixels; ``twist`` (rad) and ``u_centre`` (Z,) are the frame's."""
    pixels = listed.pixels
    along, across, metric, theta = lv_frame(heart, listed.right, listed.anterior, twist, u_centre, pixels.per_pixel)
    rows = pixels.per_pixel(np.arange(len(u_centre)) * N_ANGLES)
    index = rows + np.minimum(((theta + np.pi) * (N_ANGLES / (2 * np.pi))).astype(np.int32), N_ANGLES - 1)
    endo_shape, wall_shape = lookup(texture.endo_shape, index), lookup(texture.wall_shape, index)
    myo_kept = lvot_gap(heart, u_centre, along, across, inv_pixel, pixels.ranges)
    return FrameFields(t, u_centre, pixels, along, across, metric, index, endo_shape, wall_shape, myo_kept,
                       listed.rv_profile)


def subset(frame: FrameFields, listed: ListedScene, positions: np.ndarray) -> tuple[FrameFields, ListedScene]:
    """A frame's fields and listed scene on the pixels at sorted ``positions`` of its list."""
    def take(array):
        return np.take(array, positions)

    pixels = frame.pixels.subset(positions)
    fields = FrameFields(frame.t, frame.u_centre, pixels, take(frame.along), take(frame.across), take(frame.metric),
                         take(frame.index), take(frame.endo_shape), take(frame.wall_shape), take(frame.myo_kept),
                         take(frame.rv_profile))
    scene = ListedScene(pixels, take(listed.right), take(listed.anterior), take(listed.background),
                        take(listed.blood), take(listed.rv_blood), fields.rv_profile, take(listed.wall_profile),
                        take(listed.fat_rv), subset_vessels(listed.vessels, positions), listed.myocardium,
                        listed.fat, listed.shell)
    return fields, scene


@dataclass(frozen=True)
class FrameTissue:
    """One frame's per-pixel detail for painting: texture lookups (trabeculae grown with systole,
    fat and shell with the fades of thin layers), papillary muscles, and the LV wall signal with
    its LVOT gap."""

    trabeculae: np.ndarray
    trabecula_fade: np.ndarray
    gaps: np.ndarray
    gap_fade: np.ndarray
    rv_trabeculae: np.ndarray
    rv_gaps: np.ndarray
    rv_gap_fade: np.ndarray
    fat: np.ndarray
    shell: np.ndarray
    outer_fat: np.ndarray
    fat_fade: np.ndarray
    shell_fade: np.ndarray
    outer_fade: np.ndarray
    papillary: np.ndarray
    wall_value: np.ndarray


def frame_tissue(heart: HeartParams, motion: Motion, texture: HeartTexture, frame: FrameFields, listed: ListedScene,
                 blood: float, endo_centre: np.ndarray, inv_pixel: float) -> FrameTissue:
    """The detail of ``frame`` (``blood``: the LV blood signal; ``endo_centre`` (Z,): the
    endocardial radius of each slice centre)."""
    t, index = frame.t, frame.index
    trabeculae, rv_trabeculae = lookup(texture.trabeculae, index), lookup(texture.rv_trabeculae, index)
    gaps, rv_gaps = lookup(texture.trabecula_gaps, index), lookup(texture.rv_trabecula_gaps, index)
    gap_fade = np.clip(gaps * inv_pixel, 0, 1)
    fat, shell, outer_fat = (lookup(table, index) for table in (texture.fat, texture.shell, texture.outer_fat))
    fat_fade, shell_fade = np.clip(fat * inv_pixel, 0, 1), np.clip(shell * inv_pixel, 0, 1)
    outer_fade = np.clip(outer_fat * inv_pixel, 0, 1)
    growth = np.float32(1.0 + TRABECULA_SYSTOLIC_GROWTH * motion.lv_ejected[t])
    trabeculae *= growth
    gaps *= growth
    rv_growth = np.float32(1.0 + TRABECULA_SYSTOLIC_GROWTH * motion.rv_ejected[t])
    rv_trabeculae *= rv_growth
    rv_gaps *= rv_growth
    trabecula_fade, rv_gap_fade = np.clip(trabeculae * inv_pixel, 0, 1), np.clip(rv_gaps * inv_pixel, 0, 1)
    papillary = papillary_cover(heart, motion, t, frame.along, frame.across, endo_centre, frame.u_centre, inv_pixel,
                                frame.pixels.ranges)
    wall_value = blood + frame.myo_kept * (listed.myocardium - blood)  # LVOT: blood in the gap
    return FrameTissue(trabeculae, trabecula_fade, gaps, gap_fade, rv_trabeculae, rv_gaps, rv_gap_fade, fat, shell,
                       outer_fat, fat_fade, shell_fade, outer_fade, papillary, wall_value)
