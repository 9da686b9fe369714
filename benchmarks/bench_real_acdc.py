"""Benchmark + check: prepare the real ACDC training set and verify its physical consistency.

For each grid (``--grids paper,cpu``: 1.25 mm / 256 px on a 384 canvas, 5 mm / 64 px on 96),
prepares every patient under ``--root`` with ``cmrssp.data.prepare.prepare_datasets`` into a
fresh cache, times it (wall clock, ``--workers`` processes) and measures the cache on disk, then
runs :mod:`cmrssp.data.consistency` on every labelled volume (ED, ES) and class (LV, MYO, RV):

(a) class volume of the prepared canvas labels vs the original ``*_gt.nii.gz``, within 2 %;
(b) the prepared labels through the evaluation's inverse mapping vs the original labels,
    3D Dice >= 0.98, for patients whose in-plane spacing is not finer than the grid's (the
    finer ones are reported separately, not held to the threshold).

The original volumes are measured without the toolkit: nibabel's raw array and
``header.get_zooms()[:3]`` (pixdim, what ITK-SNAP shows), ACDC labels mapped to canonical here.
Prints a markdown report; exits 1 when a threshold is violated at the paper grid.

    python benchmarks/bench_real_acdc.py                           # both grids, temporary caches
    python benchmarks/bench_real_acdc.py --grids paper --work-dir /tmp/acdc --out acdc.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.atomic import write_json  # noqa: E402
from cmrssp.config import PREPARE_PRESETS, PrepareConfig  # noqa: E402
from cmrssp.data import consistency  # noqa: E402
from cmrssp.data.cache import open_cache  # noqa: E402
from cmrssp.data.subject import CLASS_NAMES  # noqa: E402
from cmrssp.data.prepare import prepare_datasets  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "acdc" / "training"
def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_grid(name: str, config: PrepareConfig, root: Path, cache_dir: Path, workers: int) -> dict:
    """Prepare ``root`` at ``config`` into ``cache_dir`` and check every labelled subject."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one line per finding kind is printed from the summary instead
        summary = prepare_datasets([("acdc", root)], cache_dir, config, workers=workers, progress=False)
    prepare_s = time.perf_counter() - started
    cache = open_cache(cache_dir)
    started = time.perf_counter()
    rows = []
    for key in cache.subjects(labelled=True):
        reference, spacing = consistency.read_acdc_reference(cache.meta(key))
        rows.extend(consistency.subject_report(cache, key, reference, spacing))
    check_s = time.perf_counter() - started
    return {
        "grid": name, "config": {"spacing": config.spacing, "size": config.size, "canvas": config.canvas_size,
                                 "geometry": config.geometry},
        "subjects": len(cache), "prepared": len(summary.prepared), "skipped": len(summary.skipped),
        "prepare_s": prepare_s, "check_s": check_s, "cache_bytes": folder_bytes(cache_dir),
        "notices": summary.notices.summary(), "rows": rows, "violations": consistency.violations(rows),
    }


def patient(row: dict) -> str:
    return row["key"].split("-", 1)[1]


