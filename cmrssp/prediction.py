"""Segment one labelled volume of a prepared subject, in its original voxel grid (protocol 5.2, 5.3).

The study predicts each slice of a 3D volume at 1.25 mm / 256² (a pure scale about the image
centre: no heart centring, no augmentation), keeps head 0 of the deep-supervised U-Net, maps the
**4-channel logits** back onto the original in-plane grid with the exact inverse of that resample
(bicubic, *border* padding) and takes the argmax there (protocol 7.17).

The forward resample is stored in the cache: canvas index k maps to native index
x = scale * k + offset (per in-plane axis, :mod:`cmrssp.data.prepare`), and the network's input is
the centred window k in [start, start + S). The inverse therefore samples the window's logits at
window coordinate j(x) = (x - offset) / scale - start for every native pixel x, with
``grid_sample(align_corners=False)``, whose normalized coordinate of a pixel-centre position j
on an S-pixel axis is u = (2 j + 1) / S - 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cmrssp.data.cache import Cache
from cmrssp.data.subject_meta import SubjectMeta
from cmrssp.train import Precision


@dataclass(frozen=True)
class VolumePrediction:
    """One predicted label volume in the original grid.

    Attributes:
        key: subject key ("dataset-subject").
        phase: the label volume's phase name ("ED", "ES", or the dataset's frame name).
        frame: the cine frame the volume belongs to.
        labels: uint8 (X, Y, Z) predicted canonical labels (0 background, 1 LV, 2 MYO, 3 RV).
        target: uint8 (X, Y, Z) ground truth in the same grid.
        spacing: (3,) voxel size in mm of the original grid.
    """

    key: str
    phase: str
    frame: int
    labels: np.ndarray
    target: np.ndarray
    spacing: tuple[float, float, float]


def window_to_native_grid(meta: SubjectMeta, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sampling grid (1, X, Y, 2) that reads the network window at every native pixel centre.

    The last axis is (W, H) = (native axis 1, native axis 0) in normalized align_corners=False
    units of the S x S window, as ``F.grid_sample`` expects for an input indexed [k0, k1].
    """
    size = int(meta.size)
    start = float(meta.evaluation_window[0])
    scale = np.asarray(meta.grid.scale, dtype=np.float64)
    offset = np.asarray(meta.grid.offset, dtype=np.float64)
    n_x, n_y = (int(n) for n in meta.native_shape[:2])
    normalized = []
    for axis, length in ((0, n_x), (1, n_y)):
        window_index = (np.arange(length, dtype=np.float64) - offset[axis]) / scale[axis] - start
        normalized.append((2.0 * window_index + 1.0) / size - 1.0)
    grid = np.empty((1, n_x, n_y, 2), dtype=np.float32)
    grid[0, :, :, 0] = normalized[1][None, :]
    grid[0, :, :, 1] = normalized[0][:, None]
    return torch.from_numpy(grid).to(device)


def logits_to_native(logits: torch.Tensor, meta: SubjectMeta, mode: str = "bicubic") -> torch.Tensor:
    """Map window logits (Z, K, S, S) to the original in-plane grid: float32 (Z, K, X, Y).

    Bicubic on the logits with border padding (protocol 5.3), so pixels outside the network's
    field of view take the nearest window edge's class scores, as upstream.
    """
    grid = window_to_native_grid(meta, logits.device)
    grid = grid.expand(logits.shape[0], -1, -1, -1)
    return F.grid_sample(logits.float(), grid, mode=mode, padding_mode="border", align_corners=False)


def window_slices(cache: Cache, key: str, frame: int) -> torch.Tensor:
    """The network input of one frame: float32 (Z, 1, S, S), the centred window of the canvas
    (equal to the study's plain prediction resample; :mod:`cmrssp.data.prepare`)."""
    start, stop = (int(v) for v in cache.meta(key).evaluation_window)
    window = np.asarray(cache.image(key)[frame, :, start:stop, start:stop], dtype=np.float32)
    return torch.from_numpy(window)[:, None]


@torch.no_grad()
def predict_window_logits(
    model: torch.nn.Module, slices: torch.Tensor, batch_size: int, precision: Precision | None = None
) -> torch.Tensor:
    """Head-0 logits (Z, K, S, S) of ``slices`` (Z, 1, S, S), ``batch_size`` slices at a time."""
    device = next(model.parameters()).device
    outputs = []
    for first in range(0, slices.shape[0], batch_size):
        with precision.autocast(device) if precision is not None else contextlib.nullcontext():
            outputs.append(model(slices[first : first + batch_size].to(device))[0].float())
    return torch.cat(outputs)


def predict_subject(
    model: torch.nn.Module, cache: Cache, key: str, batch_size: int = 64, precision: Precision | None = None
) -> list[VolumePrediction]:
    """Predict every labelled volume (ED, ES, ...) of ``key`` and map it back to the original grid.

    ``model`` must be in eval mode; ``precision`` sets autocast (default: float32).
    """
    meta = cache.meta(key)
    target_volumes = cache.labels_native(key)
    spacing = tuple(float(s) for s in meta.spacing_native[:3])
    predictions = []
    for volume, (frame, phase) in enumerate(zip(meta.label_frames, meta.label_phases)):
        logits = predict_window_logits(model, window_slices(cache, key, int(frame)), batch_size, precision)
        native = first_max_class(logits_to_native(logits, meta))  # (Z, X, Y)
        labels = native.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        predictions.append(VolumePrediction(
            key=key, phase=str(phase), frame=int(frame), labels=np.ascontiguousarray(labels),
            target=np.ascontiguousarray(target_volumes[..., volume]), spacing=spacing,
        ))
    return predictions


def first_max_class(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=1)`` as uint8 for (N, K, X, Y): the first class of largest logit.

    The same labels (ties go to the lower class, as argmax), in one pass per class: on a CPU,
    torch's argmax over a strided class axis took 3.2 s for a 30-frame cine's (390, 4, 256, 216)
    logits, this 0.7 s.
    """
    best = logits[:, 0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for label in range(1, logits.shape[1]):
        larger = logits[:, label] > best
        labels[larger] = label
        best = torch.maximum(best, logits[:, label])
    return labels
