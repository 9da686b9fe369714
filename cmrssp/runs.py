"""What every training command shares: the run's data and split, its saved configuration and
record, and the preamble that starts a run (:func:`start_run`).

A run folder's ``config.json`` holds the whole configuration plus a record of where it ran
(toolkit and torch versions, device, precision); ``--resume`` rebuilds the configuration from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from cmrssp import __version__
from cmrssp.config import to_dict
from cmrssp.data.cache import Cache, open_cache
from cmrssp.data.splits import Split, make_split, read_upstream_split
from cmrssp.distributed import SINGLE, Processes, barrier
from cmrssp.errors import InputError
from cmrssp.run_folder import RunFolder, RunLog, silent
from cmrssp.train import OptimizerConfig, Precision, Task, fit, resolve_device, resolve_precision, training_input_size

T = TypeVar("T")
STRATIFY_FIELDS = ("pathology", "vendor")  # subject fields of the cache's metadata a split may be stratified over


def resolve_cache(data, data_dir: Path, workers: int = 1, progress: bool = True) -> Path:
    """The run's cache folder: the one given, or the built-in synthetic cohort (made once)."""
    if data.cache:
        return Path(data.cache)
    from cmrssp.data.synthetic import prepare_synthetic

    return prepare_synthetic(data.synthetic, data.grid, data_dir=data_dir, workers=workers, progress=progress)


def study_split(data, cache: Cache) -> Split:
    """Train/valid/test of the cohort: the split file given, or one drawn over the labelled
    subjects (so pretraining and fine-tuning of one cache always share the same test set)."""
    labelled = cache.subjects(labelled=True)
    if data.split:
        return read_upstream_split(data.split, available_keys=cache.keys)
    if not labelled:
        raise InputError(cache.path, "the cache holds no labelled subject; give a --split file to say which subjects are which")
    groups = None
    if data.stratify:
        if data.stratify not in STRATIFY_FIELDS:
            raise InputError(None, f"data.stratify must be one of {', '.join(STRATIFY_FIELDS)} or empty, got {data.stratify!r}")
        groups = {key: getattr(cache.meta(key), data.stratify) for key in labelled}
        unknown = [key for key, group in groups.items() if group in (None, "")]
        if unknown:
            raise InputError(cache.path, f"cannot stratify by {data.stratify}: {len(unknown)} subjects have none "
                                         f"recorded, e.g. {unknown[:3]}")
    test = int(data.test_fraction) if data.test_fraction >= 1 else data.test_fraction  # a count from 1 on
    split = make_split(labelled, test=test, valid_fraction=data.valid_fraction, seed=data.split_seed, stratify=groups)
    if groups is not None:
        split.provenance["stratified_by"] = data.stratify
    return split


def open_run_data(config: T, data_dir: Path, processes: Processes = SINGLE, progress: bool = True) -> tuple[T, Cache]:
    """Open (preparing the synthetic cohort once if needed) the run's cache; return the config
    with the cache path filled in, and the cache. Checks the grid suits the network. With
    several processes, rank 0 prepares while the others wait."""
    if processes.enabled:
        if processes.is_main:
            resolve_cache(config.data, data_dir, progress=progress)
        barrier(processes)
    cache_dir = resolve_cache(config.data, data_dir, progress=progress)
    cache = open_cache(cache_dir)
    unet = config.unet
    for what, size in (("input size", cache.config.size), ("train.patch_size", training_input_size(config.train, cache.config.size))):
        if size % unet.size_multiple:
            raise InputError(cache_dir, f"{what} {size} is not a multiple of {unet.size_multiple}, "
                                        f"which a {unet.n_levels}-level U-Net needs")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, cache=str(cache_dir))), cache


def saved_config(cls: type[T], run_dir: Path) -> T:
    """The configuration a run folder was started with (for ``--resume``)."""
    folder = RunFolder(run_dir)
    if not folder.has_record():
        raise InputError(run_dir, f"nothing to resume (no {folder.config_file.name}); start the run without --resume")
    return folder.config(cls)


