"""Benchmark: the same image and label statistics on real ACDC and on a phantom cohort (issue 14).

Why real myocardium and RV are harder to segment than the phantom's, in numbers. Every ED and
ES frame (``patientXXX_frameYY.nii.gz`` + ``_gt``, found through ``Info.cfg``) of a real ACDC
``training/`` folder and of a phantom cohort written by
``cmrssp.data.phantom.write_cohort(..., layout="acdc")`` goes through one function,
:func:`frame_statistics`, at the native grid and after in-plane resampling to 5 mm (the cpu
grid: image cubic, labels nearest). Per subject and phase each statistic is one number (a median
over the frame's slices); the table gives the median and quartiles over subjects.

Statistics (slice positions: the labelled slices ranked from the base, ``base``/``apex`` the
first/last labelled slice, thirds ``basal``/``mid``/``apical``; intensities relative to the
frame's median LV blood ``B`` and myocardium ``M``, with ``T = (B + M) / 2``):

- acquisition: pixel and slice spacing, matrix, field of view, slices, labelled slices, empty
  slices beyond the base and the apex, slices holding each class;
- myocardium: wall thickness (equivalent-ring ``sqrt((A_lv + A_myo)/pi) - sqrt(A_lv/pi)`` per
  position; circumferential CV of the local thickness ``d_endo + d_epi - pixel``); the fraction
  of myocardium pixels touching blood (LV or RV), touching both the cavity and the outside
  (a wall one pixel thick), RV pixels touching myocardium, myocardium-only (no cavity) apical
  slices, broken rings;
- blood pools: CV inside the LV/RV label (eroded one pixel), the fraction of label pixels darker
  than ``T`` (papillary muscles, trabeculae), RV/LV blood, blood/myocardium contrast, myocardial CV;
- where the contours lie: the share of dark pixels in the outermost ring of the LV and RV labels,
  of bright pixels among the myocardium pixels next to the LV, and the median of the first pixel
  ring outside the epicardium relative to M (1: an invisible epicardial border);
- surroundings: the 0-5 mm ring outside the epicardium and outside the RV label (RV excluded
  from the LV ring): fractions dark (< M/2: lung, air), myocardium-like (M/2..T) and bright
  (> T: fat, blood) - a myocardium-like ring is an invisible epicardial border;
- basal structure: bright (> T) unlabelled pixels near the heart in the base slice and in the
  slice beyond the base (atria, outflow tracts);
- RV shape: RV/LV area per position, RV in the base/apex slice;
- inter-slice consistency: in-plane LV centroid jumps between adjacent slices (mm) and their
  second difference (the part a tilted long axis does not explain: breath-hold shifts), relative
  LV area change, boundary roughness (isoperimetric ratio, 1 for a disc);
- intensity: blood SNR (median LV blood over the robust sd of neighbour differences in the
  eroded pool), lag-1 correlation of the local-mean residual in the blood pool and in the dark
  background (noise texture: white noise gives ~0, zero-filled reconstructions more), across-
  slice CV of the LV blood median, and the p90/p10 ratio of the 20 mm-smoothed intensity over the
  body (coil bias plus anatomy).

Outputs (``--out``): ``phantom_vs_real.csv`` (one row per statistic, phase and grid: median,
quartiles, mean, share of subjects above 0, count), ``phantom_vs_real.md`` (the same as a
markdown table; ``SHARE_STATISTICS`` such as "RV in the base slice" as the share of subjects) and ``per_subject.csv``. ``--baseline``
adds the phantom column of an earlier run's CSV (before/after a generator change); ``--real-rows``
reuses an earlier run's real rows. About 3 minutes on one busy core with 20 phantom subjects
(generation ~80 s, the 100 real patients ~75 s).

    python benchmarks/phantom_vs_real.py --out /tmp/pvr                         # 20 phantom subjects
    python benchmarks/phantom_vs_real.py --phantom-dir cohort --baseline before.csv --out /tmp/pvr2
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.atomic import write_text  # noqa: E402
from cmrssp.data.nifti import read_image, read_labels  # noqa: E402
from cmrssp.data.sources_acdc import ACDC_TO_CANONICAL, read_info  # noqa: E402
from cmrssp.table import write_csv  # noqa: E402

DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "acdc" / "training"
LV, MYO, RV = 1, 2, 3
GRID_MM = 5.0  # the cpu grid's in-plane spacing
RING_MM = 5.0  # width of the surroundings ring outside the epicardium / RV
REGION_MM = 10.0  # "near the heart": the union of all labels over slices, dilated by this
SMOOTH_MM = 20.0  # Gaussian sigma of the low-frequency intensity map
CROSS = ndimage.generate_binary_structure(2, 1)
POSITIONS = ("base", "basal", "mid", "apical", "apex")
# Statistics shown as the share of subjects where they are positive (yes/no, or a count of slices).
SHARE_STATISTICS = ("empty_above_base", "empty_below_apex", "rv_in_base_slice", "rv_in_apex_slice",
                    "lv_in_apex_slice", "myo_only_slices")


# --- reading --------------------------------------------------------------------------------


def acdc_frames(root: Path):
    """Yield ``(subject, group, phase, image (X, Y, Z), canonical labels, spacing (3,))`` per ED/ES frame."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "Info.cfg").is_file()):
        info = read_info(folder / "Info.cfg")
        for phase in ("ED", "ES"):
            stem = folder / f"{folder.name}_frame{int(info[phase]):02d}"
            image, geometry = read_image(stem.with_name(stem.name + ".nii.gz"), ndim=3)
            labels, _ = read_labels(stem.with_name(stem.name + "_gt.nii.gz"), ndim=3)
            yield folder.name, info["Group"], phase, image, ACDC_TO_CANONICAL[labels], np.asarray(geometry.spacing, float)


