"""Loss functions, as pure functions of tensors.

Segmentation (protocol 4, 7.14, 7.15): per output scale 0.5 · cross-entropy + 0.5 · soft Dice,
summed over the deep-supervision heads with weights ∝ 2^-i. Losses are computed in float32
whatever the autocast state, so bf16/fp16 logits never degrade the loss itself.

Self-supervised pretraining (protocol 2.1-2.4): NT-Xent (SimCLR), positional contrastive (PCL),
DINO self-distillation with its centre update, and masked-pixel L2 (MIM). These too run in
float32 with autocast switched off, because their similarity matrices and softmaxes over 8192
prototypes are exactly where half precision loses the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

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


# --- self-supervised pretraining losses (protocol 2.1-2.4) ---------------------------------------


def _float32_math(tensor: torch.Tensor) -> torch.autocast:
    """Autocast switched off on ``tensor``'s device. Casting inputs with ``.float()`` is not enough:
    inside an autocast region matmul and friends would cast them straight back to half precision."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _check_view_pair(z_a: torch.Tensor, z_b: torch.Tensor) -> int:
    """Validate two (N, D) view batches and return N. N ≥ 2 so that every anchor, besides its
    partner, has at least one other view in its denominator (a negative)."""
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"z_a and z_b must both be (N, D) of equal shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    n_images = z_a.shape[0]
    if n_images < 2:
        raise ValueError(
            f"contrastive losses need N >= 2 images so that every anchor has a negative, got N={n_images}"
        )
    return n_images


