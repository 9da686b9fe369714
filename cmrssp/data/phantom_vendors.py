"""Synthetic "vendors" and scanner geometry of the phantom cohort (phantom.md A and F).

A vendor profile is drawn once per cohort (from the cohort seed) and shared by its subjects: it
fixes what differs between real scanners and sites - contrast, SNR, blur, coil bias, in-plane
spacing and matrix, frame count, intensity storage (int16 or float32), the ED frame convention,
slice order, in-plane axis convention and zero-padded borders. This module also builds the
short-axis geometry: an oblique affine whose slice axis follows an anatomically plausible LV long
axis (base->apex roughly toward patient left, anterior and inferior in RAS), and the axis flips
and transposes by which a vendor stores its arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Vendor letters as in M&Ms (data-formats.md 1.2): name in the M&Ms CSV, in the M&Ms-2 CSV,
# scanner models, M&Ms centres and field strengths (T).
VENDOR_INFO = {
    "A": ("Siemens", "SIEMENS", ("Avanto", "Symphony", "Skyra", "Aera", "TrioTim"), (1,), (1.5, 3.0)),
    "B": ("Philips", "Philips Medical Systems", ("Achieva", "Ingenia"), (2, 3), (1.5, 3.0)),
    "C": ("GE", "GE MEDICAL SYSTEMS", ("Signa Excite", "Signa Explorer", "Signa HDxt"), (4,), (1.5,)),
    "D": ("Canon", "Canon Medical Systems", ("Vantage Orian",), (5,), (1.5,)),
}
# ACDC is single-vendor (Siemens Aera 1.5 T and Trio Tim 3 T): two Siemens profiles.
LAYOUT_VENDORS = {"mnms": "ABCD", "mnms2": "ABC", "acdc": "AB"}
# LV long axis, base->apex, in RAS: toward patient left (-x), anterior (+y), inferior (-z).
NOMINAL_LONG_AXIS = np.array([-0.55, 0.55, -0.63])
MAX_AXIS_TILT_DEG = 20.0


@dataclass(frozen=True)
class VendorProfile:
    """One synthetic vendor (phantom.md F, "Vendor profile").

    Ranges are centred on the vendor's own value; a subject draws within them.
    """

    letter: str
    name: str  # as the layout's metadata spells it
    scanners: tuple[str, ...]
    centres: tuple[int, ...]
    fields: tuple[float, ...]
    storage: str  # "int16" or "float32"
    int16_max: float  # typical maximum stored value (int16 storage)
    float_scale: float  # stored value of unit blood signal (float32 storage)
    gamma: float
    blood_myo: float  # blood / myocardium signal ratio
    snr: float  # myocardial SNR
    acquisition_mm: float  # acquired (pre-interpolation) in-plane resolution
    window: str  # k-space apodisation: "none" (Gibbs ringing), "tukey", "hamming"
    bias_ratio: float  # max/min of the coil sensitivity over the body
    slice_profile: str  # "rect" or "gauss"
    spacing_mm: float
    matrix: tuple[int, int]
    frames: int  # typical frame count (0: none, draw per subject)
    ed_late: bool  # ED stored at a late frame (M&Ms centres 2-6) instead of frame 0
    base_to_apex: bool
    transpose: bool
    flips: tuple[bool, bool]
    zero_pad: int  # zeroed rows at both ends of the first stored axis


def _spread(rng: np.random.Generator, count: int, first: object, second: object, p_first: float) -> list:
    """A value per vendor, both values present whenever there are at least two vendors."""
    values = [first if rng.random() < p_first else second for _ in range(count)]
    if count >= 2 and len(set(values)) == 1:
        values[int(rng.integers(count))] = second if values[0] == first else first
    return values


def draw_vendor_profiles(seed: int, layout: str, config) -> tuple[VendorProfile, ...]:
    """The cohort's vendors; they depend only on (seed, layout, config), never on a subject."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E4D0, len(layout), sum(map(ord, layout))]))
    letters = LAYOUT_VENDORS[layout]
    count = len(letters)
    storages = _spread(rng, count, "int16", "float32", 0.6)
    orders = _spread(rng, count, True, False, 0.5)
    padded = int(rng.integers(1, count)) if count > 1 else -1  # never vendor A
    profiles = []
    for index, letter in enumerate(letters):
        mnms_name, mnms2_name, scanners, centres, fields = VENDOR_INFO[letter]
        name = {"mnms": mnms_name, "mnms2": mnms2_name, "acdc": "Siemens"}[layout]
        if layout == "acdc":
            scanners, fields = (("Aera",), (1.5,)) if index == 0 else (("TrioTim",), (3.0,))
        low, high = config.spacing_mm
        typical = [f for f in config.typical_frames if config.n_frames[0] <= f <= config.n_frames[1]]
        profiles.append(
            VendorProfile(
                letter=letter,
                name=name,
                scanners=scanners,
                centres=centres,
                fields=fields,
                storage=storages[index],
                int16_max=float(np.exp(rng.uniform(np.log(400), np.log(3200)))),
                float_scale=float(rng.choice([1.0, 100.0, 1000.0])),
                gamma=float(rng.uniform(0.7, 1.5)),
                blood_myo=float(rng.uniform(2.5, 3.6)),
                snr=float(rng.uniform(14, 34)),
                acquisition_mm=float(rng.uniform(*config.acquisition_mm)),
                window=str(rng.choice(["none", "tukey", "hamming"])),
                bias_ratio=float(rng.uniform(1.35, 1.9)),
                slice_profile=str(rng.choice(["rect", "gauss"])),
                spacing_mm=float(rng.uniform(low + 0.05 * (high - low), high - 0.05 * (high - low))),
                matrix=tuple(int(v) for v in config.matrix_choices[int(rng.integers(len(config.matrix_choices)))]),
                frames=int(rng.choice(typical)) if typical else 0,
                # Siemens (centre 1) stores ED at frame 0; the other M&Ms centres mostly late.
                ed_late=letter != "A" and layout != "acdc",
                base_to_apex=orders[index],
                transpose=bool(rng.random() < 0.5),
                flips=(bool(rng.random() < 0.5), bool(rng.random() < 0.5)),
                zero_pad=int(rng.integers(config.zero_pad_px[0], config.zero_pad_px[1] + 1)) if index == padded else 0,
            )
        )
    return tuple(profiles)


