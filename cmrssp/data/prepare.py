"""Subject -> prepared cache: decode once, resample once; training never opens a NIfTI again.

Cache layout (``FORMAT`` version ``FORMAT_VERSION``)::

    CACHE/manifest.json                    config (PrepareConfig), format tag, toolkit version,
                                           one entry per subject (rebuilt from the folders)
    CACHE/subjects/<key>/image.npy         float16 (T, Z, C, C) standardized canvas image
    CACHE/subjects/<key>/labels.npy        uint8 (L, Z, C, C) nearest-resampled labels (labelled only)
    CACHE/subjects/<key>/labels_native.npy uint8 (X, Y, Z, L) original-grid labels (labelled only)
    CACHE/subjects/<key>/meta.json         geometry, statistics, heart centre, slice positions, ...
                                           (:class:`cmrssp.data.subject_meta.SubjectMeta`)

C = ``config.canvas_size``, T frames, Z slices, L label volumes (ED, ES, ...). Each subject folder
is written with :func:`cmrssp.atomic.atomic_directory`: it appears complete or not at all, so a
folder that exists is done, and an interrupted prepare resumes where it stopped.

Preprocessing, faithful to the study (protocol 3.3, 3.4, 3.5, 3.6, 7.18):

1. Content box: crop the all-zero border rows/columns (zero at every z and t). The crop is the
   "image" whose centre the study scales about (its reformatting cropped the same border).
2. Subtract the global minimum of the cropped 4D image.
3. Subject statistics of the cropped, min-shifted 4D image: mean, unbiased std (ddof=1), min (0)
   and max; the subtracted minimum is kept too.
4. Resample every (z, t) slice of the cropped min-shifted array onto the C x C canvas at
   ``config.spacing`` with ``F.grid_sample(mode="bicubic", padding_mode="zeros",
   align_corners=False)`` in float32 (labels: ``mode="nearest"``).
5. Standardize, (x - mean) / std, and store as float16. Canvas pixels outside the field of view
   hence hold -mean/std (meta ``background_value``, as upstream, protocol 7.18);
   ``standardized_max`` = (max - mean) / std is DINO's solarization threshold (protocol 7.6).

Geometry, per in-plane axis i in {0, 1} (data-formats.md 2.4): f_i = spacing / s_i (s_i the column
norms of the subject's affine, resolved from each file's affine and pixdim by the one rule of
:mod:`cmrssp.data.geometry` and recorded in meta ``geometry``; meta ``source_header`` keeps the
image file's own header geometry fields so that exports overlay on it), N_i the cropped length, b_i the crop start. Canvas index k in [0, C) maps
to native index x = f_i (k + 0.5 - C/2) + N_i/2 - 0.5 + b_i = scale_i k + offset_i, i.e. a pure
scale about the centre of the cropped image with pixel-centre (align_corners=False) alignment.
The network's evaluation grid of size S is the centred sub-grid, canvas indices
[(C-S)/2, (C+S)/2): it equals resampling the native image directly to S x S about the image
centre, as the study's prediction transform does (protocol 5.3). ``canvas_affine`` = affine @ M,
with M mapping canvas (k0, k1, z) to native (x0, x1, z), keeps world coordinates.

Heart centre (protocol 3.4): centre of the smallest enclosing circle of every foreground pixel
(union over slices and label volumes), in native index coordinates, and mapped to the canvas.

Slice order (protocol 2.2, 7.8): the study reoriented stacks so that slice 0 is the base; we
never reorient (data-formats.md 2.1) and instead store ``base_first`` and the PCL positions
``slice_positions`` = rank_from_base / n_slices, in [0, (n-1)/n].
"""

from __future__ import annotations

import functools
import multiprocessing
import warnings
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from cmrssp import __version__
from cmrssp.atomic import atomic_directory, save_npy, write_json
from cmrssp.config import PrepareConfig, to_dict
from cmrssp.data.enclosing_circle import smallest_enclosing_circle
from cmrssp.data.geometry import in_memory_geometry, voxel_spacing
from cmrssp.data.subject import Notice, Subject
from cmrssp.data.subject_meta import (  # the cache format
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    META,
    SUBJECTS,
    CanvasGrid,
    GeometryRecord,
    IntensityStats,
    SubjectMeta,
    read_manifest,
)
from cmrssp.errors import InputError

