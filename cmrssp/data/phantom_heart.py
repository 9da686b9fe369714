"""The phantom's heart: LV/RV geometry, cardiac motion, volume calibration and rendering.

Follows phantom.md B (LV), C (motion) and D (RV). Each short-axis slice is a 2D problem in the
(right, anterior) mm frame about the LV long axis; ``s`` is the depth of a plane below the ED base
plane (mm, toward the apex). At frame t the base has descended by ``base[t]`` and the LV cavity
spans ``u = (s - base[t]) / length[t]`` in [0, 1]:

- LV endocardium: an ellipse (ellipticity e, twisted about the axis) of area-radius
  ``c(t) * R_b * sqrt(1 - u^2)``; ``c(t)`` is solved so that the LV *label* volume follows the
  volume curve (a safeguarded Newton/bisection on pixel counts).
- Myocardium: ED wall thickness w(u) thinning to the apex plus an apical cap; at frame t the
  myocardial area at depth u is ``A_ed(u) * L_ed / L(t)`` (incompressible wall, C), so
  ``r_epi = sqrt(r_endo^2 + A / pi)``. Basal slices lose the anteroseptal wall to the LVOT.
- RV blood pool: a crescent wrapped around the septal side of the LV, from 1 mm outside the LV
  epicardium outward, thickest on the RV axis and thinning to its horns (the RV insertion points)
  at +-``rv_wrap``. Its thickness tapers to zero at ``u = rv_extent`` and is scaled by its own
  ``c_rv(t)``, calibrated against its own volume curve (never rescaled with the LV).

Shapes are drawn as analytic signed distances turned into per-pixel area fractions (a linear
ramp one pixel wide), so a pixel's coverage is exact where an edge is straight and no fine grid
is needed; through-plane partial volume averages ``S`` sub-slices, and labels are the argmax of
the area fractions of the central sub-slice (recipe F.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

PHENOTYPES = ("NOR", "DCM", "HCM", "MINF", "RVD")
SEPTAL_GAP_MM = 1.0  # the RV pool starts this far outside the LV epicardium (recipe D)


@dataclass(frozen=True)
class HeartParams:
    """One subject's heart (phantom.md B-D, G). Lengths in mm, volumes in mL, angles in rad."""

    phenotype: str
    lv_edv: float
    lv_ef: float
    rv_edv: float
    rv_ef: float
    length: float  # ED endocardial base->apex length L
    wall: float  # mid-ventricular ED wall thickness
    apical_wall: float  # wall thickness factor at the apex
    ellipticity: float  # minor/major axis ratio of the LV cross-section
    ellipse_angle: float
    phi_es: float  # ES as a fraction of the cycle (LV)
    rv_delay: float  # RV ES later by this fraction of the cycle
    fill: tuple[float, float, float, float]  # (phase, fraction) end of rapid filling; start of atrial kick
    base_descent: float  # base-plane motion toward the apex at ES
    twist: float  # basal rotation at ES (the apex rotates the other way)
    rv_angle: float  # direction of the RV from the LV centre, from +right toward +anterior
    rv_thickness: float  # RV crescent thickness on its axis, x basal epicardial radius (before calibration)
    rv_wrap: float  # half-angle of LV circumference the RV crescent covers (insertion points)
    rv_extent: float  # the RV pool ends at this fraction of the LV length
    rv_wall: float
    papillary_angles: tuple[float, ...]
    papillary_radius: float
    lvot_angle: float  # the basal ring opens toward this direction (LVOT, anteroseptal)
    lvot_depth: float  # fraction of L over which the basal ring closes, from open at the base plane
    apical_darkening: float
    great_vessels: tuple[tuple[float, float, float], ...]  # (along RV dir, across, radius) x R_ref

    def wall_thickness(self, u):
        """ED wall thickness at depth u, quadratic: ``wall`` at mid-ventricle (u = 0.5), thinner apically."""
        thinning = 1 - self.apical_wall
        return self.wall * (1 - thinning * u * u) / (1 - 0.25 * thinning)

    @property
    def apex_depth(self) -> float:
        """Depth of the epicardial apex below the ED base plane (mm): cavity plus apical cap."""
        return self.length + float(self.wall_thickness(1.0))


