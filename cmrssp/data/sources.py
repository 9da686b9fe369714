"""Readers for real cine datasets: discover subjects cheaply, then decode one into a ``Subject``.

Two stages (architecture.md, data pipeline): ``discover`` walks a dataset root, checks its
metadata files (CSV, Info.cfg, dataset.json) and returns picklable ``SubjectRef`` records that hold
only paths and metadata; ``load_subject`` decodes one reference into a validated ``Subject``, so
decoding can run in worker processes. Each dataset lives in ``sources_<dataset>.py`` with a
``discover(root)`` and a ``load(ref)``; this module dispatches to them and holds the plumbing they
share (root checks, file search, CSV tables, frame matching). Layouts and label conventions are in
data-formats.md section 1; the reading recipe (no reorientation) in section 2; voxel geometry
follows the one rule of :mod:`cmrssp.data.geometry`, chosen by ``geometry``.

Raw files are only ever read, never written.
"""

from __future__ import annotations

import csv
import importlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cmrssp.data.geometry import Geometry, check_mode
from cmrssp.data.nifti import read_image, read_labels
from cmrssp.data.subject import DATASETS, Notice, Subject
from cmrssp.errors import InputError

__all__ = ["DATASETS", "SubjectRef", "discover", "load_subject"]


@dataclass(frozen=True)
class SubjectRef:
    """A subject found on disk, before any image is decoded (cheap, hashable, picklable).

    Attributes:
        dataset: one of ``DATASETS``.
        subject_id: the dataset's own id (``A0S9V9``, ``001``, ``patient001``, ...).
        files: ``(role, path)`` pairs, e.g. ``("image", ".../A0S9V9_sa.nii.gz")``.
        meta: ``(key, value)`` pairs of metadata read during discovery (CSV row values, Info.cfg
            entries, label maps); values are str, int, float, bool, None or tuples of those, so
            the record stays hashable.
    """

    dataset: str
    subject_id: str
    files: tuple[tuple[str, str], ...]
    meta: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """Same as ``Subject.key``: ``f"{dataset}-{subject_id}"``."""
        return f"{self.dataset}-{self.subject_id}"

    def path(self, role: str) -> Path | None:
        """The first file with this role, or None."""
        for name, value in self.files:
            if name == role:
                return Path(value)
        return None

    def paths(self, role: str) -> list[Path]:
        """All files with this role, in stored order."""
        return [Path(value) for name, value in self.files if name == role]

    def get(self, key: str, default: Any = None) -> Any:
        """One metadata value."""
        for name, value in self.meta:
            if name == key:
                return value
        return default

    @property
    def meta_dict(self) -> dict[str, Any]:
        return dict(self.meta)


