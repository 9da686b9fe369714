"""Masked image modelling (MIM) pretraining of the whole U-Net (protocol 2.4).

The U-Net with a single 1-channel full-resolution head (``nr_output_scales=1``, no activation)
reconstructs the augmented, standardized slice from a copy in which exactly 75 % of its 32×32
patches (8×8 = 64 per 256² image; the grid scales with the input size) are set to 0.0, the
subject mean (protocol 7.10). The loss is the squared error over masked pixels divided by the
number of masked pixels in the batch. Every epoch writes, from the current weights as upstream,
``weights-encoder.pt`` (``encoder.*``) and ``weights-encoder-decoder.pt`` (every key but the
heads; the full MIM model cannot load into the 4-class U-Net, protocol 7.11), and
``weights-transfer.pt``, the one of the two that ``finetune --init mim`` loads (``transfer``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmrssp import atomic
from cmrssp.augment import AugmentConfig, augment_batch
from cmrssp.data.slices import SliceSet
from cmrssp.losses import mim_loss
from cmrssp.methods.method import PretrainingMethod
from cmrssp.models import UNet, UNetConfig, encoder_decoder_state, encoder_state, memory_format
from cmrssp.segmentation import device_batch
from cmrssp.run_folder import ENCODER_DECODER_WEIGHTS, ENCODER_WEIGHTS, TRANSFER_WEIGHTS
from cmrssp.train import BaseTask, OptimizerConfig, TrainConfig, save_torch

TRANSFER_CHOICES = ("encoder_decoder", "encoder")


@dataclass(frozen=True)
class MimConfig:
    """MIM settings.

    Attributes:
        patches_per_side: the mask grid (8: 32-pixel patches at 256², protocol 2.4).
        mask_ratio: fraction of patches masked in every image, exactly (round(0.75·64) = 48).
        mask_value: value of masked pixels in standardized units (0.0 = the subject mean).
        transfer: which weights ``finetune --init mim`` loads: "encoder_decoder" (encoder,
            transposed convs and decoder blocks; the study's README figure shows the full
            encoder-decoder) or "encoder". Which one the paper used is not known (protocol 1.5).
        n_examples: reconstructions saved each epoch for a visual check.
    """

    patches_per_side: int = 8
    mask_ratio: float = 0.75
    mask_value: float = 0.0
    transfer: str = "encoder_decoder"
    n_examples: int = 8


def random_patch_mask(batch: int, size: int, patches_per_side: int, ratio: float, generator: torch.Generator,
                      device: torch.device) -> torch.Tensor:
    """Boolean mask (B, 1, S, S): exactly round(ratio · P²) of the P×P patches of every image,
    chosen uniformly at random per image (ranks of uniform scores, no per-sample loop)."""
    if size % patches_per_side:
        raise ValueError(f"input size {size} is not divisible into {patches_per_side} patches per side")
    n_patches = patches_per_side**2
    n_masked = int(round(ratio * n_patches))
    scores = torch.rand(batch, n_patches, generator=generator, device=device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    patches = (ranks < n_masked).view(batch, 1, patches_per_side, patches_per_side)
    pixels = size // patches_per_side
    return patches.repeat_interleave(pixels, dim=2).repeat_interleave(pixels, dim=3)


class MimTask(BaseTask):
    """MIM for the shared loop."""

    def __init__(
        self,
        channels: tuple[int, ...],
        in_channels: int,
        config: MimConfig,
        augment: AugmentConfig,
        train_slices: SliceSet,
        valid_slices: SliceSet | None,
        size: int,
        device: torch.device,
        val_batch_size: int = 256,
        channels_last: bool = True,
    ):
        if config.transfer not in TRANSFER_CHOICES:
            raise ValueError(f"mim.transfer must be one of {TRANSFER_CHOICES}, got {config.transfer!r}")
        self.config, self.augment = config, augment
        unet = UNetConfig(channels=tuple(channels), in_channels=in_channels, n_classes=1, nr_output_scales=1)
        self.memory_format = memory_format(channels_last)
        self.model = UNet(unet).to(device).to(memory_format=self.memory_format)
        self.train_slices, self.valid_slices = train_slices, valid_slices
        self.size, self.device, self.val_batch_size = size, device, val_batch_size
        self.examples: dict[str, np.ndarray] = {}

    def n_train(self) -> int:
        return len(self.train_slices)

    def _forward(self, slices: SliceSet, indices: torch.Tensor, generator: torch.Generator,
                 mask_generator: torch.Generator | None = None):
        batch = device_batch(slices, indices, self.device)
        target, _ = augment_batch(batch["images"], None, batch["centre"], batch["background"], batch["max_value"],
                                  self.size, self.augment, generator)
        if mask_generator is None:
            mask = random_patch_mask(len(target), self.size, self.config.patches_per_side, self.config.mask_ratio,
                                     generator, self.device)
        else:  # the global batch's masks, this process's rows: the same masks whatever the process count
            world, rank = self.processes.world_size, self.processes.rank
            mask = random_patch_mask(len(target) * world, self.size, self.config.patches_per_side,
                                     self.config.mask_ratio, mask_generator, self.device)
            mask = mask[rank * len(target) : (rank + 1) * len(target)]
        masked = torch.where(mask, torch.full_like(target, self.config.mask_value), target)
        prediction = self.net(masked.contiguous(memory_format=self.memory_format))[0]
        return target, mask, masked, prediction

    def train_step(self, indices: torch.Tensor, generator: torch.Generator, step: int):
        # Masks come from a stream seeded by (seed, step), drawn for the global batch, so one
        # process and several train on the same masks (and a resumed step replays them).
        mask_seed = int(np.random.SeedSequence([self.seed, step, 0x4D494D]).generate_state(1, dtype=np.uint64)[0])
        mask_generator = torch.Generator(device=generator.device).manual_seed(mask_seed)
        target, mask, _, prediction = self._forward(self.train_slices, indices, generator, mask_generator)
        loss = mim_loss(prediction, target, mask)
        # What predicting the mask value itself would score: the loss must end well below it.
        baseline = mim_loss(torch.full_like(target, self.config.mask_value), target, mask)
        return loss, {"mask_value_loss": baseline}

    def validate(self) -> dict[str, float]:
        if self.valid_slices is None or len(self.valid_slices) == 0:
            return {}
        generator = torch.Generator(device=self.device).manual_seed(0)
        order = torch.randperm(len(self.valid_slices), generator=torch.Generator().manual_seed(0))
        batch = min(self.val_batch_size, len(order))
        losses, baselines = [], []
        for start in range(0, len(order) - batch + 1, batch):
            target, mask, masked, prediction = self._forward(self.valid_slices, order[start : start + batch], generator)
            losses.append(mim_loss(prediction, target, mask))
            baselines.append(mim_loss(torch.full_like(target, self.config.mask_value), target, mask))
            if start == 0:
                n = self.config.n_examples
                self.examples = {name: value[:n, 0].float().cpu().numpy()
                                 for name, value in (("input", target), ("masked", masked), ("output", prediction))}
        return {"val_loss": float(torch.stack(losses).mean()), "val_mask_value_loss": float(torch.stack(baselines).mean())}

    def export(self, run_dir: Path, which: str) -> None:
        if which != "last":
            return  # upstream writes the transfer files from the current weights every epoch
        run_dir = Path(run_dir)
        encoder = {k: v.detach().cpu() for k, v in encoder_state(self.model).items()}
        encoder_decoder = {k: v.detach().cpu() for k, v in encoder_decoder_state(self.model).items()}
        save_torch(run_dir / ENCODER_WEIGHTS, encoder)
        save_torch(run_dir / ENCODER_DECODER_WEIGHTS, encoder_decoder)
        save_torch(run_dir / TRANSFER_WEIGHTS, encoder_decoder if self.config.transfer == "encoder_decoder" else encoder)
        if self.examples:
            save_examples(run_dir, self.examples)


def save_examples(run_dir: Path, examples: dict[str, np.ndarray]) -> None:
    """``mim-examples.png`` (rows: input, masked input, output) with matplotlib, else ``.npz``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **examples)
        atomic.write_bytes(run_dir / "mim-examples.npz", buffer.getvalue())
        return
    import io

    n = len(examples["input"])
    figure, axes = plt.subplots(3, n, figsize=(1.6 * n, 5), squeeze=False)
    low, high = np.percentile(examples["input"], [1, 99])
    for row, name in enumerate(("input", "masked", "output")):
        for column in range(n):
            axes[row, column].imshow(examples[name][column].T, cmap="gray", origin="lower", vmin=low, vmax=high)
            axes[row, column].axis("off")
        axes[row, 0].set_title(name, fontsize=8, loc="left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    atomic.write_bytes(run_dir / "mim-examples.png", buffer.getvalue())


# -- the declaration of the registry (cmrssp.methods) -----------------------------------------

def _paper_mim() -> tuple[OptimizerConfig, TrainConfig]:
    """Protocol 2.4: the supervised optimiser (SGD Nesterov 0.99, lr 0.01, wd 3e-5) with a cosine
    schedule; 100 epochs of batch 128, fp16 (protocol 7.20)."""
    return (OptimizerConfig(lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5, schedule="cosine"),
            TrainConfig(epochs=100, batch_size=128, val_batch_size=256, amp="fp16"))


def _small_mim(config, preset: str):
    """The cpu presets: the same effective step with momentum 0.9 (lr 0.1), as their fine-tuning."""
    if preset in ("cpu", "cpu-real"):
        return dataclasses.replace(config, optimizer=dataclasses.replace(config.optimizer, lr=0.1, momentum=0.9))
    return config


def make_mim_task(config, train_slices: SliceSet, valid_slices: SliceSet | None, size: int, device: torch.device,
                  stack_sizes: dict[str, int] | None = None) -> MimTask:
    """The MIM Task of a PretrainConfig."""
    return MimTask(config.unet.channels, config.unet.in_channels, config.mim, config.augment, train_slices,
                   valid_slices, size=size, device=device, val_batch_size=config.train.val_batch_size,
                   channels_last=config.train.channels_last)


# Seconds per sample: README "ACDC, real scans" (2-core VM, 2026-12-01, 64² grid).
MIM = PretrainingMethod("mim", "mim", MimConfig, _paper_mim, make_mim_task, 1 / 60, _small_mim)
