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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

PHENOTYPES = ("NOR", "DCM", "HCM", "MINF", "RVD")
# The RV pool starts this far outside the LV epicardium: recipe D's 1 mm left a background pixel
# between the septum and the RV label that ACDC's labels do not have (RV touches MYO).
SEPTAL_GAP_MM = 0.0
N_ANGLES = 360  # angular resolution of the per-slice texture tables

# --- Calibration against real ACDC (100 training patients; benchmarks/phantom_vs_real.py) --------
# Per phenotype: 10th-90th percentiles over each ACDC group (20 patients) of the label-measured
# LV EDV (mL), LV EF, RV/LV EDV, RV EF and ED wall thickness (the median over slices of the
# equivalent-ring thickness sqrt((A_lv + A_myo)/pi) - sqrt(A_lv/pi), mm). Drawn uniformly.
PHENOTYPE_RANGES = {
    "NOR": {"lv_edv": (94, 161), "lv_ef": (0.55, 0.66), "rv_lv": (1.04, 1.32), "rv_ef": (0.45, 0.67), "wall": (6.1, 8.3)},
    "DCM": {"lv_edv": (221, 336), "lv_ef": (0.11, 0.28), "rv_lv": (0.35, 0.86), "rv_ef": (0.11, 0.56), "wall": (7.0, 9.5)},
    "HCM": {"lv_edv": (75, 167), "lv_ef": (0.53, 0.78), "rv_lv": (0.76, 1.17), "rv_ef": (0.46, 0.72), "wall": (8.9, 13.9)},
    "MINF": {"lv_edv": (116, 213), "lv_ef": (0.20, 0.42), "rv_lv": (0.39, 0.98), "rv_ef": (0.44, 0.71), "wall": (6.8, 8.8)},
    "RVD": {"lv_edv": (56, 153), "lv_ef": (0.46, 0.61), "rv_lv": (1.40, 2.85), "rv_ef": (0.07, 0.45), "wall": (5.2, 7.8)},
}
# LV shape along the long axis: the relative LV area change between adjacent labelled slices is
# 0.14 [IQR 0.10, 0.18] in ACDC (ED) against 0.18 for the half-ellipsoid (p = 2) -> the exponent p
# of the cavity profile sqrt(1 - u^p). The labelled base-to-apex span (ED, median by group: NOR 70,
# DCM 90, HCM 80, MINF 76, RV 70 mm) sets the ED cavity lengths below (mm).
LV_SHAPE_POWER = (1.7, 2.4)
# At ES the apex contracts more than the base (ACDC: relative LV area change between adjacent
# slices 0.21 at ES against 0.14 at ED; LV cavity in the last slice 75 % at ES against 94 % at
# ED): the endocardial radius at ES is scaled by 1 - k u^2 before the volume calibration.
APICAL_CONTRACTION = (0.3, 0.8)
LV_LENGTH_MM = {"NOR": (82, 100), "DCM": (95, 110), "HCM": (78, 94), "MINF": (85, 102), "RVD": (80, 96)}
# Wall thickness along the long axis relative to mid: ACDC ED base 1.13, basal 1.15, apical 0.85,
# apex 0.78 (medians) -> piecewise linear in u, this factor at the apex (u = 1), and a basal half
# rising 3/4 as steeply toward the base.
APICAL_WALL_FACTOR = (0.6, 0.82)
BASAL_WALL_SLOPE = 0.75
# Circumferential CV of the local wall thickness: ACDC ED 0.19 [IQR 0.16, 0.21] (ES 0.17) against
# 0.07 for the unmodulated ring -> RMS of the thickness modulation, in units of the wall.
WALL_VARIATION = (0.10, 0.22)
# Endocardial contour irregularity (isoperimetric ratio of the LV label): ACDC 1.04 [1.03, 1.06],
# 1.00 for an ellipse -> relative amplitude of each of the harmonics 2-5 of the endocardial radius.
ENDO_HARMONIC = (0.02, 0.05)
# LV blood pool, fraction of label pixels darker than (blood + myocardium) / 2: ACDC ED 0.21
# [0.18, 0.26] (by position base 0.07, basal 0.13, mid 0.22, apical 0.29, apex 0.46; ES 0.35);
# blood CV inside the eroded label 0.22. Trabeculae: maximum height (mm) and spacing (mm) of the
# fingers along the endocardium; papillary muscle radius (mm).
TRABECULA_HEIGHT_MM = (5.5, 12.0)
TRABECULA_DENSITY = (0.45, 1.25)  # relative density at the base and from mid-ventricle on
# Trabeculae thicken with the wall during systole (ACDC dark fraction ES 0.35 against ED 0.21; the
# smaller ES cavity does most of it): heights x (1 + this x ejected fraction).
TRABECULA_SYSTOLIC_GROWTH = 0.15
TRABECULA_SPACING_MM = (3.5, 7.5)
TRABECULA_WIDTH_MM = (2.5, 7.0)
TRABECULA_SECTOR_COVER = 0.5  # heavily trabeculated share of the circumference (lighter elsewhere)
TRABECULA_DETACHED = 0.35  # share of strands cut away from the wall (islands in the cavity)
PAPILLARY_RADIUS_MM = (3.5, 6.0)
# RV blood: median RV / LV blood intensity 0.81 [0.74, 0.88] (ED); dark fraction 0.38 [0.29, 0.45],
# rising from 0.17 at the base to 0.58 apically: trabeculae up to this height, and at most this
# fraction of the local crescent thickness (the thin apical RV is not filled).
RV_BLOOD_RATIO = (0.64, 0.84)
RV_TRABECULA_HEIGHT_MM = (7.0, 15.0)
# RV blood CV inside the eroded label: ACDC 0.20 [0.17, 0.24] against 0.13 with trabeculae alone ->
# a low-frequency RV flow texture (inflow darker, outflow brighter) of this amplitude.
RV_FLOW_TEXTURE = 0.2
RV_TRABECULA_MAX_FRACTION = 0.55
# MYO label volume ES/ED: ACDC 1.15 (10th-90th percentile 1.03-1.29). In an ACDC-like stack most of
# that is sampling: the first slice lies below the ED base, so basal myocardium enters the stack at
# ES, and the label margin removes less myocardium from the smaller ES cavity; with them and this
# small band (x the local ED wall thickness) the phantom measures 1.18 [p10 1.06, p90 1.29].
MYO_ES_GAIN = (0.0, 0.04)
# RV along the long axis: RV/LV label area by position ACDC ED base 1.39, basal 1.33, mid 0.79,
# apical 0.43; RV in the most apical labelled slice 49 % (ED) -> a linear taper ending at this
# fraction of the LV length.
RV_EXTENT = (0.78, 0.97)
# RV base: RV labelled in the LV's most basal slice in 83 % at ED but 31 % at ES -> the RV base
# lies a little below the LV base and descends further at ES (tricuspid > mitral excursion).
RV_BASE_OFFSET_MM = (0.0, 10.0)
RV_EXTRA_DESCENT_MM = (0.0, 5.0)
# Label convention: ACDC's contours lie on the muscle side of the blood-muscle edge. The outermost
# pixel ring of the LV label is darker than (B+M)/2 in 78 % [IQR 69, 84] of its pixels (ED; the
# phantom's area-fraction labels: ~50 % with trabeculae, 5 % without), the MYO pixels next to the
# LV label are bright in 0.5 %, the RV label's outer ring is 83 % dark. -> The LV and RV labels
# reach this far (mm) into the muscle beyond the drawn edge (an annotator's margin, per subject).
LABEL_MARGIN_MM = (0.2, 1.1)
# LVOT: the ACDC base slice's wall is 1.13 x mid, i.e. the basal ring is nearly complete.
LVOT_HALF_ANGLE_DEG = (10.0, 40.0)
# Surroundings within 5 mm of the epicardium, ACDC ED: dark (< M/2) 0.09, myocardium-like 0.76,
# bright (> (B+M)/2) 0.10; of the RV: 0.07, 0.87, 0.03 -> patchy fat (maximum thickness, fraction
# of the circumference) and a myocardium-like shell (maximum thickness, mm).
FAT_MM = (1.5, 4.0)
FAT_COVER = (0.2, 0.5)
FAT_OVER_RV = 0.3  # fat thickness factor over the RV free wall (ACDC: 3 % bright within 5 mm of the RV)
SHELL_MM = (4.0, 12.0)
SHELL_COVER = 0.85
# Bright unlabelled pixels within 10 mm of the labels: ACDC ED 0.12 [0.08, 0.18] (ES 0.15), fat
# alone gives 0.06 -> bright paracardiac fat beyond the shell (maximum thickness mm, cover).
OUTER_FAT_MM = (3.0, 10.0)
OUTER_FAT_COVER = (0.1, 0.35)


