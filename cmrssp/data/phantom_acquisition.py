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
    """Apply a ``kspace_window`` to the last two axes of ``frames`` (float32, same shape).

    One plane at a time (it stays in cache; each plane's transforms are the same arithmetic).
    """
    if window is None:
        return frames
    out = np.empty(frames.shape, np.float32)
    for index in np.ndindex(frames.shape[:-2]):
        out[index] = _blur_plane(frames[index], window)
    return out


def _blur_plane(plane: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``blur`` of one (X, Y) float32 plane."""
    spectrum = scipy.fft.rfft2(plane)
    spectrum *= window
    return scipy.fft.irfft2(spectrum, s=plane.shape, overwrite_x=True).astype(np.float32, copy=False)


def coil_sensitivity(
    rng: np.random.Generator, x, y, z, body: np.ndarray, ratio: float, torso_centre_y: float, torso_ap: float
) -> np.ndarray:
    """Smooth multiplicative bias over (Z, X, Y) world points, max/min over the body = ``ratio``.

    An anterior-posterior term (surface coil arrays: bright near the chest wall and the back,
    darker in the middle) plus a random field of a few long-wavelength (200-400 mm) cosines,
    which is what a Gaussian-smoothed random field with sigma 60-100 mm looks like (recipe F.4).
    """
    quadratic, linear = rng.uniform(0.5, 1.0), rng.uniform(-0.3, 0.3)
    waves = []
    for _ in range(4):
        direction = rng.normal(size=3)
        direction *= 2 * np.pi / rng.uniform(200, 400) / np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * np.pi)
        waves.append((direction, phase, rng.uniform(0.3, 1.0)))
    log_bias = np.empty(x.shape)
    for s in range(x.shape[0]):  # one slice at a time (in cache); float64 from the first wave on
        depth = (y[s] - torso_centre_y) / torso_ap
        slice_bias = quadratic * depth * depth + linear * depth
        for direction, phase, amplitude in waves:
            slice_bias = slice_bias + amplitude * np.cos(direction[0] * x[s] + direction[1] * y[s] + direction[2] * z[s]
                                                         + phase)
        log_bias[s] = slice_bias
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
                                 window: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    """Magnitude of blur(signal) plus complex noise band-limited by the same window, float32 (..., X, Y).

    ``signal`` is the unblurred object times the coil sensitivity. The complex noise is white in
    k-space where the window is non-zero, weighted by the window (so neighbouring pixels correlate
    as after zero-filling) and scaled so that each of its components has sd ``sigma`` per pixel.
    Planes are drawn and transformed one at a time, in C order: the same random stream and the
    same arithmetic as one draw and one batch of transforms for all of them, with each plane's
    arrays in cache. ``out`` (any layout, signal's shape) receives the result.
    """
    if window is None:
        noisy = add_rician_noise(rng, signal, sigma)
        if out is None:
            return noisy
        out[...] = noisy
        return out
    shape = signal.shape[-2:]
    full = _full_window(window, shape)
    support = np.flatnonzero(full > 0)
    weights = full.ravel()[support] * np.float32(sigma / np.sqrt(window_power(window, shape)))
    rows, columns = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    # A separable window keeps a block of rows x columns: its spectrum is filled block by block.
    blocks = _blocks(rows, columns) if len(support) == len(rows) * len(columns) else None
    out = np.empty(signal.shape, np.float32) if out is None else out
    for index in np.ndindex(signal.shape[:-2]):
        noise = rng.standard_normal((len(support), 2), dtype=np.float32)
        noise *= weights[:, None]
        values = noise.view(np.complex64)[:, 0]  # (real, imaginary) pairs
        spectrum = np.zeros(shape, np.complex64)
        if blocks is None:
            spectrum.reshape(-1)[support] = values
        else:
            values = values.reshape(len(rows), len(columns))
            for (target_rows, target_columns), (source_rows, source_columns) in blocks:
                spectrum[target_rows, target_columns] = values[source_rows, source_columns]
        noise_image = scipy.fft.ifft2(spectrum, norm="ortho", overwrite_x=True)
        noise_image += _blur_plane(signal[index], window)
        out[index] = np.abs(noise_image)
    return out


def _blocks(rows: np.ndarray, columns: np.ndarray) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """Contiguous blocks of a rows x columns support: (spectrum slices, slices of the packed values)."""
    def packed(runs):
        starts = np.cumsum([0] + [run.stop - run.start for run in runs])
        return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]

    row_runs, column_runs = _runs(rows), _runs(columns)
    return [((rows, columns), (packed_rows, packed_columns))
            for rows, packed_rows in zip(row_runs, packed(row_runs))
            for columns, packed_columns in zip(column_runs, packed(column_runs))]


def _runs(indices: np.ndarray) -> list[slice]:
    """Sorted indices as a list of contiguous slices."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    return [slice(int(run[0]), int(run[-1]) + 1) for run in np.split(indices, breaks)]


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
