"""``run.py predict``: segment new cine scans with a fine-tuned run, and measure them (issue 13).

No cache is written and no ground truth is needed. Each input scan is read by the reader of its
layout (:mod:`cmrssp.data.sources`) or, for a loose NIfTI file, as one cine (a 3D file is one
frame); it is preprocessed in memory exactly as the run's training cache was
(:func:`cmrssp.data.prepare.prepare_subject` with that cache's ``PrepareConfig``: spacing, input
size, canvas, geometry rule); every frame x slice of the network window is predicted (head 0,
protocol 5.2) and its 4-channel logits are mapped back onto the native grid by the inverse of the
preprocessing resample (:func:`cmrssp.prediction.logits_to_native`, bicubic, border padding,
protocol 5.3), where the argmax gives the labels. Output, in ``out_dir``::

    <subject>_pred.nii.gz   uint8 labels (X, Y, Z, T) with the input file's own header geometry
                            (shape, sform, qform, their codes, pixdim incl. the frame time, units),
                            canonical values (1 LV, 2 MYO, 3 RV) or the source dataset's own
    volumes.csv             subject, frame, lv_ml, myo_ml, rv_ml: every frame of every subject
    measures.csv            subject, ed_frame, es_frame, ed_es_source, then the columns of
                            :meth:`cmrssp.measures.CardiacMeasures.as_row`

ED/ES come from the dataset when its reader knows both (M&Ms CSV, ACDC Info.cfg, ...:
``ed_es_source`` "dataset"), else from the predicted LV volume curve (largest/smallest LV,
"curve"); a single-frame scan, or one with no LV predicted in any frame, has none ("none", the
measures left empty). Height and weight (``Subject.extra``, e.g. ACDC, M&Ms) index the volumes
to body surface area.

Subjects are processed one after another; each label file is written atomically, and both tables
are rewritten (atomically) after each subject, so after an error the output folder holds exactly
the subjects finished before it, and nothing of the failing one. The tables describe the
subjects of one call; an earlier call's ``<subject>_pred.nii.gz`` of the same name is replaced.

A folder input is read in the layout given by ``dataset``; without one it is detected from the
metadata file each layout requires (:func:`detect_layout`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from cmrssp.config import PrepareConfig
from cmrssp.data.cache import open_cache
from cmrssp.data.nifti import NIFTI_SUFFIXES, read_image, strip_nifti_suffix, write_nifti
from cmrssp.data.prepare import MANIFEST, PreparedSubject, prepare_subject
from cmrssp.data.source_header import write_like_source
from cmrssp.data.sources import SubjectRef, discover, find_files, geometry_notices, load_subject
from cmrssp.data.sources_mnms import CSV_PATTERN as MNMS_CSV_PATTERN
from cmrssp.data.sources_mnms2 import CSV_NAME as MNMS2_CSV_NAME
from cmrssp.data.subject import DATASETS, Subject
from cmrssp.data.subject_meta import SubjectMeta
from cmrssp.errors import InputError
from cmrssp.evaluate import CHECKPOINTS, LABEL_CONVENTIONS, load_run_model, source_label_lookup
from cmrssp.measures import ROW_COLUMNS, cardiac_measures, detect_ed_es, volume_curve
from cmrssp.prediction import first_max_class, logits_to_native, predict_window_logits
from cmrssp.presets import FinetuneConfig
from cmrssp.run_folder import RunFolder
from cmrssp.table import write_csv
from cmrssp.train import Precision, resolve_device, resolve_precision

VOLUME_COLUMNS = ("subject", "frame", "lv_ml", "myo_ml", "rv_ml")
MEASURE_COLUMNS = ("subject", "ed_frame", "es_frame", "ed_es_source") + tuple(
    name for name in ROW_COLUMNS if name not in ("ed_frame", "es_frame"))
FOUR_DECIMALS = "{:.4f}".format  # mL, %, g: report precision
LOOSE = "folder"  # the dataset code of a loose NIfTI file: canonical labels, nothing else known


@dataclass(frozen=True)
class Scan:
    """One input scan found on disk, before it is decoded.

    Attributes:
        name: the output name (``<name>_pred.nii.gz``): the dataset's subject id, or the file
            name without its suffix for a loose file.
        where: the file (or folder) named in errors.
        ref: the reader's record of a subject of a dataset layout, or None for a loose file.
    """

    name: str
    where: Path
    ref: SubjectRef | None = None

    def load(self, geometry: str) -> Subject:
        if self.ref is not None and self.ref.dataset != LOOSE:
            return load_subject(self.ref, geometry)
        return read_loose_scan(self.where, self.name, geometry)


# ----------------------------------------------------------------------------------------------
# Inputs


def detect_layout(folder: Path) -> str:
    """The dataset layout of a folder, from the metadata file its reader requires.

    In this order: ``dataset.json`` in the folder (nnU-Net raw dataset); an ``Info.cfg`` in or
    below it (ACDC); ``dataset_information.csv`` in, below or beside it (M&Ms-2); an M&Ms
    information CSV (``*M&Ms*Dataset*nformation*.csv``) in, below or beside it (M&Ms; "beside"
    because both readers accept the ``dataset/`` folder next to its CSV); otherwise "folder":
    every NIfTI file in or below it is one loose scan. Give ``dataset`` to choose the layout.
    """
    if (folder / "dataset.json").is_file():
        return "nnunet"
    names = [path.name for path in find_files(folder, r".*")]  # as the readers see it: links followed, hidden skipped
    if "Info.cfg" in names:
        return "acdc"
    beside = [path.name for path in folder.parent.iterdir() if path.is_file()]
    if MNMS2_CSV_NAME in names + beside:
        return "mnms2"
    if any(MNMS_CSV_PATTERN.fullmatch(name) for name in names + beside):
        return "mnms"
    return LOOSE


def find_scans(inputs: Iterable[str | Path], dataset: str | None = None) -> list[Scan]:
    """Every scan of the inputs: NIfTI files (one scan each) and folders (a dataset layout).

    Raises:
        InputError: a path that does not exist or is neither a folder nor a ``.nii[.gz]`` file,
            an unknown dataset, no input at all, or two scans with one output name.
    """
    if dataset is not None and dataset not in DATASETS:
        raise InputError(None, f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    scans: list[Scan] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            layout = dataset or detect_layout(path)
            scans.extend(Scan(ref.subject_id, Path(ref.files[0][1]), ref) for ref in discover(layout, path))
        elif path.is_file():
            if not path.name.endswith(NIFTI_SUFFIXES):
                raise InputError(path, "not a NIfTI file (expected a .nii or .nii.gz file, or a dataset folder)")
            scans.append(Scan(strip_nifti_suffix(path.name), path))
        else:
            raise InputError(path, "input not found")
    if not scans:
        raise InputError(None, "no input given; name scans or dataset folders with --input")
    first: dict[str, Path] = {}
    for scan in scans:
        if scan.name in first:
            raise InputError(scan.where, f"gives the output name {scan.name!r} that {first[scan.name]} gives too; "
                                         "predict them into separate --out folders")
        first[scan.name] = scan.where
    return scans


def read_loose_scan(path: Path, name: str, geometry: str = "auto") -> Subject:
    """A loose 3D or 4D NIfTI file as an unlabelled cine subject (X, Y, Z, T); 3D gives T = 1."""
    image, image_geometry = read_image(path, ndim=(3, 4), geometry=geometry)
    if image.ndim == 3:
        image = image[..., None]
    return Subject(dataset=LOOSE, subject_id=name, image=image, affine=image_geometry.affine, source=(str(path),),
                   geometry=image_geometry, notices=geometry_notices(image_geometry)).validate()


def run_prepare_config(run_dir: Path, config: FinetuneConfig) -> PrepareConfig:
    """The preprocessing of the run's training cache (spacing, size, canvas, geometry rule).

    Read from the cache's manifest, which is the one record of it: a run given a ``--data``
    cache has the defaults in ``data.grid``.
    """
    cache_path = Path(config.data.cache)
    if not config.data.cache or not (cache_path / MANIFEST).is_file():
        raise InputError(cache_path, f"the cache run {run_dir} was trained on is gone (no {MANIFEST}); predict "
                                     "preprocesses scans as that cache did and reads how from it: restore the folder")
    return open_cache(cache_path).config


# ----------------------------------------------------------------------------------------------
# Segmentation and measures


@torch.no_grad()
def segment_cine(
    model: torch.nn.Module, prepared: PreparedSubject, batch_size: int = 64, precision: Precision | None = None
) -> np.ndarray:
    """Canonical labels of every frame of a prepared subject, on its native grid: uint8 (X, Y, Z, T).

    Whole frames are predicted together, about ``batch_size`` slices per pass, so that a short
    stack still fills a batch; the logits of each pass are mapped back and argmaxed before the
    next, which bounds memory by one pass.
    """
    meta = prepared.meta
    start, stop = (int(v) for v in meta.evaluation_window)
    n_frames, n_slices = prepared.image.shape[:2]
    n_x, n_y = (int(n) for n in meta.native_shape[:2])
    labels = np.empty((n_x, n_y, n_slices, n_frames), dtype=np.uint8)
    frames_per_pass = max(1, batch_size // n_slices)
    for first in range(0, n_frames, frames_per_pass):
        frames = prepared.image[first : first + frames_per_pass, :, start:stop, start:stop]  # (F, Z, S, S)
        count = frames.shape[0]
        slices = torch.from_numpy(np.asarray(frames, dtype=np.float32)).reshape(count * n_slices, 1, *frames.shape[2:])
        logits = predict_window_logits(model, slices, batch_size, precision)
        native = first_max_class(logits_to_native(logits, meta))  # (F * Z, X, Y)
        labels[..., first : first + count] = native.reshape(count, n_slices, n_x, n_y).permute(2, 3, 1, 0).cpu().numpy()
    return labels


def measure_subject(name: str, labels: np.ndarray, subject: Subject) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one ``volumes.csv`` row per frame, the ``measures.csv`` row) of one predicted cine."""
    spacing = subject.spacing
    curve = volume_curve(labels, spacing)  # (T, 3) mL
    volumes = [{"subject": name, "frame": frame, "lv_ml": lv, "myo_ml": myo, "rv_ml": rv}
               for frame, (lv, myo, rv) in enumerate(curve.tolist())]
    if subject.ed is not None and subject.es is not None:
        (ed, es), source = (int(subject.ed), int(subject.es)), "dataset"
    elif curve.shape[0] >= 2 and np.any(curve[:, 0] > 0):
        (ed, es), source = detect_ed_es(curve[:, 0]), "curve"
    else:
        row = dict.fromkeys(MEASURE_COLUMNS)
        row.update(subject=name, ed_es_source="none")
        return volumes, row
    measures = cardiac_measures(labels[..., ed], labels[..., es], spacing, _number(subject.extra.get("height")),
                                _number(subject.extra.get("weight")), ed_frame=ed, es_frame=es)
    row = {"subject": name, "ed_frame": ed, "es_frame": es, "ed_es_source": source}
    row.update(measures.as_row())
    return volumes, row