@dataclass(frozen=True)
class HeartParams:
    """One subject's heart (phantom.md B-D, G). Lengths in mm, volumes in mL, angles in rad."""

    phenotype: str
    lv_edv: float
    lv_ef: float
    rv_edv: float
    rv_ef: float
    length: float  # ED endocardial base->apex length L
    lv_shape: float  # exponent p of the cavity profile sqrt(1 - u^p)
    apical_contraction: float  # k: extra apical radial shortening at ES, radius x (1 - k u^2)
    wall: float  # mid-ventricular ED wall thickness
    apical_wall: float  # wall thickness factor at the apex (u = 1)
    wall_harmonics: tuple[tuple[float, float], ...]  # (amplitude x wall, phase) of harmonics 1, 2, 3
    endo_harmonic: float  # relative amplitude of the endocardial harmonics 2-5
    ellipticity: float  # minor/major axis ratio of the LV cross-section
    ellipse_angle: float
    phi_es: float  # ES as a fraction of the cycle (LV)
    rv_delay: float  # RV ES later by this fraction of the cycle
    fill: tuple[float, float, float, float]  # (phase, fraction) end of rapid filling; start of atrial kick
    base_descent: float  # base-plane motion toward the apex at ES
    twist: float  # basal rotation at ES (the apex rotates the other way)
    myo_es_gain: float  # compacted trabecular band at ES, x the local wall (labelled myocardium)
    rv_angle: float  # direction of the RV from the LV centre, from +right toward +anterior
    rv_thickness: float  # RV crescent thickness on its axis, x basal epicardial radius (before calibration)
    rv_wrap: float  # half-angle of LV circumference the RV crescent covers (insertion points)
    rv_extent: float  # the RV pool ends at this fraction of the LV length (ED)
    rv_base_offset: float  # RV base below the LV base at ED (mm)
    rv_extra_descent: float  # RV base descent at RV ES beyond the LV's (mm)
    rv_wall: float
    rv_blood: float  # RV blood signal relative to the LV's
    trabecula_height: float  # LV trabeculae maximum height at the apex (mm)
    rv_trabecula_height: float
    papillary_angles: tuple[float, ...]
    papillary_radius: float
    lvot_angle: float  # the basal ring opens toward this direction (LVOT, anteroseptal)
    lvot_half_angle: float  # half-angle of the opening at the base plane
    lvot_depth: float  # fraction of L over which the basal ring closes
    apical_darkening: float
    great_vessels: tuple[tuple[float, float, float], ...]  # (along RV dir, across, radius) x R_ref
    fat: float  # maximum epicardial fat thickness (mm)
    fat_cover: float  # fraction of the circumference with fat
    shell: float  # maximum thickness of the myocardium-like shell around the heart (mm)
    outer_fat: float  # maximum thickness of the bright fat beyond the shell (mm)
    outer_fat_cover: float
    label_margin: float  # the LV label reaches this far into the muscle beyond the drawn endocardium (mm)
    rv_label_margin: float  # the same for the RV label at its free wall

    def cavity_profile(self, u):
        """Relative endocardial radius at depth u: ``sqrt(1 - u^p)`` in [0, 1], 0 outside the cavity."""
        u = np.asarray(u, dtype=float)
        return np.sqrt(np.clip(1 - np.abs(u) ** self.lv_shape, 0, None)) * (u >= 0) * (u <= 1)

    @property
    def nominal_radius(self) -> float:
        """Basal endocardial radius R_b (mm) of a cavity of volume ``lv_edv``: V = pi R^2 L p / (p + 1)."""
        return float(np.sqrt(self.lv_edv * 1000 / (np.pi * self.length * self.lv_shape / (self.lv_shape + 1))))

    def wall_thickness(self, u):
        """ED wall thickness at depth u: ``wall`` at mid-ventricle (u = 0.5), thinner toward the apex, thicker basally."""
        u = np.clip(u, 0.0, 1.0)
        slope = 2 * (1 - self.apical_wall)
        return self.wall * (1 + slope * (0.5 - u) * np.where(u < 0.5, BASAL_WALL_SLOPE, 1.0))

    @property
    def apex_depth(self) -> float:
        """Depth of the epicardial apex below the ED base plane (mm): cavity plus apical cap."""
        return self.length + float(self.wall_thickness(1.0))

    @property
    def wall_variation(self) -> float:
        """RMS of the circumferential wall thickness modulation (x wall)."""
        return float(np.sqrt(sum(a * a for a, _ in self.wall_harmonics) / 2))


