"""DINO pretraining (Caron et al. 2021, "Emerging properties in self-supervised vision
transformers") as the study runs it (protocol 2.3, 7.4-7.7), as a Task for :func:`cmrssp.train.fit`.

A student (the U-Net encoder + a DINO head) learns to match, from 2 global and 6 local crops of a
slice, the centred and sharpened output of a teacher of the same architecture that sees only the
2 global crops; the teacher is an exponential moving average (EMA) of the student's parameters.
Only the student's ``encoder.*`` transfers to the segmentation U-Net (protocol 1.5).

Per training step (batch of B slices, S = the grid size):

* crops from the same slices, on the device: global "blur" (B, 1, S, S), global "solarize"
  (B, 1, S, S) and ``n_local_crops`` local crops (6B, 1, S/2, S/2) made by one
  :func:`augment_batch` call on the batch repeated crop-major, so the student's logits are ordered
  [blur(B), solarize(B), local_1(B), ..., local_6(B)] (protocol 2.3, 7.25: all crops in one place
  instead of upstream's three synchronised loaders);
* student logits (8B, K) on all crops, teacher logits (2B, K) on the global crops (no gradient);
* :func:`cmrssp.losses.dino_loss` with the step's teacher temperature; after the optimizer step,
  the teacher EMA with the step's momentum and the centre update (:func:`update_dino_center`).

Schedules (precomputed in :meth:`DinoTask.setup`, indexed by the global step, as official DINO):
teacher momentum cosine 0.996 -> 1 per iteration over the whole run; teacher temperature linear
0.02 -> 0.04 per epoch over 30 epochs (inclusive endpoints), then 0.04 (protocol 7.5: upstream
starts sharper than official DINO). The last layer gets no update in the first epoch.

Switches (defaults reproduce upstream): ``DinoConfig.teacher_init`` "independent" (protocol 7.4:
the teacher is built with its own random initialisation) or "student_copy" (official DINO).
Unlike upstream, the teacher's parameters never require gradients: upstream left them
``requires_grad=True`` but never backpropagated through them, so this changes nothing but the
wasted autograd bookkeeping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from cmrssp.augment import AUGMENT_PRESETS, AugmentConfig, augment_batch
from cmrssp.data.slices import SliceSet
from cmrssp.errors import InputError
from cmrssp.losses import dino_loss, update_dino_center
from cmrssp.methods.method import PretrainingMethod
from cmrssp.distributed import mean_over_processes, sync_batch_norm
from cmrssp.models import Encoder, encoder_state, memory_format
from cmrssp.schedules import cosine
from cmrssp.segmentation import device_batch
from cmrssp.run_folder import TRANSFER_WEIGHTS
from cmrssp.train import BaseTask, OptimizerConfig, Plan, TrainConfig, save_torch

TEACHER_INITS = ("independent", "student_copy")


@dataclass(frozen=True)
class DinoConfig:
    """DINO's knobs; defaults are the study's ``dino-config.yaml`` (protocol 2.3).

    Attributes:
        out_dim, hidden_dim, bottleneck_dim: head sizes (upstream 8192, not DINO's 65536; 7.5).
        n_local_crops: local crops per slice (upstream 6; official DINO 8).
        teacher_momentum: (base, final) of the per-iteration cosine EMA momentum schedule.
        teacher_temp: (warm-up start, final) teacher temperature; linear per epoch over
            ``teacher_temp_warmup_epochs`` epochs, inclusive endpoints, then constant.
        student_temp: student temperature τ_s.
        center_momentum: EMA momentum of the centre c.
        freeze_last_layer_epochs: epochs in which the head's last layer is not updated.
        teacher_init: "independent" (upstream, protocol 7.4: own random init) or "student_copy"
            (official DINO: the teacher starts as a copy of the student).
        global_blur_augment, global_solarize_augment, local_augment: names in the augmentation
            presets (:data:`cmrssp.augment.AUGMENT_PRESETS`) of the three crop kinds.
    """

    out_dim: int = 8192
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_local_crops: int = 6
    teacher_momentum: tuple[float, float] = (0.996, 1.0)
    teacher_temp: tuple[float, float] = (0.02, 0.04)
    teacher_temp_warmup_epochs: int = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    freeze_last_layer_epochs: int = 1
    teacher_init: str = "independent"
    global_blur_augment: str = "dino_global_blur"
    global_solarize_augment: str = "dino_global_solarize"
    local_augment: str = "dino_local"

    def __post_init__(self) -> None:
        for name in ("teacher_momentum", "teacher_temp"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise InputError(None, f"dino {name} must be (start, end), got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))  # JSON gives lists
        for name in ("out_dim", "hidden_dim", "bottleneck_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(None, f"dino {name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("n_local_crops", "teacher_temp_warmup_epochs", "freeze_last_layer_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise InputError(None, f"dino {name} must be an integer >= 0, got {getattr(self, name)!r}")
        base, final = self.teacher_momentum
        if not 0.0 <= base <= 1.0 or not 0.0 <= final <= 1.0:
            raise InputError(None, f"dino teacher_momentum values must be in [0, 1], got {self.teacher_momentum}")
        if min(self.teacher_temp) <= 0 or self.student_temp <= 0:
            raise InputError(None, "dino teacher_temp and student_temp must be positive")
        if not 0.0 <= self.center_momentum <= 1.0:
            raise InputError(None, f"dino center_momentum must be in [0, 1], got {self.center_momentum}")
        if self.teacher_init not in TEACHER_INITS:
            raise InputError(None, f"dino teacher_init must be one of {TEACHER_INITS}, got {self.teacher_init!r}")


def dino_optimizer_config(batch_size: int) -> OptimizerConfig:
    """The study's DINO optimiser (protocol 2.3): SGD momentum 0.9 without Nesterov, lr
    0.03·batch/256 (0.0075 at batch 64) after a 10-epoch linear warm-up, cosine per iteration
    to 1e-6, weight decay 1e-4 (constant; biases and 1-D parameters get none, see
    :meth:`DinoTask.parameter_groups`)."""
    return OptimizerConfig(
        lr=0.03 * batch_size / 256, momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="cosine",
        schedule_unit="iteration", final_lr=1e-6, warmup_epochs=10,
    )


class DinoHead(nn.Module):
    """Official DINO's projection head with BN (protocol 2.3).

    (N, in_dim) -> Linear -> BN -> GELU -> Linear -> BN -> GELU -> Linear(bottleneck) ->
    L2-normalise -> weight-normalised Linear(bottleneck -> out_dim, no bias) -> (N, out_dim).

    The MLP's Linear layers get truncated-normal weights (std 0.02, absolute bounds ±2, so
    effectively untruncated, as official DINO) and zero biases. As official DINO, the last layer
    is created after that init (PyTorch's default init of its direction) and its weight-norm gain
    g is set to 1 and frozen (``norm_last_layer``): the output is then a cosine similarity to
    ``out_dim`` learned prototypes. Weight norm uses the parametrization API, so the keys are
    ``last_layer.parametrizations.weight.original0`` (g, (out_dim, 1)) and ``...original1``
    (direction v, (out_dim, bottleneck_dim)); upstream's old API named them ``weight_g`` and
    ``weight_v``. The head never transfers, so the names only matter within DINO.

    At in 512, out 8192: 7,885,056 parameters including the 8,192 frozen gains (protocol 1.4
    counts them), 7,876,864 trainable.
    """

    def __init__(self, in_dim: int, out_dim: int = 8192, hidden_dim: int = 2048, bottleneck_dim: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(layer.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class DinoNetwork(nn.Module):
    """Encoder + DINO head, upstream's ``MultiCropWrapper`` (protocol 2.3).

    ``self.encoder`` is the U-Net's :class:`~cmrssp.models.Encoder`, so the ``encoder.*`` keys
    load into :class:`~cmrssp.models.UNet` by name. The paper-size student has 22,044,000
    parameters (14,158,944 encoder + 7,885,056 head; protocol 1.4).

    forward(crops) -> (N_total, out_dim) logits. ``crops`` is one (N, C, H, W) tensor or a list
    of them; each run of consecutive tensors with the same H x W is concatenated and goes
    through the encoder in one call (official DINO groups crops by resolution the same way).
    The bottleneck is averaged over space (upstream's fixed 4x4 / 2x2 average pool at 256² /
    128²; a mean works at any size), and the head runs once on all features, in input order.
    """

    def __init__(self, channels: Sequence[int], in_channels: int = 1, config: DinoConfig = DinoConfig()) -> None:
        super().__init__()
        self.encoder = Encoder(tuple(channels), in_channels)
        self.head = DinoHead(channels[-1], config.out_dim, config.hidden_dim, config.bottleneck_dim)

    def forward(self, crops: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(crops, Tensor):
            crops = [crops]
        features, start = [], 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            group = crops[start] if end == start + 1 else torch.cat(list(crops[start:end]))
            features.append(self.encoder(group)[-1].mean(dim=(-2, -1)))
            start = end
        return self.head(torch.cat(features))


class DinoTask(BaseTask):
    """DINO pretraining for the shared loop (see the module docstring).

    Args:
        channels, in_channels: the encoder's shape (the U-Net's channel list).
        config: DINO's knobs.
        augment_presets: name -> AugmentConfig; must hold the three names ``config`` refers to.
        train_slices: the pretraining slices (labels unused; ``centre``, ``background`` and
            ``max_value`` drive cropping and solarization).
        size: global crop size S (local crops are S // 2).
        device: training device; ``channels_last`` selects the NHWC memory format.

    ``model`` is the student (checkpointed, exported); ``teacher`` and ``center`` (1, out_dim)
    are extra state, saved in the checkpoint for an exact resume.
    """

    def __init__(
        self,
        channels: Sequence[int],
        in_channels: int,
        config: DinoConfig,
        augment_presets: dict[str, AugmentConfig],
        train_slices: SliceSet,
        size: int,
        device: torch.device,
        channels_last: bool = True,
    ):
        names = (config.global_blur_augment, config.global_solarize_augment, config.local_augment)
        missing = [name for name in names if name not in augment_presets]
        if missing:
            known = sorted(augment_presets)
            raise InputError(None, f"dino augmentation presets {missing} are not defined (known: {known})")
        if size < 2:
            raise InputError(None, f"dino crop size must be >= 2 (local crops are size // 2), got {size}")
        self.config, self.size, self.device = config, size, device
        self.blur, self.solarize, self.local = (augment_presets[name] for name in names)
        self.train_slices = train_slices
        self.memory_format = memory_format(channels_last)

        self.model = DinoNetwork(channels, in_channels, config).to(device, memory_format=self.memory_format)
        # Built after the student, so "independent" draws its own initialisation (protocol 7.4).
        self.teacher = DinoNetwork(channels, in_channels, config).to(device, memory_format=self.memory_format)
        if config.teacher_init == "student_copy":
            self.teacher.load_state_dict(self.model.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.train()  # upstream: BN of the teacher uses batch statistics (protocol 2.3)
        self.center = torch.zeros(1, config.out_dim, device=device)
        self._teacher_views: tuple[Tensor, ...] | None = None  # this step's, for the centre
        self.plan: Plan | None = None
        self.momentum_schedule = np.zeros(0)
        self.teacher_temp_schedule = np.zeros(0)

    def n_train(self) -> int:
        return len(self.train_slices)

    def setup(self, plan: Plan) -> None:
        """Per-iteration teacher momentum (cosine, official DINO: 1 - (1 - base)(cos(π s/T) + 1)/2)
        and per-epoch teacher temperature (np.linspace over the warm-up epochs, then constant)."""
        config = self.config
        self.plan = plan
        self.momentum_schedule = cosine(*config.teacher_momentum, plan.total_steps)
        start, end = config.teacher_temp
        warmup = config.teacher_temp_warmup_epochs
        # np.linspace as official DINO (a 1-epoch warm-up is the start value, not the end).
        temperatures = np.concatenate([np.linspace(start, end, warmup), np.full(max(0, plan.epochs - warmup), end)])
        self.teacher_temp_schedule = temperatures[: plan.epochs]

    def _epoch(self, step: int) -> int:
        if self.plan is None:
            raise RuntimeError("DinoTask.setup(plan) must run before training")
        return step // self.plan.iterations_per_epoch

    def before_epoch(self, epoch: int) -> None:
        self.teacher.train()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Official DINO's groups: weights with decay; biases and 1-D parameters (BN) without.
        Frozen parameters (the last layer's gain) are left out."""
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if not parameter.requires_grad:
                continue
            (no_decay if name.endswith(".bias") or parameter.ndim <= 1 else decay).append(parameter)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def crops(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """(global crops (2B, 1, S, S) [blur, solarize], local crops (nB, 1, S/2, S/2) crop-major
        or None) of the slices at ``indices``; float32 whatever the loop's autocast (augment_batch
        turns it off: the crops are the data, not the model)."""
        batch = device_batch(self.train_slices, indices, self.device)
        images, centre, background, max_value = (batch[k] for k in ("images", "centre", "background", "max_value"))
        blur, _ = augment_batch(images, None, centre, background, max_value, self.size, self.blur, generator)
        solarize, _ = augment_batch(images, None, centre, background, max_value, self.size, self.solarize, generator)
        global_crops = torch.cat([blur, solarize]).contiguous(memory_format=self.memory_format)
        n = self.config.n_local_crops
        if n == 0:
            return global_crops, None
        # Repeating the batch crop-major gives [local_1(B), ..., local_n(B)] from one call.
        local, _ = augment_batch(
            images.repeat(n, 1, 1), None, centre.repeat(n, 1), background.repeat(n), max_value.repeat(n),
            self.size // 2, self.local, generator,
        )
        return global_crops, local.contiguous(memory_format=self.memory_format)

    def train_step(self, indices: Tensor, generator: torch.Generator, step: int):
        global_crops, local_crops = self.crops(indices, generator)
        student_logits = self.net([global_crops] if local_crops is None else [global_crops, local_crops])
        with torch.no_grad():
            teacher_logits = self.teacher(global_crops).float()
        temperature = float(self.teacher_temp_schedule[self._epoch(step)])
        n_views = 2 + (0 if local_crops is None else self.config.n_local_crops)
        teacher_views = teacher_logits.chunk(2)
        loss = dino_loss(
            student_logits.chunk(n_views), teacher_views, self.center, self.config.student_temp, temperature
        )
        self._teacher_views = teacher_views
        with torch.no_grad():
            log_q = F.log_softmax((teacher_logits - self.center) / temperature, dim=-1)
            entropy = -(log_q.exp() * log_q).sum(dim=-1).mean()
        # Cross-entropy = H(teacher) + KL, and every teacher view enters the loss equally often,
        # so loss - entropy is the mean KL(teacher || student): 0 when the student matches.
        return loss, {"teacher_entropy": entropy, "kl_divergence": loss.detach() - entropy}

    def before_optimizer_step(self, step: int) -> None:
        """In the first ``freeze_last_layer_epochs`` epochs the last layer gets no update: as
        official DINO, its gradients are dropped (None), so SGD also skips its weight decay and
        momentum, not just the gradient."""
        if self._epoch(step) < self.config.freeze_last_layer_epochs:
            for parameter in self.model.head.last_layer.parameters():
                parameter.grad = None

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Teacher EMA θ_t <- m θ_t + (1 - m) θ_s over parameters only (BN buffers are the
        teacher's own, protocol 2.3), then the centre update with this step's teacher logits."""
        momentum = float(self.momentum_schedule[step])
        teacher = list(self.teacher.parameters())
        student = [parameter.detach() for parameter in self.model.parameters()]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1.0 - momentum)
        if self._teacher_views is not None:
            self.center = update_dino_center(self.center, self._teacher_views, self.config.center_momentum,
                                             reduce=lambda mean: mean_over_processes(mean, self.processes))
            self._teacher_views = None

    def distribute(self, processes, device, sync_bn: bool, seed: int = 0) -> None:
        """The teacher's BN runs on batch statistics too (protocol 2.3): global ones when asked."""
        super().distribute(processes, device, sync_bn, seed)
        if processes.enabled and sync_bn:
            self.teacher = sync_batch_norm(self.teacher, device)

    def validate(self) -> dict[str, float]:
        return {}  # DINO has no validation; the loop keeps the lowest training loss (protocol 7.7)

    def extra_state(self) -> dict[str, Any]:
        return {
            "teacher": {key: value.detach().cpu() for key, value in self.teacher.state_dict().items()},
            "center": self.center.detach().cpu(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.center = state["center"].to(self.device, torch.float32).clone()

    def export(self, run_dir: Path, which: str) -> None:
        """On "last": ``weights-transfer.pt``, the student's ``encoder.*`` (protocol 1.5, 7.7)."""
        if which == "last":
            state = {key: value.detach().cpu() for key, value in encoder_state(self.model).items()}
            save_torch(Path(run_dir) / TRANSFER_WEIGHTS, state)


# -- the declaration of the registry (cmrssp.methods) -----------------------------------------

def _paper_dino() -> tuple[OptimizerConfig, TrainConfig]:
    """Protocol 2.3: :func:`dino_optimizer_config` at batch 64; 100 epochs, fp16 (protocol 7.20)."""
    return dino_optimizer_config(64), TrainConfig(epochs=100, batch_size=64, amp="fp16")


def _small_dino(config, preset: str):
    """The small presets: the optimiser follows their batch, with a 1-epoch warm-up (none for
    tiny); the teacher temperature warms up over 2 epochs; the protocol's head on ``cpu`` (it
    costs little next to the encoder), a small one for ``tiny``."""
    optimizer = dataclasses.replace(dino_optimizer_config(config.train.batch_size),
                                    warmup_epochs=0 if preset == "tiny" else 1)
    small = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16) if preset == "tiny" else {}
    return dataclasses.replace(config, optimizer=optimizer, dino=DinoConfig(teacher_temp_warmup_epochs=2, **small))


def make_dino_task(config, train_slices: SliceSet, valid_slices: SliceSet | None, size: int, device: torch.device,
                   stack_sizes: dict[str, int] | None = None) -> DinoTask:
    """The DINO Task of a PretrainConfig (DINO has no validation loss). Its crops have their own
    augmentation presets; the run's augmentation switches still apply to them."""
    shared = {name: getattr(config.augment, name) for name in ("centring", "centre_align_corners_quirk",
                                                                 "intensity_scale_mode", "noise_std_random",
                                                                 "interpolation")}
    presets = {name: dataclasses.replace(preset, **shared) for name, preset in AUGMENT_PRESETS.items()}
    return DinoTask(config.unet.channels, config.unet.in_channels, config.dino, presets, train_slices, size=size,
                    device=device, channels_last=config.train.channels_last)


# Seconds per sample (one slice = 8 crops): README "ACDC, real scans" (2-core VM, 2026-12-01, 64²).
DINO = PretrainingMethod("dino", "dino", DinoConfig, _paper_dino, make_dino_task, 1 / 13, _small_dino)
