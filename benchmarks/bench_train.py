"""Benchmark: supervised training throughput, model alone and end to end.

For each configuration it reports
- ``step``: slices/s of the train step alone (forward, deep-supervised loss, backward, SGD) on
  synthetic tensors already on the device (nnU-Net's "model speed");
- ``end-to-end``: slices/s with the data path too (index gather from the in-memory slice set on
  the device, batched augmentation, then the step);
- FLOP per slice (counted with torch's FlopCounterMode; the paper U-Net at 256² is ~88.6 GFLOP
  for forward + backward), the achieved TFLOP/s (and the fraction of --peak-tflops when given),
  and peak device memory (CUDA);
- the first step's seconds (torch.compile, cuDNN autotuning) and, with --checkpoint-dir, the
  seconds of the checkpoint the loop writes after every epoch (weights-last.pt + checkpoint.pt).

As the training loop (cmrssp.train.fit) on CUDA: fused SGD (one kernel for all parameters),
channels_last activations and cuDNN autotuning; --compile is opt-in here (the loop compiles on
CUDA by default) and falls back to eager with a warning when compiling fails. On CUDA the paper
configuration's end-to-end figure is also given as a fraction of the 3,000 slices/s target.
--json appends one record per configuration (benchmarks/project_study.py reads them).

--cpu-runs N times N copies at once, each in its own process on its share of the cores, and
reports their sum: what ``run.py study`` gets from training N runs at once on the CPU
(``--cpu-runs``; 2 by default there). --size sets the input side (default the preset's grid, the
host yardstick of README "The main job"; the cpu preset trains on 48² patches).

    python benchmarks/bench_train.py                       # cpu preset and paper config, CPU
    python benchmarks/bench_train.py --configs cpu --batch 8 --size 48 --cpu-runs 2 --steps 20
    python benchmarks/bench_train.py --configs paper --device cuda --amp bf16 --compile --json out.jsonl
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from project_study import TARGET_SLICES_PER_S, append_record  # noqa: E402

from cmrssp.augment import AugmentConfig, augment_batch  # noqa: E402
from cmrssp.losses import segmentation_loss  # noqa: E402
from cmrssp.models import UNet, UNetConfig  # noqa: E402
from cmrssp.presets import finetune_preset  # noqa: E402
from cmrssp.train import OptimizerConfig, resolve_precision, save_torch  # noqa: E402


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def rate(value: float) -> str:
    """A throughput with the digits that matter (a CPU runs the paper network at ~1 slice/s)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def checkpoint_seconds(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler, folder: str,
                       repeats: int = 3) -> tuple[float, float]:
    """(median seconds, GiB) of one epoch's writes in the loop: weights-last.pt and checkpoint.pt
    (model, optimizer, scaler), each copied to the host and written atomically with fsync."""
    times, size = [], 0
    with tempfile.TemporaryDirectory(dir=folder, prefix="bench-checkpoint-") as where:
        for _ in range(repeats):
            started = time.perf_counter()
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_torch(Path(where) / "weights-last.pt", state)
            save_torch(Path(where) / "checkpoint.pt", {"model": state, "optimizer": optimizer.state_dict(),
                                                       "scaler": scaler.state_dict()})
            times.append(time.perf_counter() - started)
            size = sum(f.stat().st_size for f in Path(where).iterdir())
    return statistics.median(times), size / 2**30


def measure(name, unet, optimizer_config: OptimizerConfig, size, canvas, batch, device, precision, channels_last, fused,
            steps, warmup, compile_model, checkpoint_dir, barrier=None) -> dict:
    """Time one configuration; print its line and return its record. With a ``barrier`` (copies
    measured side by side) each timed loop starts when every copy is ready."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.backends.cudnn.benchmark = True  # as the loop does (TrainConfig.deterministic False)
    model = UNet(unet).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = eager = model.to(memory_format=memory_format)
    if compile_model:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=optimizer_config.lr, momentum=optimizer_config.momentum,
        nesterov=optimizer_config.nesterov, weight_decay=optimizer_config.weight_decay, **({"fused": True} if fused else {}),
    )
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

    # The first call compiles (and autotunes); a model that fails to compile runs eagerly, as in the loop.
    started = time.perf_counter()
    try:
        step(fixed_x, fixed_y)
    except Exception as error:
        if not compile_model:
            raise
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); measuring eagerly")
        model, compile_model = eager, False
        started = time.perf_counter()
        step(fixed_x, fixed_y)
    synchronize(device)
    first_call = time.perf_counter() - started

    results, peak = {}, 0.0
    for mode, run in (("step", lambda: step(fixed_x, fixed_y)), ("end-to-end", end_to_end)):
        for _ in range(warmup):
            run()
        synchronize(device)
        if barrier is not None:
            barrier.wait()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        for _ in range(steps):
            run()
        synchronize(device)
        results[mode] = batch * steps / (time.perf_counter() - started)
        if device.type == "cuda":
            peak = max(peak, torch.cuda.max_memory_allocated(device) / 2**30)
    saving = checkpoint_seconds(eager, optimizer, scaler, checkpoint_dir) if checkpoint_dir else (None, None)
    flops = flops_per_slice(unet, size)
    record = {
        "bench": "train", "config": name, "device": device_name(device), "device_type": device.type,
        "torch": torch.__version__, "precision": precision.name, "channels_last": channels_last,
        "compiled": compile_model, "fused": fused, "batch": batch, "size": size, "steps_timed": steps,
        "step_slices_per_s": results["step"], "end_to_end_slices_per_s": results["end-to-end"],
        "gflop_per_slice": flops / 1e9, "tflops_step": results["step"] * flops / 1e12,
        "tflops_end_to_end": results["end-to-end"] * flops / 1e12,
        "peak_memory_gib": peak if device.type == "cuda" else None, "first_call_seconds": first_call,
        "checkpoint_seconds": saving[0], "checkpoint_gib": saving[1],
    }
    options = [precision.name, *(["channels_last"] if channels_last else []), *(["fused SGD"] if fused else []),
               *(["compiled"] if compile_model else [])]
    memory = f"peak memory {peak:.1f} GiB" if device.type == "cuda" else "peak memory n/a (CPU)"
    print(
        f"{name:>6} {size}² batch {batch} ({', '.join(options)}): step {rate(results['step'])} slices/s, "
        f"end-to-end {rate(results['end-to-end'])} slices/s; {flops / 1e9:.2f} GFLOP/slice -> "
        f"{record['tflops_step']:.3f} TFLOP/s (step), {record['tflops_end_to_end']:.3f} (end to end); {memory}; "
        f"first step {first_call:.1f} s",
        flush=True,
    )
    if saving[0] is not None:
        print(f"       epoch checkpoint (weights-last.pt + checkpoint.pt, {saving[1]:.2f} GiB): {saving[0]:.2f} s", flush=True)
    return record


def measure_copy(barrier, threads, queue, *arguments) -> None:
    """One of the --cpu-runs copies, in its own process with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    queue.put(measure(*arguments, barrier=barrier))


