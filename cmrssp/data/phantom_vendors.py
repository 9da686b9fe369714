"""Synthetic "vendors" of the phantom cohort (phantom.md F, "Vendor profile").

A vendor profile is drawn once per cohort (from the cohort seed) and shared by its subjects: it
fixes what differs between real scanners and sites - contrast, SNR, blur, coil bias, in-plane
spacing and matrix, frame count, intensity storage (int16 or float32), the ED frame convention,
slice order, in-plane axis convention and zero-padded borders.
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
# Vendor ranges of the contrast and noise, calibrated so that the phantom measures like real ACDC
# (benchmarks/phantom_vs_real.py; subjects draw around their vendor's value, phantom.py): blood /
# myocardium 2.53 [IQR 2.06, 2.94]; LV blood SNR by neighbour differences 22.9 [18.9, 26.6] (the
# noise is band-limited, so that estimate reads higher than the per-pixel SNR drawn here).
VENDOR_BLOOD_MYO = (2.3, 3.0)
VENDOR_BLOOD_SNR = (10.5, 18.5)
# Coil sensitivity max/min over the body (recipe F.4: 1.3-2.0); the p90/p10 ratio of the 20 mm
# smoothed intensity over soft tissue is 2.08 [1.86, 2.49] in ACDC, 1.7 with recipe F's 1.35-1.9.
VENDOR_BIAS_RATIO = (1.9, 2.9)
VENDOR_STREAM = 0x7E4D0  # keeps the vendor draws apart from every subject stream


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
    intensity_max: float  # typical maximum stored intensity step (int16 value)
    float_slope: float  # stored value of one intensity step (float32 storage)
    gamma: float
    blood_myo: float  # blood / myocardium signal ratio
    snr: float  # LV blood SNR (blood signal over the per-pixel noise sd)
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
    rng = np.random.default_rng(np.random.SeedSequence([seed, VENDOR_STREAM, list(LAYOUT_VENDORS).index(layout)]))
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
                intensity_max=float(np.exp(rng.uniform(np.log(300), np.log(2000)))),
                float_slope=float(np.exp(rng.uniform(np.log(1e-3), np.log(2.0)))),
                gamma=float(rng.uniform(0.7, 1.5)),
                blood_myo=float(rng.uniform(*VENDOR_BLOOD_MYO)),
                snr=float(rng.uniform(*VENDOR_BLOOD_SNR)),
                acquisition_mm=float(rng.uniform(*config.acquisition_mm)),
                window=str(rng.choice(["none", "tukey", "hamming"])),
                bias_ratio=float(rng.uniform(*VENDOR_BIAS_RATIO)),
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
