"""One subject's heart: its parameters and the ACDC-calibrated distributions they are drawn from.

phantom.md B (LV), C (motion timing) and D (RV), G (phenotypes). The ranges are the ones the real
ACDC labels and images fix (issue 14; ``benchmarks/phantom_vs_real.py``,
notes/phantom-calibration.md); how the parameters become images is ``phantom_heart``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHENOTYPES = ("NOR", "DCM", "HCM", "MINF", "RVD")
# The RV pool starts this far outside the LV epicardium: recipe D's 1 mm left a background pixel
# between the septum and the RV label that ACDC's labels do not have (RV touches MYO).
SEPTAL_GAP_MM = 0.0

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