def draw_heart(rng: np.random.Generator, phenotype: str, male: bool) -> HeartParams:
    """Draw a heart of ``phenotype`` (NOR, DCM, HCM, MINF, RVD; phantom.md B, D, G)."""
    u = rng.uniform

    def deg(low: float, high: float) -> float:
        return float(np.deg2rad(u(low, high)))

    normal_edv = u(120, 185) if male else u(95, 155)
    normal_rv_edv = normal_edv * u(0.98, 1.2)
    lv_edv, lv_ef, wall, length, descent, twist = normal_edv, u(0.55, 0.68), u(6.5, 10) if male else u(6, 9), u(72, 90), u(10, 15), u(3, 10)
    rv_edv, rv_ef = normal_rv_edv, u(0.49, 0.63)
    if phenotype == "DCM":
        lv_edv, lv_ef, wall, length, descent, twist = u(230, 330), u(0.15, 0.38), u(5, 7), u(85, 98), u(5, 9), u(1, 4)
    elif phenotype == "HCM":
        lv_edv, lv_ef, wall, length, descent = u(85, 140), u(0.72, 0.82), u(13, 20), u(68, 82), u(8, 12)
    elif phenotype == "MINF":
        lv_edv, lv_ef, wall, descent, twist = u(150, 230), u(0.25, 0.45), u(6, 9), u(6, 10), u(1, 5)
    elif phenotype == "RVD":
        lv_ef = u(0.52, 0.64)
        rv_edv, rv_ef = normal_rv_edv * u(1.4, 1.7), u(0.30, 0.44)
    phi_es = u(0.30, 0.40)
    rapid = (min(phi_es + u(0.22, 0.30), 0.72), u(0.70, 0.80))
    atrial_start = u(0.80, 0.85)
    fill = (rapid[0], rapid[1], atrial_start, rapid[1] + u(0.05, 0.10))
    rv_angle = deg(10, 30)
    free_wall = rv_angle + float(np.pi)
    papillary = (free_wall - deg(50, 70), free_wall + deg(50, 70))
    if rng.random() < 0.3:
        papillary += (free_wall + deg(-10, 10),)
    vessels = (
        (u(0.2, 0.4), u(0.35, 0.55), u(0.33, 0.42)),  # aortic root
        (u(-0.2, 0.0), u(-0.9, -0.7), u(0.55, 0.7)),  # left atrium
        (u(0.85, 1.05), u(-0.65, -0.45), u(0.5, 0.65)),  # right atrium
        (u(0.4, 0.6), u(0.95, 1.15), u(0.33, 0.42)),  # RV outflow / pulmonary trunk
    )
    return HeartParams(
        phenotype=phenotype,
        lv_edv=lv_edv,
        lv_ef=lv_ef,
        rv_edv=rv_edv,
        rv_ef=rv_ef,
        length=length,
        wall=wall,
        apical_wall=u(0.7, 0.85),
        ellipticity=u(0.85, 1.0),
        ellipse_angle=u(0, float(np.pi)),
        phi_es=phi_es,
        rv_delay=u(0.02, 0.05),
        fill=fill,
        base_descent=descent,
        twist=float(np.deg2rad(twist)) * (1 if rng.random() < 0.5 else -1),
        rv_angle=rv_angle,
        rv_thickness=u(0.5, 0.8),
        rv_wrap=deg(70, 95),
        rv_extent=u(0.70, 0.85),
        rv_wall=u(2, 4),
        papillary_angles=papillary,
        papillary_radius=u(1.5, 3.0),
        lvot_angle=rv_angle + deg(30, 60),
        lvot_depth=u(0.15, 0.22),
        apical_darkening=u(0.08, 0.2),
        great_vessels=vessels,
    )


def volume_curve(edv: float, ef: float, phi_es: float, fill: tuple[float, ...], n_frames: int) -> np.ndarray:
    """Volume (mL) at phases t / T, ED at t = 0 (phantom.md C).

    Systole: ``EDV * (1 - EF * (1 - cos(pi * phi / phi_es)) / 2)``. Diastole: the refilled
    fraction of the stroke volume follows a monotone spline through the end of rapid filling,
    diastasis and the atrial kick, reaching EDV again at phi = 1.
    """
    phi = np.arange(n_frames) / n_frames
    esv = edv * (1 - ef)
    volume = np.empty(n_frames)
    systole = phi <= phi_es
    volume[systole] = edv * (1 - ef * (1 - np.cos(np.pi * phi[systole] / phi_es)) / 2)
    rapid_phase, rapid_fraction, atrial_phase, atrial_fraction = fill
    knots = np.array([phi_es, max(rapid_phase, phi_es + 0.05), max(atrial_phase, phi_es + 0.1), 1.0])
    knots = np.maximum.accumulate(knots + np.arange(4) * 1e-6)
    refill = PchipInterpolator(knots, [0.0, rapid_fraction, atrial_fraction, 1.0])(phi[~systole])
    volume[~systole] = esv + (edv - esv) * np.clip(refill, 0, 1)
    return volume


