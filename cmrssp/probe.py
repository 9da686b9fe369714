"""``run.py probe``: how good a pretrained encoder's features are, without fine-tuning it.

A linear probe: the encoder is frozen (eval mode); every level's feature map of an un-augmented
slice is upsampled (bilinear) to the input size and stacked, (C1 + ... + CL) channels per pixel,
standardised with the training pixels' statistics; one 1x1 convolution (a per-pixel linear
classifier over those channels) is trained on the labelled slices of a few subjects with the
study's 0.5 CE + 0.5 soft Dice loss, and scored by 2D Dice on the validation slices. Features
are computed once, so a probe takes seconds on a CPU; the same probe on a randomly initialised
encoder is the baseline a pretraining method must beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cmrssp.atomic import write_json
from cmrssp.augment import resample_plain
from cmrssp.data.slices import SliceSet, load_slices
from cmrssp.errors import InputError
from cmrssp.finetune import resolve_init, resolve_split
from cmrssp.losses import dice_per_class, soft_dice_loss
from cmrssp.models import UNet, load_transferable, load_weight_file
from cmrssp.presets import FinetuneConfig
from cmrssp.runs import open_run_data
from cmrssp.segmentation import CLASS_NAMES


@dataclass(frozen=True)
class ProbeConfig:
    """Length and step of the probe's training (Adam on the 1x1 convolution)."""

    steps: int = 400
    batch_size: int = 16
    lr: float = 0.01
    seed: int = 0


@torch.no_grad()
def encoder_features(model: UNet, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, C1 + ... + CL, S, S) float32: every encoder level of (N, 1, S, S) ``images``, upsampled."""
    model.eval()
    size = images.shape[-1]
    out = []
    for first in range(0, len(images), batch_size):
        levels = model.encoder(images[first : first + batch_size])
        out.append(torch.cat([F.interpolate(level, size=(size, size), mode="bilinear", align_corners=False)
                              for level in levels], dim=1))
    return torch.cat(out)


def plain_slices(slices: SliceSet, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-augmented network input (N, 1, S, S) float32 and labels (N, S, S) int64."""
    images, labels = resample_plain(slices.images, slices.labels, slices.background, size)
    return images.float(), labels.long()


def train_linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, valid_features: torch.Tensor,
    valid_labels: torch.Tensor, config: ProbeConfig = ProbeConfig(), n_classes: int = 4,
) -> dict[str, float]:
    """Fit a 1x1 convolution on standardised features; return validation 2D Dice per class and mean."""
    mean = train_features.mean(dim=(0, 2, 3), keepdim=True)
    std = train_features.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    train_features = (train_features - mean) / std
    valid_features = (valid_features - mean) / std
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    classifier = nn.Conv2d(train_features.shape[1], n_classes, kernel_size=1)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr)
    for _ in range(config.steps):
        index = torch.randint(0, len(train_features), (min(config.batch_size, len(train_features)),), generator=generator)
        logits = classifier(train_features[index])
        loss = 0.5 * F.cross_entropy(logits, train_labels[index]) + 0.5 * soft_dice_loss(logits, train_labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        prediction = classifier(valid_features).argmax(dim=1)
        dice = dice_per_class(prediction, valid_labels).mean(dim=0).tolist()
    scores = {f"dice_{name}": value for name, value in zip(CLASS_NAMES, dice)}
    scores["dice_mean"] = sum(dice) / len(dice)
    return scores


def run_probe(
    config: FinetuneConfig, inits: list[str], probe: ProbeConfig = ProbeConfig(), runs_dir: Path = Path("runs"),
    data_dir: Path = Path("data"), log=print,
) -> list[dict]:
    """Probe each init ("" = a random encoder) on the config's training subset; write
    ``runs/probe-n<N>-s<seed>.json`` and return one row per init."""
    started = time.perf_counter()
    config, cache = open_run_data(config, data_dir)
    split = resolve_split(config.data, cache)
    size = cache.config.size
    channels = sum(config.unet.channels)
    n_slices = sum(len(cache.meta(key)["label_frames"]) * cache.meta(key)["n_slices"] for key in split.train + split.valid)
    gib = n_slices * channels * size * size * 4 / 2**30
    if gib > 8:
        raise InputError(cache.path, f"a probe here would hold {gib:.0f} GiB of features ({n_slices} slices x {channels} "
                                     f"channels x {size}²); probe on the cpu grid or with fewer subjects")
    train_images, train_labels = plain_slices(load_slices(cache, split.train, "segmentation"), size)
    valid_images, valid_labels = plain_slices(load_slices(cache, split.valid, "segmentation"), size)
    rows = []
    for init in inits:
        torch.manual_seed(config.train.seed)
        model = UNet(config.unet)
        if init:
            weights = resolve_init(init, runs_dir)
            load_transferable(model, load_weight_file(weights), weights)
        scores = train_linear_probe(encoder_features(model, train_images), train_labels,
                                    encoder_features(model, valid_images), valid_labels, probe)
        rows.append({"init": init or "random", "train_subjects": len(split.train), **scores})
        log(f"probe {init or 'random'}: validation mean Dice {scores['dice_mean']:.3f}")
    n = config.data.n_subjects or "all"
    out = runs_dir / f"probe-n{n}-s{config.data.subset_seed}.json"
    write_json(out, {"rows": rows, "probe": probe.__dict__, "train": split.train, "valid": split.valid,
                     "seconds": round(time.perf_counter() - started, 2)})
    log(f"written {out}")
    return rows
