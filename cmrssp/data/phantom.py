"""Synthetic labelled short-axis cine cohorts, written in the real M&Ms, M&Ms-2 and ACDC layouts.

The recipe is docs/phantom.md (MRXCAT-like chain: masks -> tissue signal -> partial volume ->
blur -> coil bias -> Rician noise). The parts live in sibling modules:

- ``phantom_heart`` (and its ``phantom_heart_*`` parts): LV/RV geometry, motion, volume
  calibration on label volumes, rendering (B-D);
- ``phantom_body``: torso, fat, chest wall, lungs with vessels, liver, stomach, spine, aorta (E);
- ``phantom_acquisition``: k-space blur, coil bias, Rician noise, int16/float32 storage (F);
- ``phantom_geometry``: the oblique short-axis grid and affine, storage axis conventions (A);
- ``phantom_vendors``: the cohort's vendor profiles (F);
- ``phantom_layouts``: the dataset files, ``phantom_qa.csv``, per-frame QA labels, preview.

What real scans fix is calibrated against real ACDC images and labels, never against a
segmentation result (issue 14): ``benchmarks/phantom_vs_real.py`` measures the same statistics
on both, and the fitted ranges are the named constants here and in the sibling modules
(notes/phantom-calibration.md has the table).

Determinism: subject i depends only on ``(seed, i)`` (``SeedSequence([seed, STREAM, i])``, the
demographics on their own ``SeedSequence([seed, DEMOGRAPHICS_STREAM, i])``) and on the cohort's
vendor profiles, which depend only on ``(seed, layout, config)``; so a subject is identical
whether generated alone or in a cohort of any size, by one process or many.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from cmrssp.atomic import atomic_directory
from cmrssp.data import phantom_acquisition as acquisition
from cmrssp.data.phantom_body import add_lung_vessels, body_signal, draw_body
from cmrssp.data.phantom_geometry import SaxGrid, allocate_stored, draw_grid
from cmrssp.data.phantom_heart import RV_FLOW_TEXTURE, HeartScene, draw_heart, draw_texture, heart_motion, render_heart
from cmrssp.data.phantom_layouts import preview_slices, write_metadata, write_preview, write_qa_table, write_subject
from cmrssp.data.phantom_vendors import VendorProfile, draw_vendor_profiles
from cmrssp.errors import InputError

LAYOUTS = ("mnms", "mnms2", "acdc")
SUBJECT_STREAM = 0x5AB1EC7
DEMOGRAPHICS_STREAM = 0xDE3106
# Phenotype mix and the dataset's own pathology code for each phenotype (data-formats.md 1.2-1.4).
PHENOTYPE_MIX = {
    "mnms": {"NOR": 0.3, "DCM": 0.3, "HCM": 0.25, "MINF": 0.05, "RVD": 0.1},
    "mnms2": {"NOR": 0.25, "DCM": 0.2, "HCM": 0.2, "RVD": 0.35},
    "acdc": {"NOR": 0.2, "DCM": 0.2, "HCM": 0.2, "MINF": 0.2, "RVD": 0.2},
}
PATHOLOGY_CODES = {
    "mnms": {"NOR": ("NOR",), "DCM": ("DCM",), "HCM": ("HCM",), "MINF": ("IHD",), "RVD": ("ARV",)},
    "mnms2": {"NOR": ("NOR",), "DCM": ("LV",), "HCM": ("HCM",), "RVD": ("RV", "ARR", "TRI", "FALL", "CIA")},
    "acdc": {"NOR": ("NOR",), "DCM": ("DCM",), "HCM": ("HCM",), "MINF": ("MINF",), "RVD": ("RV",)},
}
VENDOR_MIX = {"mnms": (0.3, 0.35, 0.2, 0.15), "mnms2": (0.6, 0.25, 0.15), "acdc": (0.6, 0.4)}
# Calibration against real ACDC images (100 training patients, ED/ES frames;
# benchmarks/phantom_vs_real.py, notes/phantom-calibration.md):
# - blood/myocardium contrast (median LV blood over median MYO label intensity): 2.53 [IQR 2.06,
#   2.94], 5th-95th percentile 1.62-3.57 -> the subject's drawn ratio around its vendor's, clipped;
BLOOD_MYO_JITTER = (0.8, 1.25)
BLOOD_MYO_LIMITS = (1.6, 3.8)
# - LV blood SNR (median blood over the robust sd of neighbour differences in the eroded pool):
#   22.9 [18.9, 26.6], 5th-95th 13.3-35.9 -> the subject's target around its vendor's, clipped;
SNR_JITTER = (0.8, 1.25)
SNR_LIMITS = (8.0, 45.0)
# - across-slice CV of the LV blood median: 0.13 [0.10, 0.18] at ED against 0.07 without it ->
#   a per-slice gain (inflow, per-breath-hold receiver scaling), log-normal with this sd range;
SLICE_GAIN_SD = (0.05, 0.15)
# - LV blood CV inside the eroded label: 0.22 [0.18, 0.27]; trabeculae and papillary muscles give
#   most of it, so the low-frequency blood texture is weaker than recipe E's +-7 %;
BLOOD_TEXTURE = 0.04
# - ACDC stacks are labelled from their first slice to their last (an empty slice above the base
#   in 5 % of ED frames; the top slice loses its labels at ES in 22 %; the last slice holds LV
#   cavity in 94 % at ED): the first slice centre sits this far below the ES base plane (mm) and
#   the last at this fraction of the LV cavity length.
ACDC_FIRST_BELOW_ES_BASE_MM = (-2.5, 8.5)
ACDC_LAST_FRACTION = (0.75, 0.97)


@dataclass(frozen=True)
class PhantomConfig:
    """Generation ranges of a phantom preset (phantom.md A; vendors draw inside them).

    Presets (``PHANTOM_PRESETS``):

    - ``"default"``: realistic acquisitions - matrices 192-320 px (typically 256x216), in-plane
      spacing 1.15-1.6 mm, 8-14 slices 8-10 mm apart (6-10 mm thick), 18-35 frames (mostly 25 or
      30). Gzipped, about 1 byte per voxel as int16 (14 MB for 256x216x10x25; ~21 MB for a typical
      subject of ~21 M voxels) and 1.7 as float32; a few seconds per subject on one core, writing
      included. In the ``acdc`` layout the stacks follow ACDC's coverage (labelled from the first
      slice to the last, 6-14 slices).
    - ``"tiny"``: for unit tests of the whole toolkit - 56-64 px at 4-4.8 mm (the heart and part
      of the chest fit), 5-8 slices 14-18 mm apart, 5-8 frames; ~0.05 s per subject, writing
      included.

    Attributes:
        matrix_choices: native in-plane matrices a vendor picks from.
        spacing_mm: in-plane spacing range.
        slice_spacing_mm, slice_thickness_mm: through-plane sampling (thickness <= spacing).
        n_slices, n_frames: inclusive ranges; slices cover from above the base to below the apex.
        typical_frames: frame counts vendors favour (each subject keeps its vendor's with p 0.75).
        sub_slices: odd number of through-plane sub-slices averaged for partial volume (heart).
        body_sub_slices: sub-slices for the slowly varying surroundings.
        acquisition_mm: acquired in-plane resolution range (k-space crop, blur; the noise is
            band-limited with it). The default, about twice the display pixel, reproduces the
            noise texture of real ACDC images (lag-1 correlation of background noise 0.40
            [IQR 0.21, 0.53]; phantom_vs_real.py) - recipe F.3's 1.6-2.2 mm gave 0.17.
        zero_pad_px: zeroed border rows of the one padding vendor.
    """

    matrix_choices: tuple[tuple[int, int], ...] = ((256, 216), (256, 256), (232, 256), (216, 256), (320, 260), (192, 240))
    spacing_mm: tuple[float, float] = (1.15, 1.6)
    slice_spacing_mm: tuple[float, float] = (8.0, 10.0)
    slice_thickness_mm: tuple[float, float] = (6.0, 10.0)
    n_slices: tuple[int, int] = (8, 14)
    n_frames: tuple[int, int] = (18, 35)
    typical_frames: tuple[int, ...] = (25, 30)
    sub_slices: int = 5
    body_sub_slices: int = 3
    acquisition_mm: tuple[float, float] = (1.8, 2.5)
    zero_pad_px: tuple[int, int] = (4, 12)

    def validate(self) -> "PhantomConfig":
        if self.sub_slices < 1 or self.sub_slices % 2 == 0:
            raise InputError(None, f"sub_slices must be a positive odd number, got {self.sub_slices}")
        for name in ("spacing_mm", "slice_spacing_mm", "slice_thickness_mm", "n_slices", "n_frames", "acquisition_mm"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise InputError(None, f"{name} must be an increasing positive range, got {(low, high)}")
        if self.n_frames[0] < 4:
            raise InputError(None, f"need at least 4 frames for a cardiac cycle, got {self.n_frames}")
        return self


PHANTOM_PRESETS: dict[str, PhantomConfig] = {
    "default": PhantomConfig(),
    "tiny": PhantomConfig(
        matrix_choices=((64, 56), (56, 64), (60, 60), (64, 64)),
        spacing_mm=(4.0, 4.8),
        slice_spacing_mm=(14.0, 18.0),
        slice_thickness_mm=(10.0, 14.0),
        n_slices=(5, 8),
        n_frames=(5, 8),
        typical_frames=(),
        sub_slices=3,
        body_sub_slices=1,
        acquisition_mm=(4.5, 6.0),
        zero_pad_px=(1, 2),
    ),
}


@dataclass
class PhantomSubject:
    """One synthetic subject in memory, oriented and scaled exactly as written.

    Attributes:
        subject_id: the layout's id (M&Ms ``A0S9V9``, M&Ms-2 ``001``, ACDC ``patient001``).
        image: float32 (X, Y, Z, T), the stored values (integers when ``storage_dtype`` is int16).
        labels: uint8 (X, Y, Z, T) canonical labels (1 LV, 2 MYO, 3 RV) at every frame.
        affine: 4x4 voxel -> world (RAS mm) of the stored arrays.
        ed, es: 0-based frame indices.
        vendor: vendor letter (A-D); pathology: the layout's pathology code.
        storage_dtype: "int16" or "float32".
        qa: the subject's ``phantom_qa.csv`` row (plus the layout's metadata).
    """

    subject_id: str
    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    ed: int
    es: int
    vendor: str
    pathology: str
    storage_dtype: str
    qa: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=16)
def cohort_vendors(seed: int, layout: str, config: PhantomConfig) -> tuple[VendorProfile, ...]:
    """The cohort's vendor profiles (cached: every subject of a cohort shares them)."""
    return draw_vendor_profiles(seed, layout, config)


