"""Benchmark: phantom cohort generation speed, size on disk and the ejection fractions it produced.

Times ``write_cohort`` (generation + gzipped NIfTI writing + QA files) into a temporary folder
and prints seconds per subject, bytes per subject, and the LV/RV EF ranges over all subjects and
over the normal (NOR) ones, from ``phantom_qa.csv``.

    python benchmarks/bench_phantom.py                                   # 20 default subjects, 2 workers
    python benchmarks/bench_phantom.py --subjects 50 --preset tiny --workers 1
    python benchmarks/bench_phantom.py --subjects 6 --generate-only        # generate_subject alone, no files

``--generate-only`` times ``generate_subject`` in this process (wall and CPU seconds per subject),
without the gzipped NIfTI writing that ``write_cohort`` adds (about 1.4 s per default subject on
a 2-core VM, zlib level 1 in nibabel).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.data.phantom import LAYOUTS, PHANTOM_PRESETS, generate_subject, write_cohort  # noqa: E402


def _range(rows: list[dict], key: str) -> str:
    values = [float(row[key]) for row in rows]
    return f"{min(values):.1f}-{max(values):.1f}" if values else "n/a"


def _bytes(out: Path, layout: str, row: dict) -> int:
    """Bytes of one subject's dataset files."""
    folder = out / ("training" if layout == "acdc" else "dataset") / row["subject_id"]
    return sum(path.stat().st_size for path in folder.iterdir())


def _time_generation(args) -> None:
    config = PHANTOM_PRESETS[args.preset]
    generate_subject(args.seed, args.subjects, config, args.layout)  # imports and the cohort's vendors, untimed
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(args.subjects):
        generate_subject(args.seed, index, config, args.layout)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"generate_subject, {args.subjects} {args.preset} subjects ({args.layout}, seed {args.seed}): "
          f"{elapsed / args.subjects:.2f} s/subject wall, {cpu / args.subjects:.2f} s/subject CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--preset", choices=sorted(PHANTOM_PRESETS), default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--layout", choices=LAYOUTS, default="mnms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the cohort here and keep it (a new folder)")
    parser.add_argument("--generate-only", action="store_true", help="time generate_subject alone (no files, one process)")
    args = parser.parse_args()
    if args.generate_only:
        _time_generation(args)
        return

    scratch = None if args.keep else Path(tempfile.mkdtemp(prefix="bench-phantom-"))
    out = args.keep or scratch / "cohort"
    try:
        start = time.perf_counter()
        rows = write_cohort(out, args.subjects, seed=args.seed, layout=args.layout, preset=args.preset,
                            workers=args.workers, progress=False)
        elapsed = time.perf_counter() - start
        size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
        dataset = sum(path.stat().st_size for path in (out / ("training" if args.layout == "acdc" else "dataset")).rglob("*")
                      if path.is_file())
        normal = [row for row in rows if row["phenotype"] == "NOR"]
        print(f"{args.subjects} {args.preset} subjects ({args.layout}, seed {args.seed}) with {args.workers} worker(s): "
              f"{elapsed:.1f} s, {elapsed / args.subjects:.2f} s/subject wall, "
              f"{elapsed * args.workers / args.subjects:.2f} s/subject/worker")
        print(f"on disk: {size / args.subjects / 1e6:.1f} MB/subject in all, {dataset / args.subjects / 1e6:.1f} MB/subject "
              f"of dataset files")
        for storage in ("int16", "float32"):
            chosen = [row for row in rows if row["storage"] == storage]
            if chosen:
                voxels = sum(int(row["matrix"].split("x")[0]) * int(row["matrix"].split("x")[1]) * row["n_slices"]
                             * row["n_frames"] for row in chosen)
                print(f"  {storage}: {len(chosen)} subjects, {sum(_bytes(out, args.layout, row) for row in chosen) / len(chosen) / 1e6:.1f}"
                      f" MB/subject, {voxels / len(chosen) / 1e6:.1f} M voxels/subject")
        print(f"LV EF {_range(rows, 'lv_ef_pct')} %, RV EF {_range(rows, 'rv_ef_pct')} % (all {len(rows)}); "
              f"normal subjects ({len(normal)}): LV EF {_range(normal, 'lv_ef_pct')} %, RV EF {_range(normal, 'rv_ef_pct')} %")
        mass = [abs(float(r["myo_mass_es_g"]) / float(r["myo_mass_ed_g"]) - 1) * 100 for r in rows]
        print(f"myocardial mass ES vs ED: max deviation {max(mass):.1f} %; phenotypes: "
              + ", ".join(f"{p} {sum(r['phenotype'] == p for r in rows)}" for p in sorted({r['phenotype'] for r in rows})))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
