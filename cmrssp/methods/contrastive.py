"""SimCLR and positional contrastive learning (PCL) pretraining of the U-Net encoder.

Protocol 2.1 and 2.2: the encoder of the U-Net, a global average pool of the bottleneck and an MLP
(Linear d->512, ReLU, Linear 512->512, ReLU, Linear 512->512; no BN, no final activation). Each
slice gives two views made with the study's *segmentation* augmentations (protocol 7.9), both
views go through the network in one batch of 2B. SimCLR (Chen et al. 2020) contrasts each view
with its partner (NT-Xent, T = 0.1); PCL (Zeng et al. 2021) treats every view whose slice
position differs by less than 0.1 as a positive, across subjects and all time frames
(protocol 7.8). Only ``encoder.*`` transfers to the U-Net (the ``mlp.*`` keys are ignored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cmrssp.augment import AugmentConfig, augment_batch
from cmrssp.data.slices import SliceSet
from cmrssp.losses import nt_xent_loss, pcl_loss
from cmrssp.methods.method import PretrainingMethod
from cmrssp.distributed import gather_with_grad
from cmrssp.models import Encoder, encoder_state, memory_format
from cmrssp.segmentation import device_batch
from cmrssp.run_folder import TRANSFER_WEIGHTS
from cmrssp.train import BaseTask, OptimizerConfig, TrainConfig, save_torch

POSITION_DEFINITIONS = ("slice_fraction", "normalized")


@dataclass(frozen=True)
class ContrastiveConfig:
    """SimCLR / PCL settings (protocol 2.1, 2.2).

    Attributes:
        temperature: τ of the cosine similarities (0.1 for both methods).
        threshold: PCL positives have |Δposition| < threshold (strict).
        position: "slice_fraction" (upstream, protocol 7.8): slice rank from the base / number of
            slices, in [0, (n-1)/n]; "normalized": rank / (n-1), in [0, 1], so apex and base of
            stacks of any length line up.
        projection_dims: output sizes of the three MLP layers.
    """

    temperature: float = 0.1
    threshold: float = 0.1
    position: str = "slice_fraction"
    projection_dims: tuple[int, ...] = (512, 512, 512)


class ProjectionNetwork(nn.Module):
    """U-Net encoder -> global average pool -> MLP (upstream ``EncoderMLP2d``).

    Keys: ``encoder.*`` (as in the U-Net, so they transfer) and ``mlp.*``. With the paper's
    channels the network has 14,946,912 parameters (the MLP 787,968).
    """

    def __init__(self, channels: tuple[int, ...], in_channels: int = 1, projection_dims: tuple[int, ...] = (512, 512, 512)):
        super().__init__()
        self.encoder = Encoder(channels, in_channels)
        layers: list[nn.Module] = []
        width = channels[-1]
        for i, out in enumerate(projection_dims):
            layers.append(nn.Linear(width, out))
            if i < len(projection_dims) - 1:
                layers.append(nn.ReLU(inplace=True))
            width = out
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> embeddings (B, projection_dims[-1])."""
        return self.mlp(self.encoder(x)[-1].mean(dim=(2, 3)))


def slice_positions(slices: SliceSet, n_slices: torch.Tensor, definition: str) -> torch.Tensor:
    """PCL positions of every slice (N,) for a position definition (see ContrastiveConfig)."""
    if definition == "slice_fraction":
        return slices.position.float()
    if definition == "normalized":
        n = n_slices[slices.subject].float()
        return torch.where(n > 1, slices.position.float() * n / (n - 1).clamp(min=1), torch.zeros_like(n))
    raise ValueError(f"unknown PCL position definition {definition!r} (choose from {POSITION_DEFINITIONS})")