def draw_heart(rng: np.random.Generator, phenotype: str, male: bool) -> HeartParams:
    """Draw a heart of ``phenotype`` (NOR, DCM, HCM, MINF, RVD; phantom.md B, D, G).

    Volumes, ejection fractions and wall thickness come from ``PHENOTYPE_RANGES`` (ACDC, per
    group, not per sex: ``male`` is accepted for the callers' sake and does not change the heart).
    """
    u = rng.uniform

    def deg(low: float, high: float) -> float:
        return float(np.deg2rad(u(low, high)))

    ranges = PHENOTYPE_RANGES[phenotype]
    lv_edv, lv_ef = u(*ranges["lv_edv"]), u(*ranges["lv_ef"])
    rv_edv, rv_ef = lv_edv * u(*ranges["rv_lv"]), u(*ranges["rv_ef"])
    wall = u(*ranges["wall"])  # the measured median over slices is close to the mid-ventricular value
    length, descent, twist = u(*LV_LENGTH_MM[phenotype]), u(10, 15), u(3, 10)
    if phenotype == "DCM":
        descent, twist = u(5, 9), u(1, 4)
    elif phenotype == "HCM":
        descent = u(8, 12)
    elif phenotype == "MINF":
        descent, twist = u(6, 10), u(1, 5)
    phi_es = u(0.30, 0.40)
    rapid = (min(phi_es + u(0.22, 0.30), 0.72), u(0.70, 0.80))
    atrial_start = u(0.80, 0.85)
    fill = (rapid[0], rapid[1], atrial_start, rapid[1] + u(0.05, 0.10))
    rv_angle = deg(10, 30)
    free_wall = rv_angle + float(np.pi)
    papillary = (free_wall - deg(45, 70), free_wall + deg(45, 70))
    if rng.random() < 0.3:
        papillary += (free_wall + deg(-10, 10),)
    vessels = (
        (u(0.2, 0.4), u(0.35, 0.55), u(0.33, 0.42)),  # aortic root
        (u(-0.2, 0.0), u(-0.9, -0.7), u(0.55, 0.7)),  # left atrium
        (u(0.85, 1.05), u(-0.65, -0.45), u(0.5, 0.65)),  # right atrium
        (u(0.4, 0.6), u(0.95, 1.15), u(0.33, 0.42)),  # RV outflow / pulmonary trunk
    )
    # Circumferential wall modulation: random harmonics 1-3 of a drawn RMS; HCM adds an
    # asymmetric septal bulge (harmonic 1 toward the RV).
    variation = u(*WALL_VARIATION)
    weights = rng.dirichlet((2.0, 1.5, 1.0))
    harmonics = [(float(np.sqrt(2 * w) * variation), u(0, 2 * np.pi)) for w in weights]
    if phenotype == "HCM":
        harmonics[0] = (u(0.2, 0.35), float(rv_angle))
    return HeartParams(
        phenotype=phenotype,
        lv_edv=lv_edv,
        lv_ef=lv_ef,
        rv_edv=rv_edv,
        rv_ef=rv_ef,
        length=length,
        lv_shape=u(*LV_SHAPE_POWER),
        apical_contraction=u(*APICAL_CONTRACTION),
        wall=wall,
        apical_wall=u(*APICAL_WALL_FACTOR),
        wall_harmonics=tuple(harmonics),
        endo_harmonic=u(*ENDO_HARMONIC),
        ellipticity=u(0.85, 1.0),
        ellipse_angle=u(0, float(np.pi)),
        phi_es=phi_es,
        rv_delay=u(0.02, 0.05),
        fill=fill,
        base_descent=descent,
        twist=float(np.deg2rad(twist)) * (1 if rng.random() < 0.5 else -1),
        myo_es_gain=u(*MYO_ES_GAIN),
        rv_angle=rv_angle,
        rv_thickness=u(0.5, 0.8),
        rv_wrap=deg(70, 95),
        rv_extent=u(*RV_EXTENT),
        rv_base_offset=u(*RV_BASE_OFFSET_MM),
        rv_extra_descent=u(*RV_EXTRA_DESCENT_MM),
        rv_wall=u(2, 4),
        rv_blood=u(*RV_BLOOD_RATIO),
        trabecula_height=u(*TRABECULA_HEIGHT_MM),
        rv_trabecula_height=u(*RV_TRABECULA_HEIGHT_MM),
        papillary_angles=papillary,
        papillary_radius=u(*PAPILLARY_RADIUS_MM),
        lvot_angle=rv_angle + deg(30, 60),
        lvot_half_angle=deg(*LVOT_HALF_ANGLE_DEG),
        lvot_depth=u(0.08, 0.16),
        apical_darkening=u(0.08, 0.2),
        great_vessels=vessels,
        fat=u(*FAT_MM),
        fat_cover=u(*FAT_COVER),
        shell=u(*SHELL_MM),
        outer_fat=u(*OUTER_FAT_MM),
        outer_fat_cover=u(*OUTER_FAT_COVER),
        label_margin=u(*LABEL_MARGIN_MM),
        rv_label_margin=u(*LABEL_MARGIN_MM),
    )


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
    lv_ejected: np.ndarray  # (T,) fraction of the LV stroke volume ejected (0 at ED, 1 at ES)
    rv_ejected: np.ndarray  # (T,) the same for the RV


