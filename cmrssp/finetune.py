"""``run.py finetune``: the from-scratch baseline and fine-tuning from pretrained weights.

Resolves everything a run needs (the data, the split and label-scarce subset, the initial
weights, the device and precision), writes the run folder (``config.json``, ``split.json``),
and hands a :class:`~cmrssp.segmentation.SegmentationTask` to the one training loop.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from cmrssp.data.cache import Cache
from cmrssp.data.slices import load_slices, resident_device
from cmrssp.data.splits import Split, label_scarce_subset
from cmrssp.distributed import SINGLE, Processes
from cmrssp.errors import InputError
from cmrssp.methods import METHODS as PRETRAINING_METHODS
from cmrssp.models import load_transferable, load_weight_file, reset_conv_norms
from cmrssp.presets import DataConfig, FinetuneConfig
from cmrssp.runs import open_run_data, resume_config, run_record, study_split
from cmrssp.segmentation import SegmentationTask
from cmrssp.train import TRANSFER_WEIGHTS, fit, resolve_device, resolve_precision


def resolve_split(data: DataConfig, cache: Cache) -> Split:
    """The fine-tuning split: the study split, then the label-scarce subset of its training pool
    (the study's published subset file where the split is the paper's and one exists for the size
    and seed, e.g. ``paper`` with 10 subjects and seed 0 is ``paper-nr10-seed0``)."""
    split = study_split(data, cache)
    unlabelled = [key for key in split.train + split.valid if not cache.meta(key)["labelled"]]
    if unlabelled:
        raise InputError(data.split or cache.path, f"subjects without labels in train/valid: {unlabelled[:5]}")
    return label_scarce_subset(split, data.n_subjects if data.n_subjects > 0 else "all", seed=data.subset_seed)


def resolve_init(init: str, runs_dir: Path) -> Path:
    """A weight file, or a pretraining method's transferable weights in the runs folder."""
    if init in PRETRAINING_METHODS:
        path = runs_dir / f"pretrain-{init}" / TRANSFER_WEIGHTS
        if not path.is_file():
            raise InputError(path, f"no {init} pretraining weights yet; run `python run.py pretrain --method {init}` first")
        return path
    return Path(init)


def default_run_name(config: FinetuneConfig) -> str:
    if not config.init:
        source = "scratch"
    elif config.init in PRETRAINING_METHODS:
        source = config.init
    else:
        source = Path(config.init).name.split(".")[0]
    n = config.data.n_subjects or "all"
    return f"finetune-{source}-n{n}-s{config.data.subset_seed}"


def run_finetune(
    config: FinetuneConfig,
    run_dir: Path | None = None,
    runs_dir: Path = Path("runs"),
    data_dir: Path = Path("data"),
    resume: bool = False,
    progress: bool = True,
    log=print,
    processes: Processes = SINGLE,
) -> Path:
    """Train one supervised run; return its folder."""
    if not processes.is_main:
        log = lambda *_: None  # noqa: E731 (only rank 0 speaks)
    run_dir = Path(run_dir) if run_dir is not None else runs_dir / default_run_name(config)
    if resume:
        config = resume_config(FinetuneConfig, run_dir, config)
        if config.init and "init_lr_factor" not in json.loads((run_dir / "config.json").read_text()):
            # saved before the factor was part of the configuration: its optimizer.lr is already the run's rate
            config = dataclasses.replace(config, init_lr_factor=1.0)
    config, cache = open_run_data(config, data_dir, processes)
    size = cache.config.size
    split = resolve_split(config.data, cache)
    device = resolve_device(config.train.device)
    precision = resolve_precision(config.train.amp, device)
    place = resident_device(cache, [split.train, split.valid], "segmentation", device)
    train_slices = load_slices(cache, split.train, "segmentation", device=place)
    valid_slices = load_slices(cache, split.valid, "segmentation", device=place) if split.valid else None

    torch.manual_seed(config.train.seed)
    task = SegmentationTask(
        config.unet, config.augment, train_slices, valid_slices, size, device,
        freeze_encoder_epochs=config.freeze_encoder_epochs,
        val_batch_size=config.train.val_batch_size, channels_last=config.train.channels_last,
    )
    if config.init and not (resume and (run_dir / "checkpoint.pt").exists()):
        weights = resolve_init(config.init, runs_dir)
        rescale = config.init_norm == "initial"
        initial = {key: value.clone() for key, value in task.model.state_dict().items()
                   if rescale and key.endswith(".weight")}
        state = load_weight_file(weights)
        report = load_transferable(task.model, state, weights)
        log(report.describe())
        if rescale:
            rescaled = reset_conv_norms(task.model, initial, state)
            log(f"init_norm initial: {rescaled} transferred convolutions rescaled to their initialisation norm")
    if processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        split.save(run_dir / "split.json")
    config_json = run_record("finetune", config, device, precision)
    log(f"{run_dir}: preset {config.preset}, {len(split.train)} training subjects ({len(train_slices)} slices), "
        f"{len(split.valid)} validation subjects, device {device}, precision {precision.name}, lr {config.learning_rate:g}")
    optimizer = dataclasses.replace(config.optimizer, lr=config.learning_rate)
    fit(task, run_dir, config.train, optimizer, device, precision, config_json, resume=resume, progress=progress,
        processes=processes)
    return run_dir