def mean_pairwise_cosine(z: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over distinct pairs: near 1 means collapsed embeddings."""
    unit = F.normalize(z.float(), dim=1)
    similarity = unit @ unit.T
    n = len(z)
    return (similarity.sum() - similarity.diagonal().sum()) / max(1, n * (n - 1))


class ContrastiveTask(BaseTask):
    """SimCLR (``method="simclr"``) or PCL (``method="pcl"``) for the shared loop.

    Args:
        positions_train, positions_valid: (N,) PCL positions of the slices (unused by SimCLR).
    """

    def __init__(
        self,
        method: str,
        channels: tuple[int, ...],
        in_channels: int,
        config: ContrastiveConfig,
        augment: AugmentConfig,
        train_slices: SliceSet,
        valid_slices: SliceSet | None,
        positions_train: torch.Tensor,
        positions_valid: torch.Tensor | None,
        size: int,
        device: torch.device,
        val_batch_size: int = 224,
        channels_last: bool = True,
    ):
        if method not in ("simclr", "pcl"):
            raise ValueError(f"not a contrastive method: {method!r}")
        self.method, self.config, self.augment = method, config, augment
        self.model = ProjectionNetwork(channels, in_channels, config.projection_dims).to(device)
        self.memory_format = memory_format(channels_last)
        self.model = self.model.to(memory_format=self.memory_format)
        self.train_slices, self.valid_slices = train_slices, valid_slices
        self.positions_train = positions_train.to(device)
        self.positions_valid = positions_valid.to(device) if positions_valid is not None else None
        self.size, self.device, self.val_batch_size = size, device, val_batch_size

    def n_train(self) -> int:
        return len(self.train_slices)

    def _loss(self, slices: SliceSet, positions: torch.Tensor, indices: torch.Tensor, generator: torch.Generator,
              gather: bool = False):
        batch = device_batch(slices, indices, self.device)
        views = [
            augment_batch(batch["images"], None, batch["centre"], batch["background"], batch["max_value"],
                          self.size, self.augment, generator)[0]
            for _ in range(2)
        ]
        z = self.net(torch.cat(views).contiguous(memory_format=self.memory_format))
        z_a, z_b = z.chunk(2)
        batch_positions = positions[indices.to(positions.device)]
        if gather:  # with several processes: the negatives (and positives) of the global batch
            z_a, z_b = gather_with_grad(z_a, self.processes), gather_with_grad(z_b, self.processes)
            batch_positions = gather_with_grad(batch_positions, self.processes)
        if self.method == "simclr":
            loss = nt_xent_loss(z_a, z_b, self.config.temperature)
        else:
            loss = pcl_loss(z_a, z_b, batch_positions, self.config.temperature, self.config.threshold)
        return loss, z

    def train_step(self, indices: torch.Tensor, generator: torch.Generator, step: int):
        loss, z = self._loss(self.train_slices, self.positions_train, indices, generator, gather=True)
        return loss, {"embedding_cosine": mean_pairwise_cosine(z.detach())}

    def validate(self) -> dict[str, float]:
        """Loss on augmented validation batches (as upstream, protocol 7.9), with a fixed seed so
        that epochs are compared on the same views."""
        if self.valid_slices is None or len(self.valid_slices) < 2:
            return {}
        generator = torch.Generator(device=self.device).manual_seed(0)
        order = torch.randperm(len(self.valid_slices), generator=torch.Generator().manual_seed(0))
        batch = min(self.val_batch_size, len(order))
        losses, cosines = [], []
        for start in range(0, len(order) - batch + 1, batch):  # drop_last, as upstream
            loss, z = self._loss(self.valid_slices, self.positions_valid, order[start : start + batch], generator)
            losses.append(loss)
            cosines.append(mean_pairwise_cosine(z))
        return {"val_loss": float(torch.stack(losses).mean()), "val_embedding_cosine": float(torch.stack(cosines).mean())}

    def export(self, run_dir: Path, which: str) -> None:
        if which == "last":
            save_torch(Path(run_dir) / TRANSFER_WEIGHTS, {k: v.detach().cpu() for k, v in encoder_state(self.model).items()})


# -- the declarations of the registry (cmrssp.methods) ----------------------------------------

def _paper_simclr() -> tuple[OptimizerConfig, TrainConfig]:
    """Protocol 2.1: SGD lr 0.1, momentum 0.9, wd 1e-4, cosine; 100 epochs of batch 224, fp16."""
    return (OptimizerConfig(lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="cosine"),
            TrainConfig(epochs=100, batch_size=224, val_batch_size=224, amp="fp16"))


def _paper_pcl() -> tuple[OptimizerConfig, TrainConfig]:
    """Protocol 2.2: as SimCLR but wd 1e-5, batch 64, and no mixed precision (protocol 7.20)."""
    return (OptimizerConfig(lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-5, schedule="cosine"),
            TrainConfig(epochs=100, batch_size=64, val_batch_size=64, amp="off"))


def _small_pcl(config, preset: str):
    """``cpu-real`` keeps the study's batch of 64 for PCL. Measured on ACDC's ED/ES frames
    (README "ACDC, real scans"): at the shared batch of 32 and 300 iterations PCL's embedding
    collapsed (loss log 63 = 4.143 throughout, cosine 0.998); at 64 it left the collapse after
    about 110 updates (loss 4.849 -> 4.683 against log 127 = 4.844, cosine 0.92); 600 updates of
    32, the same samples, left it only after about 400 (4.050, cosine 0.945)."""
    if preset != "cpu-real":
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=64))


def make_contrastive_task(config, train_slices: SliceSet, valid_slices: SliceSet | None, size: int,
                          device: torch.device, stack_sizes: dict[str, int] | None = None) -> ContrastiveTask:
    """The SimCLR / PCL Task of a PretrainConfig; ``stack_sizes`` (key -> number of slices) is
    only needed for PCL's "normalized" positions."""

    def positions(slices):
        if slices is None:
            return None
        n = torch.tensor([(stack_sizes or {}).get(key, 1) for key in slices.keys], device=slices.subject.device)
        return slice_positions(slices, n, config.contrastive.position)

    return ContrastiveTask(config.method, config.unet.channels, config.unet.in_channels, config.contrastive,
                           config.augment, train_slices, valid_slices, positions(train_slices), positions(valid_slices),
                           size=size, device=device, val_batch_size=config.train.val_batch_size,
                           channels_last=config.train.channels_last)


# Seconds per sample: README "ACDC, real scans" (2-core VM, 2026-12-01, 64² grid).
SIMCLR = PretrainingMethod("simclr", "contrastive", ContrastiveConfig, _paper_simclr, make_contrastive_task, 1 / 59)
PCL = PretrainingMethod("pcl", "contrastive", ContrastiveConfig, _paper_pcl, make_contrastive_task, 1 / 51,
                        small_preset=_small_pcl)