def _rotate(vector: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``vector`` about unit ``axis``."""
    return (
        vector * np.cos(angle)
        + np.cross(axis, vector) * np.sin(angle)
        + axis * np.dot(axis, vector) * (1 - np.cos(angle))
    )


@dataclass(frozen=True)
class SaxFrame:
    """Orthonormal world (RAS, mm) directions of a short-axis stack.

    ``long_axis`` points base->apex; ``right``/``anterior`` are the patient's right (+x) and
    anterior (+y) projected into the short-axis plane, the in-plane frame the anatomy is drawn
    in; ``axis_i``/``axis_j`` are the native pixel axes (a random in-plane rotation of it).
    """

    long_axis: np.ndarray
    right: np.ndarray
    anterior: np.ndarray
    axis_i: np.ndarray
    axis_j: np.ndarray

    def pixel_to_anatomy(self) -> np.ndarray:
        """2x2 matrix mapping a native pixel offset (mm along i, j) to (right, anterior) mm."""
        return np.array(
            [[self.axis_i @ self.right, self.axis_j @ self.right], [self.axis_i @ self.anterior, self.axis_j @ self.anterior]]
        )


def draw_sax_frame(rng: np.random.Generator) -> SaxFrame:
    """Long axis near ``NOMINAL_LONG_AXIS`` tilted by up to ~20 degrees, random in-plane rotation."""
    nominal = NOMINAL_LONG_AXIS / np.linalg.norm(NOMINAL_LONG_AXIS)
    helper = np.cross(nominal, rng.normal(size=3))
    tilt_axis = helper / np.linalg.norm(helper)
    tilt = np.deg2rad(MAX_AXIS_TILT_DEG) * np.sqrt(rng.random())
    long_axis = _rotate(nominal, tilt_axis, tilt)
    long_axis /= np.linalg.norm(long_axis)
    anterior = np.array([0.0, 1.0, 0.0]) - long_axis[1] * long_axis
    anterior /= np.linalg.norm(anterior)
    right = np.array([1.0, 0.0, 0.0]) - long_axis[0] * long_axis - anterior[0] * anterior
    right /= np.linalg.norm(right)
    angle = rng.uniform(0, 2 * np.pi)
    axis_i = np.cos(angle) * right + np.sin(angle) * anterior
    axis_j = -np.sin(angle) * right + np.cos(angle) * anterior
    if rng.random() < 0.5:  # either handedness of the native in-plane axes
        axis_j = -axis_j
    return SaxFrame(long_axis, right, anterior, axis_i, axis_j)


def native_affine(frame: SaxFrame, origin: np.ndarray, spacing: float, slice_spacing: float) -> np.ndarray:
    """4x4 voxel->world affine of the native (base->apex) stack; ``origin`` is voxel (0, 0, 0)."""
    affine = np.eye(4)
    affine[:3, 0] = frame.axis_i * spacing
    affine[:3, 1] = frame.axis_j * spacing
    affine[:3, 2] = frame.long_axis * slice_spacing
    affine[:3, 3] = origin
    return affine


def flip_axis(arrays: list[np.ndarray], affine: np.ndarray, axis: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Reverse voxel axis ``axis`` of every array and move the affine so world positions stay put."""
    size = arrays[0].shape[axis]
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, 3] + affine[:3, axis] * (size - 1)
    flipped[:3, axis] = -affine[:3, axis]
    return [np.flip(array, axis=axis) for array in arrays], flipped


def swap_inplane(arrays: list[np.ndarray], affine: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Transpose the two in-plane voxel axes (a "rows/columns" storage convention)."""
    swapped = affine.copy()
    swapped[:, [0, 1]] = affine[:, [1, 0]]
    return [np.swapaxes(array, 0, 1) for array in arrays], swapped


def apply_storage_convention(
    arrays: list[np.ndarray], affine: np.ndarray, vendor: VendorProfile
) -> tuple[list[np.ndarray], np.ndarray]:
    """Native (x, y, z[, t]) arrays -> the vendor's stored orientation, affine kept consistent.

    The stored k axis runs base->apex or apex->base as the vendor orders its slices; in-plane
    flips and a transpose are reflected in the affine's columns, so world positions never change.
    """
    if not vendor.base_to_apex:
        arrays, affine = flip_axis(arrays, affine, 2)
    if vendor.transpose:
        arrays, affine = swap_inplane(arrays, affine)
    for axis, flip in enumerate(vendor.flips):
        if flip:
            arrays, affine = flip_axis(arrays, affine, axis)
    return [np.ascontiguousarray(array) for array in arrays], affine