def heart_motion(heart: HeartParams, n_frames: int) -> Motion:
    """Volume curves and longitudinal motion; ES is snapped to a frame so EF is sampled exactly."""
    es = int(np.clip(round(heart.phi_es * n_frames), 1, n_frames - 2))
    phi_es = es / n_frames
    lv = volume_curve(heart.lv_edv, heart.lv_ef, phi_es, heart.fill, n_frames)
    rv_fill = tuple(min(v + heart.rv_delay, 0.97) if i % 2 == 0 else v for i, v in enumerate(heart.fill))
    rv = volume_curve(heart.rv_edv, heart.rv_ef, min(phi_es + heart.rv_delay, 0.6), rv_fill, n_frames)
    ejected = (heart.lv_edv - lv) / (heart.lv_edv * heart.lv_ef)  # 0 at ED, 1 at ES
    rv_ejected = np.clip((heart.rv_edv - rv) / max(heart.rv_edv * heart.rv_ef, 1e-6), 0, 1)
    base = heart.base_descent * ejected
    return Motion(lv, rv, base, heart.length - base, heart.twist * ejected, es, ejected, rv_ejected)


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


def _ramp(distance_inside: np.ndarray, inv_pixel: float) -> np.ndarray:
    """Area fraction of a pixel whose centre lies ``distance_inside`` mm inside an edge."""
    out = distance_inside * inv_pixel
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def _shape(radius: np.ndarray, metric: np.ndarray, inv_pixel: float) -> np.ndarray:
    """Area fraction of a shape of size ``radius`` (per slice (Z,) or per pixel (Z, H, W)) given a distance-like ``metric``.

    The edge ramp alone would leave a half-covered pixel at the centre of a vanishing shape, so
    shapes smaller than a pixel fade out with their size.
    """
    radius = np.asarray(radius, np.float32)
    if radius.ndim == 1:
        radius = radius[:, None, None]
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


