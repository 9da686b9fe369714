"""Per-slice angular detail of the heart: contour harmonics, trabeculae, epicardial fat and shell.

phantom.md B and E with the ACDC calibration of ``phantom_heart_params``. Each table holds one
row per slice over ``N_ANGLES`` angles about the LV axis; ``render_heart`` looks every pixel up
at its angle, so the detail moves with the (twisting) heart and costs nothing per frame to draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmrssp.data.phantom_heart_params import (
    SHELL_COVER,
    TRABECULA_DENSITY,
    TRABECULA_DETACHED,
    TRABECULA_SECTOR_COVER,
    TRABECULA_SPACING_MM,
    TRABECULA_WIDTH_MM,
    HeartParams,
)

N_ANGLES = 360  # angular resolution of the per-slice texture tables


@dataclass(frozen=True)
class HeartTexture:
    """Per-slice angular detail, (Z, N_ANGLES) float32 tables over the angle about the LV axis.

    The angle is measured in the LV's (twisting) ellipse frame from -pi to pi; every table is
    fixed over the cycle (anatomy), so the detail moves with the heart.
    """

    endo_shape: np.ndarray  # endocardial radius factor (about 1)
    wall_shape: np.ndarray  # wall thickness modulation, x the local wall thickness (zero mean)
    trabeculae: np.ndarray  # LV trabecula height above the endocardium, mm
    trabecula_gaps: np.ndarray  # depth below which a detached strand has no muscle, mm (0: attached)
    rv_trabeculae: np.ndarray  # RV trabecula height inside the free-wall edge, mm
    rv_trabecula_gaps: np.ndarray
    fat: np.ndarray  # epicardial fat thickness, mm
    shell: np.ndarray  # myocardium-like shell thickness outside the fat, mm
    outer_fat: np.ndarray  # bright fat thickness outside the shell, mm


def _angles() -> np.ndarray:
    return (np.arange(N_ANGLES) + 0.5) * (2 * np.pi / N_ANGLES) - np.pi


def _fingers(rng, radius: float, height: float, spacing: tuple[float, float], width: tuple[float, float],
             envelope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trabeculae around a circle of ``radius`` mm: (height, gap) profiles (N_ANGLES,) in mm.

    Rounded strands of random width rise from the wall to ``height`` times a random fraction and
    the angular ``envelope`` (sectors of heavy and light trabeculation); a third of them are
    strands cut away from the wall, muscle only between ``gap`` and ``height``.
    """
    theta = _angles()
    count = max(3, int(2 * np.pi * radius / rng.uniform(*spacing)))
    centres = rng.uniform(-np.pi, np.pi, count)
    half = rng.uniform(*width, count) / (2 * max(radius, 3.0))
    heights = height * rng.uniform(0.3, 1.0, count) * np.interp(centres, theta, envelope, period=2 * np.pi)
    gaps = heights * rng.uniform(0.2, 0.6, count) * (rng.random(count) < TRABECULA_DETACHED)
    distance = np.abs(np.angle(np.exp(1j * (theta[None, :] - centres[:, None]))))
    bumps = heights[:, None] * np.sqrt(np.clip(1 - (distance / half[:, None]) ** 2, 0, None))
    tallest = bumps.argmax(axis=0)
    profile = bumps[tallest, np.arange(len(theta))]
    return profile, np.where(profile > 0, gaps[tallest], 0.0)


def _patches(rng, cover: float, n_slices: int) -> np.ndarray:
    """(Z, N_ANGLES) in [0, 1]: smooth angular patches covering about ``cover`` of the circle.

    Harmonics 1-4 shared by all slices plus a per-slice part, thresholded at the quantile that
    leaves ``cover`` above it and ramped over a soft edge.
    """
    theta = _angles()
    shared = sum(rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    out = np.empty((n_slices, N_ANGLES))
    for z in range(n_slices):
        own = sum(rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
        field = shared + 0.6 * own
        level = np.quantile(field, 1 - cover)
        out[z] = np.clip((field - level) / (0.5 * field.std() + 1e-6), 0, 1)
    return out


def draw_texture(rng: np.random.Generator, heart: HeartParams, depths: np.ndarray) -> HeartTexture:
    """The subject's per-slice angular tables for slices at ED depths ``depths`` (Z,) mm."""
    theta = _angles()
    n = len(depths)
    u = np.clip(np.asarray(depths, float) / heart.length, 0, 1)
    endo_radius = np.maximum(heart.nominal_radius * heart.cavity_profile(u), 4.0)

    endo = np.ones((n, N_ANGLES))
    phases = rng.uniform(0, 2 * np.pi, 4)
    for k, phase in zip(range(2, 6), phases):
        amplitude = heart.endo_harmonic * rng.uniform(0.5, 1.5, n)
        endo += amplitude[:, None] * np.cos(k * theta[None, :] + (phase + rng.normal(0, 0.8, n))[:, None])
    wall = np.zeros((n, N_ANGLES))
    for k, (amplitude, phase) in enumerate(heart.wall_harmonics, start=1):
        # theta is measured from the ellipse axis: the anatomical direction is theta + ellipse_angle.
        wall += amplitude * np.cos(k * (theta[None, :] + heart.ellipse_angle) - phase + rng.normal(0, 0.25, n)[:, None])
    # Trabeculation rises from the base to mid-ventricle (ACDC dark fraction 0.07 at the base, 0.22
    # mid, 0.29 apical: the smaller apical cavity does the rest).
    density = TRABECULA_DENSITY[0] + (TRABECULA_DENSITY[1] - TRABECULA_DENSITY[0]) * np.minimum(u / 0.5, 1.0)
    envelope = 0.4 + 0.6 * _patches(rng, TRABECULA_SECTOR_COVER, n)
    lv = [_fingers(rng, r, heart.trabecula_height * d, TRABECULA_SPACING_MM, TRABECULA_WIDTH_MM, e)
          for r, d, e in zip(endo_radius, density, envelope)]
    rv_radius = endo_radius + heart.wall + 8.0
    envelope = 0.3 + 0.7 * _patches(rng, TRABECULA_SECTOR_COVER, n)
    rv = [_fingers(rng, r, heart.rv_trabecula_height * (0.2 + 0.8 * min(v / 0.5, 1.0)), TRABECULA_SPACING_MM,
                   TRABECULA_WIDTH_MM, e) for r, v, e in zip(rv_radius, u, envelope)]
    groove = 1.0 + 1.5 * np.clip(1.0 - np.abs(np.asarray(depths, float)) / 15.0, 0.0, 1.0)  # AV groove fat
    fat = heart.fat * groove[:, None] * _patches(rng, heart.fat_cover, n)
    shell = heart.shell * _patches(rng, SHELL_COVER, n)
    outer_fat = heart.outer_fat * _patches(rng, heart.outer_fat_cover, n) * np.clip(shell / 2.0, 0, 1)  # on the shell
    as32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return HeartTexture(as32(endo), as32(wall), as32([h for h, _ in lv]), as32([g for _, g in lv]),
                        as32([h for h, _ in rv]), as32([g for _, g in rv]), as32(fat), as32(shell), as32(outer_fat))
