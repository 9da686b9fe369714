"""The one training loop, shared by fine-tuning and every pretraining method.

A method supplies a :class:`Task` (its model, what one step computes, how it validates, what
transfers); this loop does the rest: device and mixed precision, the optimizer and its
precomputed per-iteration learning rate, data order, checkpoints, ``metrics.csv``, a progress bar,
exact resume and the guard against a diverging loss.

Exact resume: the data order and the augmentation randomness of epoch ``e`` come from
generators seeded by (seed, e) alone, and a checkpoint is written atomically at the end of every
epoch with everything else (model, optimizer, grad scaler, task state, history, RNG states). A
run stopped at any point restarts from its last finished epoch and replays the interrupted one
identically, so on the CPU it ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cmrssp import atomic
from cmrssp.errors import InputError
from cmrssp.schedules import learning_rate_schedule

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
WEIGHTS_LAST = "weights-last.pt"
WEIGHTS_BEST = "weights-best.pt"
TRANSFER_WEIGHTS = "weights-transfer.pt"  # what a pretraining run offers to `finetune --init`
RUN_COMPLETE = "complete.json"  # written once the last epoch is saved: the run is finished


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the message says what to do."""


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD and its learning-rate schedule.

    Defaults are the study's supervised settings (protocol 4): SGD, Nesterov momentum 0.99,
    lr 0.01, weight decay 3e-5 on all parameters, poly(0.9) schedule stepped once per epoch.

    Attributes:
        schedule: "poly", "cosine" or "constant".
        schedule_unit: "epoch" (upstream: the scheduler steps once per epoch, protocol 7.13) or
            "iteration". An iteration budget (TrainConfig.iterations) always steps per iteration.
        final_lr: the cosine schedule's end value (eta_min).
        warmup_epochs: linear warm-up from 0 over this many epochs, per iteration (DINO).
    """

    lr: float = 0.01
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    schedule: str = "poly"
    schedule_unit: str = "epoch"
    poly_power: float = 0.9
    final_lr: float = 0.0
    warmup_epochs: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """How long and how the loop runs.

    Attributes:
        epochs: number of epochs (the study: 1000 for fine-tuning, whatever the subset size).
        iterations: when > 0, an iteration budget instead of ``epochs``: the run does this many
            optimizer steps (epochs follow from the training-set size) and the schedule steps per
            iteration, so label-scarce subsets get as many updates as large ones.
        batch_size: training batch (slices; the study: 32), drop_last as upstream.
        val_batch_size: validation batch (the study: 128).
        amp: "auto" (bf16 on CUDA where supported, else fp16 with a grad scaler; off on CPU),
            "bf16", "fp16" or "off".
        seed: seeds model initialisation, data order and augmentation.
        log_every: steps between progress-bar updates (each costs one host synchronisation).
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        channels_last: use the channels_last memory format on CUDA (faster convolutions).
    """

    epochs: int = 1000
    iterations: int = 0
    batch_size: int = 32
    val_batch_size: int = 128
    amp: str = "auto"
    seed: int = 0
    log_every: int = 10
    device: str = "auto"
    channels_last: bool = True


class Task(Protocol):
    """What a method supplies to the loop."""

    model: nn.Module  # the module whose weights are checkpointed (DINO: the student)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; a group may carry ``weight_decay`` and ``lr_scale``."""

    def n_train(self) -> int:
        """Number of training samples an epoch runs over."""

    def setup(self, plan: "Plan") -> None:
        """Called once before training with the run's length (for per-iteration schedules)."""

    def before_epoch(self, epoch: int) -> None:
        """Per-epoch switches (encoder freezing, DINO's frozen last layer, ...)."""

    def train_step(self, indices: torch.Tensor, generator: torch.Generator, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward one batch (under autocast): the float32 loss and detached parts to log."""

    def before_optimizer_step(self, step: int) -> None:
        """After backward, before the optimizer step (e.g. zeroing frozen gradients)."""

    def after_step(self, step: int) -> None:
        """After the optimizer step (e.g. a teacher's EMA update)."""

    def validate(self) -> dict[str, float]:
        """Validation metrics of the current model; a ``val_loss`` key selects the best epoch."""

    def extra_state(self) -> dict[str, Any]:
        """State beyond ``model`` that a resume needs (a teacher, a centre)."""

    def load_extra_state(self, state: dict[str, Any]) -> None: ...

    def export(self, run_dir: Path, which: str) -> None:
        """Write the transferable weights for ``which`` in {"last", "best"}."""


class BaseTask:
    """No-op defaults for the optional hooks of :class:`Task`."""

    model: nn.Module

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters()]}]

    def setup(self, plan: "Plan") -> None:
        pass

    def before_epoch(self, epoch: int) -> None:
        pass

    def before_optimizer_step(self, step: int) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass

    def validate(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def export(self, run_dir: Path, which: str) -> None:
        pass


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"--device {name}: CUDA is not available on this machine")
    return device