def measure_side_by_side(copies: int, *arguments) -> dict:
    """``copies`` measurements at once (spawned processes sharing the cores); their summed record."""
    from cmrssp.scheduler import available_cores

    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(copies), context.Queue()
    threads = max(1, available_cores() // copies)
    processes = [context.Process(target=measure_copy, args=(barrier, threads, queue, *arguments)) for _ in range(copies)]
    for process in processes:
        process.start()
    records = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    record = dict(records[0], cpu_runs=copies, threads_per_run=threads)
    for key in ("step_slices_per_s", "end_to_end_slices_per_s", "tflops_step", "tflops_end_to_end"):
        record[key] = sum(r[key] for r in records)
    print(f"       {copies} at once, {threads} thread(s) each: step {rate(record['step_slices_per_s'])} slices/s, "
          f"end-to-end {rate(record['end_to_end_slices_per_s'])} slices/s together", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["cpu", "paper"], choices=["tiny", "cpu", "paper"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels_last activations (default on, as the loop)")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                        help="fused SGD (default: on CUDA, as the loop)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (the loop does on CUDA)")
    parser.add_argument("--batch", type=int, help="default: the preset's (paper 32, cpu 16)")
    parser.add_argument("--size", type=int, help="input side (default: the preset's grid)")
    parser.add_argument("--cpu-runs", type=int, default=1, help="time this many copies at once, each on its share of "
                        "the cores, and report their sum (CPU only)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak for the precision (H200 bf16: ~790)")
    parser.add_argument("--checkpoint-dir", help="also time the per-epoch checkpoint, written into a temporary folder here")
    parser.add_argument("--json", metavar="PATH", help="append one JSON record per configuration")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.cpu_runs < 1:
        parser.error("--steps and --cpu-runs must be at least 1 and --warmup at least 0")
    device = torch.device(args.device)
    if args.cpu_runs > 1 and device.type != "cpu":
        parser.error("--cpu-runs measures copies side by side on the CPU; use --device cpu")
    precision = resolve_precision(args.amp, device)
    fused = device.type == "cuda" if args.fused is None else args.fused
    print(f"device {device} ({device_name(device)}), torch {torch.__version__}")
    for name in args.configs:
        preset = finetune_preset(name)
        size, canvas = args.size or preset.data.grid.size, preset.data.grid.canvas_size
        batch = args.batch or preset.train.batch_size
        arguments = (name, preset.unet, preset.optimizer, size, canvas, batch, device, precision,
                     args.channels_last, fused, args.steps, args.warmup, args.compile, args.checkpoint_dir)
        record = measure_side_by_side(args.cpu_runs, *arguments) if args.cpu_runs > 1 else measure(*arguments)
        if args.peak_tflops:
            record["peak_tflops"] = args.peak_tflops
            print(f"       {record['tflops_step'] / args.peak_tflops:.1%} of the {args.peak_tflops:g} TFLOP/s peak "
                  f"(step), {record['tflops_end_to_end'] / args.peak_tflops:.1%} (end to end)")
        if device.type == "cuda" and name == "paper":
            record["target_fraction"] = record["end_to_end_slices_per_s"] / TARGET_SLICES_PER_S
            print(f"       end to end = {record['target_fraction']:.0%} of the {TARGET_SLICES_PER_S:,.0f} slices/s target")
        if args.json:
            append_record(args.json, record)


if __name__ == "__main__":
    main()
