"""The phantom's acquisition chain: in-plane blur, coil bias, Rician noise, intensity storage.

phantom.md F, degradation steps 3-5 (step 2, through-plane partial volume, happens while the
scene is drawn, and step 6, labels, with the heart). All arrays are float32 (..., X, Y).

The noise is band-limited like the signal: complex Gaussian noise enters with the acquired
k-space and is zero-filled with it, so neighbouring pixels' noise is correlated as in real
reconstructions (ACDC background noise, residual of a 9x9 local mean: lag-1 correlation ~0.4,
``benchmarks/phantom_vs_real.py``), not white.
"""

from __future__ import annotations

import numpy as np
import scipy.fft


def kspace_window(shape: tuple[int, int], pixel: float, acquisition_mm: float, window: str) -> np.ndarray | None:
    """rfft2 multiplier that crops k-space to an acquired resolution of ``acquisition_mm``.

    Scanners acquire coarser than they display and zero-fill (recipe F.3); ``window`` apodises the
    kept band ("none": a sharp crop with Gibbs ringing, "tukey", "hamming"). None when nothing
    would change (display spacing already as coarse as the acquisition, no window).
    """
    kept = min(1.0, pixel / acquisition_mm)
    if kept >= 1.0 and window == "none":
        return None
    limit = 0.5 * kept  # cycles per pixel

    def profile(frequencies: np.ndarray) -> np.ndarray:
        position = np.abs(frequencies) / limit  # 0 at DC, 1 at the crop edge
        inside = position <= 1.0
        if window == "hamming":
            weight = 0.54 + 0.46 * np.cos(np.pi * position)
        elif window == "tukey":  # flat to 0.6, cosine taper to the edge
            weight = np.where(position < 0.6, 1.0, 0.5 * (1 + np.cos(np.pi * (position - 0.6) / 0.4)))
        else:
            weight = np.ones_like(position)
        return (weight * inside).astype(np.float32)

    rows = profile(np.fft.fftfreq(shape[0]))
    columns = profile(np.fft.rfftfreq(shape[1]))
    return rows[:, None] * columns[None, :]


def blur(frames: np.ndarray, window: np.ndarray | None) -> np.ndarray:
    """Apply a ``kspace_window`` to the last two axes of ``frames`` (float32, same shape)."""
    if window is None:
        return frames
    spectrum = scipy.fft.rfft2(frames, axes=(-2, -1))
    spectrum *= window
    return scipy.fft.irfft2(spectrum, s=frames.shape[-2:], axes=(-2, -1)).astype(np.float32, copy=False)


def coil_sensitivity(
    rng: np.random.Generator, x, y, z, body: np.ndarray, ratio: float, torso_centre_y: float, torso_ap: float
) -> np.ndarray:
    """Smooth multiplicative bias over (Z, X, Y) world points, max/min over the body = ``ratio``.

    An anterior-posterior term (surface coil arrays: bright near the chest wall and the back,
    darker in the middle) plus a random field of a few long-wavelength (200-400 mm) cosines,
    which is what a Gaussian-smoothed random field with sigma 60-100 mm looks like (recipe F.4).
    """
    depth = (y - torso_centre_y) / torso_ap
    log_bias = rng.uniform(0.5, 1.0) * depth * depth + rng.uniform(-0.3, 0.3) * depth
    for _ in range(4):
        direction = rng.normal(size=3)
        direction *= 2 * np.pi / rng.uniform(200, 400) / np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * np.pi)
        log_bias = log_bias + rng.uniform(0.3, 1.0) * np.cos(direction[0] * x + direction[1] * y + direction[2] * z + phase)
    inside = log_bias[body > 0.5] if np.any(body > 0.5) else log_bias.ravel()
    span = max(float(inside.max() - inside.min()), 1e-6)
    log_bias = (log_bias - float(inside.mean())) * (np.log(ratio) / span)
    return np.exp(log_bias).astype(np.float32)


def window_power(window: np.ndarray | None, shape: tuple[int, int]) -> float:
    """Mean of ``window**2`` over the full 2D spectrum of ``shape`` (1 for no window).

    White noise of sd s filtered by the window has sd ``s * sqrt(window_power)`` (Parseval).
    ``window`` covers the rfft half-spectrum; interior columns stand for two full-spectrum ones.
    """
    if window is None:
        return 1.0
    columns = np.full(window.shape[1], 2.0)
    columns[0] = 1.0
    if shape[1] % 2 == 0:
        columns[-1] = 1.0
    return float((window.astype(np.float64) ** 2 * columns[None, :]).sum() / (shape[0] * shape[1]))


def add_bandlimited_rician_noise(rng: np.random.Generator, signal: np.ndarray, sigma: float,
                                 window: np.ndarray | None) -> np.ndarray:
    """Magnitude of blur(signal) plus complex noise band-limited by the same window, float32 (..., X, Y).

    ``signal`` is the unblurred object times the coil sensitivity. The complex noise is white in
    k-space where the window is non-zero, weighted by the window (so neighbouring pixels correlate
    as after zero-filling) and scaled so that each of its components has sd ``sigma`` per pixel.
    """
    if window is None:
        return add_rician_noise(rng, signal, sigma)
    shape = signal.shape[-2:]
    full = _full_window(window, shape)
    support = np.flatnonzero(full > 0)
    scale = np.float32(sigma / np.sqrt(window_power(window, shape)))
    spectrum = np.zeros(signal.shape[:-2] + (shape[0] * shape[1],), np.complex64)
    weights = full.ravel()[support] * scale
    noise = rng.standard_normal(spectrum.shape[:-1] + (len(support), 2), dtype=np.float32)
    spectrum[..., support] = (noise[..., 0] + 1j * noise[..., 1]) * weights
    noise_image = scipy.fft.ifft2(spectrum.reshape(signal.shape), axes=(-2, -1), norm="ortho")
    noise_image += blur(signal, window)
    return np.abs(noise_image).astype(np.float32, copy=False)


def _full_window(window: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The full 2D spectrum (X, Y) of an rfft half-spectrum window (columns mirrored)."""
    columns = np.fft.fftfreq(shape[1])
    index = np.rint(np.abs(columns) * shape[1]).astype(int)  # |frequency| in rfft columns
    return window[:, index]


def add_rician_noise(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of sd ``sigma`` (recipe F.5)."""
    real = rng.standard_normal(signal.shape, dtype=np.float32)
    real *= sigma
    real += signal
    imaginary = rng.standard_normal(signal.shape, dtype=np.float32)
    imaginary *= sigma
    return np.hypot(real, imaginary, out=real)


def to_storage(image: np.ndarray, storage: str, target_max: float, float_slope: float) -> np.ndarray:
    """Quantise as the vendor stores, in place: integers up to ``target_max``, as int16 or float32.

    float32 vendors store those integers times ``float_slope``, as a DICOM-to-NIfTI conversion of
    a rescaled 12-bit image does (so the file compresses like real float data, not like noise).
    Returns float32 values exactly representable in the stored type, so the in-memory subject
    equals what is read back from the file.
    """
    image *= np.float32(target_max / max(float(image.max()), 1e-12))
    np.clip(np.rint(image, out=image), 0, 32767, out=image)
    if storage == "float32":
        image *= np.float32(float_slope)
    return image