def base_first(labels: np.ndarray) -> bool:
    """Is slice 0 the base? The area-weighted label centroid lies on the base side (sections shrink apically)."""
    area = np.count_nonzero(labels, axis=(0, 1)).astype(float)
    labelled = np.flatnonzero(area)
    if labelled.size < 2:
        return True
    centroid = float((np.arange(area.size) * area).sum() / area.sum())
    return centroid <= (labelled[0] + labelled[-1]) / 2.0


def resample_inplane(image: np.ndarray, labels: np.ndarray, spacing: np.ndarray, target: float):
    """Image (cubic) and labels (nearest) on a ``target`` mm in-plane grid, pixel centres aligned."""
    size = [max(1, int(round(n * s / target))) for n, s in zip(image.shape[:2], spacing[:2])]
    coords = [((np.arange(m) + 0.5) * target / s - 0.5) for m, s in zip(size, spacing[:2])]
    grid = np.meshgrid(*coords, indexing="ij")
    image_out = np.stack([ndimage.map_coordinates(image[..., z], grid, order=3, mode="nearest")
                          for z in range(image.shape[2])], axis=-1)
    labels_out = np.stack([ndimage.map_coordinates(labels[..., z], grid, order=0, mode="nearest")
                           for z in range(labels.shape[2])], axis=-1)
    return image_out.astype(np.float32), labels_out.astype(np.uint8), np.array([target, target, spacing[2]])


# --- statistics -----------------------------------------------------------------------------


def _median(values) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else math.nan


def _perimeter(mask: np.ndarray, pixel: float) -> float:
    """Boundary length (mm): 4-connected edge count times pi/4 (unbiased on average over orientations)."""
    padded = np.pad(mask, 1)
    edges = sum(np.count_nonzero(padded != np.roll(padded, 1, axis)) for axis in (0, 1))
    return edges * pixel * math.pi / 4


def _ring_classes(values: np.ndarray, myo: float, threshold: float) -> tuple[float, float, float]:
    """Fractions of ``values`` dark (< M/2), myocardium-like (M/2..T) and bright (> T)."""
    if values.size == 0:
        return math.nan, math.nan, math.nan
    dark = float(np.mean(values < 0.5 * myo))
    bright = float(np.mean(values > threshold))
    return dark, 1.0 - dark - bright, bright


def _noise(image: np.ndarray, core: np.ndarray) -> tuple[float, float]:
    """Robust noise sd from neighbour differences inside ``core`` (2D) and their lag-1 correlation."""
    pairs = core[1:] & core[:-1]
    differences = (image[1:] - image[:-1])[pairs]
    if differences.size < 30:
        return math.nan, math.nan
    sigma = 1.4826 * float(np.median(np.abs(differences - np.median(differences)))) / math.sqrt(2)
    # Correlation of neighbouring pixels' deviations from the 3x3 local mean (noise texture).
    residual = image - ndimage.uniform_filter(image, 3)
    both = core[1:] & core[:-1]
    a, b = residual[1:][both], residual[:-1][both]
    correlation = float(np.corrcoef(a, b)[0, 1]) if a.size > 30 and a.std() > 0 and b.std() > 0 else math.nan
    return sigma, correlation


