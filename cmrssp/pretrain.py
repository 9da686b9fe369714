"""``run.py pretrain``: self-supervised pretraining with SimCLR, PCL, DINO or MIM (protocol 2).

Pretrains on every frame × slice of the training subjects of the cohort's split (plus any
unlabelled subjects that are in no split, e.g. the M&Ms ``Training/Unlabeled`` cines or a user's
own folder of cines); the validation subjects give the validation loss where the method has
one; test subjects are never seen (protocol 7.24). Writes the run folder of the one loop and the
transferable weights ``weights-transfer.pt`` that ``finetune --init <method>`` loads.
"""

from __future__ import annotations

from pathlib import Path

from cmrssp.data.slices import load_slices, resident_device
from cmrssp.distributed import SINGLE, Processes
from cmrssp.methods import get_method
from cmrssp.presets import PretrainConfig
from cmrssp.run_folder import pretrain_run_name
from cmrssp.runs import start_run, study_split
from cmrssp.train import training_input_size


def build_task(config: PretrainConfig, cache, train_keys, valid_keys, device):
    """The method's Task on the run's slices, loaded from the cache."""
    place = resident_device(cache, [train_keys, valid_keys], "pretraining", device)
    train_slices = load_slices(cache, train_keys, "pretraining", device=place)
    valid_slices = load_slices(cache, valid_keys, "pretraining", device=place) if valid_keys else None
    stack_sizes = {key: cache.meta(key).n_slices for key in [*train_keys, *valid_keys]}
    size = training_input_size(config.train, cache.config.size)
    return make_task(config, train_slices, valid_slices, size, device, stack_sizes)


def describe_frames(cache, keys) -> str:
    """Which frames pretraining sees: every frame of a cine, but a subject distributed without its
    cine (ACDC here: 99 of 100 patients lack ``_4d.nii.gz``) holds only its labelled frames."""
    metas = [cache.meta(key) for key in keys]
    without_cine = sum(1 for meta in metas if meta.labelled and meta.n_frames <= len(meta.label_frames))
    if not without_cine:
        return "all frames"
    return f"all frames; {without_cine} of {len(keys)} subjects have no cine, only their labelled frames"


def make_task(config: PretrainConfig, train_slices, valid_slices, size: int, device, stack_sizes=None):
    """The method's Task on given slice sets (the registry's ``make_task``)."""
    return get_method(config.method).make_task(config, train_slices, valid_slices, size, device, stack_sizes)


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
    run_dir = Path(run_dir) if run_dir is not None else Path(runs_dir) / pretrain_run_name(config.method)
    run = start_run("pretrain", PretrainConfig, config, run_dir, resume, data_dir, processes, log, progress)
    config, cache = run.config, run.cache
    split = study_split(config.data, cache)
    in_split = set(split.keys)
    unlabelled_extra = [key for key in cache.subjects(labelled=False) if key not in in_split]
    train_keys = split.train + unlabelled_extra
    task = build_task(config, cache, train_keys, split.valid, run.device)
    run.save_split(split)
    run.log(f"{run_dir}: {config.method} ({config.preset} preset) on {len(train_keys)} subjects "
            f"({task.n_train()} slices, {describe_frames(cache, train_keys)}), {len(split.valid)} validation subjects, "
            f"device {run.device}, precision {run.precision.name}")
    run.train(task, config.optimizer, resume=resume, progress=progress)
    return run_dir
