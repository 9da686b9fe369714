"""``run.py pretrain``: self-supervised pretraining with SimCLR, PCL, DINO or MIM (protocol 2).

Pretrains on every frame × slice of the training subjects of the cohort's split (plus any
unlabelled subjects that are in no split, e.g. the M&Ms ``Training/Unlabeled`` cines or a user's
own folder of cines); the validation subjects give the validation loss where the method has
one; test subjects are never seen (protocol 7.24). Writes the run folder of the one loop and the
transferable weights ``weights-transfer.pt`` that ``finetune --init <method>`` loads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cmrssp.augment import AUGMENT_PRESETS
from cmrssp.data.slices import load_slices, resident_device
from cmrssp.distributed import SINGLE, Processes
from cmrssp.errors import InputError
from cmrssp.presets import PretrainConfig
from cmrssp.runs import open_run_data, resume_config, run_record, study_split
from cmrssp.train import fit, resolve_device, resolve_precision


def build_task(config: PretrainConfig, cache, train_keys, valid_keys, device):
    """The method's Task on the run's slices, loaded from the cache."""
    place = resident_device(cache, [train_keys, valid_keys], "pretraining", device)
    train_slices = load_slices(cache, train_keys, "pretraining", device=place)
    valid_slices = load_slices(cache, valid_keys, "pretraining", device=place) if valid_keys else None
    stack_sizes = {key: cache.meta(key)["n_slices"] for key in [*train_keys, *valid_keys]}
    return make_task(config, train_slices, valid_slices, cache.config.size, device, stack_sizes)


def make_task(config: PretrainConfig, train_slices, valid_slices, size: int, device, stack_sizes=None):
    """The method's Task on given slice sets; ``stack_sizes`` (key -> number of slices) is only
    needed for PCL's "normalized" positions."""
    channels, in_channels = config.unet.channels, config.unet.in_channels
    common = dict(size=size, device=device, channels_last=config.train.channels_last)
    if config.method in ("simclr", "pcl"):
        from cmrssp.methods.contrastive import ContrastiveTask, slice_positions

        def positions(slices):
            if slices is None:
                return None
            n = torch.tensor([(stack_sizes or {}).get(key, 1) for key in slices.keys], device=slices.subject.device)
            return slice_positions(slices, n, config.contrastive.position)

        return ContrastiveTask(config.method, channels, in_channels, config.contrastive, config.augment, train_slices,
                               valid_slices, positions(train_slices), positions(valid_slices),
                               val_batch_size=config.train.val_batch_size, **common)
    if config.method == "dino":
        from cmrssp.methods.dino import DinoTask

        # DINO's crops have their own augmentation presets; the run's switches still apply to them.
        shared = {name: getattr(config.augment, name) for name in ("centring", "centre_align_corners_quirk",
                                                                     "intensity_scale_mode", "noise_std_random",
                                                                     "interpolation")}
        presets = {name: dataclasses.replace(preset, **shared) for name, preset in AUGMENT_PRESETS.items()}
        return DinoTask(channels, in_channels, config.dino, presets, train_slices, **common)
    if config.method == "mim":
        from cmrssp.methods.mim import MimTask

        return MimTask(channels, in_channels, config.mim, config.augment, train_slices, valid_slices,
                       val_batch_size=config.train.val_batch_size, **common)
    raise InputError(None, f"unknown pretraining method {config.method!r}")


def run_pretrain(
    config: PretrainConfig,
    run_dir: Path | None = None,
    runs_dir: Path = Path("runs"),
    data_dir: Path = Path("data"),
    resume: bool = False,
    progress: bool = True,
    log=print,
    processes: Processes = SINGLE,
) -> Path:
    """Pretrain one method; return its run folder (default ``runs/pretrain-<method>``)."""
    if not processes.is_main:
        log = lambda *_: None  # noqa: E731 (only rank 0 speaks)
    run_dir = Path(run_dir) if run_dir is not None else runs_dir / f"pretrain-{config.method}"
    if resume:
        config = resume_config(PretrainConfig, run_dir, config)
    config, cache = open_run_data(config, data_dir, processes)
    split = study_split(config.data, cache)
    in_split = set(split.keys)
    unlabelled_extra = [key for key in cache.subjects(labelled=False) if key not in in_split]
    train_keys = split.train + unlabelled_extra
    device = resolve_device(config.train.device)
    precision = resolve_precision(config.train.amp, device)
    torch.manual_seed(config.train.seed)
    task = build_task(config, cache, train_keys, split.valid, device)
    if processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        split.save(run_dir / "split.json")
    config_json = run_record("pretrain", config, device, precision)
    log(f"{run_dir}: {config.method} ({config.preset} preset) on {len(train_keys)} subjects "
        f"({task.n_train()} slices, all frames), {len(split.valid)} validation subjects, device {device}, "
        f"precision {precision.name}")
    fit(task, run_dir, config.train, config.optimizer, device, precision, config_json, resume=resume, progress=progress,
        processes=processes)
    return run_dir
