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
import dataclasses
import io
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cmrssp import atomic
from cmrssp.distributed import SINGLE, Processes, any_over_processes, barrier, mean_over_processes, sync_batch_norm, wrap
from cmrssp.errors import InputError
from cmrssp.run_folder import CHECKPOINT, CONFIG, METRICS, RUN_COMPLETE, STEPS, WEIGHTS_BEST, WEIGHTS_LAST
from cmrssp.schedules import learning_rate_schedule


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
        min_iterations, max_iterations: bounds (0 = none) on the length ``epochs`` gives: a run of
            ``epochs`` epochs, but at least / at most this many optimizer steps, with the schedule
            then stepped per iteration. A tiny subset still gets enough updates to converge and
            the full pool no more than the budget allows (the ``cpu-real`` preset).
        batch_size: training batch (slices; the study: 32), drop_last as upstream.
        patch_size: when > 0, training inputs are patches of this many pixels on the grid's
            spacing, sampled by the augmentation from the stored canvas (nnU-Net's patch-based
            training), so a step costs about (patch / grid size)² of a whole-grid one; validation
            and evaluation still see the whole grid (the U-Net is fully convolutional). 0 = the
            grid size (the study).
        val_batch_size: validation batch (the study: 128).
        amp: "auto" (bf16 on CUDA where supported, else fp16 with a grad scaler; off on CPU),
            "bf16", "fp16" or "off".
        seed: seeds model initialisation, data order and augmentation.
        log_every: steps between progress-bar updates (each costs one host synchronisation).
        validate_every: validate every this many epochs and after the last (the study: 1);
            ``weights-best.pt`` is chosen among validated epochs only.
        validate_steps: when > 0, validate instead after the first epoch that ends at or past each
            multiple of this many optimizer steps (and after the last): the validation cost is then
            the same for any training-set size, where an epoch count makes a 2-subject run
            validate after every few updates.
        sync_batch_norm: with several processes (torchrun), batch-norm statistics over the global
            batch instead of each process's shard.
        log_steps: also write ``steps.csv``, the loss of every step (one host synchronisation per
            step, so off by default).
        checkpoint_seconds: write ``checkpoint.pt``, ``weights-last.pt`` and ``metrics.csv`` after
            an epoch only when this many seconds have passed since the last write (and always after
            the last epoch); 0 = after every epoch. A resumed run replays the epochs since then
            exactly. ``weights-best.pt`` is written whenever the validation loss improves.
        compile: "auto" (torch.compile on CUDA, eager on the CPU, where compiling costs more than
            it saves in a short run), "on" or "off"; a model that fails to compile trains eagerly.
        deterministic: False lets cuDNN pick the fastest kernels (``cudnn.benchmark``); True asks
            for deterministic algorithms where torch has them.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
        channels_last: use the channels_last memory format (faster convolutions on CUDA and CPU).
    """

    epochs: int = 1000
    iterations: int = 0
    min_iterations: int = 0
    max_iterations: int = 0
    batch_size: int = 32
    patch_size: int = 0
    val_batch_size: int = 128
    amp: str = "auto"
    seed: int = 0
    log_every: int = 10
    validate_every: int = 1
    validate_steps: int = 0
    sync_batch_norm: bool = False
    log_steps: bool = False
    checkpoint_seconds: float = 0.0
    compile: str = "auto"
    deterministic: bool = False
    device: str = "auto"
    channels_last: bool = True

    def __post_init__(self) -> None:
        # refused when the configuration is made, so a bad flag never leaves a run folder behind
        if self.compile not in ("auto", "on", "off"):
            raise InputError(None, f"train.compile must be auto, on or off, got {self.compile!r}")
        if self.validate_every < 1 or self.validate_steps < 0:
            raise InputError(None, f"train.validate_every must be at least 1 and train.validate_steps at least 0, "
                                   f"got {self.validate_every} and {self.validate_steps}")
        if self.min_iterations < 0 or self.max_iterations < 0 or (
                self.max_iterations and self.min_iterations > self.max_iterations):
            raise InputError(None, f"train.min_iterations ({self.min_iterations}) and max_iterations "
                                   f"({self.max_iterations}) must be >= 0 with min <= max")
        if self.patch_size < 0:
            raise InputError(None, f"train.patch_size must be >= 0 (0 = the grid size), got {self.patch_size}")


def training_input_size(train: TrainConfig, grid_size: int) -> int:
    """The side of a training input: ``train.patch_size``, or the grid's when it is 0."""
    return train.patch_size or grid_size