def _number(value: Any) -> float | None:
    """A metadata value as a number; a missing or non-numeric one (a CSV's "unknown") is None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# Output


def write_label_cine(path: Path, labels: np.ndarray, meta: SubjectMeta) -> None:
    """Write (X, Y, Z, T) uint8 labels atomically on the subject's own grid: with the source
    file's header geometry copied field by field (:func:`write_like_source`, so that a viewer
    overlays the labels on the cine), 3D when the source file is a single 3D frame. A subject
    without a source header gets its affine.
    """
    record = meta.source_header
    single = labels.shape[3] == 1 and (not record or record["dim"][0] <= 3)
    labels = labels[..., 0] if single else labels
    if not record:
        write_nifti(path, labels, np.asarray(meta.affine), dtype=np.uint8)
    else:
        write_like_source(path, labels, record, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# The command


def predict_inputs(
    run_dir: str | Path,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    checkpoint: str = "last",
    dataset: str | None = None,
    label_convention: str = "canonical",
    batch_size: int = 64,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    """Segment and measure every scan of ``inputs`` with a fine-tuned run; return ``out_dir``.

    Args:
        run_dir: a fine-tuning run folder (its ``config.json`` and ``weights-<checkpoint>.pt``;
            its training cache must still exist, for the preprocessing settings).
        inputs: NIfTI files (3D or 4D) and dataset folders.
        out_dir: where the label files and tables go (created if needed).
        checkpoint: "last" or "best".
        dataset: the layout of the folder inputs (one of ``DATASETS``); None detects it.
        label_convention: "canonical" (1 LV, 2 MYO, 3 RV) or "source" (the dataset's own values,
            e.g. ACDC's 1 RV, 3 LV) in the label files; the tables always measure canonical classes.
        batch_size: slices per forward pass.
        device: "auto", "cpu", "cuda", ...

    Raises:
        InputError: naming the run, input file or folder at fault.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for name, value, allowed in (("checkpoint", checkpoint, CHECKPOINTS),
                                 ("label convention", label_convention, LABEL_CONVENTIONS)):
        if value not in allowed:
            raise InputError(None, f"unknown {name} {value!r} (choose from {', '.join(allowed)})")
    if batch_size < 1:
        raise InputError(None, f"batch size must be at least 1, got {batch_size}")
    config = RunFolder(run_dir).config(FinetuneConfig)
    prepare_config = run_prepare_config(run_dir, config)
    scans = find_scans(inputs, dataset)
    torch_device = resolve_device(device)
    precision = resolve_precision(config.train.amp, torch_device)  # as the run trained
    model = load_run_model(run_dir, config, checkpoint, torch_device)
    out_dir.mkdir(parents=True, exist_ok=True)
    layouts = Counter("file" if scan.ref is None else scan.ref.dataset for scan in scans)
    log(f"{run_dir}: weights-{checkpoint}.pt on {torch_device}, preprocessing {prepare_config.spacing:g} mm, "
        f"{prepare_config.size} px; {len(scans)} scans ({', '.join(f'{n} {k}' for k, n in sorted(layouts.items()))})")

    started = time.perf_counter()
    volume_rows: list[dict[str, Any]] = []
    measure_rows: list[dict[str, Any]] = []
    for scan in scans:
        subject_started = time.perf_counter()
        subject = scan.load(prepare_config.geometry)
        prepared = prepare_subject(subject, prepare_config)
        labels = segment_cine(model, prepared, batch_size, precision)
        volumes, measures = measure_subject(scan.name, labels, subject)
        written = labels
        if label_convention == "source":
            written = source_label_lookup(prepared.meta, scan.where)[labels]
        path = out_dir / f"{scan.name}_pred.nii.gz"
        write_label_cine(path, written, prepared.meta)
        volume_rows.extend(volumes)
        measure_rows.append(measures)
        write_csv(out_dir / "volumes.csv", volume_rows, VOLUME_COLUMNS, FOUR_DECIMALS)
        write_csv(out_dir / "measures.csv", measure_rows, MEASURE_COLUMNS, FOUR_DECIMALS)
        n_x, n_y, n_slices, n_frames = labels.shape
        log(f"{path}: {n_frames} frames x {n_slices} slices of {n_x} x {n_y} "
            f"(ED/ES from {measures['ed_es_source']}, {time.perf_counter() - subject_started:.1f} s)")
    seconds = time.perf_counter() - started
    log(f"{out_dir}: {len(scans)} label files, volumes.csv and measures.csv ({seconds / len(scans):.1f} s per subject)")
    return out_dir