def subject_code(seed: int, index: int, layout: str) -> str:
    """The layout's subject id; M&Ms codes are a seeded bijection of the index (so unique)."""
    if layout == "mnms2":
        return f"{index + 1:03d}"
    if layout == "acdc":
        return f"patient{index + 1:03d}"
    radices = (26, 10, 26, 10, 26, 10)
    size = math.prod(radices)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0DE]))
    multiplier = int(rng.integers(1, size))
    while math.gcd(multiplier, size) != 1:
        multiplier += 1
    number = (multiplier * index + int(rng.integers(size))) % size
    characters = []
    for position, radix in reversed(list(enumerate(radices))):
        number, digit = divmod(number, radix)
        characters.append(chr(ord("A") + digit) if position % 2 == 0 else str(digit))
    return "".join(reversed(characters))


def _check(layout: str, seed: int, index: int) -> None:
    if layout not in LAYOUTS:
        raise InputError(None, f"unknown phantom layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if seed < 0 or index < 0:
        raise InputError(None, f"seed and subject index must be non-negative, got seed={seed}, index={index}")


def generate_subject(seed: int, index: int, config: PhantomConfig, layout: str = "mnms") -> PhantomSubject:
    """Generate subject ``index`` of the cohort ``seed`` (deterministic; see the module docstring)."""
    _check(layout, seed, index)
    config = config.validate()
    vendors = cohort_vendors(seed, layout, config)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SUBJECT_STREAM, index]))
    vendor = vendors[int(rng.choice(len(vendors), p=VENDOR_MIX[layout]))]
    male = bool(rng.random() < 0.6)
    mix = PHENOTYPE_MIX[layout]
    phenotype = str(rng.choice(list(mix), p=list(mix.values())))
    pathology = str(rng.choice(PATHOLOGY_CODES[layout][phenotype]))
    heart = draw_heart(rng, phenotype, male)
    body = draw_body(rng, male)
    low, high = config.n_frames
    frames = vendor.frames if vendor.frames and rng.random() < 0.75 else int(rng.integers(low, high + 1))
    motion = heart_motion(heart, frames)
    basal_epicardium = heart.nominal_radius + heart.wall
    heart_radius = (2.0 * basal_epicardium * max(1.0, (heart.rv_edv / heart.lv_edv) ** 0.5) + 12.0 + heart.shell
                    + heart.outer_fat)
    coverage = None
    if layout == "acdc":
        first = heart.base_descent + rng.uniform(*ACDC_FIRST_BELOW_ES_BASE_MM)
        coverage = (first, max(heart.length * rng.uniform(*ACDC_LAST_FRACTION), first + 1.0))
    grid = draw_grid(rng, config, vendor, heart.apex_depth, heart_radius, coverage)
    texture = draw_texture(rng, heart, grid.depths)
    values = _tissue_values(rng, vendor)
    static = _surroundings(rng, body, values, grid, config.body_sub_slices)
    boxes, heart_signal, heart_labels = _render_heart_boxes(rng, heart, motion, texture, grid, static, values, config,
                                                             vendor, heart_radius)

    # Vendor frame convention: ED at frame 0 or late in the file, i.e. the stored frames are the
    # phases circularly shifted; the arrays are filled directly in file order.
    if vendor.ed_late and rng.random() < 0.85:
        ed = frames - int(rng.integers(1, 4))
    else:
        ed = 0 if rng.random() < 0.9 else int(rng.integers(1, 3))
    es = (ed + motion.es) % frames
    file_frame = (np.arange(frames) + ed) % frames  # file index of phase t
    # The arrays are filled in the vendor's stored layout through (T, Z, X, Y) views of them.
    (image, labels), views, affine = allocate_stored(static.shape[1:] + (len(static), frames), (np.float32, np.uint8),
                                                     grid.affine, vendor)
    image_tzxy, labels_tzxy = (view.transpose(3, 2, 0, 1) for view in views)
    for z, (rows, columns) in enumerate(boxes):
        labels_tzxy[file_frame, z, rows, columns] = heart_labels[:, z]
    noise = _acquire(rng, image_tzxy, labels_tzxy, file_frame, static, boxes, heart_signal, grid, body, vendor,
                     static > values["lung"] * 0.5)
    subject_id = subject_code(seed, index, layout)
    qa = {
        "subject_id": subject_id,
        "vendor": vendor.letter,
        "pathology": pathology,
        "n_slices": int(image.shape[2]),
        "n_frames": frames,
        "spacing_mm": round(grid.pixel, 4),
        "slice_spacing_mm": round(grid.slice_spacing, 3),
        "ed": ed,
        "es": es,
        **measure_labels(labels, affine, ed, es),
        "phenotype": phenotype,
        "layout": layout,
        "vendor_name": vendor.name,
        "matrix": f"{image.shape[0]}x{image.shape[1]}",
        "storage": vendor.storage,
        "slice_order": "base_to_apex" if vendor.base_to_apex else "apex_to_base",
        "zero_pad_px": vendor.zero_pad,
        "target_lv_ef_pct": round(100 * heart.lv_ef, 2),
        "target_rv_ef_pct": round(100 * heart.rv_ef, 2),
        "blood_myo_ratio": round(values["blood"] / values["myocardium"], 3),
        "snr": round(noise["myo_snr"], 2),
        "blood_snr": round(noise["blood_snr"], 2),
        "slice_gain_sd": round(noise["slice_gain_sd"], 4),
        "wall_mid_mm": round(heart.wall, 2),
        "wall_variation": round(heart.wall_variation, 3),
        "trabecula_mm": round(heart.trabecula_height, 2),
        "papillary_radius_mm": round(heart.papillary_radius, 2),
        "rv_blood_ratio": round(heart.rv_blood, 3),
        "rv_trabecula_mm": round(heart.rv_trabecula_height, 2),
        "myo_es_band": round(heart.myo_es_gain, 3),
        "heart_drift_mm_per_slice": round(float(np.linalg.norm(grid.drift[1] - grid.drift[0]))
                                          if len(grid.depths) > 1 else 0.0, 3),
        # Own stream: a subject's demographics do not move when the anatomy or acquisition draws change.
        **_demographics(np.random.default_rng(np.random.SeedSequence([seed, DEMOGRAPHICS_STREAM, index])), vendor,
                        phenotype, male, layout),
    }
    return PhantomSubject(subject_id, image, labels, affine, ed, es, vendor.letter, pathology, vendor.storage, qa)