@dataclass(frozen=True)
class Motion:
    """Per-frame heart state in phase order (ED = frame 0). Volumes are calibration targets."""

    lv_volume: np.ndarray  # (T,) mL
    rv_volume: np.ndarray  # (T,) mL
    base: np.ndarray  # (T,) mm descent of the base plane toward the apex
    length: np.ndarray  # (T,) mm endocardial length
    twist: np.ndarray  # (T,) rad basal rotation
    es: int  # ES frame (phase order)


def heart_motion(heart: HeartParams, n_frames: int) -> Motion:
    """Volume curves and longitudinal motion; ES is snapped to a frame so EF is sampled exactly."""
    es = int(np.clip(round(heart.phi_es * n_frames), 1, n_frames - 2))
    phi_es = es / n_frames
    lv = volume_curve(heart.lv_edv, heart.lv_ef, phi_es, heart.fill, n_frames)
    rv_fill = tuple(min(v + heart.rv_delay, 0.97) if i % 2 == 0 else v for i, v in enumerate(heart.fill))
    rv = volume_curve(heart.rv_edv, heart.rv_ef, min(phi_es + heart.rv_delay, 0.6), rv_fill, n_frames)
    ejected = (heart.lv_edv - lv) / (heart.lv_edv * heart.lv_ef)  # 0 at ED, 1 at ES
    base = heart.base_descent * ejected
    return Motion(lv, rv, base, heart.length - base, heart.twist * ejected, es)


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
    fat_thickness: np.ndarray  # epicardial fat thickness (mm)
    blood: float
    myocardium: float
    fat: float


def _ramp(distance_inside: np.ndarray, inv_pixel: float) -> np.ndarray:
    """Area fraction of a pixel whose centre lies ``distance_inside`` mm inside an edge."""
    out = distance_inside * inv_pixel
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def _shape(radius: np.ndarray, metric: np.ndarray, inv_pixel: float) -> np.ndarray:
    """Area fraction of a shape of per-slice size ``radius`` (Z,) given a distance-like ``metric``.

    The edge ramp alone would leave a half-covered pixel at the centre of a vanishing shape, so
    shapes smaller than a pixel fade out with their size.
    """
    radius = np.asarray(radius, np.float32)[:, None, None]
    return _ramp(radius - metric, inv_pixel) * np.clip(2.0 * radius * inv_pixel, 0.0, 1.0)


def _paint(value: np.ndarray, coverage: np.ndarray, tissue) -> None:
    """Painter's algorithm: ``value <- value + coverage * (tissue - value)`` in place."""
    delta = tissue - value
    delta *= coverage
    value += delta


def _label_argmax(lv: np.ndarray, myo: np.ndarray, rv: np.ndarray) -> np.ndarray:
    """Argmax of the area fractions (background, LV, MYO, RV); ties go to the lower label."""
    background = 1.0 - lv - myo - rv
    labels = np.zeros(lv.shape, np.uint8)
    best = background
    for label, fraction in ((1, lv), (2, myo), (3, rv)):
        wins = fraction > best
        labels[wins] = label
        best = np.where(wins, fraction, best)
    return labels


def _solve_scale(volume_of, target: float, guess: float, power: float, tolerance: float) -> float:
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


