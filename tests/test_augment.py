"""Tests of cmrssp.augment: batched on-device augmentation (protocol 3.5, 3.7, 7.1-7.3, 7.6)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cmrssp.augment import (
    AUGMENT_PRESETS,
    NO_AUGMENTATION,
    AugmentConfig,
    affine_grid,
    affine_theta,
    augment_batch,
    augment_intensity,
    gaussian_kernels,
    random_affine,
    resample_affine,
    resample_plain,
)
from cmrssp.config import from_dict, to_dict
from cmrssp.errors import InputError

OFF = NO_AUGMENTATION


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_batch(batch=4, canvas=24, seed=0):
    g = _generator(seed)
    images = torch.randn((batch, canvas, canvas), generator=g)
    labels = torch.randint(0, 4, (batch, canvas, canvas), generator=g, dtype=torch.uint8)
    background = -1.0 - torch.rand(batch, generator=g)
    return images, labels, background


def _blob(canvas: int, centre: tuple[float, float], sigma: float) -> torch.Tensor:
    k0 = torch.arange(canvas, dtype=torch.float64)[:, None]
    k1 = torch.arange(canvas, dtype=torch.float64)[None, :]
    return torch.exp(-((k0 - centre[0]) ** 2 + (k1 - centre[1]) ** 2) / (2 * sigma**2)).float()


def _moments(image: torch.Tensor) -> tuple[float, float, float]:
    """Centroid (axis 0, axis 1) and radial standard deviation of a nonnegative 2D image."""
    image = image.double().clamp(min=0)
    k0 = torch.arange(image.shape[0], dtype=torch.float64)[:, None]
    k1 = torch.arange(image.shape[1], dtype=torch.float64)[None, :]
    total = image.sum()
    m0, m1 = float((image * k0).sum() / total), float((image * k1).sum() / total)
    variance = float((image * ((k0 - m0) ** 2 + (k1 - m1) ** 2)).sum() / total) / 2
    return m0, m1, math.sqrt(variance)


def _resample(images, theta, size, interpolation="bicubic"):
    """(S, S) image of the first sample, on a zero background."""
    return resample_affine(images, None, torch.zeros(images.shape[0]), theta, size, interpolation)[0][0, 0]


def _middle(batch: int, canvas: int) -> torch.Tensor:
    return torch.full((batch, 2), (canvas - 1) / 2)


# --- plain grid ------------------------------------------------------------------------------


def test_plain_path_equals_slicing():
    images, labels, background = _random_batch(canvas=24)
    out, out_labels = resample_plain(images, labels, background, 16)
    assert out.shape == (4, 1, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], images[:, 4:20, 4:20])
    assert out_labels.dtype == torch.int64 and torch.equal(out_labels, labels[:, 4:20, 4:20].long())
    # A canvas smaller than the output is padded with the background and label 0.
    out, out_labels = resample_plain(images[:, :12, :12], labels[:, :12, :12], background, 16)
    assert torch.equal(out[:, 0, 2:14, 2:14], images[:, :12, :12])
    assert torch.equal(out[:, 0, 0, 0], background) and int(out_labels[:, :2].abs().sum()) == 0
    with pytest.raises(ValueError, match="parity"):
        resample_plain(images, labels, background, 15)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_all_off_augment_equals_plain(interpolation):
    images, labels, background = _random_batch(canvas=24)
    plain, plain_labels = resample_plain(images, labels, background, 16)
    config = dataclasses.replace(OFF, interpolation=interpolation)
    out, out_labels = augment_batch(images, labels, None, background, None, 16, config, _generator())
    assert torch.allclose(out, plain, atol=1e-4) and torch.equal(out_labels, plain_labels)
    # Label centring on unknown (NaN) centres falls back to the image centre.
    nan_centre = torch.full((4, 2), math.nan)
    config = dataclasses.replace(config, centring="label")
    out, _ = augment_batch(images, labels, nan_centre, background, None, 16, config, _generator())
    assert torch.allclose(out, plain, atol=1e-4)


def test_float16_input_works():
    images, labels, background = _random_batch(canvas=24)
    half = images.half()
    config = AugmentConfig(noise_prob=1.0, smooth_prob=1.0)
    centre = torch.full((4, 2), 12.0)
    out16, labels16 = augment_batch(half, labels, centre, background, None, 16, config, _generator(3))
    out32, labels32 = augment_batch(half.float(), labels, centre, background, None, 16, config, _generator(3))
    assert out16.dtype == torch.float32 and torch.allclose(out16, out32, atol=1e-5)
    assert torch.equal(labels16, labels32)
    plain, _ = resample_plain(half, None, background, 16)
    assert plain.dtype == torch.float32 and torch.equal(plain[:, 0], half[:, 4:20, 4:20].float())


def test_determinism():
    images, labels, background = _random_batch(canvas=24)
    centre = torch.full((4, 2), 11.0)
    config = AugmentConfig(noise_prob=0.5, smooth_prob=0.5, solarize_prob=0.5)
    maxima = torch.full((4,), 3.0)
    first = augment_batch(images, labels, centre, background, maxima, 16, config, _generator(7))
    again = augment_batch(images, labels, centre, background, maxima, 16, config, _generator(7))
    other = augment_batch(images, labels, centre, background, maxima, 16, config, _generator(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


# --- geometry --------------------------------------------------------------------------------


# Centroids are measured on bilinear resamples: the grid is the same as bicubic's, but bilinear
# interpolation keeps a sampled blob's centroid exact at sub-pixel positions, while PyTorch's
# bicubic (a = -0.75) biases it by up to ~30 % of the fractional offset.


def test_translation_moves_content_exactly_t_pixels_at_any_zoom():
    canvas, size = 48, 32
    image = _blob(canvas, (22.0, 25.0), 2.0)[None]
    shift = torch.tensor([[3.0, -2.0]])
    for zoom in (0.8, 1.0, 1.3):
        scale = torch.tensor([zoom])
        still = _resample(image, affine_theta(_middle(1, canvas), canvas, size, scale=scale), size, "bilinear")
        theta = affine_theta(_middle(1, canvas), canvas, size, scale=scale, translation=shift)
        (a0, a1, _), (b0, b1, _) = _moments(still), _moments(_resample(image, theta, size, "bilinear"))
        assert b0 - a0 == pytest.approx(3.0, abs=1e-3) and b1 - a1 == pytest.approx(-2.0, abs=1e-3)


def test_random_translation_range_scales_with_output_size():
    canvas, size = 40, 16  # translation 40 px at 256 -> 2.5 px at 16
    config = dataclasses.replace(OFF, translation_px=40.0)
    theta = random_affine(_middle(300, canvas), canvas, size, config, _generator())
    pixel = ((theta[:, :, 2] + 1) * canvas - 1) / 2  # the sampled point of the output centre
    shift = (canvas - 1) / 2 - pixel
    assert float(shift.abs().max()) <= 2.5 + 1e-4 and float(shift.abs().max()) > 2.3
    assert AUGMENT_PRESETS["dino_local"].translation_reference == 128
    local = dataclasses.replace(config, translation_px=160.0, translation_reference=128)  # ±160 px at 128: ±20 at 16
    theta = random_affine(_middle(300, canvas), canvas, size, local, _generator())
    pixel = ((theta[:, :, 2] + 1) * canvas - 1) / 2
    assert 18.0 < float(((canvas - 1) / 2 - pixel).abs().max()) <= 20.0 + 1e-4


def test_flips_and_quarter_rotation():
    images, _, background = _random_batch(canvas=24)
    plain, _ = resample_plain(images, None, background, 16)
    middle = _middle(4, 24)
    flip_0 = torch.tensor([[True, False]]).expand(4, 2)
    out, _ = resample_affine(images, None, background, affine_theta(middle, 24, 16, flip=flip_0), 16)
    assert torch.allclose(out, plain.flip(-2), atol=1e-4)
    out, _ = resample_affine(images, None, background, affine_theta(middle, 24, 16, flip=flip_0.flip(-1)), 16)
    assert torch.allclose(out, plain.flip(-1), atol=1e-4)
    quarter = torch.full((4,), math.pi / 2)
    out, _ = resample_affine(images, None, background, affine_theta(middle, 24, 16, rotation=quarter), 16)
    assert torch.allclose(out, torch.rot90(plain, 1, dims=(-2, -1)), atol=1e-4)


def test_zoom_out_shows_a_larger_field_of_view():
    canvas, size = 48, 32
    image = _blob(canvas, (23.5, 23.5), 3.0)[None]
    for zoom in (0.75, 1.5):
        out = _resample(image, affine_theta(_middle(1, canvas), canvas, size, scale=torch.tensor([zoom])), size)
        assert _moments(out)[2] == pytest.approx(3.0 / zoom, rel=0.02)


@pytest.mark.parametrize("quirk", [False, True])
def test_label_centring_puts_the_heart_at_the_output_centre(quirk):
    canvas, size = 40, 24
    heart = (14.0, 26.0)
    images = _blob(canvas, heart, 3.0)[None]
    config = dataclasses.replace(OFF, centring="label", centre_align_corners_quirk=quirk, interpolation="bilinear")
    out, _ = augment_batch(images, None, torch.tensor([heart]), torch.zeros(1), None, size, config, _generator())
    m0, m1, _ = _moments(out[0, 0])
    middle = (size - 1) / 2
    # The quirk samples c·C/(C-1) - 1/2 at the output centre: the heart lands δ = (c - (C-1)/2)/(C-1) off.
    expected = [middle - ((c - (canvas - 1) / 2) / (canvas - 1) if quirk else 0.0) for c in heart]
    assert m0 == pytest.approx(expected[0], abs=0.01) and m1 == pytest.approx(expected[1], abs=0.01)
    if quirk:
        assert abs(expected[0] - middle) > 0.1 and abs(expected[1] - middle) > 0.1


def test_out_of_canvas_is_background_and_label_zero():
    canvas, size = 24, 24
    images = torch.full((2, canvas, canvas), 3.0)
    labels = torch.full((2, canvas, canvas), 2, dtype=torch.uint8)
    background = torch.tensor([-2.0, -0.5])
    theta = affine_theta(_middle(2, canvas), canvas, size, scale=torch.tensor([3.0, 3.0]))  # canvas covers 8 px
    out, out_labels = resample_affine(images, labels, background, theta, size)
    assert torch.equal(out[:, 0, :6, :], background.view(2, 1, 1).expand(2, 6, size))
    assert int(out_labels[:, :7].abs().sum()) == 0 and int(out_labels[:, :, -7:].abs().sum()) == 0
    assert torch.allclose(out[:, 0, 10:14, 10:14], torch.tensor(3.0)) and bool((out_labels[:, 10:14, 10:14] == 2).all())


def test_labels_keep_only_their_values():
    images, labels, background = _random_batch(batch=8, canvas=32)
    labels[labels == 2] = 0
    centre = torch.full((8, 2), 15.0)
    _, out_labels = augment_batch(images, labels, centre, background, None, 24, AugmentConfig(), _generator())
    assert set(out_labels.unique().tolist()) <= {0, 1, 3}


# --- intensity -------------------------------------------------------------------------------


def _positive_images(batch=200, size=16, seed=1):
    return 0.5 + torch.rand((batch, 1, size, size), generator=_generator(seed))


@pytest.mark.parametrize("mode, low, high", [("upstream", 1.6, 2.5), ("factor", 0.6, 1.5)])
def test_scale_intensity_semantics(mode, low, high):
    images = _positive_images()
    config = dataclasses.replace(OFF, scale_intensity_prob=1.0, intensity_scale_mode=mode)
    ratio = augment_intensity(images, None, config, _generator()) / images
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    assert float(per_image.min()) >= low - 1e-5 and float(per_image.max()) <= high + 1e-5
    assert float(per_image.min()) < low + 0.05 and float(per_image.max()) > high - 0.05


def test_shift_intensity():
    images = _positive_images()
    out = augment_intensity(images, None, dataclasses.replace(OFF, shift_prob=1.0), _generator())
    offset = (out - images).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-5)
    assert float(offset.abs().max()) <= 0.4 + 1e-5 and float(offset.min()) < -0.35 and float(offset.max()) > 0.35


def test_gamma_keeps_min_and_max_per_image():
    images = torch.randn((50, 1, 16, 16), generator=_generator())
    out = augment_intensity(images, None, dataclasses.replace(OFF, gamma_prob=1.0), _generator())
    assert torch.allclose(out.amin(dim=(1, 2, 3)), images.amin(dim=(1, 2, 3)), atol=1e-5)
    assert torch.allclose(out.amax(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3)), atol=1e-5)
    assert float((out - images).abs().max()) > 0.1
    # Monotone per image: the order of pixels is kept.
    assert torch.equal(out.flatten(1).argsort(dim=1), images.flatten(1).argsort(dim=1))


def test_noise_std_within_bounds():
    images = torch.zeros((300, 1, 32, 32))
    config = dataclasses.replace(OFF, noise_prob=1.0)
    std = augment_intensity(images, None, config, _generator()).flatten(1).std(dim=1)
    assert float(std.max()) <= 0.2 * 1.15 and float(std.min()) < 0.02
    assert float(std.mean()) == pytest.approx(0.1, abs=0.01)  # σ ~ U(0, 0.2)
    fixed = augment_intensity(images, None, dataclasses.replace(config, noise_std_random=False), _generator())
    assert torch.allclose(fixed.flatten(1).std(dim=1), torch.tensor(0.2), rtol=0.15)


def test_smoothing_reduces_noise_variance_and_keeps_the_mean():
    config = dataclasses.replace(OFF, smooth_prob=1.0)
    noise = torch.randn((20, 1, 48, 48), generator=_generator())
    smooth = augment_intensity(noise, None, config, _generator())
    inner = (slice(None), 0, slice(8, -8), slice(8, -8))
    # Each axis keeps at most Σk² ≈ 0.52 of the variance (σ = 0.5); both axes: < 0.3.
    assert float((smooth[inner].var() / noise[inner].var())) < 0.3
    constant = torch.full((20, 1, 48, 48), 2.5)
    assert torch.allclose(augment_intensity(constant, None, config, _generator())[inner], torch.tensor(2.5), atol=1e-3)
    kernels = gaussian_kernels(torch.tensor([0.5, 1.5]), 6)
    assert torch.allclose(kernels.sum(dim=1), torch.ones(2), atol=1e-4)
    assert (kernels > 0).sum(dim=1).tolist() == [5, 13]  # tails int(4σ + 0.5): 2 and 6


def test_per_sample_probabilities():
    images = _positive_images(batch=200)
    out = augment_intensity(images, None, dataclasses.replace(OFF, shift_prob=0.5), _generator())
    changed = int((out != images).flatten(1).any(dim=1).sum())
    assert 70 <= changed <= 130  # Binomial(200, 0.5): mean 100, sd 7
    # Samples that are not smoothed pass the batched convolution exactly unchanged.
    out = augment_intensity(images, None, dataclasses.replace(OFF, smooth_prob=0.5), _generator())
    same = (out == images).flatten(1).all(dim=1)
    assert 70 <= int(same.sum()) <= 130
    assert float((out - images).flatten(1).abs().amax(dim=1)[~same].min()) > 1e-3
    canvas = 24
    theta = random_affine(_middle(200, canvas), canvas, 16, dataclasses.replace(OFF, flip_prob=0.5), _generator())
    flipped = theta[:, [1, 0], [1, 0]] < 0  # flips along axis 0 and axis 1
    assert 70 <= int(flipped[:, 0].sum()) <= 130 and 70 <= int(flipped[:, 1].sum()) <= 130


def test_solarize():
    images = torch.randn((6, 1, 16, 16), generator=_generator())
    maxima = torch.linspace(2.0, 4.0, 6)
    out = augment_intensity(images, maxima, dataclasses.replace(OFF, solarize_prob=1.0), _generator())
    expected = torch.where(images > 0, maxima.view(6, 1, 1, 1) - images, images)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="max_value"):
        augment_intensity(images, None, dataclasses.replace(OFF, solarize_prob=1.0), _generator())


# --- configuration ---------------------------------------------------------------------------


def test_config_defaults_json_and_validation():
    config = AugmentConfig()
    assert config.intensity_scale_mode == "upstream" and config.centring == "label"
    assert config.centre_align_corners_quirk and config.noise_std_random and config.interpolation == "bicubic"
    values = {key: list(value) if isinstance(value, tuple) else value for key, value in to_dict(config).items()}
    assert from_dict(AugmentConfig, values) == config  # JSON lists come back as tuples
    with pytest.raises(InputError, match="noise_prob"):
        AugmentConfig(noise_prob=1.5)
    with pytest.raises(InputError, match="centring"):
        AugmentConfig(centring="heart")
    with pytest.raises(InputError, match="scale_range"):
        AugmentConfig(scale_range=(1.4, 0.7))


def test_dino_local_crops_are_another_call():
    images, _, background = _random_batch(batch=3, canvas=32)
    centre = torch.full((3, 2), 15.5)
    maxima = torch.full((3,), 3.0)
    local_config = AUGMENT_PRESETS["dino_local"]
    local, labels = augment_batch(images, None, centre, background, maxima, 8, local_config, _generator())
    assert local.shape == (3, 1, 8, 8) and labels is None
    solarize = AUGMENT_PRESETS["dino_global_solarize"]
    out, _ = augment_batch(images, None, centre, background, maxima, 16, solarize, _generator())
    assert out.shape == (3, 1, 16, 16) and bool(torch.isfinite(out).all())


def test_bad_shapes():
    images, labels, background = _random_batch(canvas=24)
    with pytest.raises(ValueError, match="images"):
        augment_batch(images[:, :, :20], None, None, background, None, 16, OFF, _generator())
    with pytest.raises(ValueError, match="labels"):
        augment_batch(images, labels[:, :20, :20], None, background, None, 16, OFF, _generator())


def test_affine_grid_matches_torch():
    theta = torch.randn((5, 2, 3), generator=_generator())
    expected = torch.nn.functional.affine_grid(theta, [5, 1, 12, 12], align_corners=False)
    assert torch.allclose(affine_grid(theta, 12), expected, atol=1e-6)