# Where a run trains and where its cache lies are not what the run is: --resume may change them.
RESUME_MAY_CHANGE = ("train.device", "data.cache")


def resume_config(cls: type[T], run_dir: Path, given: T) -> T:
    """The configuration a resumed run continues with: the one saved in ``run_dir``, with the
    device and cache of ``given``. Any other field of ``given`` that differs from the saved one is
    refused, naming each (a run continues as it started; a changed flag would be silently ignored)."""
    saved = saved_config(cls, run_dir)
    differences = [f"{name} (saved {old!r}, given {new!r})"
                   for name, old, new in config_differences(to_dict(saved), to_dict(given)) if name not in RESUME_MAY_CHANGE]
    if differences:
        raise InputError(run_dir, "--resume continues the run with its saved configuration, but the command asks for "
                                  f"{'; '.join(differences)}. Drop those flags, or start a new run with another --out")
    data = dataclasses.replace(saved.data, cache=given.data.cache or saved.data.cache)
    return dataclasses.replace(saved, data=data, train=dataclasses.replace(saved.train, device=given.train.device))


def config_differences(saved: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field name, saved value, given value) of every field that differs; tuples and
    lists compare alike, as a configuration reads back from JSON."""
    found = []
    for key in sorted(set(saved) | set(given)):
        old, new = saved.get(key), given.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += config_differences(old, new, f"{prefix}{key}.")
        elif json.dumps(old) != json.dumps(new):  # tuples and lists alike, as saved
            found.append((f"{prefix}{key}", old, new))
    return found


def run_record(kind: str, config: Any, device: torch.device, precision: Precision) -> dict[str, Any]:
    """The JSON saved as ``config.json``: the configuration and where it ran."""
    return {"kind": kind, "toolkit": __version__, "torch": str(torch.__version__), "device": str(device),
            "precision": precision.name, **to_dict(config)}


@dataclass
class StartedRun:
    """A run after the preamble every training command shares: its configuration (resumed or
    given, with the cache filled in), data, device, precision and log. ``log`` prints on rank 0
    and keeps the lines in the run's ``log.txt``; other processes say nothing."""

    kind: str  # "pretrain" or "finetune"
    folder: RunFolder
    config: Any
    cache: Cache
    device: Any  # torch.device
    precision: Precision
    processes: Processes
    log: Callable[[Any], None]

    def save_split(self, split: Split) -> None:
        """Create the folder (rank 0) with the run's ``split.json``; the log starts writing."""
        if self.processes.is_main:
            self.folder.path.mkdir(parents=True, exist_ok=True)
            split.save(self.folder.split_file)
            if isinstance(self.log, RunLog):
                self.log.open()

    def train(self, task: Task, optimizer: OptimizerConfig, resume: bool, progress: bool) -> list[dict[str, Any]]:
        """Hand ``task`` to the one training loop in this run's folder."""
        config_json = run_record(self.kind, self.config, self.device, self.precision)
        keep = self.log.warnings_kept() if isinstance(self.log, RunLog) else contextlib.nullcontext()
        with keep:
            return fit(task, self.folder.path, self.config.train, optimizer, self.device, self.precision, config_json,
                       resume=resume, progress=progress, processes=self.processes)


def start_run(kind: str, cls: type[T], config: T, run_dir: Path, resume: bool, data_dir: Path,
              processes: Processes = SINGLE, log: Callable[[Any], None] = print, progress: bool = True) -> StartedRun:
    """The preamble of every training run: the saved configuration on ``resume`` (refusing
    changed flags), the cache (the synthetic cohort prepared once), device, precision and the
    torch seed that initialises the model."""
    folder = RunFolder(run_dir)
    log = folder.logger(log) if processes.is_main else silent
    if resume:
        config = resume_config(cls, folder.path, config)
    config, cache = open_run_data(config, data_dir, processes, progress)
    device = resolve_device(config.train.device)
    precision = resolve_precision(config.train.amp, device)
    torch.manual_seed(config.train.seed)
    return StartedRun(kind, folder, config, cache, device, precision, processes, log)