def frame_statistics(image: np.ndarray, labels: np.ndarray, spacing: np.ndarray) -> dict[str, float]:
    """All statistics of one frame: image float (X, Y, Z), canonical labels uint8 (X, Y, Z), spacing mm (3,)."""
    if not base_first(labels):
        image, labels = image[:, :, ::-1], labels[:, :, ::-1]
    pixel = float(spacing[0])
    area_px = float(spacing[0] * spacing[1])
    n_z = labels.shape[2]
    labelled = np.flatnonzero(labels.any(axis=(0, 1)))
    stats: dict[str, float] = {
        "pixel_mm": pixel, "slice_spacing_mm": float(spacing[2]), "matrix_min": float(min(labels.shape[:2])),
        "fov_mm": float(max(labels.shape[0] * spacing[0], labels.shape[1] * spacing[1])), "n_slices": float(n_z),
    }
    if labelled.size == 0:
        return stats
    first, last = int(labelled[0]), int(labelled[-1])
    present = lambda label: float(np.count_nonzero((labels == label).any(axis=(0, 1))))  # noqa: E731
    stats.update(n_labelled=float(last - first + 1), empty_above_base=float(first), empty_below_apex=float(n_z - 1 - last),
                 lv_slices=present(LV), myo_slices=present(MYO), rv_slices=present(RV))

    blood = float(np.median(image[labels == LV])) if (labels == LV).any() else math.nan
    myo_level = float(np.median(image[labels == MYO])) if (labels == MYO).any() else math.nan
    threshold = 0.5 * (blood + myo_level)
    myo_values = image[labels == MYO]
    stats.update(blood_myo_ratio=blood / myo_level,
                 myo_cv=float(myo_values.std() / myo_values.mean()) if myo_values.size else math.nan)
    region = ndimage.binary_dilation(labels.any(axis=2), iterations=max(1, int(round(REGION_MM / pixel))))

    per_slice: dict[str, list[float]] = {}
    by_position: dict[str, dict[str, list[float]]] = {p: {} for p in POSITIONS}
    centroids, lv_areas = [], []

    def add(name: str, value: float, position: list[str] | None = None) -> None:
        per_slice.setdefault(name, []).append(value)
        for p in position or ():
            by_position[p].setdefault(name, []).append(value)

    span = max(last - first, 1)
    for z in range(first, last + 1):
        rank = (z - first) / span
        positions = ["basal" if rank < 1 / 3 else "apical" if rank > 2 / 3 else "mid"]
        positions += ["base"] * (z == first) + ["apex"] * (z == last)
        lab, img = labels[..., z], image[..., z]
        lv, myo, rv = lab == LV, lab == MYO, lab == RV
        a_lv, a_myo, a_rv = (float(np.count_nonzero(m)) * area_px for m in (lv, myo, rv))
        if a_myo > 0 and a_lv > 0:
            thickness = math.sqrt((a_lv + a_myo) / math.pi) - math.sqrt(a_lv / math.pi)
            add("wall_mm", thickness, positions)
            d_endo = ndimage.distance_transform_edt(~lv, sampling=spacing[:2])[myo]
            d_epi = ndimage.distance_transform_edt(lv | myo, sampling=spacing[:2])[myo]
            local = d_endo + d_epi - pixel
            add("wall_local_cv", float(local.std() / max(local.mean(), 1e-6)))
            outside = ~(lv | myo)
            add("myo_touch_blood", float(np.mean(ndimage.binary_dilation(lv | rv, CROSS)[myo])))
            if a_rv > 0:
                add("rv_touch_myo", float(np.mean(ndimage.binary_dilation(myo, CROSS)[rv])))
            touches_both = ndimage.binary_dilation(lv, CROSS) & ndimage.binary_dilation(outside & ~rv, CROSS)
            add("myo_through_wall", float(np.mean(touches_both[myo])))
            add("myo_components", float(ndimage.label(myo, CROSS)[1]))
            add("lv_roughness", _perimeter(lv, pixel) ** 2 / (4 * math.pi * a_lv))
            add("epi_roughness", _perimeter(lv | myo, pixel) ** 2 / (4 * math.pi * (a_lv + a_myo)))
        if a_myo > 0 and a_lv == 0:
            add("myo_only_slice", 1.0, positions)
        if a_lv > 0:
            add("rv_lv_area", a_rv / a_lv, positions)
            ys, xs = np.nonzero(lv)
            centroids.append((z, ys.mean() * spacing[0], xs.mean() * spacing[1]))
            lv_areas.append((z, a_lv))
        # Intensities: blood pools (eroded one pixel against partial volume), dark label pixels.
        for name, mask in (("lv", lv), ("rv", rv)):
            core = ndimage.binary_erosion(mask, CROSS)
            if np.count_nonzero(core) >= 10:
                values = img[core]
                add(f"{name}_blood_cv", float(values.std() / values.mean()), positions)
                add(f"{name}_dark_fraction", float(np.mean(img[mask] < threshold)), positions)
                add(f"{name}_blood_rel", float(np.median(values)) / blood, positions)
                # Where the contour lies: the label's outermost pixel ring, dark when drawn in the muscle.
                add(f"{name}_edge_dark", float(np.mean(img[mask & ~core] < threshold)))
        if a_myo > 0 and a_lv > 0:
            inner = myo & ndimage.binary_dilation(lv, CROSS)
            add("myo_inner_bright", float(np.mean(img[inner] > threshold)))
            around = (lab == 0) & ndimage.binary_dilation(myo, CROSS) & ~ndimage.binary_dilation(lv | rv, CROSS)
            if around.any():
                add("epi_outside_rel", float(np.median(img[around])) / myo_level)
        core = ndimage.binary_erosion(lv, CROSS, iterations=2)
        if np.count_nonzero(core) >= 40:
            sigma, correlation = _noise(img, core)
            add("blood_snr", float(np.median(img[core])) / sigma if sigma > 0 else math.nan)
            add("noise_lag1_corr", correlation)
        # Surroundings: the ring outside the epicardium (not RV) and outside the RV (not LV/MYO).
        if a_myo > 0:
            d_out = ndimage.distance_transform_edt(~(lv | myo), sampling=spacing[:2])
            ring = (d_out > 0) & (d_out <= RING_MM) & ~rv
            for cls, value in zip(("dark", "myolike", "bright"), _ring_classes(img[ring], myo_level, threshold)):
                add(f"epi_ring_{cls}", value, positions)
        if a_rv > 0:
            d_out = ndimage.distance_transform_edt(~rv, sampling=spacing[:2])
            ring = (d_out > 0) & (d_out <= RING_MM) & (lab == 0)
            for cls, value in zip(("dark", "myolike", "bright"), _ring_classes(img[ring], myo_level, threshold)):
                add(f"rv_ring_{cls}", value, positions)
        add("bright_unlabelled_near_heart", float(np.mean((img > threshold)[region & (lab == 0)])), positions)

    stats["rv_in_base_slice"] = float((labels[..., first] == RV).any())
    stats["rv_in_apex_slice"] = float((labels[..., last] == RV).any())
    stats["lv_in_apex_slice"] = float((labels[..., last] == LV).any())
    stats["myo_only_slices"] = float(len(per_slice.pop("myo_only_slice", [])))
    for position in POSITIONS:
        by_position[position].pop("myo_only_slice", None)
    if first > 0:  # the slice beyond the base: atria and outflow tracts, unlabelled
        img = image[..., first - 1]
        stats["bright_beyond_base"] = float(np.mean((img > threshold)[region]))
    for name, values in per_slice.items():
        stats[name] = _median(values)
    for position, named in by_position.items():
        for name, values in named.items():
            if name in ("wall_mm", "rv_lv_area", "lv_dark_fraction", "rv_dark_fraction", "epi_ring_myolike",
                        "epi_ring_bright", "bright_unlabelled_near_heart", "lv_blood_cv", "rv_blood_cv"):
                stats[f"{name}@{position}"] = _median(values)
    if np.isfinite(stats.get("wall_mm@mid", math.nan)) and stats["wall_mm@mid"] > 0:
        stats["wall_apical_over_mid"] = stats.get("wall_mm@apical", math.nan) / stats["wall_mm@mid"]
    # Inter-slice consistency of the LV (adjacent slices only).
    c = np.array(centroids)
    if len(c) >= 3:
        adjacent = np.diff(c[:, 0]) == 1
        steps = np.diff(c[:, 1:], axis=0)
        stats["lv_centroid_jump_mm"] = _median(np.linalg.norm(steps[adjacent], axis=1))
        triple = adjacent[1:] & adjacent[:-1]
        second = np.linalg.norm(np.diff(steps, axis=0)[triple], axis=1)
        stats["lv_centroid_second_diff_mm"] = _median(second)
        areas = np.array(lv_areas)
        change = np.abs(np.diff(areas[:, 1])) / (0.5 * (areas[1:, 1] + areas[:-1, 1]))
        stats["lv_area_change"] = _median(change[adjacent])
    blood_levels = [float(np.median(image[..., z][labels[..., z] == LV])) for z in range(first, last + 1)
                    if np.count_nonzero(labels[..., z] == LV) >= 20]
    if len(blood_levels) >= 3:
        stats["blood_across_slices_cv"] = float(np.std(blood_levels) / np.mean(blood_levels))
    stats["smooth_p90_p10"] = _low_frequency_ratio(image[..., first:last + 1], blood, pixel)
    stats["background_noise_corr"] = _background_noise_correlation(image[..., (first + last) // 2])
    return stats


def _background_noise_correlation(img: np.ndarray) -> float:
    """Lag-1 correlation of the residual of a 9 x 9 local mean in the darkest smooth region (air, lung).

    About -0.01 for white noise; zero-filled (band-limited) reconstructions correlate neighbours.
    Zero-padded borders are excluded.
    """
    smooth = ndimage.uniform_filter(img, 9)
    region = (smooth < np.percentile(smooth[img > 0], 15)) & (img > 0)
    region = ndimage.binary_erosion(region, iterations=3)
    residual = img - smooth
    pairs = [(residual[1:][region[1:] & region[:-1]], residual[:-1][region[1:] & region[:-1]]),
             (residual[:, 1:][region[:, 1:] & region[:, :-1]], residual[:, :-1][region[:, 1:] & region[:, :-1]])]
    values = [float(np.corrcoef(a, b)[0, 1]) for a, b in pairs if a.size > 100 and a.std() > 0 and b.std() > 0]
    return float(np.mean(values)) if values else math.nan


def _low_frequency_ratio(image: np.ndarray, blood: float, pixel: float) -> float:
    """p90/p10 of the normalised-convolution smoothed intensity over soft tissue (> 0.15 B), mid slice."""
    z = image.shape[2] // 2
    img = image[..., z]
    tissue = img > 0.15 * blood
    tissue = ndimage.binary_opening(tissue, iterations=2)
    if np.count_nonzero(tissue) < 200:
        return math.nan
    sigma = SMOOTH_MM / pixel
    weight = ndimage.gaussian_filter(tissue.astype(float), sigma)
    smooth = ndimage.gaussian_filter(img * tissue, sigma) / np.maximum(weight, 1e-6)
    inner = ndimage.binary_erosion(tissue, iterations=max(1, int(round(10 / pixel))))
    values = smooth[inner] if np.count_nonzero(inner) > 100 else smooth[tissue]
    return float(np.percentile(values, 90) / np.percentile(values, 10))


# --- cohorts and the table ------------------------------------------------------------------


def measure(root: Path, source: str, limit: int | None = None) -> list[dict]:
    """Per subject/phase/grid rows of :func:`frame_statistics` for an ACDC-layout ``root``."""
    rows, subjects = [], set()
    for subject, group, phase, image, labels, spacing in acdc_frames(root):
        subjects.add(subject)
        if limit is not None and len(subjects) > limit:
            break
        for grid, (img, lab, sp) in (("native", (image, labels, spacing)),
                                     ("5mm", resample_inplane(image, labels, spacing, GRID_MM))):
            rows.append({"source": source, "subject": subject, "group": group, "phase": phase, "grid": grid,
                         **frame_statistics(img, lab, sp)})
    return rows


def summarise(rows: list[dict], columns: dict[str, list[dict]]) -> list[dict]:
    """One row per (statistic, phase, grid): median [p25, p75] over subjects for each named cohort."""
    names: list[str] = []
    for row in rows:
        for key in row:
            if key not in ("source", "subject", "group", "phase", "grid") and key not in names:
                names.append(key)
    table = []
    for grid in ("native", "5mm"):
        for phase in ("ED", "ES"):
            for name in names:
                entry = {"statistic": name, "phase": phase, "grid": grid}
                for column, cohort in columns.items():
                    values = np.array([r.get(name, math.nan) for r in cohort if r["phase"] == phase and r["grid"] == grid],
                                      float)
                    values = values[np.isfinite(values)]
                    if values.size:
                        entry[f"{column}_median"] = float(np.median(values))
                        entry[f"{column}_mean"] = float(np.mean(values))
                        entry[f"{column}_share"] = float(np.mean(values > 0))
                        entry[f"{column}_p25"], entry[f"{column}_p75"] = (float(v) for v in np.percentile(values, [25, 75]))
                        entry[f"{column}_n"] = int(values.size)
                table.append(entry)
    return table


def read_baseline(path: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    with open(path, newline="") as handle:
        return {(r["statistic"], r["phase"], r["grid"]): r for r in csv.DictReader(handle)}


def read_rows(path: Path, source: str) -> list[dict]:
    """The ``source`` rows of a per_subject.csv, statistics as floats (empty cells dropped)."""
    keys = ("source", "subject", "group", "phase", "grid")
    with open(path, newline="") as handle:
        return [{k: (v if k in keys else float(v)) for k, v in r.items() if v != ""}
                for r in csv.DictReader(handle) if r["source"] == source]


def markdown(table: list[dict], columns: list[str]) -> str:
    def cell(entry: dict, column: str) -> str:
        if f"{column}_median" not in entry or entry[f"{column}_median"] in ("", None):
            return "-"
        if entry["statistic"] in SHARE_STATISTICS and entry.get(f"{column}_share", "") != "":
            return f"{float(entry[f'{column}_share']):.0%} of subjects"
        median, p25, p75 = (float(entry[f"{column}_{k}"]) for k in ("median", "p25", "p75"))
        return f"{median:.3g} [{p25:.3g}, {p75:.3g}]"

    lines = ["| statistic | phase | grid | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for entry in table:
        lines.append(f"| {entry['statistic']} | {entry['phase']} | {entry['grid']} | "
                     + " | ".join(cell(entry, c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="ACDC training/ folder")
    parser.add_argument("--real-subjects", type=int, help="measure only the first N real patients")
    parser.add_argument("--real-rows", type=Path, help="reuse the real rows of an earlier run's per_subject.csv")
    parser.add_argument("--phantom-dir", type=Path, help="an existing phantom cohort (layout acdc) instead of a new one")
    parser.add_argument("--phantom-subjects", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write the new phantom cohort here and keep it")
    parser.add_argument("--baseline", type=Path, help="an earlier phantom_vs_real.csv: its phantom column is shown too")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV and markdown tables")
    args = parser.parse_args()
    if args.real_rows is None and not args.real.is_dir():
        parser.error(f"{args.real}: not a folder (an ACDC training/ folder with patientXXX/Info.cfg)")
    if args.phantom_dir is not None and not args.phantom_dir.is_dir():
        parser.error(f"{args.phantom_dir}: not a folder (a phantom cohort written with layout='acdc')")

    scratch = None
    start = time.perf_counter()
    try:
        if args.phantom_dir is not None:
            cohort = args.phantom_dir
        else:
            from cmrssp.data.phantom import write_cohort

            scratch = None if args.keep else Path(tempfile.mkdtemp(prefix="phantom-vs-real-"))
            cohort = args.keep or scratch / "cohort"
            write_cohort(cohort, args.phantom_subjects, seed=args.seed, layout="acdc", workers=args.workers, progress=False)
        generated = time.perf_counter()
        phantom = measure(cohort / "training" if (cohort / "training").is_dir() else cohort, "phantom")
        real = read_rows(args.real_rows, "real") if args.real_rows else measure(args.real, "real", args.real_subjects)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    table = summarise(real + phantom, {"real": real, "phantom": phantom})
    columns = ["real", "phantom"]
    if args.baseline is not None:
        baseline = read_baseline(args.baseline)
        for entry in table:
            old = baseline.get((entry["statistic"], entry["phase"], entry["grid"]), {})
            for key in ("median", "p25", "p75", "n", "mean", "share"):
                if old.get(f"phantom_{key}", "") != "":
                    entry[f"baseline_{key}"] = float(old[f"phantom_{key}"])
        columns = ["real", "baseline", "phantom"]
    args.out.mkdir(parents=True, exist_ok=True)
    csv_columns = ["statistic", "phase", "grid"] + [f"{c}_{k}" for c in columns
                                                    for k in ("median", "p25", "p75", "mean", "share", "n")]
    write_csv(args.out / "phantom_vs_real.csv", table, csv_columns)
    subject_columns = list(dict.fromkeys(k for r in real + phantom for k in r))
    write_csv(args.out / "per_subject.csv", real + phantom, subject_columns)
    text = markdown(table, columns)
    write_text(args.out / "phantom_vs_real.md", text)
    print(text)
    print(f"{len({r['subject'] for r in real})} real and {len({r['subject'] for r in phantom})} phantom subjects; "
          f"generation {generated - start:.0f} s, measurement {time.perf_counter() - generated:.0f} s")


if __name__ == "__main__":
    main()
