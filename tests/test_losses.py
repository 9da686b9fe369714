import math

import pytest
import torch
import torch.nn.functional as F

from cmrssp.losses import (
    deep_supervision_weights,
    dice_per_class,
    downsample_labels,
    segmentation_loss,
    soft_dice_loss,
)


def test_deep_supervision_weights_match_protocol():
    weights = deep_supervision_weights(6)
    assert torch.allclose(weights, torch.tensor([0.508, 0.254, 0.127, 0.063, 0.032, 0.016]), atol=1e-3)
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6)


def test_soft_dice_perfect_and_closed_form():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6] = 1
    labels[1, 0, :] = 3
    perfect = F.one_hot(labels, 4).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(perfect, labels) < 1e-4
    # uniform probabilities: class c of image b has dice (2·n/4 + s) / (64/4 + n + s)
    uniform = torch.zeros(2, 4, 8, 8)
    loss = soft_dice_loss(uniform, labels)
    s = 1e-5
    expected = []
    for b in range(2):
        per_class = []
        for c in (1, 2, 3):
            n = float((labels[b] == c).sum())
            per_class.append(1 - (2 * n / 4 + s) / (16 + n + s))
        expected.append(sum(per_class) / 3)
    assert math.isclose(float(loss), sum(expected) / 2, rel_tol=1e-5)


def test_absent_class_loss_pushes_probability_to_zero():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)  # only background
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    soft_dice_loss(logits, labels).backward()
    assert (logits.grad[0, 1:] > 0).all()  # gradient descent lowers the absent classes' logits


def test_segmentation_loss_combines_heads_and_parts():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (2, 16, 16))
    outputs = [torch.randn(2, 4, 16 // 2**i, 16 // 2**i) for i in range(3)]
    total, ce, dice = segmentation_loss(outputs, labels)
    weights = deep_supervision_weights(3)
    expected_ce = sum(w * F.cross_entropy(o, downsample_labels(labels, o.shape[-2:])) for w, o in zip(weights, outputs))
    assert torch.allclose(ce, 0.5 * expected_ce) and torch.allclose(total, ce + dice)
    assert total.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half_total, _, _ = segmentation_loss([o.bfloat16() for o in outputs], labels)
    assert half_total.dtype == torch.float32


def test_downsample_labels_nearest_exact():
    labels = torch.arange(16).reshape(1, 4, 4)
    assert downsample_labels(labels, (2, 2)).tolist() == [[[5, 7], [13, 15]]]


@pytest.mark.parametrize("shape", [(3, 6, 6), (2, 4, 5, 3)])
def test_dice_per_class_conventions(shape):
    target = torch.zeros(shape, dtype=torch.long)
    target[0].view(-1)[:4] = 1
    prediction = target.clone()
    prediction[0].view(-1)[:2] = 0
    scores = dice_per_class(prediction, target)
    assert math.isclose(float(scores[0, 0]), 2 * 2 / (2 + 4), rel_tol=1e-6)
    assert torch.all(scores[1:] == 1.0)  # empty / empty
    prediction[1].view(-1)[0] = 2
    assert float(dice_per_class(prediction, target)[1, 1]) == 0.0  # exactly one empty