def _surroundings(rng, body, values: dict[str, float], grid: SaxGrid, n_sub: int) -> np.ndarray:
    """Static signal of the surroundings (Z, X, Y), averaged over ``n_sub`` sub-slices, with lung vessels."""
    static = np.zeros((len(grid.depths),) + grid.matrix, np.float32)
    lung = np.zeros_like(static)
    points = [grid.world_points(grid.thickness * ((k + 0.5) / n_sub - 0.5)) for k in range(n_sub)]
    for z in range(len(grid.depths)):  # one slice at a time: its arrays stay in cache (same values)
        for x, y, height in points:
            signal, lung_cover = body_signal(body, values, x[z], y[z], height[z], grid.pixel)
            static[z] += signal / n_sub
            lung[z] += lung_cover / n_sub
    add_lung_vessels(rng, static, lung, body.vessels_per_lung, grid.pixel, values["vessel"])
    return static


def _render_heart_boxes(rng, heart, motion, texture, grid: SaxGrid, static, values, config: PhantomConfig, vendor,
                        radius: float):
    """Render the heart in a box per slice over the surroundings (phase order).

    The box is grown and the heart redrawn in the rare case its labels reach the box edge.
    """
    offsets, weights = grid.sub_slices(config.sub_slices, vendor.slice_profile)
    while True:
        boxes, right, anterior = grid.heart_boxes(radius)
        scene = HeartScene(
            right=right,
            anterior=anterior,
            slice_depth=grid.depths,
            sub_offsets=offsets,
            sub_weights=weights,
            pixel=grid.pixel,
            slice_spacing=grid.slice_spacing,
            background=np.stack([static[z][box] for z, box in enumerate(boxes)]),
            blood_texture=_smooth_field(rng, right, anterior, BLOOD_TEXTURE, (15, 40)) + 1.0,
            rv_texture=_smooth_field(rng, right, anterior, RV_FLOW_TEXTURE, (20, 50)) + 1.0,
            blood=values["blood"],
            myocardium=values["myocardium"],
            fat=values["fat"],
            shell=values["shell"],
        )
        signal, labels, _ = render_heart(heart, motion, scene, texture)
        edges = (labels[..., [0, -1], :].any(), labels[..., :, [0, -1]].any())
        if not any(edges) or 2 * radius / grid.pixel >= max(grid.matrix):
            return boxes, signal, labels
        radius *= 1.4


