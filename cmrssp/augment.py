"""The study's augmentation, applied to a whole batch at once on the training device.

One affine grid (``F.affine_grid``'s values, see :func:`affine_grid`) + ``F.grid_sample`` per batch
(``align_corners=False``; bicubic images, nearest labels) with per-sample parameters, then the
intensity transforms as tensor operations.
No per-sample Python work, no host synchronisation (no ``.item()``, no data-dependent shapes):
the per-sample Bernoulli draws select results with ``torch.where``.

Inputs are a :class:`cmrssp.data.slices.SliceSet`'s columns: ``images`` (B, C, C) standardized
canvas (float16 or float32), ``labels`` (B, C, C) uint8 or None, ``centre`` (B, 2) heart centre
in canvas pixel indices (k0, k1) (NaN when unknown), ``background`` (B,) value of out-of-field
pixels (-mean/std), ``max_value`` (B,) standardized subject maximum. Outputs are S x S:
images (B, 1, S, S) float32, labels (B, S, S) int64.

Geometry (protocol 3.5). The canvas is already at the target spacing, so one output pixel is one
canvas pixel before the random zoom, and the plain (evaluation) grid is the centred S-crop of the
canvas (:func:`resample_plain`). Per-axis values are given in array-axis order (axis 0, axis 1)
everywhere in this module. With q = output pixel offset from the output centre (S-1)/2, the
output samples the canvas at pixel

    p = c + R(angle) · diag(s·f0, s·f1) · (q - t)

- c: the point that lands at the output centre: the heart centre (``centring="label"``, with the
  half-pixel quirk below) or the canvas centre (C-1)/2;
- R: rotation; +90° equals ``torch.rot90(output, 1, dims=(-2, -1))`` (from axis 0 towards axis 1);
- s ~ U(scale_range), linked; s > 1 samples a larger field of view (zoom out), so content
  appears 1/s times its size; f0, f1 = -1 with ``flip_prob`` each (flips are the scale's sign);
- t: the translation in output pixels: the content moves by exactly t output pixels whatever the
  zoom (upstream's matrix uses +t; U(-T, T) is symmetric, so only the documented sign differs).

Upstream multiplies the same five factors (centre, FOV scale, rotation, zoom/flip, translation).
Pixel p converts to the normalized coordinate (2p+1)/C - 1 and q = v·S/2 for output normalized
v, hence theta = [(S/C)·A | (2(c - A t) + 1)/C - 1] with A = R·diag(s·f), in grid (x=axis 1,
y=axis 0) order. Out-of-canvas samples take the sample's ``background`` (``image - background``
is resampled with zero padding and ``background`` added back: exactly upstream's zero padding
before standardization, protocol 7.18); labels pad with 0.

Intensity (protocol 3.7), in this order after the one resample (standardization is already in
the cache): noise -> smooth -> scale -> shift -> gamma -> solarize. Each sample draws its own
Bernoulli per transform. As MONAI, the smoothing pads with zeros, i.e. with the subject mean in
standardized units, so the outermost 4σ output pixels are pulled towards it.

Switches for the upstream surprises (protocol 7), defaults reproduce upstream:

- ``intensity_scale_mode``: "upstream" multiplies by 1+f, f ~ U(0.6, 1.5), i.e. ×1.6–2.5, MONAI
  ``RandScaleIntensity`` semantics (7.1); "factor" multiplies by f.
- ``noise_std_random``: True draws σ ~ U(0, 0.2) per sample (MONAI ``sample_std``, 7.2); False
  uses σ = 0.2.
- ``centring``: "label" centres on the label-derived heart centre, the ground-truth leak of 7.3
  (samples with a NaN centre fall back to the canvas centre); "image" centres on the canvas centre,
  as validation does and as unlabeled user data must.
- ``centre_align_corners_quirk``: upstream normalized the heart centre as c/(C-1)·2-1 (an
  align_corners=True convention) while the grid uses align_corners=False, so the point that lands
  at the output centre is c·C/(C-1) - 1/2 = c + (c - (C-1)/2)/(C-1) canvas pixels: shifted away
  from the canvas centre by at most half a pixel (7.3). Upstream made this error in native pixels
  of the cropped native image; applying it on the canvas (as here) keeps its form and bound.

Random draws (reproducible for a given generator state and batch): :func:`random_affine` draws
one (B, 6) uniform table (angle, zoom, flip 0, flip 1, shift 0, shift 1); :func:`augment_intensity`
one (B, 12) table (noise p, σ, smooth p, σ0, σ1, scale p, factor, shift p, offset, gamma p, γ,
solarize p), then the (B, 1, S, S) normal noise field, which is skipped when ``noise_prob`` is 0.
Use a generator on the data's device: a CPU generator with CUDA data works, but each table is
then copied to the device.

Multiple views (protocol 2.1–2.3): SimCLR/PCL call :func:`augment_batch` twice with the same
generator (independent views). DINO calls it per crop with a preset of ``AUGMENT_PRESETS``:
the two global crops at ``size`` S, the six local crops at ``size`` S // 2 (one call on the batch
repeated 6 times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from cmrssp.errors import InputError

INTENSITY_SCALE_MODES = ("upstream", "factor")
CENTRINGS = ("label", "image")
INTERPOLATIONS = ("bicubic", "bilinear")
GAMMA_EPSILON = 1e-7  # MONAI AdjustContrast
SMOOTH_TRUNCATE = 4.0  # MONAI GaussianFilter: kernel tail at 4 sigma


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of one view. Defaults: the segmentation baseline (protocol 3.7), also used by
    SimCLR, PCL and MIM. Ranges are (low, high) of a uniform draw; ``*_prob`` are per sample.

    Attributes:
        rotation_deg: angle ~ U(-rotation_deg, rotation_deg) degrees (p 1).
        scale_range: linked zoom s (p 1); s multiplies the sampled field of view.
        flip_prob: probability of a flip, independently per axis.
        translation_px: shift ~ U(-T, T) per axis, T = translation_px · S / translation_reference
            output pixels: 40 px at S = 256 (±50 mm at 1.25 mm) is 10 px at S = 64, the same
            field-of-view fraction when the whole grid is coarsened.
        translation_reference: the output size at which ``translation_px`` is given. DINO's local
            crops give ±160 px at 128 (protocol 2.3), so their preset sets 128.
        noise_prob, noise_std, noise_std_random: additive N(0, σ²), σ ~ U(0, noise_std) if
            ``noise_std_random`` (upstream, protocol 7.2) else σ = noise_std.
        smooth_prob, smooth_sigma_range: Gaussian smoothing with σ0, σ1 ~ U(range) output pixels
            along axis 0 and axis 1 (MONAI erf kernel truncated at 4σ, zero padding).
        scale_intensity_prob, scale_intensity_range, intensity_scale_mode: x·(1+f) ("upstream",
            protocol 7.1) or x·f ("factor"), f ~ U(range).
        shift_prob, shift_range: x + o, o ~ U(range).
        gamma_prob, gamma_range: x <- ((x-min)/(range+1e-7))^γ · range + min per image, γ ~ U(range).
        solarize_prob, solarize_threshold: x > threshold becomes max_value - x (DINO, protocol 7.6).
        centring, centre_align_corners_quirk: see the module docstring (protocol 7.3).
        interpolation: "bicubic" (upstream) or "bilinear" (faster on a CPU) for images.
    """

    rotation_deg: float = 180.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    flip_prob: float = 0.5
    translation_px: float = 40.0
    translation_reference: int = 256
    noise_prob: float = 0.2
    noise_std: float = 0.2
    noise_std_random: bool = True
    smooth_prob: float = 0.2
    smooth_sigma_range: tuple[float, float] = (0.5, 1.5)
    scale_intensity_prob: float = 1.0
    scale_intensity_range: tuple[float, float] = (0.6, 1.5)
    intensity_scale_mode: str = "upstream"
    shift_prob: float = 1.0
    shift_range: tuple[float, float] = (-0.4, 0.4)
    gamma_prob: float = 1.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.0
    centring: str = "label"
    centre_align_corners_quirk: bool = True
    interpolation: str = "bicubic"

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_range"):
                # JSON gives lists; keep the config hashable and comparable.
                if len(value) != 2 or value[0] > value[1]:
                    raise InputError(None, f"augment {item.name} must be (low, high) with low <= high, got {value}")
                object.__setattr__(self, item.name, (float(value[0]), float(value[1])))
            if item.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise InputError(None, f"augment {item.name} must be in [0, 1], got {value}")
        choices = {
            "intensity_scale_mode": INTENSITY_SCALE_MODES, "centring": CENTRINGS, "interpolation": INTERPOLATIONS
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(None, f"augment {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.scale_range[0] <= 0 or self.smooth_sigma_range[0] <= 0:
            raise InputError(None, "augment scale_range and smooth_sigma_range must be positive")
        if min(self.rotation_deg, self.translation_px, self.noise_std) < 0:
            raise InputError(None, "augment rotation_deg, translation_px and noise_std must be >= 0")
        if self.translation_reference < 1:
            raise InputError(None, f"augment translation_reference must be >= 1, got {self.translation_reference}")


NO_AUGMENTATION = AugmentConfig(
    rotation_deg=0.0, scale_range=(1.0, 1.0), flip_prob=0.0, translation_px=0.0, noise_prob=0.0,
    smooth_prob=0.0, scale_intensity_prob=0.0, shift_prob=0.0, gamma_prob=0.0, centring="image",
)

# DINO crops (protocol 2.3): zoom ranges from DINO's area ranges, √area·1.4.
_DINO_SHARED = dict(noise_prob=0.15, scale_intensity_prob=0.2, shift_prob=0.15, gamma_prob=0.15, smooth_prob=0.1)
AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": NO_AUGMENTATION,
    "segmentation": AugmentConfig(),
    "dino_global_blur": AugmentConfig(
        scale_range=(0.524, 1.4), **{**_DINO_SHARED, "smooth_prob": 1.0}, smooth_sigma_range=(0.1, 2.0)
    ),
    "dino_global_solarize": AugmentConfig(scale_range=(0.524, 1.4), **_DINO_SHARED, solarize_prob=0.2),
    # Called at size S // 2 (128 for the 256 grid).
    "dino_local": AugmentConfig(
        scale_range=(0.313, 0.524), translation_px=160.0, translation_reference=128, **_DINO_SHARED
    ),
}


# ---------------------------------------------------------------------------------------------
# Spatial part
# ---------------------------------------------------------------------------------------------


def resample_plain(
    images: torch.Tensor, labels: torch.Tensor | None, background: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The evaluation/validation grid: the centred ``size``-crop of the canvas (offset (C-S)/2).

    Args:
        images: (B, C, C) canvas, any float dtype; labels: (B, C, C) or None;
        background: (B,) fill value where the canvas is smaller than ``size``.

    Returns:
        images (B, 1, S, S) float32 and labels (B, S, S) int64 (or None), by slicing (exact).
    """
    canvas = _check_batch(images, labels, size)
    if (canvas - size) % 2:
        raise ValueError(f"canvas ({canvas}) and size ({size}) must have the same parity for a centred crop")
    if canvas >= size:
        start = (canvas - size) // 2
        window = slice(start, start + size)
        out_labels = None if labels is None else labels[:, window, window].to(torch.int64)
        return images[:, None, window, window].to(torch.float32, copy=True), out_labels
    images = images.to(torch.float32)
    start = (size - canvas) // 2
    window = slice(start, start + canvas)
    out = background.to(images).view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()
    out[:, 0, window, window] = images
    out_labels = None
    if labels is not None:
        out_labels = labels.new_zeros((labels.shape[0], size, size), dtype=torch.int64)
        out_labels[:, window, window] = labels
    return out, out_labels


def affine_theta(
    centre: torch.Tensor,
    canvas: int,
    size: int,
    rotation: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
) -> torch.Tensor:
    """The (B, 2, 3) ``affine_grid`` theta of explicit per-sample parameters (module docstring).

    Args:
        centre: (B, 2) canvas pixel (k0, k1) that lands at the output centre.
        canvas, size: C and S.
        rotation: (B,) radians (+π/2 = ``torch.rot90`` from axis 0 to axis 1); None = 0.
        scale: (B,) zoom s (s > 1 zooms out); None = 1.
        flip: (B, 2) bool, flip along axis 0 / axis 1; None = no flips.
        translation: (B, 2) output pixels (axis 0, axis 1) the content moves by; None = 0.
    """
    centre = centre.to(torch.float32)
    batch, device = centre.shape[0], centre.device
    angle = rotation.to(device, torch.float32) if rotation is not None else centre.new_zeros(batch)
    zoom = scale.to(device, torch.float32) if scale is not None else centre.new_ones(batch)
    sign = 1.0 - 2.0 * flip.to(device, torch.float32) if flip is not None else centre.new_ones(batch, 2)
    shift = translation.to(device, torch.float32) if translation is not None else centre.new_zeros(batch, 2)

    # Grid order (x = axis 1, y = axis 0).
    scale_x, scale_y = zoom * sign[:, 1], zoom * sign[:, 0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = torch.stack([cos * scale_x, -sin * scale_y, sin * scale_x, cos * scale_y], -1).view(batch, 2, 2)
    centre_xy, shift_xy = centre.flip(-1), shift.flip(-1)
    offset = centre_xy - torch.einsum("bij,bj->bi", a, shift_xy)
    return torch.cat([a * (size / canvas), ((2.0 * offset + 1.0) / canvas - 1.0)[:, :, None]], dim=2)


def centring_point(centre: torch.Tensor, canvas: int, config: AugmentConfig) -> torch.Tensor:
    """(B, 2) canvas pixel that lands at the output centre under ``config.centring``: the heart
    centre (with the half-pixel quirk if enabled) or, for "image" and NaN centres, (C-1)/2."""
    middle = (canvas - 1) / 2.0
    if config.centring == "image":
        return torch.full_like(centre, middle, dtype=torch.float32)
    point = centre.to(torch.float32)
    if config.centre_align_corners_quirk:
        point = point * (canvas / (canvas - 1)) - 0.5
    return torch.where(torch.isnan(point), torch.full_like(point, middle), point)


def random_affine(
    centre: torch.Tensor, canvas: int, size: int, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw the spatial augmentation of ``config`` for a batch: (B, 2, 3) theta.

    Args:
        centre: (B, 2) heart centres in canvas pixels (NaN = unknown; ignored for "image").
        canvas, size: C and S.
    """
    batch, device = centre.shape[0], centre.device
    u = _uniform_table(batch, 6, generator, device)
    rotation = torch.deg2rad((2.0 * u[:, 0] - 1.0) * config.rotation_deg)
    low, high = config.scale_range
    scale = low + u[:, 1] * (high - low)
    flip = u[:, 2:4] < config.flip_prob
    reach = config.translation_px * size / config.translation_reference
    translation = (2.0 * u[:, 4:6] - 1.0) * reach
    return affine_theta(centring_point(centre, canvas, config), canvas, size, rotation, scale, flip, translation)


def resample_affine(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    background: torch.Tensor,
    theta: torch.Tensor,
    size: int,
    interpolation: str = "bicubic",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One grid sample of the batch: images (B, 1, S, S) float32 (out of canvas = background),
    labels (B, S, S) int64 nearest (out of canvas = 0) or None."""
    _check_batch(images, labels, size)
    batch = images.shape[0]
    fill = background.to(images.device, torch.float32).view(batch, 1, 1, 1)
    shifted = images[:, None].to(torch.float32, copy=True).sub_(fill)
    grid = affine_grid(theta.to(shifted), size)
    out = F.grid_sample(shifted, grid, mode=interpolation, padding_mode="zeros", align_corners=False).add_(fill)
    out_labels = None
    if labels is not None:
        out_labels = F.grid_sample(
            labels[:, None].to(torch.float32), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[:, 0].to(torch.int64)
    return out, out_labels


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, 1, S, S), align_corners=False)`` (B, S, S, 2), as an outer sum
    of two per-axis terms: the same values to float rounding, about 3x faster on a CPU than the
    library's (B, S², 3) x (B, 3, 2) batched matrix product."""
    batch = theta.shape[0]
    base = (2.0 * torch.arange(size, device=theta.device, dtype=theta.dtype) + 1.0) / size - 1.0
    grid = torch.empty((batch, size, size, 2), device=theta.device, dtype=theta.dtype)
    for axis in (0, 1):  # grid x then y: theta row ``axis``
        along_x = theta[:, axis, 0, None, None] * base[None, None, :]
        along_y = theta[:, axis, 1, None, None] * base[None, :, None] + theta[:, axis, 2, None, None]
        torch.add(along_x, along_y, out=grid[..., axis])
    return grid


# ---------------------------------------------------------------------------------------------
# Intensity part
# ---------------------------------------------------------------------------------------------


def augment_intensity(
    images: torch.Tensor,
    max_value: torch.Tensor | None,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise -> smooth -> scale -> shift -> gamma -> solarize (protocol 3.7), per-sample draws.

    Args:
        images: (B, 1, H, W) float32, not modified.
        max_value: (B,) standardized subject maxima (solarization); may be None if it is off.

    Returns:
        (B, 1, H, W) float32.
    """
    batch, device = images.shape[0], images.device
    u = _uniform_table(batch, 12, generator, device)
    # Comparisons with Python floats: no host-to-device copy.
    noise_on, smooth_on = u[:, 0] < config.noise_prob, u[:, 2] < config.smooth_prob
    scale_on, shift_on = u[:, 5] < config.scale_intensity_prob, u[:, 7] < config.shift_prob
    gamma_on, solarize_on = u[:, 9] < config.gamma_prob, u[:, 11] < config.solarize_prob

    def per_sample(values: torch.Tensor, on: torch.Tensor, neutral: float) -> torch.Tensor:
        return torch.where(on, values, torch.full_like(values, neutral)).view(batch, 1, 1, 1)

    x = images
    if config.noise_prob > 0:
        std = u[:, 1] * config.noise_std if config.noise_std_random else torch.full_like(u[:, 1], config.noise_std)
        field = _normal((batch, 1) + tuple(images.shape[2:]), generator, device)
        x = torch.addcmul(x, field, per_sample(std, noise_on, 0.0))
    if config.smooth_prob > 0:
        low, high = config.smooth_sigma_range
        x = _smooth(x, low + u[:, 3:5] * (high - low), smooth_on, high)
    if config.scale_intensity_prob > 0 or config.shift_prob > 0:
        low, high = config.scale_intensity_range
        factor = low + u[:, 6] * (high - low)
        if config.intensity_scale_mode == "upstream":
            factor = 1.0 + factor
        low, high = config.shift_range
        offset = low + u[:, 8] * (high - low)
        x = torch.addcmul(per_sample(offset, shift_on, 0.0), x, per_sample(factor, scale_on, 1.0))
    if config.gamma_prob > 0:
        low, high = config.gamma_range
        gamma = (low + u[:, 10] * (high - low)).view(batch, 1, 1, 1)
        minimum = x.amin(dim=(1, 2, 3), keepdim=True)
        extent = x.amax(dim=(1, 2, 3), keepdim=True) - minimum
        # (x - min) stays >= 0 exactly, so the power never sees a negative base.
        adjusted = (x - minimum).div_(extent + GAMMA_EPSILON).pow_(gamma)
        x = _select(gamma_on, torch.addcmul(minimum, adjusted, extent), x, config.gamma_prob)
    if config.solarize_prob > 0:
        if max_value is None:
            raise ValueError("solarization needs max_value, the standardized subject maxima")
        top = max_value.to(device, torch.float32).view(batch, 1, 1, 1)
        x = torch.where(solarize_on.view(batch, 1, 1, 1) & (x > config.solarize_threshold), top - x, x)
    return x if x is not images else images.clone()


def _select(on: torch.Tensor, changed: torch.Tensor, unchanged: torch.Tensor, probability: float) -> torch.Tensor:
    """Per-sample choice; a transform that always applies needs no selection pass."""
    return changed if probability >= 1.0 else torch.where(on.view(-1, 1, 1, 1), changed, unchanged)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2·radius+1) MONAI erf Gaussian kernels (``gaussian_1d``, not renormalized), each cut
    at its own tail int(max(4σ, 0.5) + 0.5); ``radius`` must cover the largest tail."""
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    t = (0.70710678 / sigma)[:, None]
    kernel = (0.5 * (torch.erf(t * (x + 0.5)) - torch.erf(t * (x - 0.5)))).clamp_(min=0.0)
    tail = torch.floor(torch.clamp(SMOOTH_TRUNCATE * sigma, min=0.5) + 0.5)[:, None]
    return torch.where(x.abs() <= tail, kernel, torch.zeros_like(kernel))


def _smooth(x: torch.Tensor, sigma: torch.Tensor, on: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """Separable per-sample Gaussian as two grouped convolutions (one group per sample); samples
    that are off get a unit impulse, which reproduces them exactly. Zero padding, as MONAI."""
    batch, _, height, width = x.shape
    radius = int(max(SMOOTH_TRUNCATE * sigma_max, 0.5) + 0.5)
    impulse = torch.zeros(2 * radius + 1, device=x.device)
    impulse[radius] = 1.0
    kernels = [torch.where(on[:, None], gaussian_kernels(sigma[:, axis], radius), impulse) for axis in (0, 1)]
    # Channels-last makes oneDNN's grouped (depthwise) convolution several times faster on a CPU.
    y = x.reshape(1, batch, height, width).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(y, kernels[0].view(batch, 1, -1, 1), padding=(radius, 0), groups=batch)
    y = F.conv2d(y, kernels[1].view(batch, 1, 1, -1), padding=(0, radius), groups=batch)
    return y.contiguous().view(batch, 1, height, width)


# ---------------------------------------------------------------------------------------------
# The whole augmentation
# ---------------------------------------------------------------------------------------------


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    centre: torch.Tensor | None,
    background: torch.Tensor,
    max_value: torch.Tensor | None,
    size: int,
    config: AugmentConfig = AugmentConfig(),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One augmented view of a batch of canvas slices: :func:`random_affine` ->
    :func:`resample_affine` -> :func:`augment_intensity`.

    Args:
        images: (B, C, C) standardized canvas, float16 or float32, on the training device.
        labels: (B, C, C) uint8 or None. centre: (B, 2) heart centres (NaN = unknown) or None
        (= image centring). background, max_value: (B,). size: output side S (``out_size``).
        config: the view's augmentation. generator: source of every random draw (None = torch's
            default generator of the device).

    Returns:
        images (B, 1, S, S) float32 and labels (B, S, S) int64 (or None).
    """
    canvas = _check_batch(images, labels, size)
    if centre is None:
        centre = torch.full((images.shape[0], 2), math.nan, device=images.device)
    # Augmentation is data preparation: always float32, even inside a training step's autocast
    # (CPU bf16 grouped convolutions can also be pathologically slow).
    with torch.autocast(device_type=images.device.type, enabled=False):
        theta = random_affine(centre.to(images.device), canvas, size, config, generator)
        out, out_labels = resample_affine(images, labels, background, theta, size, config.interpolation)
        return augment_intensity(out, max_value, config, generator), out_labels


def _check_batch(images: torch.Tensor, labels: torch.Tensor | None, size: int) -> int:
    if images.dim() != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be (B, C, C) canvases, got shape {tuple(images.shape)}")
    if labels is not None and labels.shape != images.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} differs from images {tuple(images.shape)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(images.shape[1])


def _uniform_table(batch: int, columns: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(batch, columns) U(0, 1), drawn on the generator's device in one call."""
    source = generator.device if generator is not None else device
    return torch.rand((batch, columns), generator=generator, device=source).to(device, non_blocking=True)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device, non_blocking=True)