# Anatomical base -> apex direction of the left ventricle in RAS+ world coordinates: towards the
# patient's left (-x), anterior (+y) and inferior (-z). Only its sign against the slice axis is
# used, so a rough direction is enough.
BASE_TO_APEX_RAS = np.array([-0.55, 0.55, -0.63]) / np.linalg.norm([-0.55, 0.55, -0.63])

# The label-based slice order is trusted only when the area-weighted slice centroid sits at
# least this fraction of the labelled slice span away from the span's midpoint.
LABEL_ORDER_MIN_ASYMMETRY = 0.02

# grid_sample's output for this many 2D slices at a time: bounds the float32 working memory.
_RESAMPLE_CHUNK = 64


@dataclass
class PreparedSubject:
    """What :func:`prepare_subject` produces for one subject (the content of its cache folder)."""

    key: str
    image: np.ndarray  # float16 (T, Z, C, C)
    labels: np.ndarray | None  # uint8 (L, Z, C, C)
    labels_native: np.ndarray | None  # uint8 (X, Y, Z, L)
    meta: SubjectMeta


@dataclass
class PrepareSummary:
    """Outcome of :func:`prepare_cache`: keys prepared now, keys skipped (already in the cache)."""

    cache_dir: Path
    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # load + prepare + write, per key
    notices: "NoticeBoard" = field(default_factory=lambda: NoticeBoard())

    @property
    def seconds_per_subject(self) -> float:
        return float(np.mean(list(self.seconds.values()))) if self.seconds else 0.0

    def describe(self) -> str:
        lines = [
            f"{self.cache_dir}: prepared {len(self.prepared)}, skipped {len(self.skipped)} "
            f"(already there), {self.seconds_per_subject:.2f} s per prepared subject"
        ]
        return "\n".join(lines + self.notices.summary())

    __str__ = describe


class NoticeBoard:
    """Reports each reader finding once per dataset and kind, as a warning naming its first file,
    and counts the rest (a real dataset repeats one header quirk in every file)."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], str] = {}
        self.keys: dict[tuple[str, str], list[str]] = {}

    def add(self, dataset: str, key: str, notices: Iterable[Notice]) -> None:
        for notice in notices:
            slot = (dataset, notice.kind)
            if slot not in self.first:
                self.first[slot] = notice.message
                warnings.warn(
                    f"{notice.message} [{dataset}: reported once; further subjects with this finding are counted]",
                    UserWarning, stacklevel=2,
                )
            self.keys.setdefault(slot, []).append(key)

    def summary(self) -> list[str]:
        """One line per (dataset, kind): how many subjects, and the first of them."""
        return [
            f"  {dataset}: {len(keys)} subject{'s' * (len(keys) != 1)} with {kind} (first {keys[0]}, reported above)"
            for (dataset, kind), keys in sorted(self.keys.items())
        ]


# ----------------------------------------------------------------------------------------------
# Geometry


def content_box(image: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """Start/stop indices of the in-plane region inside the all-zero border of (X, Y, Z, T)."""
    nonzero = np.any(image != 0, axis=(2, 3))
    rows = np.flatnonzero(nonzero.any(axis=1))
    cols = np.flatnonzero(nonzero.any(axis=0))
    if rows.size == 0:
        return (0, image.shape[0]), (0, image.shape[1])
    return (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


def canvas_grid(
    spacing_native: np.ndarray, box: tuple[tuple[int, int], tuple[int, int]], config: PrepareConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset), each shape (2,): canvas index k -> native index scale * k + offset."""
    canvas = config.canvas_size
    scale = config.spacing / np.asarray(spacing_native[:2], dtype=np.float64)
    length = np.array([box[0][1] - box[0][0], box[1][1] - box[1][0]], dtype=np.float64)
    start = np.array([box[0][0], box[1][0]], dtype=np.float64)
    offset = scale * (0.5 - canvas / 2.0) + length / 2.0 - 0.5 + start
    return scale, offset