def _contrastive_log_probs(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """(2N, 2N) matrix log p_ij = s_ij − log Σ_{k≠i} exp(s_ik), with s = cos(z_i, z_j)/τ over the
    views z = cat(z_a, z_b): view i < N is image i's first view, view N + i its second."""
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    similarity = z @ z.T / temperature
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_normaliser = similarity.masked_fill(self_pair, float("-inf")).logsumexp(dim=1, keepdim=True)
    return similarity - log_normaliser


def _partner_mask(n_images: int, device: torch.device) -> torch.Tensor:
    """(2N, 2N) bool, True at (i, partner of i): i ↔ i + N."""
    partner = torch.arange(2 * n_images, device=device).roll(n_images)
    return F.one_hot(partner, 2 * n_images).bool()


def _mean_positive_nll(log_probs: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over anchors of (1/|P(i)|) Σ_{p∈P(i)} −log p_ip (mean over positives outside the log).
    ``where`` rather than a product so that one shared code path serves NT-Xent (one positive)
    and PCL bit for bit."""
    positive_log_probs = torch.where(positives, log_probs, torch.zeros_like(log_probs))
    per_anchor = -positive_log_probs.sum(dim=1) / positives.sum(dim=1)
    return per_anchor.mean()


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR NT-Xent loss (Chen et al. 2020, "A simple framework for contrastive learning of visual
    representations"; protocol 2.1, τ = 0.1 in the study).

    Args:
        z_a, z_b: (N, D) projections; z_a[i] and z_b[i] are the two views of image i. N ≥ 2.
        temperature: τ > 0.

    Returns:
        float32 scalar: over all 2N views, s_ij = cos(z_i, z_j)/τ and the per-anchor loss
        −[s_ip − log Σ_{k≠i} exp(s_ik)] with p the partner view, averaged over the 2N anchors.
        All views equal gives log(2N − 1). Invariant to swapping z_a/z_b and to permuting the batch.

    Raises:
        ValueError: τ ≤ 0, shapes not (N, D) and equal, or N < 2 (an anchor without negatives).
    """
    _check_positive("temperature", temperature)
    n_images = _check_view_pair(z_a, z_b)
    with _float32_math(z_a):
        log_probs = _contrastive_log_probs(z_a, z_b, temperature)
        return _mean_positive_nll(log_probs, _partner_mask(n_images, log_probs.device))


def pcl_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    positions: torch.Tensor,
    temperature: float,
    threshold: float,
) -> torch.Tensor:
    """Positional contrastive loss (Zeng et al. 2021, "Positional contrastive learning for volumetric
    medical image segmentation") as the study computes it (protocol 2.2, 7.8; τ = 0.1, threshold 0.1).

    Views z = cat(z_a, z_b) (2N, D), s = cosine/τ. Positives of anchor i: every view j ≠ i with
    |pos_i − pos_j| < threshold (strict), across images, plus always its own partner view (so a
    threshold of 0 reduces this to NT-Xent exactly). Per anchor
    (1/|P(i)|) Σ_{p∈P(i)} −[s_ip − log Σ_{k≠i} exp(s_ik)]: the mean over positives sits outside
    the log and the denominator runs over all other views, positives included. No SupCon
    τ/base-τ factor. Averaged over the 2N anchors.

    Args:
        z_a, z_b: (N, D) projections of the two views of each image. N ≥ 2.
        positions: (N,) position label of each image (slice_idx / n_slices), shared by both views.
            Distances are taken in float64 from the values as given, so a pair exactly at the
            threshold is decided by how the caller rounded the positions.
        temperature: τ > 0.
        threshold: ≥ 0.

    Returns:
        float32 scalar. A batch in which every pair is positive is allowed (the denominator still
        has 2N − 1 terms); with all positions ≥ threshold apart it equals ``nt_xent_loss``.

    Raises:
        ValueError: τ ≤ 0, threshold < 0, mismatched shapes, or N < 2 (the same rule as NT-Xent:
        with one image an anchor's denominator holds only its partner).
    """
    _check_positive("temperature", temperature)
    if not float(threshold) >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    n_images = _check_view_pair(z_a, z_b)
    if positions.shape != (n_images,):
        raise ValueError(f"positions must be ({n_images},) to match z_a, got {tuple(positions.shape)}")
    with _float32_math(z_a):
        log_probs = _contrastive_log_probs(z_a, z_b, temperature)
        view_positions = torch.cat([positions, positions]).to(log_probs.device, torch.float64)
        near = (view_positions[:, None] - view_positions[None, :]).abs() < threshold
        self_pair = torch.eye(2 * n_images, dtype=torch.bool, device=log_probs.device)
        positives = (near | _partner_mask(n_images, log_probs.device)) & ~self_pair
        return _mean_positive_nll(log_probs, positives)


def _check_logit_views(name: str, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(views, torch.Tensor) or len(views) == 0:
        raise ValueError(f"{name} must be a non-empty list of (B, K) tensors, one per view")
    views = list(views)
    first = views[0].shape
    if len(first) != 2 or first[0] == 0 or any(v.shape != first for v in views):
        raise ValueError(f"{name} must all be (B, K) with B >= 1, got {[tuple(v.shape) for v in views]}")
    return views


def _check_center(center: torch.Tensor, n_prototypes: int) -> None:
    if tuple(center.shape) not in ((n_prototypes,), (1, n_prototypes)):
        raise ValueError(f"center must be (K,) or (1, K) with K={n_prototypes}, got {tuple(center.shape)}")


def dino_loss(
    student_logits: Sequence[torch.Tensor],
    teacher_logits: Sequence[torch.Tensor],
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """DINO self-distillation loss (Caron et al. 2021, "Emerging properties in self-supervised vision
    transformers"; a port of the official ``DINOLoss.forward``; protocol 2.3: τ_s 0.1, τ_t 0.02→0.04).

    Args:
        student_logits: V tensors (B, K), all crops in the order [global_0, global_1, local_1, …].
        teacher_logits: A tensors (B, K), the teacher's global crops; teacher view a is the same
            crop as student view a, so A ≤ V.
        center: (K,) or (1, K) running centre of the teacher logits.
        student_temp, teacher_temp: τ_s, τ_t > 0.

    Returns:
        float32 scalar: the average over the pairs (a, v), v ≠ a (14 for A = 2, V = 8), of
        mean_b −Σ_k q_a·log p_v, with q = softmax((t − c)/τ_t) detached (no gradient reaches the
        teacher or the centre) and log p = log_softmax(s/τ_s). A uniform teacher and a uniform
        student give log K.

    Raises:
        ValueError: a temperature ≤ 0, views of differing shape, a centre not matching K, A > V,
        or no pair at all (A = V = 1).
    """
    _check_positive("student_temp", student_temp)
    _check_positive("teacher_temp", teacher_temp)
    students = _check_logit_views("student_logits", student_logits)
    teachers = _check_logit_views("teacher_logits", teacher_logits)
    if teachers[0].shape != students[0].shape:
        raise ValueError(
            f"teacher views {tuple(teachers[0].shape)} and student views {tuple(students[0].shape)} differ"
        )
    if len(teachers) > len(students):
        raise ValueError(f"{len(teachers)} teacher views but only {len(students)} student views")
    n_pairs = len(teachers) * len(students) - len(teachers)
    if n_pairs == 0:
        raise ValueError("one teacher and one student view leave no (teacher, other student view) pair")
    _check_center(center, students[0].shape[1])
    with _float32_math(students[0]):
        center32 = center.detach().float().reshape(1, -1)
        teacher_probs = [((t.detach().float() - center32) / teacher_temp).softmax(-1) for t in teachers]
        student_log_probs = [(s.float() / student_temp).log_softmax(dim=-1) for s in students]
        total = students[0].new_zeros((), dtype=torch.float32)
        for a, q in enumerate(teacher_probs):
            for v, log_p in enumerate(student_log_probs):
                if v != a:  # a crop is never distilled into itself
                    total = total + (-q * log_p).sum(dim=-1).mean()
        return total / n_pairs


@torch.no_grad()
def update_dino_center(
    center: torch.Tensor,
    teacher_logits: Sequence[torch.Tensor],
    momentum: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """EMA update of the DINO centre (Caron et al. 2021, official ``DINOLoss.update_center``;
    protocol 2.3: momentum 0.9, single GPU, no all-reduce).

    Args:
        center: (K,) or (1, K).
        teacher_logits: list of (B, K) teacher views (both global crops); their batch mean is taken
            over all views concatenated, (A·B, K) -> (1, K).
        momentum: m in [0, 1].
        reduce: optional callable mapping the (1, K) local batch mean to its average over ranks
            (e.g. all_reduce sum / world size), applied before the EMA. None: single process.

    Returns:
        float32 new centre c·m + (1 − m)·batch_mean, shaped like ``center``; no autograd history.
    """
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    teachers = _check_logit_views("teacher_logits", teacher_logits)
    _check_center(center, teachers[0].shape[1])
    with _float32_math(center):
        batch_mean = torch.cat([t.float() for t in teachers]).mean(dim=0, keepdim=True)
        if reduce is not None:
            batch_mean = reduce(batch_mean)
        return center.float() * momentum + batch_mean.reshape(center.shape) * (1 - momentum)


def mim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked-image-modelling L2 on masked pixels only (SimMIM, Xie et al. 2022; MAE, He et al. 2022;
    protocol 2.4, 7.10).

    Args:
        pred, target: (B, 1, H, W) or (B, H, W), equal shapes; target is the unmasked image.
        mask: the target's shape or broadcastable to it; 1 (or True) where the pixel was masked.

    Returns:
        float32 scalar: Σ (pred − target)²·mask over the whole batch divided by the number of
        masked target elements in the batch (``mask.sum()`` when the mask has the target's shape):
        one mean over all masked pixels, not a per-image mean. Unmasked pixels do not count.

    Raises:
        ValueError: pred/target shapes differ or are not 3-D/4-D, the mask does not broadcast to
        the target, or nothing is masked.
    """
    if pred.shape != target.shape or target.ndim not in (3, 4):
        raise ValueError(
            "pred and target must be equal (B, 1, H, W) or (B, H, W), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    try:
        broadcast = torch.broadcast_shapes(mask.shape, target.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != target.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to target {tuple(target.shape)}")
    with _float32_math(pred):
        weights = mask.float().expand(target.shape)
        n_masked = weights.sum()
        if n_masked.item() == 0:
            raise ValueError("mask selects no pixel: the masked-pixel mean is undefined")
        return ((pred.float() - target.float()) ** 2 * weights).sum() / n_masked