def _reader(dataset: str, where: str | os.PathLike | None):
    if dataset not in DATASETS:
        raise InputError(where, f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return importlib.import_module(f"cmrssp.data.sources_{dataset}")


def discover(dataset: str, root: str | os.PathLike) -> list[SubjectRef]:
    """All subjects of ``dataset`` under ``root``, sorted by subject id.

    Validates the root, the metadata files (presence, required columns/keys) and that at least one
    subject exists; raises one ``InputError`` naming the file or folder otherwise.
    """
    reader = _reader(dataset, root)
    refs = reader.discover(check_root(root))
    if not refs:
        raise InputError(root, f"no {dataset} subjects found ({reader.LOOKED_FOR})")
    refs = sorted(refs, key=lambda ref: ref.subject_id)
    for previous, current in zip(refs, refs[1:]):
        if previous.subject_id == current.subject_id:
            raise InputError(
                root,
                f"subject id {current.subject_id!r} found twice: {previous.files[0][1]} and {current.files[0][1]}",
            )
    return refs


def load_subject(ref: SubjectRef, geometry: str = "auto") -> Subject:
    """Decode one discovered subject into a validated canonical ``Subject``.

    ``geometry`` is the rule for voxel geometry ("auto", "affine", "header";
    :mod:`cmrssp.data.geometry`); findings come back as ``Subject.notices``.
    """
    where = ref.files[0][1] if ref.files else None
    subject = _reader(ref.dataset, where).load(ref, check_mode(geometry))
    return subject.validate()


# ---------------------------------------------------------------------------------------------
# Plumbing shared by the per-dataset readers.


def check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise InputError(path, "dataset folder not found")
    if not path.is_dir():
        raise InputError(path, "expected a dataset folder, found a file")
    return path


def _visible(path: Path, root: Path) -> bool:
    """Skip hidden files and folders (``.DS_Store``, macOS ``._*`` resource forks, ``.git``)."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def find_files(root: Path, pattern: str | re.Pattern[str]) -> list[Path]:
    """Files under ``root`` (recursively) whose name fully matches ``pattern``, sorted.

    Symlinked folders are followed (a dataset is often a folder of links to patient folders kept
    elsewhere), each real folder once, so a link loop cannot recurse forever.
    """
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    found, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        for name in files:
            path = Path(folder) / name
            if regex.fullmatch(name) and path.is_file() and _visible(path, root):
                found.append(path)
    return sorted(found)


def nifti_pattern(stem_regex: str) -> re.Pattern[str]:
    """A regex matching ``<stem>.nii`` or ``<stem>.nii.gz``; the stem is group 1."""
    return re.compile(rf"({stem_regex})\.nii(?:\.gz)?")


def read_csv_table(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    """Rows of a CSV as dicts with stripped keys and values; all-empty rows are dropped.

    Raises InputError naming the CSV when it cannot be read or lacks a required column. The
    stdlib reader is used on purpose (no pandas); an Excel export's padding rows (``,,,,``) are
    the all-empty rows dropped here (data-formats.md 1.3).
    """
    text = None
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            text = path.read_text(encoding=encoding)
            break
        except UnicodeDecodeError:
            continue
        except OSError as error:
            raise InputError(path, f"cannot read the CSV ({error})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise InputError(path, "empty CSV file (no header row)")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in required if name not in header]
    if missing:
        raise InputError(path, f"missing column {missing[0]!r} (columns found: {', '.join(repr(h) for h in header)})")
    table = []
    for row in rows[1:]:
        values = [value.strip() for value in row]
        if not any(values):
            continue
        values += [""] * (len(header) - len(values))
        table.append(dict(zip(header, values)))
    return table


def parse_int(value: str, where: Path, what: str) -> int:
    """An integer from a metadata string; ``"12.0"`` (Excel export) is accepted."""
    try:
        number = float(value)
    except ValueError:
        raise InputError(where, f"{what} {value!r} is not an integer") from None
    if not np.isfinite(number) or number != int(number):
        raise InputError(where, f"{what} {value!r} is not an integer")
    return int(number)


def optional_value(value: str | None) -> str | int | float | None:
    """Metadata string -> int, float or str; empty / NaN -> None (JSON-friendly scalars)."""
    if value is None:
        return None
    value = value.strip()
    if value == "" or value.lower() in ("nan", "none", "na", "n/a"):
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    if not np.isfinite(number):
        return None
    return int(number) if number == int(number) and "." not in value else number


def geometry_notices(geometry: Geometry) -> tuple[Notice, ...]:
    """The notice of a file whose affine and pixdim disagree (none when they agree)."""
    if geometry.finding is None:
        return ()
    return (Notice(f"geometry:{geometry.finding}", geometry.message()),)


def read_frame_files(
    frames: Iterable[tuple[str, Path]], geometry: str, missing_cine: str
) -> tuple[np.ndarray, Geometry, dict[str, int], list[str], tuple[Notice, ...]]:
    """A subject whose cine file is missing, read from its frame files (ACDC ``_frameYY``, M&Ms-2
    ``_SA_ED``/``_SA_ES``) as a short cine in the given phase order.

    Args:
        frames: ``(phase, path)`` pairs, e.g. ED then ES; a path named twice is one frame.
        geometry: the geometry rule.
        missing_cine: the cine's file name, for the notice.

    Returns:
        ``(image (X, Y, Z, F) float32, geometry of the first file, {phase: frame index}, the
        files read, notices)``; the notices say that pretraining sees only these frames.
    """
    volumes, indices, source, index_of = [], {}, [], {}
    first_path = first_geometry = None
    for phase, path in frames:
        if path in index_of:
            indices[phase] = index_of[path]
            continue
        frame, frame_geometry = read_image(path, ndim=3, geometry=geometry)
        if first_path is None:
            first_path, first_geometry = path, frame_geometry
        else:
            check_shape(path, frame.shape, first_path, volumes[0].shape, what="frame")
            check_same_grid(path, frame_geometry.affine, first_path, first_geometry.affine)
        index_of[path] = indices[phase] = len(volumes)
        volumes.append(frame)
        source.append(str(path))
    if not volumes:
        raise InputError(None, f"no {missing_cine} and no frame file to read instead")
    notice = Notice(
        "cine-missing",
        f"{first_path.parent}: no {missing_cine}; read from its {'/'.join(indices)} frame files as a "
        f"{len(volumes)}-frame cine, so pretraining sees only those frames of it",
    )
    return np.stack(volumes, axis=3), first_geometry, indices, source, geometry_notices(first_geometry) + (notice,)


def read_phase_labels(
    label_files: Iterable[tuple[str, Path, int]],
    image_path: Path,
    image_shape: tuple[int, ...],
    affine: np.ndarray,
    geometry: str,
    source: list[str],
    lookup: np.ndarray | None = None,
) -> tuple[np.ndarray | None, tuple[int, ...], tuple[str, ...]]:
    """The 3D label files of a subject's phases, checked against its image grid.

    Args:
        label_files: ``(phase, path, frame index in the cine)`` triples, in order.
        image_path, image_shape, affine: the image the labels belong to.
        geometry: the geometry rule.
        source: the subject's list of files read; each label file is appended.
        lookup: dataset value -> canonical value (e.g. ACDC's), or None when already canonical.

    Returns:
        ``(labels uint8 (X, Y, Z, L) or None, label_frames, label_phases)``.
    """
    volumes, frames, phases = [], [], []
    for phase, path, frame in label_files:
        labels, label_geometry = read_labels(path, ndim=3, geometry=geometry)
        source.append(str(path))
        check_shape(path, labels.shape, image_path, image_shape[:3])
        check_same_grid(path, label_geometry.affine, image_path, affine)
        volumes.append(labels if lookup is None else lookup[labels])
        frames.append(frame)
        phases.append(phase)
    return (np.stack(volumes, axis=3) if volumes else None), tuple(frames), tuple(phases)


def check_shape(
    path: Path, shape: tuple[int, ...], image_path: Path, image_shape: tuple[int, ...], what: str = "label"
) -> None:
    """A label (or frame) volume must cover the image's voxel grid exactly."""
    if tuple(shape) != tuple(image_shape):
        raise InputError(
            path, f"{what} shape {tuple(shape)} does not match image shape {tuple(image_shape)} of {image_path}"
        )


def check_same_grid(path: Path, affine: np.ndarray, reference_path: Path, reference: np.ndarray) -> None:
    """Warn when a label's affine differs from its image's (the voxel grid is what is used)."""
    difference = float(np.max(np.abs(np.asarray(affine) - np.asarray(reference))))
    if difference > 1e-3:
        warnings.warn(
            f"{path}: affine differs from {reference_path} by up to {difference:.4g}; "
            "using the image's affine (labels are matched voxel by voxel)",
            UserWarning,
            stacklevel=3,
        )


def frame_difference(cine: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Mean absolute difference between a 3D frame and each cine frame, relative to the frame's
    mean absolute intensity; shape (T,). Computed frame by frame to keep memory at one frame."""
    scale = max(float(np.mean(np.abs(frame))), float(np.mean(np.abs(cine))), 1e-12)
    return np.array(
        [float(np.mean(np.abs(cine[..., t] - frame))) / scale for t in range(cine.shape[3])]
    )


# A frame file that is a copy of a cine frame differs by far less than this relative mean absolute
# difference (rounding / dtype changes); anything above means the frame is not in the cine.
FRAME_MATCH_TOLERANCE = 0.01


def match_frame(cine: np.ndarray, frame: np.ndarray, frame_path: Path, cine_path: Path) -> int:
    """Time index of ``frame`` (X, Y, Z) inside ``cine`` (X, Y, Z, T).

    Exact equality first (data-formats.md 1.3, as qcardia-data does); else the frame with the
    smallest mean absolute difference, with a warning; an InputError when even that differs by
    more than ``FRAME_MATCH_TOLERANCE`` of the mean intensity.
    """
    check_shape(frame_path, frame.shape, cine_path, cine.shape[:3], what="frame")
    for t in range(cine.shape[3]):
        if np.array_equal(cine[..., t], frame):
            return t
    differences = frame_difference(cine, frame)
    best = int(np.argmin(differences))
    if differences[best] > FRAME_MATCH_TOLERANCE:
        raise InputError(
            frame_path,
            f"matches no frame of {cine_path}: the closest, frame {best}, differs by "
            f"{100 * differences[best]:.2f}% of the mean intensity (tolerance {100 * FRAME_MATCH_TOLERANCE:g}%)",
        )
    warnings.warn(
        f"{frame_path}: no exact copy in {cine_path}; using the closest frame {best} "
        f"(relative difference {100 * differences[best]:.3f}%)",
        UserWarning,
        stacklevel=3,
    )
    return best