class _Heart:
    """Geometry of one heart in one scene; radii as functions of depth u and frame."""

    def __init__(self, heart: HeartParams, motion: Motion, scene: HeartScene):
        self.heart, self.motion, self.scene = heart, motion, scene
        self.nominal_radius = float(np.sqrt(heart.lv_edv * 1000 / (2 / 3 * np.pi * heart.length)))
        self.basal_radius = self.nominal_radius  # R_b at ED, fixed after the ED calibration
        self.apical_wall = float(heart.wall_thickness(1.0))

    def myo_area_ed(self, u: np.ndarray, basal_radius: float) -> np.ndarray:
        """ED myocardial cross-section area (mm^2) at depth u: a ring above u = 1, a cap beyond."""
        length = self.heart.length
        endo = basal_radius * np.sqrt(np.clip(1 - u * u, 0, None))
        ring = np.pi * ((endo + self.heart.wall_thickness(u)) ** 2 - endo**2)
        cap = np.pi * np.clip(self.apical_wall**2 - ((u - 1) * length) ** 2, 0, None)
        return np.where(u < 0, 0.0, np.where(u <= 1, ring, cap))

    def lv_radii(self, u: np.ndarray, t: int, scale: float, calibrating_ed: bool = False):
        """(endocardial, epicardial) area-radius (mm) at depths u of frame t."""
        basal = scale * self.nominal_radius
        endo = basal * np.sqrt(np.clip(1 - u * u, 0, None)) * (u >= 0)
        reference = basal if calibrating_ed else self.basal_radius
        area = self.myo_area_ed(u, reference) * (self.heart.length / self.motion.length[t])
        return endo, np.sqrt(endo**2 + area / np.pi)

    def rv_profile(self, u: np.ndarray) -> np.ndarray:
        """RV size along the long axis: full at the base, zero from ``rv_extent`` on."""
        return np.sqrt(np.clip(1 - (u / self.heart.rv_extent) ** 2, 0, None)) * (u >= 0)


