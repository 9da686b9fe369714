"""Benchmark: pretraining throughput per method (images/s and views/s), end to end per step.

Each step is what the loop runs: gather the batch from an in-memory slice set on the device,
make the method's views with the batched augmentation, forward, loss, backward, optimizer step
and the method's hooks (DINO's teacher EMA and centre). Views per image: SimCLR/PCL 2, DINO
2 global + 6 local (half size), MIM 1.

    python benchmarks/bench_pretrain.py                              # cpu preset, all methods, CPU
    python benchmarks/bench_pretrain.py --preset paper --device cuda --methods simclr dino
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.data.slices import SliceSet  # noqa: E402
from cmrssp.methods import METHODS  # noqa: E402
from cmrssp.presets import pretrain_preset  # noqa: E402
from cmrssp.train import build_optimizer, make_plan, resolve_precision  # noqa: E402

VIEWS = {"simclr": 2, "pcl": 2, "dino": 8, "mim": 1}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, help="images per step (default: the preset's)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, preset {args.preset}")
    from cmrssp.pretrain import make_task

    for method in args.methods:
        config = pretrain_preset(args.preset, method)
        batch = args.batch or config.train.batch_size
        precision = resolve_precision(config.train.amp, device)
        grid = config.data.grid
        slices = synthetic_slices(max(4 * batch, 64), grid.canvas_size, device)

        torch.manual_seed(0)
        task = make_task(config, slices, None, grid.size, device)
        plan = make_plan(task.n_train(), config.train.__class__(epochs=1, batch_size=batch), config.optimizer)
        task.setup(plan)
        optimizer = build_optimizer(task, config.optimizer)
        scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
        generator = torch.Generator(device=device).manual_seed(0)

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

        for i in range(args.warmup):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        for i in range(args.steps):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        images = batch * args.steps / (time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(f"{method:>6} {grid.size}² batch {batch} ({precision.name}): {images:,.1f} images/s, "
              f"{images * VIEWS[method]:,.1f} views/s; peak memory {peak:.1f} GiB", flush=True)


if __name__ == "__main__":
    main()