class Task(Protocol):
    """What a method supplies to the loop."""

    model: nn.Module  # the raw module: checkpointed, exported, asked for its attributes (DINO: the student)
    wrapped: nn.Module | None  # set by the loop while it trains: ``model`` in DDP and/or torch.compile

    @property
    def net(self) -> nn.Module:
        """What forward passes go through: ``wrapped`` while the loop trains, else ``model``."""

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

    def distribute(self, processes: Processes, device: torch.device, sync_bn: bool, seed: int = 0) -> None:
        """Before the optimizer is built: the processes of the run, whether BN goes global, the seed."""


class BaseTask:
    """No-op defaults for the optional hooks of :class:`Task`."""

    model: nn.Module
    wrapped: nn.Module | None = None
    processes: Processes = SINGLE
    seed: int = 0
    find_unused_parameters: bool = False  # DDP: some parameters may get no gradient in a step

    @property
    def net(self) -> nn.Module:
        """What forward passes go through (nanoGPT's ``model`` beside its ``raw_model``): the
        loop's DDP / compiled wrapper of ``model`` while it trains, else ``model`` itself. Tasks
        call ``self.net(x)`` and use ``self.model`` for everything else, so nothing unwraps."""
        return self.wrapped if self.wrapped is not None else self.model

    def distribute(self, processes: Processes, device: torch.device, sync_bn: bool, seed: int = 0) -> None:
        """Before the optimizer is built: remember the processes and the run's seed; make BN
        global if asked."""
        self.processes, self.seed = processes, seed
        if processes.enabled and sync_bn:
            self.model = sync_batch_norm(self.model, device)

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


def epoch_generators(seed: int, epoch: int, device: torch.device, rank: int = 0) -> tuple[torch.Generator, torch.Generator]:
    """(data order generator on the CPU, augmentation generator on ``device``) for one epoch,
    seeded by (seed, epoch) only, so a resumed epoch replays exactly. The order is the same in
    every process (each takes its shard of the same global batches); process ``rank`` > 0 gets an
    augmentation stream of its own."""
    order_seed, augment_seed = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint64)
    if rank > 0:
        augment_seed = np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0]
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
    budget = train.iterations
    if budget <= 0:
        natural = train.epochs * per_epoch
        bounded = max(natural, train.min_iterations)
        bounded = min(bounded, train.max_iterations) if train.max_iterations else bounded
        budget = bounded if bounded != natural else 0
    if budget > 0:
        epochs = math.ceil(budget / per_epoch)
        total, unit = budget, "iteration"
    else:
        epochs, total, unit = train.epochs, train.epochs * per_epoch, optimizer.schedule_unit
    rates = learning_rate_schedule(
        optimizer.schedule, optimizer.lr, epochs, per_epoch, unit=unit, power=optimizer.poly_power,
        final=optimizer.final_lr, warmup_epochs=optimizer.warmup_epochs, total_steps=total,
    )
    return Plan(batch_size, per_epoch, epochs, total, rates)


# The fields that only set a run's plan (how many steps, and whether the schedule steps per epoch
# or per iteration), by configuration section; every other field says how the run trains.
PLAN_FIELDS = {"train": ("epochs", "iterations", "min_iterations", "max_iterations"), "optimizer": ("schedule_unit",)}
PLAN_FIELD_NAMES = tuple(f"{section}.{name}" for section, names in PLAN_FIELDS.items() for name in names)


def plan_fields(config) -> tuple:
    """The values of :data:`PLAN_FIELDS` of a run configuration (one with ``train`` and ``optimizer``)."""
    return tuple(getattr(getattr(config, section), name) for section, names in PLAN_FIELDS.items() for name in names)


def with_plan_fields(config, values: tuple):
    """``config`` with its :data:`PLAN_FIELDS` set to ``values`` (as :func:`plan_fields` gives them)."""
    values = iter(values)
    return dataclasses.replace(config, **{
        section: dataclasses.replace(getattr(config, section), **{name: next(values) for name in names})
        for section, names in PLAN_FIELDS.items()})