def render_heart(heart: HeartParams, motion: Motion, scene: HeartScene):
    """Render the heart box of every frame (phase order).

    Returns:
        signal: float32 (T, Z, H, W) noise-free signal over the box, surroundings included;
        labels: uint8 (T, Z, H, W) canonical labels (1 LV, 2 MYO, 3 RV) of the central sub-slice;
        scales: float (T, 2) calibrated LV and RV scale factors.
    """
    geometry = _Heart(heart, motion, scene)
    inv_pixel = 1.0 / scene.pixel
    voxel_ml = scene.pixel**2 * scene.slice_spacing / 1000.0
    depth = scene.slice_depth.astype(np.float64)
    n_frames = len(motion.lv_volume)
    # Angle of each pixel about the LV axis from the RV direction (static: the RV does not twist).
    radial = scene.right * np.float32(np.cos(heart.rv_angle)) + scene.anterior * np.float32(np.sin(heart.rv_angle))
    tangential = -scene.right * np.float32(np.sin(heart.rv_angle)) + scene.anterior * np.float32(np.cos(heart.rv_angle))
    angle = np.abs(np.arctan2(tangential, radial))
    rv_profile = _crescent_profile(angle, heart.rv_wrap)
    wall_profile = _crescent_profile(angle, heart.rv_wrap + heart.rv_wall / (geometry.nominal_radius + heart.wall))
    vessels = _great_vessel_distances(heart, geometry, scene, radial, tangential)
    signal = np.empty((n_frames,) + scene.right.shape, np.float32)
    labels = np.empty((n_frames,) + scene.right.shape, np.uint8)
    scales = np.zeros((n_frames, 2))
    rv_scale = 1.0
    for t in range(n_frames):
        u_centre = (depth - motion.base[t]) / motion.length[t]
        u_sub = (depth[:, None] + scene.sub_offsets[None, :] - motion.base[t]) / motion.length[t]
        along, across, lv_metric = _lv_frame(heart, scene, motion.twist[t], u_centre)
        myo_kept = _lvot_gap(heart, u_centre, along, across, inv_pixel)

        def lv_fractions(scale: float, ed: bool = False):
            endo, epi = geometry.lv_radii(u_centre, t, scale, ed)
            inside = _shape(endo, lv_metric, inv_pixel)
            wall = (_shape(epi, lv_metric, inv_pixel) - inside) * myo_kept
            return inside, wall, epi

        def lv_volume(scale: float, ed: bool = False) -> float:
            inside, wall, _ = lv_fractions(scale, ed)
            won = (inside > 1.0 - inside - wall) & (inside >= wall)
            return float(np.count_nonzero(won)) * voxel_ml

        tolerance = max(0.003, 1.5 * voxel_ml / motion.lv_volume[t])
        shape_sum = np.sum(np.pi * geometry.nominal_radius**2 * np.clip(1 - u_centre**2, 0, None) * (u_centre >= 0))
        guess = np.sqrt(motion.lv_volume[t] * 1000 / max(shape_sum * scene.slice_spacing, 1e-6))
        if t == 0:
            lv_scale = _solve_scale(lambda c: lv_volume(c, True), motion.lv_volume[0], guess, 2.0, tolerance)
            geometry.basal_radius = lv_scale * geometry.nominal_radius
        else:
            lv_scale = _solve_scale(lv_volume, motion.lv_volume[t], guess, 2.0, tolerance)
        inside, wall, epi_centre = lv_fractions(lv_scale)
        papillary = _papillary(heart, along, across, geometry.lv_radii(u_centre, t, lv_scale)[0], u_centre, inv_pixel)

        reference_thickness = heart.rv_thickness * (geometry.basal_radius + heart.wall)

        def rv_fraction(scale: float, epi: np.ndarray = epi_centre, u: np.ndarray = u_centre) -> np.ndarray:
            thickness = (scale * reference_thickness * geometry.rv_profile(u)).astype(np.float32)[:, None, None]
            inner = (epi + SEPTAL_GAP_MM).astype(np.float32)[:, None, None]
            local = thickness * rv_profile
            depth_inside = np.minimum(lv_metric - inner, inner + local - lv_metric)
            # A crescent thinner than a pixel fades out with its thickness (no half-covered ring).
            return _ramp(depth_inside, inv_pixel) * np.clip(local * inv_pixel, 0.0, 1.0) * (epi > 0)[:, None, None]

        def rv_volume(scale: float) -> float:
            pool = rv_fraction(scale)
            won = (pool > 1.0 - inside - wall - pool) & (pool > inside) & (pool > wall)
            return float(np.count_nonzero(won)) * voxel_ml

        guess = rv_scale * (motion.rv_volume[t] / motion.rv_volume[t - 1]) if t else 1.0
        tolerance = max(0.003, 1.5 * voxel_ml / motion.rv_volume[t])
        rv_scale = _solve_scale(rv_volume, motion.rv_volume[t], guess, 1.3, tolerance)
        scales[t] = lv_scale, rv_scale
        labels[t] = _label_argmax(inside, wall, rv_fraction(rv_scale))

        # Image: paint every sub-slice over the surroundings, then average with the slice profile.
        accumulated = np.zeros(scene.right.shape, np.float32)
        for k, weight in enumerate(scene.sub_weights):
            u = u_sub[:, k]
            endo, epi = geometry.lv_radii(u, t, lv_scale)
            outer = ((epi + SEPTAL_GAP_MM) * (epi > 0)).astype(np.float32)[:, None, None]
            thickness = (rv_scale * reference_thickness * geometry.rv_profile(u)).astype(np.float32)[:, None, None]
            wall_outer = outer + (thickness + np.float32(heart.rv_wall) * (thickness > 0)) * wall_profile
            value = scene.background.copy()
            _paint(value, _ramp(wall_outer + scene.fat_thickness - lv_metric, inv_pixel) * (outer > 0), scene.fat)
            _paint(value, _ramp(wall_outer - lv_metric, inv_pixel) * (thickness > 0), scene.myocardium)
            _paint(value, rv_fraction(rv_scale, epi, u), scene.blood * scene.blood_texture)
            wall_value = scene.blood + myo_kept * (scene.myocardium - scene.blood)  # LVOT: blood in the gap
            _paint(value, _shape(epi, lv_metric, inv_pixel), wall_value)
            darkening = (1.0 - heart.apical_darkening * np.clip(u, 0, 1) ** 2).astype(np.float32)
            cavity = _shape(endo, lv_metric, inv_pixel)
            _paint(value, cavity, scene.blood * scene.blood_texture * darkening[:, None, None])
            _paint(value, cavity * papillary, scene.myocardium)
            _paint_great_vessels(value, vessels, motion.base[t] - (depth + scene.sub_offsets[k]), scene, inv_pixel)
            accumulated += weight * value
        signal[t] = accumulated
    return signal, labels, scales


def _crescent_profile(angle: np.ndarray, half_angle: float) -> np.ndarray:
    """Relative RV crescent thickness at ``angle`` from its axis: flat-topped, 0 at +-half_angle."""
    return np.sqrt(np.clip(1.0 - (angle / half_angle) ** 3, 0.0, None)).astype(np.float32)


