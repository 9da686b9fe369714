"""``run.py finetune``: the from-scratch baseline and fine-tuning from pretrained weights.

Resolves everything a run needs (the data, the split and label-scarce subset, the initial
weights, the device and precision), writes the run folder (``config.json``, ``split.json``),
and hands a :class:`~cmrssp.segmentation.SegmentationTask` to the one training loop.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cmrssp.data.cache import Cache
from cmrssp.data.slices import load_slices, resident_device
from cmrssp.data.splits import Split, label_scarce_subset
from cmrssp.distributed import SINGLE, Processes
from cmrssp.errors import InputError
from cmrssp.methods import METHODS as PRETRAINING_METHODS
from cmrssp.models import load_transferable, load_weight_file, reset_conv_norms
from cmrssp.presets import DataConfig, FinetuneConfig
from cmrssp.run_folder import TRANSFER_WEIGHTS, finetune_run_name, pretrain_run_name
from cmrssp.runs import start_run, study_split
from cmrssp.segmentation import SegmentationTask
from cmrssp.train import training_input_size


def resolve_split(data: DataConfig, cache: Cache) -> Split:
    """The fine-tuning split: the study split, then the label-scarce subset of its training pool
    (the study's published subset file where the split is the paper's and one exists for the size
    and seed, e.g. ``paper`` with 10 subjects and seed 0 is ``paper-nr10-seed0``)."""
    split = study_split(data, cache)
    unlabelled = [key for key in split.train + split.valid if not cache.entry(key)["labelled"]]
    if unlabelled:
        raise InputError(data.split or cache.path, f"subjects without labels in train/valid: {unlabelled[:5]}")
    return label_scarce_subset(split, data.n_subjects if data.n_subjects > 0 else "all", seed=data.subset_seed)


def resolve_init(init: str, runs_dir: Path) -> Path:
    """A weight file, or a pretraining method's transferable weights in the runs folder."""
    if init in PRETRAINING_METHODS:
        path = Path(runs_dir) / pretrain_run_name(init) / TRANSFER_WEIGHTS
        if not path.is_file():
            raise InputError(path, f"no {init} pretraining weights yet; run `python run.py pretrain --method {init}` first")
        return path
    return Path(init)


def default_run_name(config: FinetuneConfig) -> str:
    return finetune_run_name(config.init, config.data.n_subjects, config.data.subset_seed)


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
    run_dir = Path(run_dir) if run_dir is not None else Path(runs_dir) / default_run_name(config)
    run = start_run("finetune", FinetuneConfig, config, run_dir, resume, data_dir, processes, log, progress)
    config, cache, device, log = run.config, run.cache, run.device, run.log
    split = resolve_split(config.data, cache)
    place = resident_device(cache, [split.train, split.valid], "segmentation", device)
    train_slices = load_slices(cache, split.train, "segmentation", device=place)
    valid_slices = load_slices(cache, split.valid, "segmentation", device=place) if split.valid else None

    task = SegmentationTask(
        config.unet, config.augment, train_slices, valid_slices, cache.config.size, device,
        train_size=training_input_size(config.train, cache.config.size),
        freeze_encoder_epochs=config.freeze_encoder_epochs,
        val_batch_size=config.train.val_batch_size, channels_last=config.train.channels_last,
    )
    if config.init and not (resume and run.folder.started):
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
    run.save_split(split)
    log(f"{run_dir}: preset {config.preset}, {len(split.train)} training subjects ({len(train_slices)} slices), "
        f"{len(split.valid)} validation subjects, device {device}, precision {run.precision.name}, "
        f"lr {config.learning_rate:g}")
    optimizer = dataclasses.replace(config.optimizer, lr=config.learning_rate)
    run.train(task, optimizer, resume=resume, progress=progress)
    return run_dir