def same_plan(n_train: int, first, second) -> bool:
    """Whether two run configurations give a run of ``n_train`` samples the same plan: the same
    batches per epoch, epochs, steps and learning rate at every step. A budget rule that grows
    with the subset (more epochs, a higher cap) leaves the runs it does not lengthen as they
    were, so a study's finished runs of those sizes still count under it."""
    a, b = make_plan(n_train, first.train, first.optimizer), make_plan(n_train, second.train, second.optimizer)
    return ((a.batch_size, a.iterations_per_epoch, a.epochs, a.total_steps)
            == (b.batch_size, b.iterations_per_epoch, b.epochs, b.total_steps)
            and np.array_equal(a.learning_rates, b.learning_rates))


def is_validation_epoch(epoch: int, plan: Plan, train: TrainConfig) -> bool:
    """Whether the loop validates after ``epoch`` (see TrainConfig.validate_every/validate_steps)."""
    if epoch + 1 == plan.epochs:
        return True
    if train.validate_steps > 0:
        end, start = (epoch + 1) * plan.iterations_per_epoch, epoch * plan.iterations_per_epoch
        return end // train.validate_steps > start // train.validate_steps
    return (epoch + 1) % train.validate_every == 0


def build_optimizer(task: Task, config: OptimizerConfig, device: torch.device | None = None) -> torch.optim.Optimizer:
    """SGD over the task's parameter groups; the fused CUDA kernel (one launch for all
    parameters) on GPUs."""
    groups = task.parameter_groups()
    for group in groups:
        group.setdefault("weight_decay", config.weight_decay)
        group.setdefault("lr_scale", 1.0)
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay, **fused,
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


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


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
    processes: Processes = SINGLE,
) -> list[dict[str, Any]]:
    """Train ``task`` in ``run_dir``; return the per-epoch history (also in ``metrics.csv``).

    ``config_json`` is the run's whole configuration; it is saved in ``config.json`` and in the
    checkpoint. ``resume`` continues from ``checkpoint.pt``; without it an existing checkpoint
    is an error (a finished run is never overwritten by accident). With several ``processes``
    (torchrun), each trains on its shard of every global batch and only rank 0 writes.
    """
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    main = processes.is_main
    plan = make_plan(task.n_train(), train, optimizer_config)
    if plan.batch_size % processes.world_size:
        raise InputError(None, f"the global batch of {plan.batch_size} does not split into {processes.world_size} "
                               "equal shards; choose a --batch-size divisible by the number of processes")
    task.setup(plan)
    task.distribute(processes, device, train.sync_batch_norm, train.seed)
    optimizer = build_optimizer(task, optimizer_config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, math.inf
    if checkpoint_path.exists():
        if not resume:
            raise InputError(run_dir, f"already holds a training run ({CHECKPOINT}); pass --resume to continue it or choose another --out")
        state = load_checkpoint(checkpoint_path)
        task.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        task.load_extra_state(state["task"])
        _restore_rng_states(state["rng"])
        start_epoch, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
    elif main:
        (run_dir / RUN_COMPLETE).unlink(missing_ok=True)  # a stale marker of a deleted run
    barrier(processes)  # nobody writes before every process has read the checkpoint
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(run_dir / CONFIG, config_json)
    if start_epoch >= plan.epochs:
        if main:
            _mark_complete(run_dir, plan, history)
        return history
    # task.model stays the raw module (checkpoints, exports, attributes); forward passes go
    # through task.wrapped: DDP with several processes, then torch.compile where asked.
    eager = wrap(task.model, processes, device, getattr(task, "find_unused_parameters", False))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not train.deterministic
        torch.backends.cudnn.deterministic = train.deterministic
    compiled = train.compile == "on" or (train.compile == "auto" and device.type == "cuda")
    task.wrapped = torch.compile(eager) if compiled else eager
    step_rows: list[dict[str, Any]] = _read_steps(run_dir / STEPS, start_epoch * plan.iterations_per_epoch) if train.log_steps else []

    last_write = time.perf_counter()
    bar = tqdm(total=plan.total_steps, initial=min(start_epoch * plan.iterations_per_epoch, plan.total_steps),
               disable=not (progress and main), desc=run_dir.name, unit="step", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, plan.epochs):
            started = time.perf_counter()
            task.model.train()
            task.before_epoch(epoch)
            order, augment = epoch_generators(train.seed, epoch, device, processes.rank)
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
                indices = processes.shard(permutation[i * plan.batch_size : (i + 1) * plan.batch_size])
                try:
                    with precision.autocast(device):
                        loss, parts = task.train_step(indices, augment, step)
                except (InputError, TrainingError, KeyboardInterrupt):
                    raise
                except Exception as error:  # torch.compile fails at the first call, not at wrapping
                    if not (compiled and steps == 0 and epoch == start_epoch):
                        raise
                    warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); training eagerly")
                    task.wrapped, compiled = eager, False
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
                if train.log_steps:  # one host synchronisation per step: off by default
                    step_rows.append({"step": step, "lr": lr, "loss": float(mean_over_processes(loss, processes))})
                bar.update(1)
                if steps % train.log_every == 0:
                    _check_finite(any_over_processes(bad, processes), run_dir, epoch, step)
                    bar.set_postfix(epoch=epoch, loss=f"{float(loss_sum) / steps:.4f}", lr=f"{lr:.3g}")
            _check_finite(any_over_processes(bad, processes), run_dir, epoch, epoch * plan.iterations_per_epoch + steps - 1)
            row: dict[str, Any] = {"epoch": epoch, "step": epoch * plan.iterations_per_epoch + steps, "lr": lr}
            row["train_loss"] = float(mean_over_processes(loss_sum, processes)) / max(1, steps)
            row.update({f"train_{name}": float(mean_over_processes(total, processes)) / max(1, steps)
                        for name, total in part_sums.items()})
            validated = is_validation_epoch(epoch, plan, train)
            if validated:  # every process validates the same model on the same data: no collective is one-sided
                task.model.eval()
                with torch.no_grad(), precision.autocast(device):
                    row.update(task.validate())
                task.model.train()
            row["seconds"] = time.perf_counter() - started
            history.append(row)
            # A task without validation (DINO) is judged by its training loss.
            score = row.get("val_loss", row["train_loss"]) if validated else math.inf
            improved = score < best
            best = min(best, score)
            due = (train.checkpoint_seconds <= 0 or epoch + 1 == plan.epochs
                   or time.perf_counter() - last_write >= train.checkpoint_seconds)
            if main:
                if improved:
                    save_torch(run_dir / WEIGHTS_BEST, _cpu_state(task.model))
                    task.export(run_dir, "best")
                if due:
                    _save_epoch(task, run_dir, optimizer, scaler, epoch, best, history, config_json)
                    if train.log_steps:
                        _write_steps(run_dir / STEPS, step_rows)
            if due:
                last_write = time.perf_counter()
            barrier(processes)
            bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.4f}", val=f"{row.get('val_loss', float('nan')):.4f}", lr=f"{lr:.3g}")
    finally:
        bar.close()
        task.wrapped = None
    if main:
        _mark_complete(run_dir, plan, history)
    return history


