"""Benchmark: batched augmentation throughput (slices per second), CPU or CUDA.

A synthetic batch of float16 canvases (as a SliceSet holds them) with uint8 labels is augmented
--repeats times after --warmup calls; reported: the median and best batch time and slices/s, for
the full augmentation (spatial + intensity, labels included) and for its parts. Target: at least
250 slices/s at 256 x 256 from a 384 canvas with batch 64 on a 2-core CPU; on a GPU it should be
far from being the bottleneck of a training step.

    python benchmarks/bench_augment.py                          # CPU, paper grid
    python benchmarks/bench_augment.py --device cuda --preset dino_global_blur
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.augment import (  # noqa: E402
    AUGMENT_PRESETS,
    augment_batch,
    augment_intensity,
    random_affine,
    resample_affine,
    resample_plain,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="output side S")
    parser.add_argument("--canvas", type=int, default=384, help="canvas side C")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--preset", default="segmentation", choices=sorted(AUGMENT_PRESETS))
    parser.add_argument("--interpolation", default=None, choices=["bicubic", "bilinear"], help="override the preset")
    parser.add_argument("--no-labels", action="store_true", help="images only (pretraining)")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = AUGMENT_PRESETS[args.preset]
    if args.interpolation:
        config = dataclasses.replace(config, interpolation=args.interpolation)
    generator = torch.Generator(device=device).manual_seed(0)
    batch, canvas, size = args.batch, args.canvas, args.size
    images = torch.randn((batch, canvas, canvas), generator=generator, device=device).half()
    labels = None
    if not args.no_labels:
        labels = torch.randint(0, 4, (batch, canvas, canvas), generator=generator, device=device, dtype=torch.uint8)
    centre = (canvas - 1) / 2 + 20 * (torch.rand((batch, 2), generator=generator, device=device) - 0.5)
    background = torch.full((batch,), -1.2, device=device)
    max_value = torch.full((batch,), 4.0, device=device)

    def full():
        return augment_batch(images, labels, centre, background, max_value, size, config, generator)

    theta = random_affine(centre, canvas, size, config, generator)
    resampled, _ = resample_affine(images, labels, background, theta, size, config.interpolation)

    def spatial():
        theta = random_affine(centre, canvas, size, config, generator)
        return resample_affine(images, labels, background, theta, size, config.interpolation)

    cases = {
        "augment_batch (all)": full,
        "random_affine + resample_affine": spatial,
        "augment_intensity": lambda: augment_intensity(resampled, max_value, config, generator),
        "resample_plain (no augmentation)": lambda: resample_plain(images, labels, background, size),
    }
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads), batch {batch}, canvas {canvas} -> {size}, "
        f"preset {args.preset}, {config.interpolation}, labels {'no' if labels is None else 'yes'}"
    )
    for name, function in cases.items():
        times, cpu = _time(function, device, args.warmup, args.repeats)
        median, best = statistics.median(times), min(times)
        print(f"  {name:34s} median {median * 1e3:8.2f} ms  best {best * 1e3:8.2f} ms  "
              f"{batch / median:7.0f} slices/s (median) {batch / best:7.0f} (best)  "
              f"process CPU {cpu * 1e3:8.2f} ms/batch")
    print("(process CPU time counts every thread; on a shared machine wall times vary with the load)")


def _time(function, device: torch.device, warmup: int, repeats: int) -> tuple[list[float], float]:
    """Wall seconds per call, and the process CPU seconds per call (all threads)."""
    for _ in range(warmup):
        function()
    _synchronize(device)
    times = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times, (time.process_time() - cpu_start) / repeats


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
