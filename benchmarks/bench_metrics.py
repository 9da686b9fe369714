"""Benchmark: time to score a test set with the 3D metrics (dice_3d, hd95, largest_component_per_class).

Builds --volumes synthetic target/prediction pairs (default 280 = 140 test subjects x ED/ES,
protocol 5.2) of 256 x 256 x 12 at 1.25 x 1.25 x 10 mm. Each target holds a tapering LV blood
pool ellipse (1), a myocardial ring around it (2) and an RV crescent beside it (3), 30-60 px
across; the prediction is the same anatomy with shifted centres, scaled radii, the apex one slice
off now and then and, in some volumes, a small stray blob (so HD95 is not trivial). Then times
each metric over all volumes, --repeats times, and reports the median and best.

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --volumes 40 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.metrics import dice_3d, hd95, largest_component_per_class  # noqa: E402


def heart(shape: tuple[int, int, int], centre, lv_radius: float, wall: float, rv_shift: float, slices: range) -> np.ndarray:
    """uint8 (X, Y, Z) labels of a short-axis heart whose radii shrink towards the apex."""
    x, y, _ = shape
    volume = np.zeros(shape, dtype=np.uint8)
    i, j = np.meshgrid(np.arange(x) - centre[0], np.arange(y) - centre[1], indexing="ij")
    for position, z in enumerate(slices):
        taper = 1.0 - 0.6 * position / max(1, len(slices))
        r_lv, r_outer = lv_radius * taper, (lv_radius + wall) * taper
        lv_distance = np.hypot(i / 1.1, j)  # slightly elliptic
        rv_distance = np.hypot((i - rv_shift * taper) / 0.7, j / 1.2)
        plane = volume[:, :, z]
        plane[rv_distance <= 1.1 * r_outer] = 3
        plane[lv_distance <= r_outer] = 2  # the septum belongs to the myocardium, not the RV
        plane[lv_distance <= r_lv] = 1
    return volume


def make_pair(number: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(number)
    centre = np.array(shape[:2]) / 2 + rng.uniform(-20, 20, 2)
    lv_radius, wall, rv_shift = rng.uniform(12, 20), rng.uniform(5, 8), rng.uniform(25, 35)
    first, last = int(rng.integers(0, 2)), int(rng.integers(shape[2] - 3, shape[2]))
    target = heart(shape, centre, lv_radius, wall, rv_shift, range(first, last))
    apex = last + int(rng.choice([-1, 0, 0, 1]))
    prediction = heart(
        shape,
        centre + rng.normal(0, 1.5, 2),
        lv_radius * rng.uniform(0.9, 1.1),
        wall * rng.uniform(0.8, 1.2),
        rv_shift + rng.normal(0, 2),
        range(first, min(apex, shape[2])),
    )
    if rng.random() < 0.3:
        x, y = rng.integers(10, np.array(shape[:2]) - 10)
        prediction[x - 2 : x + 2, y - 2 : y + 2, int(rng.integers(0, shape[2]))] = int(rng.integers(1, 4))
    return prediction, target


def time_metric(name: str, score, pairs, repeats: int) -> tuple[str, float, float, np.ndarray]:
    times, values = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        values = np.stack([score(prediction, target) for prediction, target in pairs])
        times.append(time.perf_counter() - started)
    return name, float(np.median(times)), min(times), values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=280)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 12), metavar=("X", "Y", "Z"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.25, 1.25, 10.0), metavar=("SX", "SY", "SZ"))
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over all volumes")
    args = parser.parse_args()

    started = time.perf_counter()
    pairs = [make_pair(number, tuple(args.shape)) for number in range(args.volumes)]
    print(f"built {len(pairs)} pairs of {tuple(args.shape)} in {time.perf_counter() - started:.1f} s")

    spacing = tuple(args.spacing)
    rows = [
        time_metric("dice_3d", dice_3d, pairs, args.repeats),
        time_metric("hd95", lambda p, t: hd95(p, t, spacing), pairs, args.repeats),
        time_metric("largest_component", lambda p, t: largest_component_per_class(p)[:1], pairs, args.repeats),
    ]
    print(f"{'metric':<18} {'median s total':>14} {'best s total':>12} {'ms / volume':>11}   mean per class (LV, MYO, RV)")
    for name, median, best, values in rows:
        summary = "" if name == "largest_component" else ", ".join(f"{v:.3f}" for v in np.nanmean(np.where(np.isinf(values), np.nan, values), axis=0))
        print(f"{name:<18} {median:>14.2f} {best:>12.2f} {1000 * median / len(pairs):>11.2f}   {summary}")
    both = rows[0][1] + rows[1][1]
    print(f"dice_3d + hd95: {both:.2f} s for {len(pairs)} volumes ({1000 * both / len(pairs):.1f} ms per volume)")
    infinite = int(np.isinf(rows[1][3]).sum())
    if infinite:
        print(f"({infinite} class scores with hd95 = inf, left out of the mean)")


if __name__ == "__main__":
    main()