def _save_epoch(task, run_dir: Path, optimizer, scaler, epoch: int, best: float, history, config_json) -> None:
    """The last weights, transferable exports, metrics and the checkpoint of a finished epoch (rank 0)."""
    save_torch(run_dir / WEIGHTS_LAST, _cpu_state(task.model))
    task.export(run_dir, "last")
    write_metrics(run_dir / METRICS, history)
    save_torch(run_dir / CHECKPOINT, {
        "model": _cpu_state(task.model),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "task": task.extra_state(),
        "rng": _rng_states(),
        "epoch": epoch + 1,
        "best": best,
        "history": history,
        "config": config_json,
    })


def _read_steps(path: Path, before_step: int) -> list[dict[str, Any]]:
    """Per-step rows already written for steps < ``before_step`` (a resumed run keeps them)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{"step": int(r["step"]), "lr": float(r["lr"]), "loss": float(r["loss"])}
                for r in csv.DictReader(handle) if int(r["step"]) < before_step]


def _write_steps(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["step", "lr", "loss"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"step": row["step"], "lr": f"{row['lr']:.8g}", "loss": repr(row["loss"])})
    atomic.write_text(path, text.getvalue())


def _check_finite(bad: torch.Tensor, run_dir: Path, epoch: int, step: int) -> None:
    if bool(bad):
        raise TrainingError(
            f"{run_dir}: the loss became non-finite (NaN or inf) in epoch {epoch} (by step {step}); "
            f"stopped without saving, so {CHECKPOINT} still holds the last good epoch. "
            "Try a lower learning rate (--lr) or mixed precision off (--amp off), then --resume."
        )


def _mark_complete(run_dir: Path, plan: Plan, history: list[dict[str, Any]]) -> None:
    atomic.write_json(run_dir / RUN_COMPLETE, {
        "epochs": plan.epochs, "steps": plan.total_steps,
        "train_seconds": round(sum(float(row.get("seconds", 0.0)) for row in history), 3),
        "last": history[-1] if history else None,
    })
