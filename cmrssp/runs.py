"""What every training command shares: the run's data, its saved configuration, its record.

A run folder's ``config.json`` holds the whole configuration plus a record of where it ran
(toolkit and torch versions, device, precision); ``--resume`` rebuilds the configuration from it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import torch

from cmrssp import __version__
from cmrssp.config import from_dict, to_dict
from cmrssp.data.cache import Cache, open_cache
from cmrssp.data.splits import Split, make_split, read_upstream_split
from cmrssp.distributed import SINGLE, Processes, barrier
from cmrssp.errors import InputError
from cmrssp.train import Precision

T = TypeVar("T")
RUN_RECORD_KEYS = ("kind", "toolkit", "torch", "device", "precision")  # written beside the config


def resolve_cache(data, data_dir: Path, workers: int = 1) -> Path:
    """The run's cache folder: the one given, or the built-in synthetic cohort (made once)."""
    if data.cache:
        return Path(data.cache)
    from cmrssp.data.synthetic import prepare_synthetic

    return prepare_synthetic(data.synthetic, data.grid, data_dir=data_dir, workers=workers)


def study_split(data, cache: Cache) -> Split:
    """Train/valid/test of the cohort: the split file given, or one drawn over the labelled
    subjects (so pretraining and fine-tuning of one cache always share the same test set)."""
    labelled = cache.subjects(labelled=True)
    if data.split:
        return read_upstream_split(data.split, available_keys=cache.keys)
    if not labelled:
        raise InputError(cache.path, "the cache holds no labelled subject; give a --split file to say which subjects are which")
    return make_split(labelled, test=data.test_fraction, valid_fraction=data.valid_fraction, seed=data.split_seed)


def open_run_data(config: T, data_dir: Path, processes: Processes = SINGLE) -> tuple[T, Cache]:
    """Open (preparing the synthetic cohort once if needed) the run's cache; return the config
    with the cache path filled in, and the cache. Checks the grid suits the network. With
    several processes, rank 0 prepares while the others wait."""
    if processes.enabled:
        if processes.is_main:
            resolve_cache(config.data, data_dir)
        barrier(processes)
    cache_dir = resolve_cache(config.data, data_dir)
    cache = open_cache(cache_dir)
    size, unet = cache.config.size, config.unet
    if size % unet.size_multiple:
        raise InputError(cache_dir, f"input size {size} is not a multiple of {unet.size_multiple}, "
                                    f"which a {unet.n_levels}-level U-Net needs")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, cache=str(cache_dir))), cache


def saved_config(cls: type[T], run_dir: Path) -> T:
    """The configuration a run folder was started with (for ``--resume``)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise InputError(run_dir, "nothing to resume (no config.json); start the run without --resume")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON ({error})") from None
    return from_dict(cls, {k: v for k, v in values.items() if k not in RUN_RECORD_KEYS}, path)


def run_record(kind: str, config: Any, device: torch.device, precision: Precision) -> dict[str, Any]:
    """The JSON saved as ``config.json``: the configuration and where it ran."""
    return {"kind": kind, "toolkit": __version__, "torch": str(torch.__version__), "device": str(device),
            "precision": precision.name, **to_dict(config)}
