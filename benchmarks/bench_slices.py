"""Benchmark: prepare time per subject, cache size, and slice loading speed (cache -> tensors).

Builds a cache of synthetic subjects in memory-made Subject records (default: 20 subjects of
256 x 216 x 11 x 25 at 1.4 mm, the size of a typical M&Ms cine, prepared at 1.25 mm / 256 on the
default 384 canvas), or uses an existing cache with --cache. Then loads the slice sets of both
kinds once to warm the page cache, then --repeats more times, and reports slices per second.
On a VM most of a load is the kernel's first touch of the freshly allocated destination memory,
which varies from run to run: hence the median and the best of several loads.

    python benchmarks/bench_slices.py                  # temporary cache, deleted afterwards
    python benchmarks/bench_slices.py --cache /tmp/c   # build there if missing, else reuse
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.config import PrepareConfig  # noqa: E402
from cmrssp.data.cache import open_cache  # noqa: E402
from cmrssp.data.prepare import prepare_cache  # noqa: E402
from cmrssp.data.slices import load_slices  # noqa: E402
from cmrssp.data.subject import Subject  # noqa: E402


class SyntheticRef:
    """A picklable recipe for one random subject (so worker processes can build it)."""

    def __init__(self, number: int, shape: tuple[int, int, int, int], spacing: float):
        self.number, self.shape, self.spacing = number, shape, spacing
        self.key = f"mnms-BENCH{number:03d}"


def make_subject(ref: SyntheticRef) -> Subject:
    rng = np.random.default_rng(ref.number)
    x, y, z, t = ref.shape
    image = rng.gamma(2.0, 60.0, size=ref.shape).astype(np.float32)
    labels = np.zeros((x, y, z, 2), dtype=np.uint8)
    i, j = np.meshgrid(np.arange(x), np.arange(y), indexing="ij")
    for slice_index in range(z - 1):
        radius = 20 * (1 - slice_index / z)
        disc = (i - x / 2) ** 2 + (j - y / 2) ** 2 <= radius**2
        labels[disc, slice_index, :] = 1
    return Subject(
        dataset="mnms",
        subject_id=ref.key.split("-", 1)[1],
        image=image,
        affine=np.diag([ref.spacing, ref.spacing, 10.0, 1.0]),
        labels=labels,
        label_frames=(0, t // 3),
        label_phases=("ED", "ES"),
        ed=0,
        es=t // 3,
        vendor="A",
    )


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="cache folder to build (if missing) and read")
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=4, default=(256, 216, 11, 25), metavar=("X", "Y", "Z", "T"))
    parser.add_argument("--spacing", type=float, default=1.4, help="native in-plane spacing (mm)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--canvas", type=int, default=0, help="stored canvas side (default 1.5 x size)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--raw", type=Path,
        help="prepare a dataset from disk instead of random subjects (e.g. a phantom cohort from bench_phantom.py --keep)",
    )
    parser.add_argument("--layout", default="mnms", help="dataset layout of --raw (default mnms)")
    parser.add_argument("--repeats", type=int, default=5, help="timed warm loads per kind")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target is 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    temporary = None
    cache_dir = args.cache
    if cache_dir is None:
        temporary = tempfile.mkdtemp(prefix="bench-slices-")
        cache_dir = Path(temporary) / "cache"
    try:
        if not (cache_dir / "manifest.json").exists():
            if args.raw is not None:
                from cmrssp.data.sources import discover, load_subject

                refs, loader, what = discover(args.layout, args.raw), load_subject, f"from {args.raw} (decode"
            else:
                refs = [SyntheticRef(n, tuple(args.shape), args.spacing) for n in range(args.subjects)]
                loader, what = make_subject, f"random {tuple(args.shape)} at {args.spacing} mm (synthesis"
            started = time.perf_counter()
            summary = prepare_cache(refs, cache_dir, PrepareConfig(size=args.size, canvas=args.canvas), loader=loader, workers=args.workers)
            wall = time.perf_counter() - started
            print(
                f"prepare: {len(summary.prepared)} subjects {what} + prepare + write): "
                f"{summary.seconds_per_subject:.2f} s per subject, "
                f"{wall / max(1, len(summary.prepared)):.2f} s wall per subject with {args.workers} worker(s)"
            )
        cache = open_cache(cache_dir)
        total = folder_bytes(cache_dir / "subjects")
        print(
            f"cache: {len(cache)} subjects, canvas {cache.config.canvas_size}, "
            f"{total / len(cache) / 2**20:.1f} MiB per subject"
        )
        keys = cache.subjects(labelled=True)
        for kind in ("segmentation", "pretraining"):
            load_slices(cache, keys, kind)  # the first load warms the page cache
            rates = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                slices = load_slices(cache, keys, kind)
                rates.append(len(slices) / (time.perf_counter() - started))
                count, megabytes = len(slices), slices.images.numel() * 2 / 2**20
                del slices
            median, best = float(np.median(rates)), max(rates)
            print(
                f"load_slices {kind:>12}: {count} slices ({megabytes:,.0f} MiB of images), warm: "
                f"median {median:,.0f} slices/s, best {best:,.0f} slices/s over {args.repeats} loads"
            )
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
