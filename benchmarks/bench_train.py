"""Benchmark: supervised training throughput, model alone and end to end.

For each configuration it reports
- ``step``: slices/s of the train step alone (forward, deep-supervised loss, backward, SGD) on
  synthetic tensors already on the device (nnU-Net's "model speed");
- ``end-to-end``: slices/s with the data path too (index gather from the in-memory slice set on
  the device, batched augmentation, then the step);
- FLOP per slice (counted with torch's FlopCounterMode; the paper U-Net at 256² is ~88.6 GFLOP
  for forward + backward), the achieved TFLOP/s, and peak device memory (CUDA).

    python benchmarks/bench_train.py                       # cpu preset and paper config, CPU
    python benchmarks/bench_train.py --device cuda --amp bf16 --channels-last --configs paper
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.augment import AugmentConfig, augment_batch  # noqa: E402
from cmrssp.losses import segmentation_loss  # noqa: E402
from cmrssp.models import UNet, UNetConfig  # noqa: E402
from cmrssp.presets import finetune_preset  # noqa: E402
from cmrssp.train import resolve_precision  # noqa: E402


def flops_per_slice(config: UNetConfig, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = UNet(config)
    x = torch.randn(1, 1, size, size)
    labels = torch.zeros(1, size, size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        loss, _, _ = segmentation_loss(model(x), labels)
        loss.backward()
    return float(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name, unet, size, canvas, batch, device, precision, channels_last, steps, warmup, compile_model):
    torch.manual_seed(0)
    model = UNet(unet).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    if compile_model:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    n_slices = max(4 * batch, 256)
    images = torch.randn(n_slices, canvas, canvas, device=device).half()
    labels = torch.randint(0, 4, (n_slices, canvas, canvas), device=device, dtype=torch.uint8)
    centre = torch.full((n_slices, 2), (canvas - 1) / 2, device=device)
    background = torch.full((n_slices,), -0.8, device=device)
    max_value = torch.full((n_slices,), 5.0, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    fixed_x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=memory_format)
    fixed_y = torch.randint(0, 4, (batch, size, size), device=device)

    def step(x, y):
        with precision.autocast(device):
            loss, _, _ = segmentation_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def end_to_end():
        index = torch.randint(0, n_slices, (batch,), device=device, generator=generator)
        x, y = augment_batch(images[index], labels[index], centre[index], background[index], max_value[index],
                             size, AugmentConfig(), generator)
        step(x.contiguous(memory_format=memory_format), y)

    results = {}
    for mode, run in (("step", lambda: step(fixed_x, fixed_y)), ("end-to-end", end_to_end)):
        for _ in range(warmup):
            run()
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        for _ in range(steps):
            run()
        synchronize(device)
        results[mode] = batch * steps / (time.perf_counter() - started)
    flops = flops_per_slice(unet, size)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    print(
        f"{name:>6} {size}² batch {batch} ({precision.name}{', channels_last' if channels_last else ''}"
        f"{', compiled' if compile_model else ''}): step {results['step']:,.0f} slices/s, "
        f"end-to-end {results['end-to-end']:,.0f} slices/s; {flops / 1e9:.2f} GFLOP/slice -> "
        f"{results['step'] * flops / 1e12:.3f} TFLOP/s (step); peak memory {peak:.1f} GiB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["cpu", "paper"], choices=["tiny", "cpu", "paper"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, help="default: the preset's (32)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    precision = resolve_precision(args.amp, device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), torch {torch.__version__}")
    for name in args.configs:
        preset = finetune_preset(name)
        size, canvas = preset.data.grid.size, preset.data.grid.canvas_size
        batch = args.batch or preset.train.batch_size
        measure(name, preset.unet, size, canvas, batch, device, precision, args.channels_last, args.steps,
                args.warmup, args.compile)


if __name__ == "__main__":
    main()
