"""Supervised segmentation task: the from-scratch baseline and fine-tuning (protocol 4).

Plugs into the one loop of :mod:`cmrssp.train`: the U-Net on augmented ED/ES slices with the
deep-supervised CE + Dice loss; validation on the un-augmented validation slices (loss and
per-class 2D Dice); optional encoder freezing for the first epochs after loading pretrained
weights (protocol 1.5, 7.19: only ``requires_grad`` flips; BN statistics keep updating).
"""

from __future__ import annotations

from typing import Any

import torch

from cmrssp.augment import AugmentConfig, augment_batch, resample_plain
from cmrssp.data.slices import SliceSet
from cmrssp.data.subject import CLASS_NAMES
from cmrssp.losses import dice_per_class, segmentation_loss
from cmrssp.models import UNet, UNetConfig, memory_format
from cmrssp.train import BaseTask



def device_batch(slices: SliceSet, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """Gather one batch of slices onto ``device`` (an index gather; no copy when already there)."""
    indices = indices.to(slices.images.device)
    batch = {
        "images": slices.images[indices],
        "centre": slices.centre[indices],
        "background": slices.background[indices],
        "max_value": slices.max_value[indices],
    }
    if slices.labels is not None:
        batch["labels"] = slices.labels[indices]
    return {name: value.to(device, non_blocking=True) for name, value in batch.items()}


class SegmentationTask(BaseTask):
    """U-Net training on labelled slices.

    Args:
        unet: network shape (4 classes, deep supervision heads).
        augment: training augmentation (validation uses none).
        train_slices, valid_slices: segmentation slice sets (valid may be None).
        size: network input size S for validation (the cache's evaluation grid).
        train_size: side of the training inputs (``TrainConfig.patch_size``); None = ``size``.
        device: training device; ``channels_last`` selects the NHWC memory format.
        freeze_encoder_epochs: epochs with encoder parameters frozen (BN statistics still update).
        val_batch_size: validation batch size.
    """

    def __init__(
        self,
        unet: UNetConfig,
        augment: AugmentConfig,
        train_slices: SliceSet,
        valid_slices: SliceSet | None,
        size: int,
        device: torch.device,
        freeze_encoder_epochs: int = 0,
        val_batch_size: int = 128,
        channels_last: bool = True,
        train_size: int | None = None,
    ):
        self.model = UNet(unet).to(device)
        self.memory_format = memory_format(channels_last)
        self.model = self.model.to(memory_format=self.memory_format)
        self.augment, self.size, self.device = augment, size, device
        self.train_size = train_size or size
        self.train_slices, self.valid_slices = train_slices, valid_slices
        self.freeze_encoder_epochs, self.val_batch_size = freeze_encoder_epochs, val_batch_size
        # DDP must look for parameters without gradient while the encoder is frozen.
        self.find_unused_parameters = freeze_encoder_epochs > 0

    def n_train(self) -> int:
        return len(self.train_slices)

    def before_epoch(self, epoch: int) -> None:
        self.model.set_encoder_requires_grad(epoch >= self.freeze_encoder_epochs)

    def train_step(self, indices: torch.Tensor, generator: torch.Generator, step: int):
        batch = device_batch(self.train_slices, indices, self.device)
        images, labels = augment_batch(
            batch["images"], batch["labels"], batch["centre"], batch["background"], batch["max_value"],
            self.train_size, self.augment, generator,
        )
        outputs = self.net(images.contiguous(memory_format=self.memory_format))
        loss, ce, dice = segmentation_loss(outputs, labels)
        return loss, {"ce": ce.detach(), "dice_loss": dice.detach()}

    def validate(self) -> dict[str, float]:
        """Loss and per-class 2D Dice (protocol 5.1: empty/empty = 1) over all validation slices."""
        if self.valid_slices is None or len(self.valid_slices) == 0:
            return {}
        loss_sum = torch.zeros((), device=self.device)
        dice_sum = torch.zeros(len(CLASS_NAMES), device=self.device)
        count = len(self.valid_slices)
        for start in range(0, count, self.val_batch_size):
            indices = torch.arange(start, min(start + self.val_batch_size, count))
            batch = device_batch(self.valid_slices, indices, self.device)
            images, labels = resample_plain(batch["images"], batch["labels"], batch["background"], self.size)
            outputs = self.net(images.contiguous(memory_format=self.memory_format))
            loss, _, _ = segmentation_loss(outputs, labels)
            loss_sum += loss * len(indices)
            dice_sum += dice_per_class(outputs[0].argmax(dim=1), labels).sum(dim=0)
        dice = (dice_sum / count).tolist()
        metrics: dict[str, Any] = {"val_loss": float(loss_sum) / count}
        metrics.update({f"val_dice_{name}": value for name, value in zip(CLASS_NAMES, dice)})
        metrics["val_dice_mean"] = sum(dice) / len(dice)
        return metrics
