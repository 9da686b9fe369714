"""``run.py probe``: how good pretrained features are, without fine-tuning the network.

A linear probe: the network is frozen (eval mode); the feature maps of an un-augmented slice
are upsampled (bilinear) to the input size and stacked, standardised with the training pixels'
statistics; one 1x1 convolution (a per-pixel linear classifier over those channels) is trained
on the labelled slices of a few subjects with the study's 0.5 CE + 0.5 soft Dice loss, and
scored by 2D Dice on the validation slices. Features are computed once, so a probe takes
seconds to a minute on a CPU; the same probe on a randomly initialised network is the baseline a
pretraining method must beat.

Two feature sets (``FEATURES``):

* ``encoder``: every encoder level, (C1 + ... + CL) channels. What SimCLR, PCL and DINO train
  (they transfer the encoder only).
* ``decoder``: every decoder block's output, (C(L-1) + ... + C1) channels, the maps the
  segmentation heads read. What MIM trains besides the encoder (it transfers encoder and
  decoder by default); for an encoder-only method the decoder is still random.
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
from cmrssp.data.subject import CLASS_NAMES


@dataclass(frozen=True)
class ProbeConfig:
    """Length and step of the probe's training (Adam on the 1x1 convolution)."""

    steps: int = 400
    batch_size: int = 16
    lr: float = 0.01
    seed: int = 0


FEATURES = ("encoder", "decoder")


def _stacked(levels: list[torch.Tensor], size: int) -> torch.Tensor:
    return torch.cat([F.interpolate(level, size=(size, size), mode="bilinear", align_corners=False)
                      for level in levels], dim=1)


@torch.no_grad()
def encoder_features(model: UNet, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, C1 + ... + CL, S, S) float32: every encoder level of (N, 1, S, S) ``images``, upsampled."""
    model.eval()
    size = images.shape[-1]
    return torch.cat([_stacked(model.encoder(images[first : first + batch_size]), size)
                      for first in range(0, len(images), batch_size)])


@torch.no_grad()
def decoder_features(model: UNet, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, C(L-1) + ... + C1, S, S) float32: every decoder block's output of (N, 1, S, S)
    ``images`` (coarsest first), upsampled."""
    model.eval()
    size = images.shape[-1]
    blocks: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda module, inputs, output: blocks.append(output))
             for block in model.decoder.dec_blocks]
    out = []
    try:
        for first in range(0, len(images), batch_size):
            blocks.clear()
            model(images[first : first + batch_size])
            out.append(_stacked(blocks, size))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(out)


FEATURE_FUNCTIONS = {"encoder": encoder_features, "decoder": decoder_features}


def plain_slices(slices: SliceSet, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-augmented network input (N, 1, S, S) float32 and labels (N, S, S) int64."""
    images, labels = resample_plain(slices.images, slices.labels, slices.background, size)
    return images.float(), labels.long()


def train_linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, valid_features: torch.Tensor,
    valid_labels: torch.Tensor, config: ProbeConfig = ProbeConfig(), n_classes: int = 4,
) -> dict[str, float]:
    """Fit a 1x1 convolution on standardised features; return validation 2D Dice per class and mean.

    Features (N, C, S, S), labels (N, S, S). The convolution is computed as a matrix product on
    channels-last copies of the features: the same classifier, several times faster on a CPU."""
    mean = train_features.mean(dim=(0, 2, 3), keepdim=True)
    std = train_features.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    train_pixels = ((train_features - mean) / std).permute(0, 2, 3, 1).contiguous()  # (N, S, S, C)
    valid_pixels = ((valid_features - mean) / std).permute(0, 2, 3, 1).contiguous()
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    classifier = nn.Linear(train_pixels.shape[-1], n_classes)  # initialised as Conv2d(C, K, 1) would be

    def logits_of(pixels: torch.Tensor) -> torch.Tensor:
        return classifier(pixels).permute(0, 3, 1, 2)  # (B, K, S, S)

    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr)
    for _ in range(config.steps):
        index = torch.randint(0, len(train_pixels), (min(config.batch_size, len(train_pixels)),), generator=generator)
        logits = logits_of(train_pixels[index])
        loss = 0.5 * F.cross_entropy(logits, train_labels[index]) + 0.5 * soft_dice_loss(logits, train_labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        prediction = logits_of(valid_pixels).argmax(dim=1)
        dice = dice_per_class(prediction, valid_labels).mean(dim=0).tolist()
    scores = {f"dice_{name}": value for name, value in zip(CLASS_NAMES, dice)}
    scores["dice_mean"] = sum(dice) / len(dice)
    return scores


def run_probe(
    config: FinetuneConfig, inits: list[str], probe: ProbeConfig = ProbeConfig(), runs_dir: Path = Path("runs"),
    data_dir: Path = Path("data"), features: tuple[str, ...] = FEATURES, log=print, protocol=None,
) -> list[dict]:
    """Probe each init ("" = a random network) with each feature set on the config's training
    subset; write ``runs/probe-n<N>-s<seed>.json`` and return one row per (init, features).
    ``protocol`` (a :class:`cmrssp.protocols.Protocol` whose split rule ``config`` already has)
    checks that the cache holds its dataset."""
    unknown = [name for name in features if name not in FEATURE_FUNCTIONS]
    if unknown or not features:
        raise InputError(None, f"probe features must be among {', '.join(FEATURES)}, got {list(features)}")
    started = time.perf_counter()
    config, cache = open_run_data(config, data_dir)
    if protocol is not None:
        protocol.check_cache(cache)
    split = resolve_split(config.data, cache)
    size = cache.config.size
    channels = sum(config.unet.channels)
    n_slices = sum(len(cache.meta(key).label_frames) * cache.meta(key).n_slices for key in split.train + split.valid)
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
        for name in features:
            extract = FEATURE_FUNCTIONS[name]
            scores = train_linear_probe(extract(model, train_images), train_labels,
                                        extract(model, valid_images), valid_labels, probe)
            rows.append({"init": init or "random", "features": name, "train_subjects": len(split.train),
                         "subset_seed": config.data.subset_seed, **scores})
            log(f"probe {init or 'random'} ({name} features): validation mean Dice {scores['dice_mean']:.3f}")
    n = config.data.n_subjects or "all"
    out = runs_dir / f"probe-n{n}-s{config.data.subset_seed}.json"
    write_json(out, {"rows": rows, "probe": probe.__dict__, "train": split.train, "valid": split.valid,
                     "seconds": round(time.perf_counter() - started, 2)})
    log(f"written {out}")
    return rows


def summarize_probes(rows: list[dict]) -> list[dict]:
    """One row per (init, features) over the subset seeds: mean and spread of the mean Dice, and
    the gain over the random network with the same features on the same subsets."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for row in rows:
        groups.setdefault((row["init"], row["features"]), {})[row["subset_seed"]] = row["dice_mean"]
    summary = []
    for (init, name), by_seed in groups.items():
        values = torch.tensor(list(by_seed.values()), dtype=torch.float64)
        baseline = groups.get(("random", name), {})
        gains = [by_seed[seed] - baseline[seed] for seed in by_seed if seed in baseline]
        summary.append({
            "init": init, "features": name, "seeds": len(by_seed),
            "dice_mean": round(values.mean().item(), 4),
            "dice_std": round(values.std().item(), 4) if len(values) > 1 else None,
            "gain_vs_random": round(sum(gains) / len(gains), 4) if gains and init != "random" else None,
            "seeds_above_random": sum(gain > 0 for gain in gains) if init != "random" else None,
        })
    return summary