def _acquire(rng, image: np.ndarray, labels: np.ndarray, file_frame: np.ndarray, static: np.ndarray, boxes,
             heart_signal: np.ndarray, grid: SaxGrid, body, vendor: VendorProfile,
             body_cover: np.ndarray) -> dict[str, float]:
    """Recipe F degradation into ``image`` (T, Z, X, Y, file order) of the noise-free scene - the
    surroundings ``static`` (Z, X, Y) with the heart's ``boxes`` painted by ``heart_signal`` (T,
    Z, H, W, phase order): coil bias and slice gain, k-space blur with band-limited Rician noise,
    storage.

    The noise sd (per pixel, after the blur) is the mean ED LV blood signal over the subject's
    blood SNR. Returns the blood and myocardial SNR and the slice gain sd.
    """
    window = acquisition.kspace_window(grid.matrix, grid.pixel, max(vendor.acquisition_mm, grid.pixel), vendor.window)
    bias = acquisition.coil_sensitivity(rng, *grid.world_points(), body_cover, vendor.bias_ratio,
                                        body.torso_centre[1], body.torso_axes[1])
    gain_sd = rng.uniform(*SLICE_GAIN_SD)
    bias *= np.exp(rng.normal(0.0, gain_sd, size=bias.shape[0])).astype(np.float32)[:, None, None]
    ed = file_frame[0]
    blood_snr = float(np.clip(vendor.snr * rng.uniform(*SNR_JITTER), *SNR_LIMITS))
    biased = static * bias  # the surroundings times the coil sensitivity, the same in every frame

    def phase_signal(phase: int) -> np.ndarray:
        """The unblurred (Z, X, Y) image of a phase times the coil sensitivity."""
        signal = biased.copy()
        for z, (rows, columns) in enumerate(boxes):
            signal[z, rows, columns] = heart_signal[phase, z] * bias[z, rows, columns]
        return signal

    ed_signal = phase_signal(0)
    blood = float(ed_signal[labels[ed] == 1].mean())
    sigma = blood / blood_snr
    myo_snr = float(ed_signal[labels[ed] == 2].mean()) / sigma
    for phase, t in enumerate(file_frame):  # phase order, so the noise stream does not depend on the ED convention
        signal = ed_signal if phase == 0 else phase_signal(phase)
        acquisition.add_bandlimited_rician_noise(rng, signal, sigma, window, out=image[t])
    target_max = float(np.clip(vendor.intensity_max * rng.uniform(0.8, 1.25), 300, 4000))
    acquisition.to_storage(image, vendor.storage, target_max, vendor.float_slope)
    if grid.zero_pad:  # a vendor whose reconstruction pads the matrix with exact zeros
        image[:, :, : grid.zero_pad] = 0
        image[:, :, grid.matrix[0] - grid.zero_pad :] = 0
    return {"blood_snr": blood_snr, "myo_snr": myo_snr, "slice_gain_sd": gain_sd}