def _lookup(table: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """Per-pixel values of a (Z, N_ANGLES) table at precomputed flat indices (Z, H, W)."""
    return table.ravel()[flat_index]


def render_heart(heart: HeartParams, motion: Motion, scene: HeartScene, texture: HeartTexture):
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
    fat_rv = 1.0 - np.float32(1.0 - FAT_OVER_RV) * wall_profile  # less epicardial fat over the RV free wall
    vessels = _great_vessel_distances(heart, geometry, scene, radial, tangential)
    rows = (np.arange(len(depth)) * N_ANGLES)[:, None, None]
    signal = np.empty((n_frames,) + scene.right.shape, np.float32)
    labels = np.empty((n_frames,) + scene.right.shape, np.uint8)
    scales = np.zeros((n_frames, 2))
    rv_scale = 1.0
    for t in range(n_frames):
        u_centre = (depth - motion.base[t]) / motion.length[t]
        u_sub = (depth[:, None] + scene.sub_offsets[None, :] - motion.base[t]) / motion.length[t]
        along, across, lv_metric, theta = _lv_frame(heart, scene, motion.twist[t], u_centre)
        index = rows + np.minimum(((theta + np.pi) * (N_ANGLES / (2 * np.pi))).astype(np.int32), N_ANGLES - 1)
        endo_shape, wall_shape = _lookup(texture.endo_shape, index), _lookup(texture.wall_shape, index)
        myo_kept = _lvot_gap(heart, u_centre, along, across, inv_pixel)

        def lv_fields(u: np.ndarray, scale: float, ed: bool = False):
            """Per-pixel endocardial and epicardial radii (Z, H, W), the compacted band (Z, 1, 1) mm
            and the slices holding myocardium (Z,)."""
            endo, area = geometry.lv_radii(u, t, scale, ed)
            endo_field = endo.astype(np.float32)[:, None, None] * endo_shape
            # The modulation follows the frame's mean wall thickness, so it thickens with the wall.
            wall = (np.sqrt(endo * endo + area / np.pi) - endo).astype(np.float32)[:, None, None]
            epi_field = np.sqrt(endo_field * endo_field + (area / np.pi).astype(np.float32)[:, None, None])
            epi_field += wall * wall_shape
            band = (heart.wall_thickness(u) * (area > 0)).astype(np.float32)[:, None, None]
            band *= np.float32(heart.myo_es_gain * motion.lv_ejected[t])
            return endo_field, epi_field, band, area > 0

        def lv_fractions(scale: float, ed: bool = False):
            endo_field, epi_field, band, present = lv_fields(u_centre, scale, ed)
            margin = np.float32(heart.label_margin) * (endo_field > 0)  # no margin where there is no cavity
            inside = _shape(np.minimum(endo_field - band + margin, epi_field), lv_metric, inv_pixel)
            wall = np.maximum(_shape(epi_field, lv_metric, inv_pixel) - inside, 0.0) * myo_kept
            return inside, wall, epi_field, present

        def lv_volume(scale: float, ed: bool = False) -> float:
            inside, wall, _, _ = lv_fractions(scale, ed)
            won = (inside > 1.0 - inside - wall) & (inside >= wall)
            return float(np.count_nonzero(won)) * voxel_ml

        tolerance = max(0.003, 1.5 * voxel_ml / motion.lv_volume[t])
        shape_sum = np.sum(np.pi * geometry.nominal_radius**2 * heart.cavity_profile(u_centre) ** 2)
        guess = np.sqrt(motion.lv_volume[t] * 1000 / max(shape_sum * scene.slice_spacing, 1e-6))
        if t == 0:
            lv_scale = _solve_scale(lambda c: lv_volume(c, True), motion.lv_volume[0], guess, 2.0, tolerance)
            geometry.basal_radius = lv_scale * geometry.nominal_radius
        else:
            lv_scale = _solve_scale(lv_volume, motion.lv_volume[t], guess, 2.0, tolerance)
        inside, wall, epi_centre, present_centre = lv_fractions(lv_scale)
        endo_centre = geometry.lv_radii(u_centre, t, lv_scale)[0]
        papillary = _papillary(heart, motion, t, along, across, endo_centre, u_centre, inv_pixel)

        reference_thickness = heart.rv_thickness * (geometry.basal_radius + heart.wall)
        rv_centre = geometry.rv_profile(depth, t)

        def rv_fraction(scale: float, epi=epi_centre, present=present_centre, profile=rv_centre, trabeculae=None,
                        gaps=None, margin: float = 0.0):
            """RV pool area fraction (the label's, ``margin`` mm into the free wall); with ``trabeculae``
            (per-pixel heights, mm) also the fraction of the pool they cover, limited to
            ``RV_TRABECULA_MAX_FRACTION`` of the local thickness."""
            thickness = (scale * reference_thickness * profile).astype(np.float32)[:, None, None]
            inner = epi + np.float32(SEPTAL_GAP_MM)
            local = thickness * rv_profile
            outer = inner + local - lv_metric  # depth inside the free-wall edge
            if margin:
                outer = outer + np.float32(margin) * (local > 0)
            if trabeculae is not None:
                height = np.minimum(trabeculae, np.float32(RV_TRABECULA_MAX_FRACTION) * local)
                trabeculae = _ramp(height - outer, inv_pixel) * np.clip(height * inv_pixel, 0.0, 1.0)
                trabeculae *= 1.0 - _ramp(np.minimum(gaps, height) - outer, inv_pixel) * np.clip(gaps * inv_pixel, 0, 1)
            depth_inside = np.minimum(lv_metric - inner, outer)
            # A crescent thinner than a pixel fades out with its thickness (no half-covered ring).
            pool = _ramp(depth_inside, inv_pixel) * np.clip(local * inv_pixel, 0.0, 1.0) * present[:, None, None]
            return pool if trabeculae is None else (pool, trabeculae)

        def rv_volume(scale: float) -> float:
            pool = rv_fraction(scale, margin=heart.rv_label_margin)
            won = (pool > 1.0 - inside - wall - pool) & (pool > inside) & (pool > wall)
            return float(np.count_nonzero(won)) * voxel_ml

        guess = rv_scale * (motion.rv_volume[t] / motion.rv_volume[t - 1]) if t else 1.0
        tolerance = max(0.003, 1.5 * voxel_ml / motion.rv_volume[t])
        rv_scale = _solve_scale(rv_volume, motion.rv_volume[t], guess, 1.3, tolerance)
        scales[t] = lv_scale, rv_scale
        labels[t] = _label_argmax(inside, wall, rv_fraction(rv_scale, margin=heart.rv_label_margin))

        # Image: paint every sub-slice over the surroundings, then average with the slice profile.
        trabeculae, rv_trabeculae = _lookup(texture.trabeculae, index), _lookup(texture.rv_trabeculae, index)
        gaps, rv_gaps = _lookup(texture.trabecula_gaps, index), _lookup(texture.rv_trabecula_gaps, index)
        gap_fade = np.clip(gaps * inv_pixel, 0, 1)
        fat, shell, outer_fat = (_lookup(table, index) for table in (texture.fat, texture.shell, texture.outer_fat))
        fat_fade, shell_fade = np.clip(fat * inv_pixel, 0, 1), np.clip(shell * inv_pixel, 0, 1)
        outer_fade = np.clip(outer_fat * inv_pixel, 0, 1)
        growth = np.float32(1.0 + TRABECULA_SYSTOLIC_GROWTH * motion.lv_ejected[t])
        trabeculae *= growth
        gaps *= growth
        rv_growth = np.float32(1.0 + TRABECULA_SYSTOLIC_GROWTH * motion.rv_ejected[t])
        rv_trabeculae *= rv_growth
        rv_gaps *= rv_growth
        rv_blood = scene.blood * np.float32(heart.rv_blood) * scene.blood_texture * scene.rv_texture
        accumulated = np.zeros(scene.right.shape, np.float32)
        for k, weight in enumerate(scene.sub_weights):
            u = u_sub[:, k]
            endo_field, epi_field, band, present = lv_fields(u, lv_scale)
            present3 = present[:, None, None]
            outer = (epi_field + np.float32(SEPTAL_GAP_MM)) * present3
            profile = geometry.rv_profile(depth + scene.sub_offsets[k], t)
            thickness = (rv_scale * reference_thickness * profile).astype(np.float32)[:, None, None]
            wall_outer = outer + (thickness + np.float32(heart.rv_wall) * (thickness > 0)) * wall_profile
            value = scene.background.copy()
            # Thin fat or shell fades out with its thickness (no half-pixel rim where there is none).
            _paint(value, _ramp(wall_outer + fat + shell + outer_fat - lv_metric, inv_pixel) * outer_fade * present3,
                   scene.fat)
            _paint(value, _ramp(wall_outer + fat + shell - lv_metric, inv_pixel) * shell_fade * present3, scene.shell)
            _paint(value, _ramp(wall_outer + fat * fat_rv - lv_metric, inv_pixel) * fat_fade * fat_rv * present3,
                   scene.fat)
            _paint(value, _ramp(wall_outer - lv_metric, inv_pixel) * (thickness > 0), scene.myocardium)
            pool, rv_muscle = rv_fraction(rv_scale, epi_field, present, profile, rv_trabeculae, rv_gaps)
            _paint(value, pool, rv_blood)
            _paint(value, pool * rv_muscle, scene.myocardium)
            wall_value = scene.blood + myo_kept * (scene.myocardium - scene.blood)  # LVOT: blood in the gap
            _paint(value, _shape(epi_field, lv_metric, inv_pixel), wall_value)
            darkening = (1.0 - heart.apical_darkening * np.clip(u, 0, 1) ** 2).astype(np.float32)
            cavity = _shape(endo_field, lv_metric, inv_pixel)
            _paint(value, cavity, scene.blood * scene.blood_texture * darkening[:, None, None])
            from_wall = endo_field - lv_metric  # depth inside the compact wall's endocardium
            strands = _ramp(trabeculae - from_wall, inv_pixel) * np.clip(trabeculae * inv_pixel, 0, 1)
            strands *= 1.0 - _ramp(gaps - from_wall, inv_pixel) * gap_fade  # detached strands: blood below the gap
            compacted = _ramp(band - from_wall, inv_pixel) * np.clip(band * inv_pixel, 0, 1)
            muscle = np.maximum(np.maximum(strands, compacted), papillary)
            _paint(value, cavity * muscle, scene.myocardium)
            _paint_great_vessels(value, vessels, motion.base[t] - (depth + scene.sub_offsets[k]), scene, inv_pixel)
            accumulated += weight * value
        signal[t] = accumulated
    return signal, labels, scales


def _crescent_profile(angle: np.ndarray, half_angle: float) -> np.ndarray:
    """Relative RV crescent thickness at ``angle`` from its axis: flat-topped, 0 at +-half_angle."""
    return np.sqrt(np.clip(1.0 - (angle / half_angle) ** 3, 0.0, None)).astype(np.float32)


def _lv_frame(heart: HeartParams, scene: HeartScene, twist: float, u_centre: np.ndarray):
    """Pixel coordinates along/across the (twisted) LV ellipse axes, the ellipse metric and angle.

    The metric ``sqrt(along^2 / e + across^2 * e)`` is the area-radius of the ellipse through a
    pixel, so ``radius - metric`` approximates the signed distance to an ellipse of area pi r^2;
    the angle is that of the pixel on the ellipse-normalised circle, in [-pi, pi].
    """
    angle = heart.ellipse_angle + twist * (1 - 2 * np.clip(u_centre, 0, 1))
    cos_a = np.cos(angle).astype(np.float32)[:, None, None]
    sin_a = np.sin(angle).astype(np.float32)[:, None, None]
    along = scene.right * cos_a + scene.anterior * sin_a
    across = -scene.right * sin_a + scene.anterior * cos_a
    e = np.float32(heart.ellipticity)
    root = np.sqrt(e)
    return along, across, np.sqrt(along * along / e + across * across * e), np.arctan2(across * root, along / root)


def _direction(heart: HeartParams, angle: float) -> tuple[float, float]:
    """Unit vector of an anatomical direction (from +right toward +anterior) in the LV frame."""
    relative = angle - heart.ellipse_angle
    return float(np.cos(relative)), float(np.sin(relative))


def _lvot_gap(heart: HeartParams, u_centre, along, across, inv_pixel) -> np.ndarray:
    """Fraction of myocardium kept: basal slices show a ring open toward the LVOT.

    The opening's half-angle shrinks linearly from ``lvot_half_angle`` at the base plane to 0 at
    ``lvot_depth``, so the myocardial area rises smoothly from the base instead of stepping (no
    jump in the ED and ES label mass). ACDC's most basal labelled slices keep nearly full rings.
    """
    kept = np.ones(along.shape, np.float32)
    halfwidth = heart.lvot_half_angle * np.clip(1 - u_centre / heart.lvot_depth, 0, 1) * (u_centre >= 0)
    dx, dy = _direction(heart, heart.lvot_angle)
    for z in np.flatnonzero(halfwidth > 0):
        radius = np.sqrt(along[z] ** 2 + across[z] ** 2)
        angle = np.arccos(np.clip((along[z] * dx + across[z] * dy) / (radius + 1e-6), -1, 1))
        kept[z] = _ramp(radius * (angle - np.float32(halfwidth[z])), inv_pixel)
    return kept


def _papillary(heart: HeartParams, motion: Motion, t: int, along, across, endo, u_centre, inv_pixel) -> np.ndarray:
    """Coverage of the 2-3 papillary muscles (dark blobs near the wall, labelled LV) in mid and apical slices.

    Their cross-section grows as the ventricle shortens (incompressible muscle); they stay clear
    of the centre of small apical cavities.
    """
    cover = np.zeros(along.shape, np.float32)
    radius = heart.papillary_radius * float(np.sqrt(heart.length / motion.length[t]))
    for z in np.flatnonzero((u_centre > 0.2) & (u_centre < 0.85)):
        size = min(radius, 0.35 * float(endo[z]))
        offset = max(float(endo[z]) - 1.1 * size, 0.45 * float(endo[z]))
        for angle in heart.papillary_angles:
            dx, dy = _direction(heart, angle)
            distance = np.sqrt((along[z] - offset * dx) ** 2 + (across[z] - offset * dy) ** 2)
            np.maximum(cover[z], _ramp(size - distance, inv_pixel), out=cover[z])
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