@dataclass(frozen=True)
class Precision:
    """Autocast settings chosen once per run."""

    dtype: torch.dtype | None  # None: full float32
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise InputError(None, f"unknown --amp {amp!r} (auto, bf16, fp16 or off)")
    if amp == "auto":
        if device.type != "cuda":
            return Precision(None, False)
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "off":
        return Precision(None, False)
    if amp == "bf16":
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, device.type == "cuda")


def epoch_generators(seed: int, epoch: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(data order generator on the CPU, augmentation generator on ``device``) for one epoch,
    seeded by (seed, epoch) only, so a resumed epoch replays exactly."""
    order_seed, augment_seed = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint64)
    order = torch.Generator().manual_seed(int(order_seed))
    augment = torch.Generator(device=device).manual_seed(int(augment_seed))
    return order, augment


@dataclass
class Plan:
    """The run's length: iterations per epoch, epochs, total steps and the lr of every step."""

    batch_size: int
    iterations_per_epoch: int
    epochs: int
    total_steps: int
    learning_rates: np.ndarray = field(repr=False)


def make_plan(n_train: int, train: TrainConfig, optimizer: OptimizerConfig) -> Plan:
    if n_train < 1:
        raise InputError(None, "the training set is empty")
    batch_size = min(train.batch_size, n_train)
    per_epoch = n_train // batch_size  # drop_last, as upstream
    if train.iterations > 0:
        epochs = math.ceil(train.iterations / per_epoch)
        total, unit = train.iterations, "iteration"
    else:
        epochs, total, unit = train.epochs, train.epochs * per_epoch, optimizer.schedule_unit
    rates = learning_rate_schedule(
        optimizer.schedule, optimizer.lr, epochs, per_epoch, unit=unit, power=optimizer.poly_power,
        final=optimizer.final_lr, warmup_epochs=optimizer.warmup_epochs,
    )
    return Plan(batch_size, per_epoch, epochs, total, rates[:total])


def build_optimizer(task: Task, config: OptimizerConfig) -> torch.optim.Optimizer:
    groups = task.parameter_groups()
    for group in groups:
        group.setdefault("weight_decay", config.weight_decay)
        group.setdefault("lr_scale", 1.0)
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def _rng_states() -> dict[str, Any]:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "python": torch.tensor(list(random.getstate()[1]), dtype=torch.int64),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    keys = np.frombuffer(states["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, 624))
    random.setstate((3, tuple(int(v) for v in states["python"].tolist()), None))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_torch(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(path, "no checkpoint to resume from") from None
    except Exception as error:
        raise InputError(path, f"unreadable checkpoint ({error})") from None


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic.write_text(path, text.getvalue())


def _unwrapped_state(model: nn.Module) -> dict[str, torch.Tensor]:
    module = getattr(model, "_orig_mod", model)
    module = getattr(module, "module", module)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def fit(
    task: Task,
    run_dir: str | Path,
    train: TrainConfig,
    optimizer_config: OptimizerConfig,
    device: torch.device,
    precision: Precision,
    config_json: dict[str, Any],
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``task`` in ``run_dir``; return the per-epoch history (also in ``metrics.csv``).

    ``config_json`` is the run's whole configuration; it is saved in ``config.json`` and in the
    checkpoint. ``resume`` continues from ``checkpoint.pt``; without it an existing checkpoint
    is an error (a finished run is never overwritten by accident).
    """
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    plan = make_plan(task.n_train(), train, optimizer_config)
    task.setup(plan)
    optimizer = build_optimizer(task, optimizer_config)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, math.inf
    if checkpoint_path.exists():
        if not resume:
            raise InputError(run_dir, "already holds a training run (checkpoint.pt); pass --resume to continue it or choose another --out")
        state = load_checkpoint(checkpoint_path)
        task.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        task.load_extra_state(state["task"])
        _restore_rng_states(state["rng"])
        start_epoch, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
    else:
        (run_dir / RUN_COMPLETE).unlink(missing_ok=True)  # a stale marker of a deleted run
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(run_dir / "config.json", config_json)
    if start_epoch >= plan.epochs:
        _mark_complete(run_dir, plan, history)
        return history

    bar = tqdm(total=plan.total_steps, initial=min(start_epoch * plan.iterations_per_epoch, plan.total_steps),
               disable=not progress, desc=run_dir.name, unit="step", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, plan.epochs):
            started = time.perf_counter()
            task.model.train()
            task.before_epoch(epoch)
            order, augment = epoch_generators(train.seed, epoch, device)
            permutation = torch.randperm(task.n_train(), generator=order)
            loss_sum = torch.zeros((), device=device)
            part_sums: dict[str, torch.Tensor] = {}
            bad = torch.zeros((), dtype=torch.bool, device=device)
            steps = 0
            for i in range(plan.iterations_per_epoch):
                step = epoch * plan.iterations_per_epoch + i
                if step >= plan.total_steps:
                    break
                lr = float(plan.learning_rates[step])
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                indices = permutation[i * plan.batch_size : (i + 1) * plan.batch_size]
                with precision.autocast(device):
                    loss, parts = task.train_step(indices, augment, step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                task.before_optimizer_step(step)
                scaler.step(optimizer)
                scaler.update()
                task.after_step(step)
                loss = loss.detach()
                bad |= ~torch.isfinite(loss)
                loss_sum += loss
                for name, value in parts.items():
                    part_sums[name] = part_sums.get(name, 0) + value.detach().float()
                steps += 1
                bar.update(1)
                if steps % train.log_every == 0:
                    _check_finite(bad, run_dir, epoch, step)
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss_sum) / steps:.4f}", lr=f"{lr:.3g}")
            _check_finite(bad, run_dir, epoch, epoch * plan.iterations_per_epoch + steps - 1)
            row: dict[str, Any] = {"epoch": epoch, "step": epoch * plan.iterations_per_epoch + steps, "lr": lr}
            row["train_loss"] = float(loss_sum) / max(1, steps)
            row.update({f"train_{name}": float(total) / max(1, steps) for name, total in part_sums.items()})
            task.model.eval()
            with torch.no_grad(), precision.autocast(device):
                row.update(task.validate())
            task.model.train()
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            score = row.get("val_loss", row["train_loss"])
            if score < best:
                best = score
                save_torch(run_dir / WEIGHTS_BEST, _unwrapped_state(task.model))
                task.export(run_dir, "best")
            save_torch(run_dir / WEIGHTS_LAST, _unwrapped_state(task.model))
            task.export(run_dir, "last")
            write_metrics(run_dir / METRICS, history)
            save_torch(checkpoint_path, {
                "model": _unwrapped_state(task.model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "task": task.extra_state(),
                "rng": _rng_states(),
                "epoch": epoch + 1,
                "best": best,
                "history": history,
                "config": config_json,
            })
            bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.4f}", val=f"{row.get('val_loss', float('nan')):.4f}", lr=f"{lr:.3g}")
    finally:
        bar.close()
    _mark_complete(run_dir, plan, history)
    return history


def _mark_complete(run_dir: Path, plan: Plan, history: list[dict[str, Any]]) -> None:
    atomic.write_json(run_dir / RUN_COMPLETE, {
        "epochs": plan.epochs, "steps": plan.total_steps,
        "train_seconds": round(sum(float(row.get("seconds", 0.0)) for row in history), 3),
        "last": history[-1] if history else None,
    })


def _check_finite(bad: torch.Tensor, run_dir: Path, epoch: int, step: int) -> None:
    if bool(bad):
        raise TrainingError(
            f"{run_dir}: the loss became non-finite (NaN or inf) in epoch {epoch} (by step {step}); "
            f"stopped without saving, so {CHECKPOINT} still holds the last good epoch. "
            "Try a lower learning rate (--lr) or mixed precision off (--amp off), then --resume."
        )