def _tissue_values(rng, vendor: VendorProfile) -> dict[str, float]:
    """Relative bSSFP signal per tissue (blood = 1; recipe F "simplest practical knob").

    The blood/myocardium ratio is drawn around the vendor's (``BLOOD_MYO_JITTER``, within
    ``BLOOD_MYO_LIMITS``); the vendor gamma reshapes the other tissues' contrast (display LUT
    differences). ``shell``, the soft tissue around the heart (pericardium, mediastinum,
    diaphragm), is myocardium-like (0.65-1.1 x myocardium).
    """
    u = rng.uniform
    ratio = float(np.clip(vendor.blood_myo * u(*BLOOD_MYO_JITTER), *BLOOD_MYO_LIMITS))
    myo = 1.0 / ratio
    others = {
        "fat": u(0.8, 1.1),
        "muscle": myo * u(0.75, 0.9),
        "soft": u(0.25, 0.4),
        "lung": u(0.01, 0.06),
        "vessel": u(0.4, 0.8),
        "liver": u(0.35, 0.6),
        "stomach": u(0.6, 0.9) if rng.random() < 0.5 else u(0.02, 0.06),
        "marrow": u(0.45, 0.7),
        "cortex": u(0.03, 0.08),
    }
    values = {name: float(v**vendor.gamma) for name, v in others.items()}
    # The first pixel ring outside the ACDC epicardial contour reads 0.84 x the myocardium (median).
    values.update(blood=1.0, myocardium=myo, shell=myo * u(0.65, 1.1))
    return values


