"""Benchmark: the evaluation path of a test set (protocol 5.2, 5.3), network to metrics.

Per volume, as ``run.py evaluate`` does it (cmrssp.evaluate, cmrssp.prediction): 12 slices of the
256² paper window through the paper U-Net (random weights, eval mode, bf16 autocast on CUDA) keeping
head 0's logits (``predict_window_logits``), the bicubic inverse mapping of the logits onto a
native grid of 256 x 216 at 1.4 mm (``logits_to_native``, with the ``meta`` the cache would hold
for such a subject prepared on the paper grid: 1.25 mm, 384 canvas), the argmax, the copy to the
host, then ``dice_3d`` and ``hd95``. Random weights predict noise, whose HD95 would cost far more
than a real prediction's, so the metrics score a realistic pair instead: bench_metrics.py's
synthetic heart and a perturbed copy of it, on the same native grid and spacing.

Reported: seconds for network + inverse mapping, for the metrics, in total and per volume, for
--volumes volumes (default 280 = 140 test subjects x ED/ES; on the CPU 20, scaled linearly to
280). Reading the cache from disk is not included. Target on a GPU: 280 volumes in under a minute.

    python benchmarks/bench_evaluate.py --device cpu               # 20 volumes, scaled to 280
    python benchmarks/bench_evaluate.py --device cuda --json out.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_metrics import make_pair  # noqa: E402
from bench_train import device_name  # noqa: E402
from project_study import append_record  # noqa: E402

from cmrssp.config import PREPARE_PRESETS, PrepareConfig  # noqa: E402
from cmrssp.data.prepare import canvas_grid  # noqa: E402
from cmrssp.data.subject_meta import CanvasGrid  # noqa: E402
from cmrssp.metrics import dice_3d, hd95  # noqa: E402
from cmrssp.models import UNet  # noqa: E402
from cmrssp.prediction import logits_to_native, predict_window_logits  # noqa: E402
from cmrssp.presets import finetune_preset  # noqa: E402
from cmrssp.train import resolve_precision  # noqa: E402

TEST_VOLUMES = 280  # 140 test subjects x ED/ES (protocol 5.2)
TARGET_SECONDS = 60.0


def subject_meta(native: tuple[int, int, int, int], spacing: float, grid: PrepareConfig) -> SimpleNamespace:
    """The fields of a cached subject's SubjectMeta that the inverse mapping reads, for a native
    image of ``native`` = (X, Y, Z, T) voxels at ``spacing`` mm in plane whose content box is the
    whole image (cmrssp.data.prepare.prepare_subject)."""
    spacing_native = np.array([spacing, spacing, 10.0])
    scale, offset = canvas_grid(spacing_native, ((0, native[0]), (0, native[1])), grid)
    start = (grid.canvas_size - grid.size) // 2
    return SimpleNamespace(size=grid.size, evaluation_window=(start, start + grid.size),
                           grid=CanvasGrid(scale=tuple(scale.tolist()), offset=tuple(offset.tolist())),
                           native_shape=tuple(native), spacing_native=tuple(spacing_native.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--volumes", type=int, help=f"volumes to time (default {TEST_VOLUMES}; 20 on the CPU)")
    parser.add_argument("--slices", type=int, default=12, help="slices per volume")
    parser.add_argument("--native", type=int, nargs=2, default=(256, 216), metavar=("X", "Y"))
    parser.add_argument("--spacing", type=float, default=1.4, help="native in-plane spacing, mm")
    parser.add_argument("--batch", type=int, default=64, help="slices per forward pass (EvaluateOptions.batch_size)")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="as evaluate: auto")
    parser.add_argument("--distinct", type=int, default=40, help="distinct inputs and metric pairs, cycled")
    parser.add_argument("--json", metavar="PATH", help="append one JSON record")
    args = parser.parse_args()
    device = torch.device(args.device)
    volumes = args.volumes or (TEST_VOLUMES if device.type == "cuda" else 20)
    if volumes < 1 or args.slices < 1 or args.distinct < 1:
        parser.error("--volumes, --slices and --distinct must be at least 1")
    precision = resolve_precision(args.amp, device)
    grid = PREPARE_PRESETS["paper"]
    meta = subject_meta((*args.native, args.slices, 25), args.spacing, grid)
    spacing = meta.spacing_native
    shape = (*args.native, args.slices)
    print(f"device {device} ({device_name(device)}), torch {torch.__version__}, precision {precision.name}; "
          f"{volumes} volumes of {args.slices} slices at {grid.size}² -> native {shape} at {args.spacing} mm")

    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = UNet(finetune_preset("paper").unet).to(device).eval()
    distinct = min(args.distinct, volumes)
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(args.slices, 1, grid.size, grid.size, generator=generator) for _ in range(distinct)]
    pairs = [make_pair(number, shape) for number in range(distinct)]
    print(f"built {distinct} distinct inputs and metric pairs in {time.perf_counter() - started:.1f} s")

    def predict(slices: torch.Tensor) -> np.ndarray:
        logits = predict_window_logits(model, slices, args.batch, precision)
        native = logits_to_native(logits, meta).argmax(dim=1)  # (Z, X, Y)
        return native.to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # the copy synchronises

    labels = predict(inputs[0])  # warm-up: cuDNN autotuning, lazy initialisation
    if labels.shape != shape:
        raise SystemExit(f"inverse mapping gave {labels.shape}, expected {shape}")
    network = metrics = 0.0
    for number in range(volumes):
        started = time.perf_counter()
        predict(inputs[number % distinct])
        middle = time.perf_counter()
        prediction, target = pairs[number % distinct]
        dice_3d(prediction, target)
        hd95(prediction, target, spacing)
        network, metrics = network + middle - started, metrics + time.perf_counter() - middle
    total = network + metrics
    per_volume = total / volumes
    print(f"network + inverse {network:.2f} s, metrics {metrics:.2f} s, total {total:.2f} s for {volumes} volumes: "
          f"{1000 * network / volumes:.1f} + {1000 * metrics / volumes:.1f} = {1000 * per_volume:.1f} ms per volume")
    projected = per_volume * TEST_VOLUMES
    scaled = "" if volumes == TEST_VOLUMES else f" (scaled linearly from {volumes})"
    print(f"{TEST_VOLUMES} volumes{scaled}: {projected:.1f} s "
          f"({'meets' if projected < TARGET_SECONDS else 'misses'} the {TARGET_SECONDS:.0f} s target)")
    if args.json:
        append_record(args.json, {
            "bench": "evaluate", "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
            "precision": precision.name, "volumes_timed": volumes, "slices": args.slices, "native": list(args.native),
            "network_seconds": network, "metrics_seconds": metrics, "total_seconds": total,
            "seconds_per_volume": per_volume, "projected_280_seconds": projected,
        })


if __name__ == "__main__":
    main()
