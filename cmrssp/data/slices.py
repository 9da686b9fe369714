"""Prepared cache -> the 2D slices of a run, as tensors in memory (protocol 3.4).

- ``"segmentation"``: every labelled frame (ED and ES) x every slice, with labels, including
  slices without foreground (as upstream).
- ``"pretraining"``: every frame x every slice, no labels (the heart centre stays in the meta).

Slices are ordered subject by subject (in the order of ``keys``), then frame, then slice. Each
array is allocated once and filled by one bulk copy per subject (or per labelled frame) from
the memory-mapped cache arrays: no per-slice Python work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from cmrssp.data.cache import Cache
from cmrssp.data.subject_meta import SubjectMeta
from cmrssp.errors import InputError

KINDS = ("segmentation", "pretraining")
PHASE_CODES = {"ED": 0, "ES": 1}  # any other frame: -1


@dataclass
class SliceSet:
    """N 2D slices with their per-slice metadata (C = the cache's canvas size).

    Attributes:
        keys: subject keys; ``subject`` indexes into them.
        kind: "segmentation" or "pretraining".
        images: float16 (N, C, C), standardized; out-of-field pixels hold ``background``.
        labels: uint8 (N, C, C) with values 0-3, or None (pretraining).
        subject: int64 (N,) index into ``keys``.
        frame: int64 (N,) time index in the cine.
        frame_from_ed: int64 (N,) (frame - ED) mod T, ED = 0 (the frame itself if ED is unknown).
        slice_index: int64 (N,) index in the stored stack.
        position: float32 (N,) PCL position rank_from_base / n_slices (protocol 2.2).
        phase: int8 (N,) 0 ED, 1 ES, -1 other or unknown.
        centre: float32 (N, 2) heart centre in canvas pixel coordinates (k0, k1); NaN if unknown.
        background: float32 (N,) value of out-of-field pixels, -mean/std of the subject.
        max_value: float32 (N,) the subject's standardized maximum (DINO solarization).
    """

    keys: tuple[str, ...]
    kind: str
    images: torch.Tensor
    labels: torch.Tensor | None
    subject: torch.Tensor
    frame: torch.Tensor
    frame_from_ed: torch.Tensor
    slice_index: torch.Tensor
    position: torch.Tensor
    phase: torch.Tensor
    centre: torch.Tensor
    background: torch.Tensor
    max_value: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _map(self, function) -> "SliceSet":
        values = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            values[item.name] = function(value) if isinstance(value, torch.Tensor) else value
        return SliceSet(**values)

    def to(self, device: str | torch.device) -> "SliceSet":
        """The same slices on ``device``."""
        return self._map(lambda tensor: tensor.to(device))

    def select(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> "SliceSet":
        """The slices at ``indices`` (integer indices or a boolean mask), keeping ``keys``."""
        index = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        if index.dtype != torch.bool:
            index = index.long()
        return self._map(lambda tensor: tensor[index.to(tensor.device)])


def resident_device(
    cache: Cache, key_groups: Sequence[Sequence[str]], kind: str, device: str | torch.device, fraction: float = 0.5
) -> torch.device:
    """Where a run's slice sets (``key_groups``: train, valid, ...) should live: on ``device`` when
    they take at most ``fraction`` of its free memory (the GPU fast path: a batch is an index
    gather on the device, no host copy per step), else on the CPU, whence each batch is copied."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    canvas = cache.config.canvas_size
    bytes_per_slice = canvas * canvas * (3 if kind == "segmentation" else 2)  # float16 image + uint8 label
    n_slices = 0
    for keys in key_groups:
        for key in keys:
            meta = cache.meta(key)
            frames = len(meta.label_frames) if kind == "segmentation" else int(meta.n_frames)
            n_slices += frames * int(meta.n_slices)
    free, _ = torch.cuda.mem_get_info(device)
    return device if n_slices * bytes_per_slice <= fraction * free else torch.device("cpu")


def load_slices(
    cache: Cache, keys: Sequence[str], kind: str, device: str | torch.device = "cpu"
) -> SliceSet:
    """Load the slices of ``keys`` from ``cache`` onto ``device`` (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    keys = tuple(keys)
    device = torch.device(device)
    canvas = cache.config.canvas_size
    segmentation = kind == "segmentation"

    # Per subject: which frames, and the per-slice metadata (small arrays, built per subject).
    plans = []
    for number, key in enumerate(keys):
        meta = cache.meta(key)
        n_slices, n_frames = int(meta.n_slices), int(meta.n_frames)
        if segmentation:
            if not meta.labelled:
                raise InputError(cache.array_path(key, "meta.json"), f"subject {key} has no labels to segment")
            frames = np.asarray(meta.label_frames, dtype=np.int64)
            phases = [PHASE_CODES.get(name, -1) for name in meta.label_phases]
        else:
            frames = np.arange(n_frames, dtype=np.int64)
            phases = [_phase_of_frame(t, meta) for t in frames]
        plans.append((number, key, meta, n_slices, n_frames, frames, np.asarray(phases, dtype=np.int8)))

    total = sum(len(frames) * n_slices for _, _, _, n_slices, _, frames, _ in plans)
    images = torch.empty((total, canvas, canvas), dtype=torch.float16, device=device)
    labels = torch.empty((total, canvas, canvas), dtype=torch.uint8, device=device) if segmentation else None
    columns: dict[str, list[np.ndarray]] = {name: [] for name in _COLUMNS}

    on_cpu = device.type == "cpu"
    start = 0
    for number, key, meta, n_slices, n_frames, frames, phases in plans:
        count = len(frames) * n_slices
        image = cache.image(key)
        if segmentation:
            for volume, t in enumerate(frames):
                block = slice(start + volume * n_slices, start + (volume + 1) * n_slices)
                _copy_into(images, block, image[t], on_cpu)
            _copy_into(labels, slice(start, start + count), cache.labels(key).reshape(count, canvas, canvas), on_cpu)
        else:
            _copy_into(images, slice(start, start + count), image.reshape(count, canvas, canvas), on_cpu)

        frame = np.repeat(frames, n_slices)
        ed = meta.ed
        centre = meta.heart_centre_canvas
        columns["subject"].append(np.full(count, number, dtype=np.int64))
        columns["frame"].append(frame)
        columns["frame_from_ed"].append(frame if ed is None else (frame - int(ed)) % n_frames)
        columns["slice_index"].append(np.tile(np.arange(n_slices, dtype=np.int64), len(frames)))
        columns["position"].append(np.tile(np.asarray(meta.slice_positions, dtype=np.float32), len(frames)))
        columns["phase"].append(np.repeat(phases, n_slices))
        columns["centre"].append(
            np.tile(np.asarray(centre if centre is not None else [np.nan, np.nan], dtype=np.float32), (count, 1))
        )
        columns["background"].append(np.full(count, meta.background_value, dtype=np.float32))
        columns["max_value"].append(np.full(count, meta.standardized_max, dtype=np.float32))
        start += count

    tensors = {
        name: torch.from_numpy(np.concatenate(parts) if parts else np.empty(shape, dtype=dtype)).to(device)
        for (name, (dtype, shape)), parts in zip(_COLUMNS.items(), columns.values())
    }
    return SliceSet(keys=keys, kind=kind, images=images, labels=labels, **tensors)


# name -> (dtype, shape of an empty column)
_COLUMNS = {
    "subject": (np.int64, (0,)),
    "frame": (np.int64, (0,)),
    "frame_from_ed": (np.int64, (0,)),
    "slice_index": (np.int64, (0,)),
    "position": (np.float32, (0,)),
    "phase": (np.int8, (0,)),
    "centre": (np.float32, (0, 2)),
    "background": (np.float32, (0,)),
    "max_value": (np.float32, (0,)),
}


def _phase_of_frame(t: int, meta: SubjectMeta) -> int:
    if meta.ed is not None and t == meta.ed:
        return PHASE_CODES["ED"]
    if meta.es is not None and t == meta.es:
        return PHASE_CODES["ES"]
    return -1


def _copy_into(destination: torch.Tensor, rows: slice, source: np.ndarray, on_cpu: bool) -> None:
    """Copy a memory-mapped block into rows of a preallocated tensor (one bulk copy)."""
    if on_cpu:
        np.copyto(destination[rows].numpy(), source)
    else:
        destination[rows].copy_(torch.from_numpy(np.array(source)))