def _lv_frame(heart: HeartParams, scene: HeartScene, twist: float, u_centre: np.ndarray):
    """Pixel coordinates along/across the (twisted) LV ellipse axes and the ellipse metric.

    The metric ``sqrt(along^2 / e + across^2 * e)`` is the area-radius of the ellipse through a
    pixel, so ``radius - metric`` approximates the signed distance to an ellipse of area pi r^2.
    """
    angle = heart.ellipse_angle + twist * (1 - 2 * np.clip(u_centre, 0, 1))
    cos_a = np.cos(angle).astype(np.float32)[:, None, None]
    sin_a = np.sin(angle).astype(np.float32)[:, None, None]
    along = scene.right * cos_a + scene.anterior * sin_a
    across = -scene.right * sin_a + scene.anterior * cos_a
    e = np.float32(heart.ellipticity)
    return along, across, np.sqrt(along * along / e + across * across * e)


def _direction(heart: HeartParams, angle: float) -> tuple[float, float]:
    """Unit vector of an anatomical direction (from +right toward +anterior) in the LV frame."""
    relative = angle - heart.ellipse_angle
    return float(np.cos(relative)), float(np.sin(relative))


def _lvot_gap(heart: HeartParams, u_centre, along, across, inv_pixel) -> np.ndarray:
    """Fraction of myocardium kept: basal slices show a partial ring, open toward the LVOT.

    The opening's half-angle shrinks linearly from 180 degrees at the base plane to 0 at
    ``lvot_depth``, so the myocardial area rises smoothly from the base instead of stepping:
    real basal slices show such partial rings, and without the ramp the ED and ES slice sums of
    myocardium would differ by up to half a basal ring (mass not conserved on the labels).
    """
    kept = np.ones(along.shape, np.float32)
    halfwidth = np.pi * np.clip(1 - u_centre / heart.lvot_depth, 0, 1) * (u_centre >= 0)
    dx, dy = _direction(heart, heart.lvot_angle)
    for z in np.flatnonzero(halfwidth > 0):
        radius = np.sqrt(along[z] ** 2 + across[z] ** 2)
        angle = np.arccos(np.clip((along[z] * dx + across[z] * dy) / (radius + 1e-6), -1, 1))
        kept[z] = _ramp(radius * (angle - np.float32(halfwidth[z])), inv_pixel)
    return kept


def _papillary(heart: HeartParams, along, across, endo, u_centre, inv_pixel) -> np.ndarray:
    """Coverage of the 2-3 papillary muscles (dark blobs, labelled LV) in mid-ventricular slices."""
    cover = np.zeros(along.shape, np.float32)
    for z in np.flatnonzero((u_centre > 0.2) & (u_centre < 0.75)):
        for angle in heart.papillary_angles:
            dx, dy = _direction(heart, angle)
            x, y = float(0.6 * endo[z] * dx), float(0.6 * endo[z] * dy)
            distance = np.sqrt((along[z] - x) ** 2 + (across[z] - y) ** 2)
            np.maximum(cover[z], _ramp(heart.papillary_radius - distance, inv_pixel), out=cover[z])
    return cover


def _great_vessel_distances(heart, geometry, scene, radial, tangential):
    """Static distances (mm) to the atria and great vessels, for slices that can lie above the base."""
    above = np.flatnonzero(scene.slice_depth - np.abs(scene.sub_offsets).max() < heart.base_descent)
    reference = geometry.nominal_radius + heart.wall
    distances = []
    for along, across, radius in heart.great_vessels:
        d = np.sqrt((radial[above] - along * reference) ** 2 + (tangential[above] - across * reference) ** 2)
        distances.append((d, float(radius * reference)))
    return above, distances


def _paint_great_vessels(value, vessels, height_above_base, scene, inv_pixel) -> None:
    """Atria, aortic root and RV outflow above the base plane: bright, thin-walled, unlabelled."""
    above, distances = vessels
    if len(above) == 0:
        return
    height = height_above_base[above]
    growth = np.sqrt(np.clip(height / 6.0, 0, 1)).astype(np.float32)[:, None, None]
    if not growth.any():
        return
    part = value[above]
    for distance, radius in distances:
        _paint(part, _ramp(growth * (radius + 2.0) - distance, inv_pixel) * (growth > 0), scene.myocardium)
        _paint(part, _ramp(growth * radius - distance, inv_pixel) * (growth > 0), scene.blood * scene.blood_texture[above])
    value[above] = part