def _smooth_field(rng, right: np.ndarray, anterior: np.ndarray, amplitude: float, wavelengths: tuple[float, float]):
    """Low-frequency random field (sum of 4 random cosines) over the heart box, float32."""
    field_ = np.zeros(right.shape, np.float32)
    for _ in range(4):
        angle, wavelength, phase = rng.uniform(0, 2 * np.pi), rng.uniform(*wavelengths), rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / wavelength
        field_ += np.cos(k * np.cos(angle) * right + k * np.sin(angle) * anterior + phase).astype(np.float32)
    return field_ * (amplitude / 2.0)


def _demographics(rng, vendor: VendorProfile, phenotype: str, male: bool, layout: str) -> dict[str, Any]:
    height = rng.normal(176, 7) if male else rng.normal(163, 6)
    weight = rng.normal(82, 12) if male else rng.normal(68, 11)
    known = rng.random() >= (0.15 if layout == "mnms" else 0.0)
    return {
        "sex": "M" if male else "F",
        "age": int(rng.integers(20, 71) if phenotype == "NOR" else rng.integers(25, 81)),
        "height": round(float(height), 1) if known else None,
        "weight": round(float(weight), 1) if known else None,
        "centre": int(rng.choice(vendor.centres)),
        "scanner": str(rng.choice(vendor.scanners)),
        "field": float(rng.choice(vendor.fields)),
    }


