"""Loss functions, as pure functions of tensors.

Segmentation (protocol 4, 7.14, 7.15): per output scale 0.5 · cross-entropy + 0.5 · soft Dice,
summed over the deep-supervision heads with weights ∝ 2^-i. Losses are computed in float32
whatever the autocast state, so bf16/fp16 logits never degrade the loss itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DICE_SMOOTH = 1e-5
DICE_CLASS_WEIGHTS = (0.0, 1.0, 1.0, 1.0)  # background excluded, normalised to 1/3 each


def deep_supervision_weights(n_heads: int) -> torch.Tensor:
    """Weights ∝ 2^-i for heads i = 0..n-1 (highest resolution first), normalised to sum 1.

    With 6 heads: ≈ [0.508, 0.254, 0.127, 0.063, 0.032, 0.016] (protocol 4; all heads, including
    the 8×8 one that nnU-Net would drop, protocol 7.14).
    """
    weights = torch.tensor([2.0**-i for i in range(n_heads)], dtype=torch.float32)
    return weights / weights.sum()


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-exact downsampling of an integer label map (B, H, W) -> (B, h, w), as upstream's
    one-hot interpolation with mode ``nearest-exact`` (pixel centres, no half-pixel shift)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return resized[:, 0].long()


def soft_dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: tuple[float, ...] = DICE_CLASS_WEIGHTS,
    smooth: float = DICE_SMOOTH,
) -> torch.Tensor:
    """Per-image soft Dice loss (protocol 4; not batch Dice, protocol 7.15).

    Args:
        logits: (B, K, H, W) class logits.
        labels: (B, H, W) int64 class indices in [0, K).

    Returns:
        scalar: mean over the batch of Σ_c w_c (1 − dice_{b,c}), with
        dice_{b,c} = (2 Σ p g + smooth) / (Σ p + Σ g + smooth) over pixels, p the softmax
        probability, g the one-hot target, and w the class weights normalised to sum 1.
    """
    n_classes = logits.shape[1]
    if len(class_weights) != n_classes:
        raise ValueError(f"{len(class_weights)} class weights for {n_classes} classes")
    probabilities = logits.float().softmax(dim=1)
    target = F.one_hot(labels, n_classes).permute(0, 3, 1, 2).float()
    intersection = (probabilities * target).sum(dim=(2, 3))
    total = probabilities.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    dice = (2 * intersection + smooth) / (total + smooth)  # (B, K)
    weights = torch.tensor(class_weights, dtype=torch.float32, device=logits.device)
    weights = weights / weights.sum()
    return ((1 - dice) * weights).sum(dim=1).mean()


def segmentation_loss(
    outputs: list[torch.Tensor],
    labels: torch.Tensor,
    ce_weight: float = 0.5,
    dice_weight: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deep-supervised 0.5 · CE + 0.5 · soft Dice over all heads (protocol 4).

    Args:
        outputs: list of (B, K, H/2^i, W/2^i) logits, highest resolution first.
        labels: (B, H, W) int64 labels at full resolution; downsampled nearest-exact per head.

    Returns:
        (total, ce, dice): the weighted total and its CE and Dice parts, each already
        deep-supervision weighted (as upstream logs them).
    """
    weights = deep_supervision_weights(len(outputs)).to(labels.device)
    ce_total = labels.new_zeros((), dtype=torch.float32)
    dice_total = labels.new_zeros((), dtype=torch.float32)
    for weight, logits in zip(weights, outputs):
        target = downsample_labels(labels, tuple(logits.shape[-2:]))
        ce_total = ce_total + weight * F.cross_entropy(logits.float(), target)
        dice_total = dice_total + weight * soft_dice_loss(logits, target)
    ce, dice = ce_weight * ce_total, dice_weight * dice_total
    return ce + dice, ce, dice


def dice_per_class(
    prediction: torch.Tensor, labels: torch.Tensor, classes: tuple[int, ...] = (1, 2, 3)
) -> torch.Tensor:
    """Hard Dice per sample and class for integer label maps (protocol 5.1).

    Args:
        prediction, labels: (B, ...) integer maps (2D slices or 3D volumes).

    Returns:
        float32 (B, len(classes)); both empty -> 1.0, exactly one empty -> 0.0 (the study's
        convention).
    """
    scores = []
    dims = tuple(range(1, prediction.ndim))
    for c in classes:
        p, g = prediction == c, labels == c
        intersection = (p & g).sum(dim=dims).float()
        total = (p.sum(dim=dims) + g.sum(dim=dims)).float()
        scores.append(torch.where(total > 0, 2 * intersection / total.clamp(min=1), torch.ones_like(total)))
    return torch.stack(scores, dim=1)
