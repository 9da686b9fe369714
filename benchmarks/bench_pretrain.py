"""Benchmark: pretraining throughput per method (images/s and views/s), end to end per step.

Each step is what the loop runs: gather the batch from an in-memory slice set on the device,
make the method's views with the batched augmentation, forward, loss, backward, optimizer step
and the method's hooks (DINO's teacher EMA and centre). Views per image: SimCLR/PCL 2, DINO
2 global + 6 local (half size, so 2 + 6/4 = 3.5 full-size view equivalents), MIM 1. The
target on a GPU: each method's full-size views/s at least 80 % of the supervised slices/s
(bench_train.py; project_study.py compares the two).

As the loop: the preset's precision (--amp overrides it), channels_last, fused SGD on CUDA,
cuDNN autotuning; --compile compiles the task's model (the loop does on CUDA) and falls back to
eager with a warning when compiling fails. --json appends one record per method.

    python benchmarks/bench_pretrain.py                              # cpu preset, all methods, CPU
    python benchmarks/bench_pretrain.py --preset paper --device cuda --methods simclr dino --json out.jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import device_name, rate  # noqa: E402
from project_study import append_record, paper_views  # noqa: E402

from cmrssp.data.slices import SliceSet  # noqa: E402
from cmrssp.methods import METHODS  # noqa: E402
from cmrssp.presets import pretrain_preset  # noqa: E402
from cmrssp.train import build_optimizer, make_plan, resolve_precision  # noqa: E402



def views_per_image(config) -> tuple[int, float]:
    """(views, full-size view equivalents) per image: DINO's local crops have half the side."""
    if config.method == "dino":
        n_local = config.dino.n_local_crops
        return 2 + n_local, 2 + n_local / 4
    return paper_views(config.method)


def synthetic_slices(n: int, canvas: int, device: torch.device) -> SliceSet:
    generator = torch.Generator().manual_seed(0)
    return SliceSet(
        keys=("bench",), kind="pretraining",
        images=torch.randn(n, canvas, canvas, generator=generator).half().to(device), labels=None,
        subject=torch.zeros(n, dtype=torch.long, device=device), frame=torch.zeros(n, dtype=torch.long, device=device),
        frame_from_ed=torch.zeros(n, dtype=torch.long, device=device), slice_index=torch.zeros(n, dtype=torch.long, device=device),
        position=(torch.arange(n, device=device) % 10).float() / 10, phase=torch.full((n,), -1, dtype=torch.int8, device=device),
        centre=torch.full((n, 2), (canvas - 1) / 2, device=device), background=torch.full((n,), -0.8, device=device),
        max_value=torch.full((n,), 5.0, device=device),
    )


def measure(config, batch: int, device: torch.device, precision, steps: int, warmup: int, compile_model: bool) -> dict:
    """Time one method's training step; print its line and return its record."""
    from cmrssp.pretrain import make_task

    grid = config.data.grid
    slices = synthetic_slices(max(4 * batch, 64), grid.canvas_size, device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.backends.cudnn.benchmark = True
    task = make_task(config, slices, None, grid.size, device)
    plan = make_plan(task.n_train(), config.train.__class__(epochs=1, batch_size=batch), config.optimizer)
    task.setup(plan)
    optimizer = build_optimizer(task, config.optimizer, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    generator = torch.Generator(device=device).manual_seed(0)
    eager = task.model
    if compile_model:
        task.model = torch.compile(task.model)

    def step(i: int) -> None:
        indices = torch.randint(0, len(slices), (batch,))
        with precision.autocast(device):
            loss, _ = task.train_step(indices, generator, i % plan.total_steps)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        task.before_optimizer_step(i % plan.total_steps)
        scaler.step(optimizer)
        scaler.update()
        task.after_step(i % plan.total_steps)

    started = time.perf_counter()
    try:
        step(0)
    except Exception as error:  # torch.compile fails at the first call, not at wrapping
        if not compile_model:
            raise
        warnings.warn(f"torch.compile failed for {config.method} ({type(error).__name__}: {str(error)[:200]}); "
                      "measuring eagerly")
        task.model, compile_model = eager, False
        started = time.perf_counter()
        step(0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    first_call = time.perf_counter() - started
    for i in range(1, warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    images = batch * steps / (time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    views, full_size = views_per_image(config)
    memory = f"peak memory {peak:.1f} GiB" if peak is not None else "peak memory n/a (CPU)"
    print(f"{config.method:>6} {grid.size}² batch {batch} ({precision.name}{', compiled' if compile_model else ''}): "
          f"{rate(images)} images/s, {rate(images * views)} views/s"
          f"{f' ({rate(images * full_size)} full-size view equivalents/s)' if full_size != views else ''}; "
          f"{memory}; first step {first_call:.1f} s", flush=True)
    return {
        "bench": "pretrain", "preset": config.preset, "method": config.method, "device": device_name(device),
        "device_type": device.type, "torch": torch.__version__, "precision": precision.name,
        "channels_last": config.train.channels_last, "compiled": compile_model, "fused": device.type == "cuda",
        "batch": batch, "size": grid.size, "steps_timed": steps, "images_per_s": images,
        "views_per_image": views, "views_per_s": images * views, "full_size_views_per_image": full_size,
        "full_size_views_per_s": images * full_size, "peak_memory_gib": peak, "first_call_seconds": first_call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="images per step (default: the preset's)")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="default: the preset's (paper PCL: off)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the task's model (the loop does on CUDA)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps, the first (compiling) one included")
    parser.add_argument("--json", metavar="PATH", help="append one JSON record per method")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    device = torch.device(args.device)
    print(f"device {device} ({device_name(device)}), torch {torch.__version__}, preset {args.preset}")
    for method in args.methods:
        config = pretrain_preset(args.preset, method)
        batch = args.batch or config.train.batch_size
        precision = resolve_precision(args.amp or config.train.amp, device)
        record = measure(config, batch, device, precision, args.steps, args.warmup, args.compile)
        if args.json:
            append_record(args.json, record)


if __name__ == "__main__":
    main()