def measure_labels(labels: np.ndarray, affine: np.ndarray, ed: int, es: int) -> dict[str, float]:
    """QA volumes from canonical (X, Y, Z, T) labels: mL, %, g (myocardium 1.05 g/mL)."""
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    count = lambda t, label: int(np.count_nonzero(labels[..., t] == label))  # noqa: E731
    lv_edv, lv_esv = count(ed, 1) * voxel_ml, count(es, 1) * voxel_ml
    rv_edv, rv_esv = count(ed, 3) * voxel_ml, count(es, 3) * voxel_ml
    ef = lambda edv, esv: round(100 * (edv - esv) / edv, 2) if edv > 0 else float("nan")  # noqa: E731
    present = lambda label: int(np.count_nonzero((labels[..., ed] == label).any(axis=(0, 1))))  # noqa: E731
    return {
        "lv_edv_ml": round(lv_edv, 2),
        "lv_esv_ml": round(lv_esv, 2),
        "lv_ef_pct": ef(lv_edv, lv_esv),
        "rv_edv_ml": round(rv_edv, 2),
        "rv_esv_ml": round(rv_esv, 2),
        "rv_ef_pct": ef(rv_edv, rv_esv),
        "myo_mass_ed_g": round(count(ed, 2) * voxel_ml * 1.05, 2),
        "myo_mass_es_g": round(count(es, 2) * voxel_ml * 1.05, 2),
        "lv_slices_ed": present(1),
        "rv_slices_ed": present(3),
    }


def _make_subject(seed: int, index: int, config: PhantomConfig, layout: str, preview: bool, root: str):
    """Generate and write one subject (runs in worker processes); returns its QA row (+ preview)."""
    subject = generate_subject(seed, index, config, layout)
    write_subject(Path(root), subject, layout)
    return subject.qa, (preview_slices(subject) if preview else None)


def write_cohort(
    out: str | os.PathLike,
    n_subjects: int,
    seed: int = 0,
    layout: str = "mnms",
    preset: str = "default",
    workers: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Write ``n_subjects`` phantom subjects in ``layout`` into the new or empty folder ``out``.

    Besides the dataset files this writes ``phantom_qa.csv``, ``phantom_qa/<id>_labels.nii.gz``
    and, when matplotlib is importable, ``phantom_preview.png``. The folder appears complete or
    not at all (it is assembled under a temporary name). ``workers > 1`` generates subjects in
    that many processes; the files do not depend on it.

    Returns:
        The QA rows (one dict per subject, in index order), as in ``phantom_qa.csv``.
    """
    from tqdm import tqdm

    _check(layout, seed, 0)
    if preset not in PHANTOM_PRESETS:
        raise InputError(None, f"unknown phantom preset {preset!r}; choose one of {', '.join(PHANTOM_PRESETS)}")
    if n_subjects < 1 or workers < 1:
        raise InputError(None, f"need at least one subject and one worker, got {n_subjects} subjects, {workers} workers")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "already exists and is not an empty folder; a phantom cohort is written into a new or "
                              "empty folder (remove it or choose another --out)")
    config = PHANTOM_PRESETS[preset].validate()
    n_preview = min(n_subjects, 4)
    rows: list[dict[str, Any] | None] = [None] * n_subjects
    previews: list[dict[str, Any] | None] = [None] * n_preview
    jobs = [(seed, i, config, layout, i < n_preview) for i in range(n_subjects)]
    with atomic_directory(out) as root, tqdm(total=n_subjects, desc="phantom", unit="subject", disable=not progress) as bar:
        with contextlib.ExitStack() as stack:
            if workers == 1:
                results = ((i, _make_subject(*job, str(root))) for i, job in enumerate(jobs))
            else:
                pool = stack.enter_context(_subject_pool(min(workers, n_subjects)))
                futures = {pool.submit(_make_subject, *job, str(root)): i for i, job in enumerate(jobs)}
                results = ((futures[future], future.result()) for future in as_completed(futures))
            for i, (row, preview) in results:
                rows[i] = row
                if preview is not None:
                    previews[i] = preview
                bar.update(1)
        write_metadata(root, layout, rows)
        write_qa_table(root, rows)
        write_preview(root, [p for p in previews if p is not None])
    return rows


@contextlib.contextmanager
def _subject_pool(workers: int):
    """Spawned worker processes (safe after torch/OpenMP use in the parent), one BLAS/OpenMP thread each.

    The thread variables are set while the pool lives (children inherit the environment when they
    start) and restored afterwards; pending subjects are cancelled on an error.
    """
    single = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {name: os.environ.get(name) for name in single}
    os.environ.update(single)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