def report(result: dict, workers: int) -> list[str]:
    config, rows = result["config"], result["rows"]
    n = result["subjects"]
    lines = [
        f"## grid {result['grid']}: {config['spacing']:g} mm, {config['size']} px, canvas {config['canvas']}, "
        f"geometry {config['geometry']}",
        "",
        f"prepare: {result['prepared']} subjects in {result['prepare_s']:.1f} s wall ({workers} workers; "
        f"{result['prepare_s'] / max(result['prepared'], 1):.2f} s per subject)"
        + (f", {result['skipped']} already prepared (not timed)" if result["skipped"] else "")
        + f"; cache {result['cache_bytes'] / 2**20:.0f} MiB ({result['cache_bytes'] / 2**20 / max(n, 1):.1f} MiB "
        f"per subject); checks {result['check_s']:.1f} s",
    ]
    lines += result["notices"]
    lines += [
        "",
        f"(a) prepared vs original class volume, {len(rows) // 3} volumes: |error| %",
        "",
        "| class | median | 95th pct | max | worst (patient phase: signed %, original mL) | > 2 % |",
        "|---|---|---|---|---|---|",
    ]
    for name in (name.upper() for name in CLASS_NAMES):
        subset = [row for row in rows if row["class"] == name]
        errors = np.array([abs(row["volume_error"]) for row in subset]) * 100
        worst = subset[int(np.argmax(errors))]
        lines.append(
            f"| {name} | {np.median(errors):.2f} | {np.percentile(errors, 95):.2f} | {errors.max():.2f} | "
            f"{patient(worst)} {worst['phase']}: {100 * worst['volume_error']:+.2f}, {worst['reference_ml']:.1f} | "
            f"{int((errors > 100 * consistency.VOLUME_TOLERANCE).sum())} |"
        )
    lines += [
        "",
        "(b) round-trip 3D Dice (evaluation inverse mapping vs original labels)",
        "",
        "| patients | volumes | class | min (patient phase) | 5th pct | median | < 0.98 |",
        "|---|---|---|---|---|---|---|",
    ]
    for finer, title in ((False, f"native >= {config['spacing']:g} mm"), (True, f"native < {config['spacing']:g} mm")):
        group = [row for row in rows if row["finer"] == finer]
        if not group:
            lines.append(f"| {title} | 0 | - | - | - | - | - |")
            continue
        names = sorted({patient(row) for row in group})
        label = f"{title} ({len(names)}{': ' + ', '.join(names) if len(names) <= 5 else ''})"
        for name in (name.upper() for name in CLASS_NAMES):
            subset = [row for row in group if row["class"] == name]
            dice = np.array([row["dice"] for row in subset])
            worst = subset[int(np.argmin(dice))]
            lines.append(
                f"| {label} | {len(subset)} | {name} | {dice.min():.4f} ({patient(worst)} {worst['phase']}) | "
                f"{np.percentile(dice, 5):.4f} | {np.median(dice):.4f} | "
                f"{int((dice < consistency.DICE_THRESHOLD).sum())}{'' if not finer else ' (not asserted)'} |"
            )
    matches = sum(row["native_match"] for row in rows)
    violations = result["violations"]
    over = [row for row in rows if abs(row["volume_error"]) > consistency.VOLUME_TOLERANCE]
    if 0 < len(over) <= 10:
        lines += ["", "volumes off by more than 2 %: " + "; ".join(
            f"{patient(row)} {row['phase']} {row['class']} {100 * row['volume_error']:+.2f} % "
            f"({row['reference_ml']:.1f} mL)" for row in over
        )]
    lines += [
        "",
        f"cache labels_native identical to the raw ground truth: {matches}/{len(rows)} (volume, class) pairs",
        f"violations: volume > 2 %: {violations['volume']}, Dice < 0.98 (native >= grid): {violations['dice']}",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ACDC training folder (patientXXX/)")
    parser.add_argument("--grids", default="paper,cpu", help=f"comma-separated of {', '.join(PREPARE_PRESETS)}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--geometry", default="auto", help="PrepareConfig.geometry (affine: the 1 mm placeholder)")
    parser.add_argument("--work-dir", type=Path, help="keep the caches here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write every row and summary as JSON here")
    args = parser.parse_args()
    grids = [grid.strip() for grid in args.grids.split(",") if grid.strip()]
    unknown = [grid for grid in grids if grid not in PREPARE_PRESETS]
    if unknown or not args.root.is_dir():
        parser.error(f"unknown grid {unknown}" if unknown else f"{args.root} is not a folder")

    with tempfile.TemporaryDirectory(prefix="bench-acdc-") as temporary:
        work_dir = args.work_dir or Path(temporary)
        print("# Real ACDC: prepare and physical consistency (issue 11, item 4)")
        print()
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}; "
            f"root {args.root}"
        )
        print()
        results = []
        for grid in grids:
            config = dataclasses.replace(PREPARE_PRESETS[grid], geometry=args.geometry)
            cache_dir = work_dir / f"cache-{grid}-{args.geometry}"
            result = run_grid(grid, config, args.root, cache_dir, args.workers)
            results.append(result)
            print("\n".join(report(result, args.workers)), flush=True)
    if args.out:
        write_json(args.out, {"workers": args.workers, "root": str(args.root), "grids": results})
    failed = [r for r in results if r["grid"] == "paper" and (r["violations"]["volume"] or r["violations"]["dice"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
