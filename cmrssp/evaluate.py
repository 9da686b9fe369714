"""``run.py evaluate``: 3D Dice and HD95 of a fine-tuned run in original space (protocol 5).

For each subject of the split and each labelled volume (ED, ES): predict all slices, map the
logits back to the original grid (:mod:`cmrssp.prediction`), argmax, and score against the
original ground truth. A run's evaluation is one folder, written atomically::

    RUN/evaluation-<split>-<checkpoint>[-lcc]/
        volumes.csv        one row per volume (dataset, subject, vendor, phase, Dice/HD95 per class and mean)
        summary.json       mean, std, median, ... per metric; ED/ES pooled and separate; agreement
        measures.csv       per subject with ED and ES: volumes, EF, LV mass from the prediction and from
                           the ground truth (cmrssp.agreement; column source)
        agreement.csv      per measure: MAE, bias, 95 % limits of agreement, Pearson's r
        agreement.png      with matplotlib: Bland-Altman and scatter plot per measure
        evaluation.json    what was evaluated: weights, cache, split, options, time
        nifti/<key>_<phase>.nii.gz   with --export-nifti: predicted labels with the source file's
                           shape, sform, qform, their codes and pixdim (so a viewer overlays them)

So a folder that exists is a finished evaluation; ``evaluate`` with no run evaluates every
finished fine-tuning run that lacks one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cmrssp.agreement import (AGREEMENT_COLUMNS, AGREEMENT_FILE, MEASURES_FILE, plot_agreement, read_measures_csv,
                               run_agreement, subject_measure_rows, write_rows_csv)
from cmrssp.atomic import atomic_directory, write_json
from cmrssp.data.cache import Cache, open_cache
from cmrssp.data.nifti import write_nifti
from cmrssp.data.source_header import write_like_source
from cmrssp.data.sources_acdc import ACDC_TO_CANONICAL
from cmrssp.data.splits import Split
from cmrssp.data.subject_meta import SubjectMeta
from cmrssp.errors import InputError
from cmrssp.metrics import dice_3d, hd95, largest_component_per_class
from cmrssp.models import UNet, load_weight_file
from cmrssp.prediction import VolumePrediction, predict_subject
from cmrssp.presets import FinetuneConfig
from cmrssp.data.subject import CLASS_NAMES
from cmrssp.results import RunEvaluation, read_volumes_csv, summarize_volumes, to_jsonable, write_volumes_csv
from cmrssp.run_folder import RunFolder, init_label
from cmrssp.train import resolve_device, resolve_precision

SPLITS = ("test", "valid")
CHECKPOINTS = ("last", "best")
LABEL_CONVENTIONS = ("canonical", "source")


@dataclass(frozen=True)
class EvaluateOptions:
    """How to evaluate a run.

    Attributes:
        split: "test" (default) or "valid".
        checkpoint: "last" (the study's default, protocol 7.16) or "best" (lowest validation loss).
        export_nifti: also write the predicted label volumes as NIfTI.
        label_convention: "canonical" (1 LV, 2 MYO, 3 RV) or "source" (the dataset's own
            values, e.g. ACDC's 1 RV, 3 LV) for the exported NIfTI files.
        largest_component: keep only the largest connected component per class (off, as the
            study: no post-processing).
        data: a cache folder to read instead of the one the run was trained on ("" = that one).
        batch_size: slices per forward pass.
        device: "auto", "cpu", "cuda", ...
    """

    split: str = "test"
    checkpoint: str = "last"
    export_nifti: bool = False
    label_convention: str = "canonical"
    largest_component: bool = False
    data: str = ""
    batch_size: int = 64
    device: str = "auto"

    def validate(self) -> "EvaluateOptions":
        for name, value, allowed in (("split", self.split, SPLITS), ("checkpoint", self.checkpoint, CHECKPOINTS),
                                     ("label convention", self.label_convention, LABEL_CONVENTIONS)):
            if value not in allowed:
                raise InputError(None, f"unknown {name} {value!r} (choose from {', '.join(allowed)})")
        if self.batch_size < 1:
            raise InputError(None, f"batch size must be at least 1, got {self.batch_size}")
        return self


def evaluation_folder(run_dir: Path, options: EvaluateOptions) -> Path:
    suffix = "-lcc" if options.largest_component else ""
    return Path(run_dir) / f"evaluation-{options.split}-{options.checkpoint}{suffix}"


def is_finetune_run(run_dir: Path) -> bool:
    """A folder holding a finished fine-tuning (or from-scratch) run."""
    return RunFolder(run_dir).is_finished("finetune")


def finished_finetunes(runs_dir: Path) -> list[Path]:
    """The finished fine-tuning runs directly inside ``runs_dir``, by name."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise InputError(runs_dir, "runs folder not found; train a run first (`python run.py finetune`)")
    return sorted(path for path in runs_dir.iterdir() if path.is_dir() and is_finetune_run(path))


def source_label_lookup(meta: SubjectMeta, where: Path) -> np.ndarray:
    """uint8 lookup canonical label -> the source dataset's own value for one subject."""
    dataset = meta.dataset
    if dataset == "acdc":
        lookup = np.empty(4, dtype=np.uint8)
        lookup[ACDC_TO_CANONICAL] = np.arange(4, dtype=np.uint8)
        return lookup
    if dataset == "nnunet":
        mapping = meta.extra.get("label_map")
        if not mapping:
            raise InputError(where, f"{meta.key}: the cache does not record the dataset's label values; "
                                    "re-run prepare, or export with the canonical convention")
        lookup = np.zeros(4, dtype=np.uint8)
        for value, canonical in sorted(((int(v), int(c)) for v, c in mapping.items()), reverse=True):
            lookup[canonical] = value  # the smallest dataset value of each class wins
        return lookup
    return np.arange(4, dtype=np.uint8)  # M&Ms, M&Ms-2 and plain folders use the canonical values


def score_volume(prediction: VolumePrediction, meta: SubjectMeta) -> dict[str, Any]:
    """One row of ``volumes.csv``: Dice (empty/empty = 1, protocol 5.1) and HD95 (mm) per class."""
    dice = dice_3d(prediction.labels, prediction.target)
    distance = hd95(prediction.labels, prediction.target, prediction.spacing)
    row: dict[str, Any] = {
        "dataset": meta.dataset, "subject": str(meta.subject_id), "key": prediction.key,
        "vendor": "" if meta.vendor is None else str(meta.vendor),
        "phase": prediction.phase, "frame": prediction.frame,
    }
    row.update({f"dice_{name}": float(value) for name, value in zip(CLASS_NAMES, dice)})
    row["dice_mean"] = float(np.mean(dice))
    row.update({f"hd95_{name}": float(value) for name, value in zip(CLASS_NAMES, distance)})
    # inf stays inf (a class missed entirely); NaN (absent in both) is left out of the mean.
    finite_or_inf = distance[~np.isnan(distance)]
    row["hd95_mean"] = float(np.mean(finite_or_inf)) if finite_or_inf.size else float("nan")
    return row


def load_run_model(run_dir: Path, config: FinetuneConfig, checkpoint: str, device: torch.device) -> UNet:
    weights = RunFolder(run_dir).weights(checkpoint)
    if not weights.is_file():
        raise InputError(weights, "weight file missing; has the run trained at least one epoch?")
    model = UNet(config.unet)
    try:
        model.load_state_dict(load_weight_file(weights))
    except RuntimeError as error:
        raise InputError(weights, f"does not fit the run's U-Net ({str(error).splitlines()[0]})") from None
    return model.to(device).eval()


def evaluate_run(run_dir: Path, options: EvaluateOptions = EvaluateOptions(), log: Callable[[str], None] = print) -> Path:
    """Evaluate one fine-tuned run; return its evaluation folder (replaced if it existed)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    options = options.validate()
    run = RunFolder(run_dir)
    config = run.config(FinetuneConfig)
    cache = open_cache(options.data or config.data.cache)
    split_path = run.split_file
    if not split_path.is_file():
        raise InputError(split_path, "missing; the run folder is incomplete")
    keys = getattr(Split.load(split_path), options.split)
    if not keys:
        raise InputError(split_path, f"the split has no {options.split} subjects")
    missing = [key for key in keys if key not in cache]
    if missing:
        raise InputError(cache.path, f"{len(missing)} {options.split} subjects of {split_path} are not in the cache: {missing[:3]}")
    unlabelled = [key for key in keys if not cache.meta(key).labelled]
    if unlabelled:
        raise InputError(cache.path, f"{options.split} subjects without ground truth: {unlabelled[:3]}")
    device = resolve_device(options.device)
    precision = resolve_precision(config.train.amp, device)  # as the run trained (the study: float32)
    model = load_run_model(run_dir, config, options.checkpoint, device)

    folder = evaluation_folder(run_dir, options)
    rows, measure_rows = [], []
    with atomic_directory(folder) as temporary:
        for key in keys:
            volumes, measures = _evaluate_subject(model, cache, key, options, precision, temporary / "nifti")
            rows.extend(volumes)
            measure_rows.extend(measures)
        write_volumes_csv(temporary / "volumes.csv", rows)
        summary = summarize_volumes(rows)
        if measure_rows:
            write_rows_csv(temporary / MEASURES_FILE, measure_rows, list(measure_rows[0]))
            agreement = run_agreement(measure_rows)
            write_rows_csv(temporary / AGREEMENT_FILE, agreement, AGREEMENT_COLUMNS)
            summary["agreement"] = {row["measure"]: {k: v for k, v in row.items() if k != "measure"} for row in agreement}
            plot_agreement(measure_rows, temporary / "agreement.png", title=f"{run_dir.name}: {options.split} subjects")
        write_json(temporary / "summary.json", to_jsonable(summary))
        write_json(temporary / "evaluation.json", {
            "run": str(run_dir), "weights": run.weights(options.checkpoint).name, "cache": str(cache.path),
            "subjects": len(keys), "volumes": len(rows), "options": asdict(options), "device": str(device),
            "precision": precision.name, "seconds": round(time.perf_counter() - started, 3),
        })
    mean = float(np.mean([row["dice_mean"] for row in rows]))
    log(f"{folder}: {len(rows)} volumes of {len(keys)} subjects, mean 3D Dice {mean:.4f} "
        f"({time.perf_counter() - started:.1f} s)")
    return folder


def _evaluate_subject(model, cache: Cache, key: str, options: EvaluateOptions, precision,
                      nifti_dir: Path) -> tuple[list[dict], list[dict]]:
    """(one score row per labelled volume, the subject's predicted and reference measures)."""
    meta = cache.meta(key)
    rows = []
    predictions = []
    for prediction in predict_subject(model, cache, key, options.batch_size, precision):
        if options.largest_component:
            prediction = dataclasses.replace(prediction, labels=largest_component_per_class(prediction.labels))
        predictions.append(prediction)
        rows.append(score_volume(prediction, meta))
        if options.export_nifti:
            labels = prediction.labels
            if options.label_convention == "source":
                labels = source_label_lookup(meta, cache.array_path(key, "meta.json"))[labels]
            export_labels(nifti_dir / f"{key}_{prediction.phase}.nii.gz", labels, meta)
    return rows, subject_measure_rows(predictions, meta)


def export_labels(path: Path, labels: np.ndarray, meta: SubjectMeta) -> None:
    """Write a (X, Y, Z) label volume in its subject's original grid, uint8.

    Every header field that places voxels (shape, sform, qform, their codes, pixdim, units) is
    copied from the subject's source file, not re-derived from the toolkit's resolved affine:
    ITK-SNAP and 3D Slicer read a real ACDC file's placeholder sform and its pixdim exactly as
    they are, and overlay the export only if it carries the same ones. A subject prepared in
    memory (no source file) gets its affine instead.
    """
    if meta.source_header:
        write_like_source(path, labels, meta.source_header, dtype=np.uint8)
    else:
        write_nifti(path, labels, np.asarray(meta.affine), dtype=np.uint8)


def run_evaluation(run_dir: Path, options: EvaluateOptions) -> RunEvaluation:
    """A finished evaluation folder read back, with what the study tables need of its run."""
    run = RunFolder(run_dir)
    config = run.config(FinetuneConfig)
    folder = evaluation_folder(run_dir, options)
    split = Split.load(run.split_file)
    return RunEvaluation(run=run.name, init=init_label(config.init), n_subjects=config.data.n_subjects,
                         n_train=len(split.train), seed=config.data.subset_seed,
                         volumes=tuple(read_volumes_csv(folder / "volumes.csv")),
                         measures=tuple(read_measures_csv(folder / MEASURES_FILE)))


def evaluate_pending(runs_dir: Path, options: EvaluateOptions = EvaluateOptions(), log=print) -> list[RunEvaluation]:
    """Evaluate every finished fine-tuning run in ``runs_dir`` without an evaluation folder for
    ``options``; return all evaluated runs (old and new), sorted by run name."""
    runs = finished_finetunes(runs_dir)
    if not runs:
        raise InputError(runs_dir, "holds no finished fine-tuning run to evaluate")
    for run in runs:
        if not evaluation_folder(run, options).is_dir():
            evaluate_run(run, options, log=log)
    return [run_evaluation(run, options) for run in runs]