def canvas_affine(affine: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """affine @ M, with M mapping canvas (k0, k1, z, 1) to native (x0, x1, z, 1)."""
    matrix = np.eye(4)
    matrix[0, 0], matrix[1, 1] = scale
    matrix[0, 3], matrix[1, 3] = offset
    return np.asarray(affine, dtype=np.float64) @ matrix


def resample_to_canvas(
    slices: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    start: tuple[int, int],
    canvas: int,
    mode: str,
) -> np.ndarray:
    """Resample 2D slices (B, N0, N1) of a cropped image onto the canvas, float32 (B, C, C).

    ``start`` is the native index of the crop's first pixel, so canvas k samples the cropped
    array at x - start. grid_sample takes input (1, B, H=N0, W=N1) and a grid whose last axis is
    (W, H) = (axis 1, axis 0) in normalized align_corners=False units, u = (2x + 1) / N - 1;
    output (1, B, C, C) is then indexed [k0, k1], like the native (x0, x1).
    """
    lengths = slices.shape[1:]
    k = np.arange(canvas, dtype=np.float64)
    normalized = [
        (2.0 * (scale[i] * k + offset[i] - start[i]) + 1.0) / lengths[i] - 1.0 for i in (0, 1)
    ]
    grid = np.empty((1, canvas, canvas, 2), dtype=np.float32)
    grid[0, :, :, 0] = normalized[1][None, :]
    grid[0, :, :, 1] = normalized[0][:, None]
    grid_tensor = torch.from_numpy(grid)
    out = np.empty((slices.shape[0], canvas, canvas), dtype=np.float32)
    for first in range(0, slices.shape[0], _RESAMPLE_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(slices[first : first + _RESAMPLE_CHUNK], dtype=np.float32))
        sampled = F.grid_sample(
            chunk[None], grid_tensor, mode=mode, padding_mode="zeros", align_corners=False
        )
        out[first : first + chunk.shape[0]] = sampled[0].numpy()
    return out


# ----------------------------------------------------------------------------------------------
# Heart centre and slice order


def heart_circle(labels: np.ndarray) -> tuple[list[float], float] | None:
    """Smallest enclosing circle of all foreground pixels of (X, Y, Z, L) labels, projected onto
    the image plane: ([x0, x1] centre in native index coordinates, radius in pixels), or None."""
    mask = np.any(labels > 0, axis=(2, 3))
    points = np.argwhere(mask).astype(np.float64)
    if len(points) == 0:
        return None
    circle = smallest_enclosing_circle(points)
    return [circle.x, circle.y], circle.radius


def base_first_from_labels(labels: np.ndarray, label_phases: tuple[str, ...]) -> bool | None:
    """Is slice 0 the base end, judged from the ED (else first) label volume? None if unclear.

    Cross-sections shrink toward the apex, so the area-weighted slice centroid lies on the base
    side of the midpoint of the labelled slice range.
    """
    volume = label_phases.index("ED") if "ED" in label_phases else 0
    area = np.count_nonzero(labels[..., volume], axis=(0, 1)).astype(np.float64)  # (Z,)
    labelled = np.flatnonzero(area)
    if labelled.size < 2:
        return None
    centroid = float((np.arange(area.size) * area).sum() / area.sum())
    midpoint = (labelled[0] + labelled[-1]) / 2.0
    asymmetry = midpoint - centroid
    if abs(asymmetry) < LABEL_ORDER_MIN_ASYMMETRY * (labelled[-1] - labelled[0]):
        return None
    return bool(asymmetry > 0)


def base_first_from_affine(affine: np.ndarray) -> bool:
    """Is slice 0 the base end, judged from the slice axis direction in world (RAS+) space?"""
    direction = np.asarray(affine, dtype=np.float64)[:3, 2]
    direction = direction / np.linalg.norm(direction)
    return bool(direction @ BASE_TO_APEX_RAS > 0)


def slice_positions(n_slices: int, base_first: bool) -> list[float]:
    """PCL position label per stored slice index: rank from the base / n (protocol 2.2)."""
    ranks = np.arange(n_slices) if base_first else np.arange(n_slices)[::-1]
    return [float(rank) / n_slices for rank in ranks]


# ----------------------------------------------------------------------------------------------
# One subject


def prepare_subject(subject: Subject, config: PrepareConfig) -> PreparedSubject:
    """Resample, standardize and describe one subject (see the module docstring for the steps)."""
    started = time.perf_counter()
    subject.validate()
    where = subject.source[0] if subject.source else subject.key
    config = config.validate()
    image = subject.image
    n_x, n_y, n_slices, n_frames = image.shape
    canvas = config.canvas_size

    box = content_box(image)
    (b0, e0), (b1, e1) = box
    cropped = image[b0:e0, b1:e1]
    minimum = float(cropped.min())
    shifted = cropped - np.float32(minimum)
    if shifted.size < 2:
        raise InputError(where, "image has fewer than 2 voxels inside its content box")
    mean = float(shifted.mean(dtype=np.float64))
    std = float(shifted.std(ddof=1, dtype=np.float64))
    maximum = float(shifted.max())
    if not std > 0:
        raise InputError(where, "image is constant (standard deviation 0); nothing to standardize")
    standardized_max = (maximum - mean) / std
    if standardized_max > np.finfo(np.float16).max / 2:
        raise InputError(where, f"intensity range too extreme for float16 ((max - mean) / std = {standardized_max:.3g})")

    spacing_native = voxel_spacing(subject.affine)
    geometry = subject.geometry or in_memory_geometry(subject.affine, where)
    scale, offset = canvas_grid(spacing_native, box, config)

    # (X', Y', Z, T) -> (T * Z, X', Y'): one 2D slice per (t, z), frame-major like image.npy.
    planes = shifted.transpose(3, 2, 0, 1).reshape(n_frames * n_slices, e0 - b0, e1 - b1)
    resampled = resample_to_canvas(planes, scale, offset, (b0, b1), canvas, "bicubic")
    resampled -= np.float32(mean)
    resampled /= np.float32(std)
    canvas_image = resampled.astype(np.float16).reshape(n_frames, n_slices, canvas, canvas)

    labels = labels_native = None
    circle = None
    base_first = None
    base_first_source = "affine"
    if subject.labelled:
        labels_native = np.ascontiguousarray(subject.labels, dtype=np.uint8)
        n_volumes = labels_native.shape[3]
        label_planes = labels_native[b0:e0, b1:e1].transpose(3, 2, 0, 1)
        label_planes = label_planes.reshape(n_volumes * n_slices, e0 - b0, e1 - b1)
        sampled = resample_to_canvas(label_planes, scale, offset, (b0, b1), canvas, "nearest")
        labels = np.rint(sampled).astype(np.uint8).reshape(n_volumes, n_slices, canvas, canvas)
        circle = heart_circle(labels_native)
        base_first = base_first_from_labels(labels_native, tuple(subject.label_phases))
        if base_first is not None:
            base_first_source = "labels"
    if base_first is None:
        base_first = base_first_from_affine(subject.affine)

    centre_native = centre_canvas = radius_mm = None
    if circle is not None:
        centre_native = [float(c) for c in circle[0]]
        centre_canvas = [float((centre_native[i] - offset[i]) / scale[i]) for i in (0, 1)]
        radius_mm = float(circle[1] * np.mean(spacing_native[:2]))

    start = (canvas - config.size) // 2
    meta = SubjectMeta(
        format=FORMAT,
        version=FORMAT_VERSION,
        key=subject.key,
        dataset=subject.dataset,
        subject_id=subject.subject_id,
        vendor=subject.vendor,
        pathology=subject.pathology,
        source=tuple(str(s) for s in subject.source),
        extra=_jsonable(subject.extra),
        ed=None if subject.ed is None else int(subject.ed),
        es=None if subject.es is None else int(subject.es),
        label_frames=tuple(int(t) for t in subject.label_frames) if subject.labelled else (),
        label_phases=tuple(str(p) for p in subject.label_phases) if subject.labelled else (),
        labelled=subject.labelled,
        n_frames=n_frames,
        n_slices=n_slices,
        config=config,
        spacing=config.spacing,
        size=config.size,
        canvas=canvas,
        evaluation_window=(start, start + config.size),
        native_shape=(n_x, n_y, n_slices, n_frames),
        spacing_native=tuple(spacing_native.tolist()),
        affine=_matrix(subject.affine),
        geometry=GeometryRecord(
            mode=geometry.mode, chosen=geometry.chosen, finding=geometry.finding,
            affine_spacing=tuple(geometry.affine_spacing), header_spacing=tuple(geometry.header_spacing),
            affine_source=geometry.affine_source, file=geometry.path,
        ),
        geometry_finding=geometry.finding,
        source_header=geometry.source_header or None,
        notices=tuple(notice.kind for notice in subject.notices),
        content_box=(box[0], box[1]),
        grid=CanvasGrid(scale=tuple(scale.tolist()), offset=tuple(offset.tolist())),
        canvas_affine=_matrix(canvas_affine(subject.affine, scale, offset)),
        stats=IntensityStats(mean=mean, std=std, min=0.0, max=maximum, subtracted_minimum=minimum),
        background_value=-mean / std,
        standardized_max=standardized_max,
        heart_centre_native=None if centre_native is None else tuple(centre_native),
        heart_centre_canvas=None if centre_canvas is None else tuple(centre_canvas),
        heart_radius_mm=radius_mm,
        base_first=base_first,
        base_first_source=base_first_source,
        slice_positions=tuple(slice_positions(n_slices, base_first)),
        prepare_seconds=round(time.perf_counter() - started, 4),
    )
    return PreparedSubject(subject.key, canvas_image, labels, labels_native, meta)


def write_subject(prepared: PreparedSubject, cache_dir: str | os.PathLike) -> Path:
    """Write one prepared subject to ``cache_dir/subjects/<key>`` atomically; return the folder."""
    folder = Path(cache_dir) / SUBJECTS / _checked_key(prepared.key)
    with atomic_directory(folder) as temporary:
        save_npy(temporary / "image.npy", prepared.image)
        if prepared.labels is not None:
            save_npy(temporary / "labels.npy", prepared.labels)
            save_npy(temporary / "labels_native.npy", prepared.labels_native)
        write_json(temporary / META, prepared.meta.to_dict())
    return folder


# ----------------------------------------------------------------------------------------------
# The driver


def prepare_cache(
    refs: Iterable[Any],
    cache_dir: str | os.PathLike,
    config: PrepareConfig,
    loader: Callable[[Any], Subject] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> PrepareSummary:
    """Prepare every subject of ``refs`` into ``cache_dir``, skipping those already there.

    Args:
        refs: objects with a ``.key`` (``sources.SubjectRef``, or ``Subject`` records themselves
            with ``loader=lambda s: s``); keys must be unique.
        cache_dir: the cache folder; a second call with other refs (e.g. another dataset) adds
            to the same cache, provided the PrepareConfig is the same.
        config: resampling settings, stored in the manifest and in every subject's meta.
        loader: ref -> Subject; default ``cmrssp.data.sources.load_subject``. With workers > 1
            it must be picklable (a module-level function).
        workers: processes that each load, prepare and write whole subjects.
        progress: show a tqdm progress bar.

    Raises:
        InputError: duplicate keys, a cache prepared with another config, or a bad subject.
            Subjects finished before the error stay in the cache (and in the manifest); the
            failing one leaves nothing behind.
    """
    config = config.validate()
    if loader is None:
        from cmrssp.data.sources import load_subject

        loader = functools.partial(load_subject, geometry=config.geometry)
    cache_dir = Path(cache_dir)
    refs = list(refs)
    keys = [str(ref.key) for ref in refs]
    duplicates = sorted(key for key, count in Counter(keys).items() if count > 1)
    if duplicates:
        raise InputError(None, f"duplicate subject keys in the input: {duplicates[:5]}")
    for key in keys:
        _checked_key(key)

    _check_manifest_config(cache_dir, config)
    subjects_dir = cache_dir / SUBJECTS
    subjects_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(subjects_dir)
    entries = _scan_subjects(cache_dir, config)
    _write_manifest(cache_dir, config, entries)

    summary = PrepareSummary(cache_dir)
    todo = []
    for ref in refs:
        if str(ref.key) in entries:
            summary.skipped.append(str(ref.key))
        else:
            todo.append(ref)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="prepare", unit="subject", disable=not progress or not todo)

    def finished(key: str, seconds: float, dataset: str, notices: tuple[Notice, ...]) -> None:
        summary.notices.add(dataset, key, notices)
        summary.prepared.append(key)
        summary.seconds[key] = seconds
        entries[key] = _manifest_entry(subjects_dir / key)[0]
        _write_manifest(cache_dir, config, entries)
        bar.update(1)

    try:
        if workers <= 1 or len(todo) <= 1:
            for ref in todo:
                outcome = _prepare_and_write(ref, cache_dir, config, loader)
                finished(*outcome)
        else:
            _run_pool(todo, cache_dir, config, loader, workers, finished)
    except BaseException:
        # Other workers may have finished subjects after the failing one: record what is on disk.
        try:
            _write_manifest(cache_dir, config, _scan_subjects(cache_dir, config))
        except InputError:
            pass  # the original error matters more
        raise
    finally:
        bar.close()
    return summary


def prepare_datasets(
    datasets: Iterable[tuple[str, str | os.PathLike]],
    cache_dir: str | os.PathLike,
    config: PrepareConfig,
    workers: int = 1,
    progress: bool = True,
) -> PrepareSummary:
    """Discover the subjects of each (dataset, root) pair and prepare them all into one cache
    (e.g. M&Ms and M&Ms-2 form the study's one cohort, protocol 3.1)."""
    from cmrssp.data.sources import discover

    refs = [ref for dataset, root in datasets for ref in discover(dataset, root)]
    return prepare_cache(refs, cache_dir, config, workers=workers, progress=progress)


def _run_pool(todo, cache_dir, config, loader, workers, finished) -> None:
    # "spawn": a forked child inherits the parent's OpenMP thread pool state, which can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(_prepare_and_write, ref, cache_dir, config, loader) for ref in todo]
        try:
            for future in as_completed(futures):
                finished(*future.result())
        except BaseException:
            # Running subjects finish (atomically) while leaving the pool; queued ones never start.
            for future in futures:
                future.cancel()
            raise


def _init_worker() -> None:
    torch.set_num_threads(1)


def _prepare_and_write(ref, cache_dir: Path, config: PrepareConfig, loader) -> tuple[str, float, str, tuple]:
    started = time.perf_counter()
    subject = loader(ref)
    if subject.key != str(ref.key):
        where = subject.source[0] if subject.source else ref.key
        raise InputError(where, f"the loader returned subject {subject.key} for {ref.key}")
    write_subject(prepare_subject(subject, config), cache_dir)
    return subject.key, time.perf_counter() - started, subject.dataset, tuple(subject.notices)


def _checked_key(key: str) -> str:
    if not key or key.startswith(".") or "/" in key or "\\" in key or os.sep in key:
        raise InputError(None, f"subject key {key!r} cannot name a cache folder")
    return key


def _check_manifest_config(cache_dir: Path, config: PrepareConfig) -> None:
    path = cache_dir / MANIFEST
    if not path.exists():
        return
    manifest = read_manifest(path)
    existing = manifest["config"]
    if existing != to_dict(config):
        raise InputError(
            path,
            f"this cache was prepared with {existing}, not {to_dict(config)}; "
            "use another cache folder (subjects of one cache share one geometry)",
        )


def _remove_stale_temporaries(subjects_dir: Path) -> None:
    """Remove temporary folders that a killed prepare (SIGKILL, power loss) left behind."""
    for path in subjects_dir.glob(".tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


def _scan_subjects(cache_dir: Path, config: PrepareConfig) -> dict[str, dict[str, Any]]:
    """Manifest entries of the complete subject folders on disk, checking their config."""
    entries = {}
    for folder in sorted((cache_dir / SUBJECTS).iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        entry, subject_config = _manifest_entry(folder)
        if subject_config != config:
            raise InputError(
                folder / META, f"subject prepared with {to_dict(subject_config)}, this cache uses {to_dict(config)}"
            )
        entries[entry["key"]] = entry
    return entries


def _manifest_entry(folder: Path) -> tuple[dict[str, Any], PrepareConfig]:
    """(manifest entry, PrepareConfig) of one complete subject folder."""
    path = folder / META
    meta = SubjectMeta.read(path)
    if meta.key != folder.name:
        raise InputError(path, f"meta key {meta.key} does not match its folder")
    entry = meta.manifest_entry()
    entry["bytes"] = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    return entry, meta.config


def _write_manifest(cache_dir: Path, config: PrepareConfig, entries: dict[str, dict[str, Any]]) -> None:
    subjects = [entries[key] for key in sorted(entries)]
    write_json(
        cache_dir / MANIFEST,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "toolkit_version": __version__,
            "config": to_dict(config),
            "subjects": subjects,
        },
    )


def _matrix(matrix: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """A (4, 4) matrix as nested tuples of Python floats (as JSON stores it)."""
    return tuple(tuple(row) for row in np.asarray(matrix, dtype=np.float64).tolist())


def _jsonable(value: Any) -> Any:
    """Subject.extra as plain JSON types (numpy scalars/arrays converted, others as strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
