"""``run.py study``: the whole study in one command that can stop and restart anywhere.

Steps (protocol 2, 3.2, 4, 5): prepare the data; pretrain each method; fine-tune from each
method and from scratch for every training-subset size and subset seed; evaluate every
fine-tuned run on the test split; write ``results.md``, ``results.csv`` (and ``results.png``
with matplotlib) and ``convergence.txt`` (how each fine-tune's losses ended) in the runs folder.

Every run has a fixed folder name in the runs folder; a run whose ``complete.json`` exists is
skipped, one with a checkpoint resumes, others start. Evaluations are folders written
atomically, so they are either there (skipped) or not. Stopping the command at any point and
running it again therefore redoes nothing that was finished.

Which subjects are test, validation and training pool, and the grid of subset sizes x seeds,
come from the protocol (:mod:`cmrssp.protocols`: ``default``, ``paper``, ``acdc``); the whole
training pool is one run per initialisation (the study has one split file for it).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Sequence

from cmrssp.config import to_dict
from cmrssp.data.cache import Cache, open_cache
from cmrssp.errors import InputError
from cmrssp.evaluate import EvaluateOptions, evaluate_run, evaluation_folder, run_evaluation
from cmrssp.finetune import default_run_name, resolve_split
from cmrssp.gather import write_results
from cmrssp.methods import get_method
from cmrssp.planned_run import Config, PlannedRun
from cmrssp.protocols import PROTOCOLS, Protocol, StudyGrid
from cmrssp.presets import finetune_preset, pretrain_preset
from cmrssp.run_folder import pretrain_run_name
from cmrssp.runs import config_differences, resolve_cache, study_split
from cmrssp.train import PLAN_FIELD_NAMES, make_plan, same_plan, training_input_size


def plan_study(
    preset: str,
    grid: StudyGrid,
    runs_dir: Path,
    adjust: Callable[[Config], Config] = lambda config: config,
    protocol: Protocol = PROTOCOLS["default"],
) -> list[PlannedRun]:
    """Every run of the study in order: pretraining first, then fine-tuning (the protocol sets
    each preset configuration's split rule; ``adjust`` then applies the command line's data,
    device and ``--set`` options)."""
    grid = grid.validate()
    with_protocol = lambda config: dataclasses.replace(config, data=protocol.apply(config.data))  # noqa: E731
    runs: list[PlannedRun] = []
    for method in grid.methods:
        config = adjust(with_protocol(pretrain_preset(preset, method)))
        runs.append(PlannedRun("pretrain", runs_dir / pretrain_run_name(method), config))
    base = with_protocol(finetune_preset(preset))
    for n_subjects in sorted(set(grid.subsets), key=lambda n: (n == 0, n)):
        seeds = grid.seeds[:1] if n_subjects == 0 else grid.seeds  # one run on the whole pool
        for seed in seeds:
            for init in ("",) + tuple(grid.methods):
                config = dataclasses.replace(
                    base, init=init,
                    data=dataclasses.replace(base.data, n_subjects=n_subjects, subset_seed=seed),
                )
                config = adjust(config)
                runs.append(PlannedRun("finetune", runs_dir / default_run_name(config), config))
    return runs


def check_reusable(run: PlannedRun, cache: Cache | None = None) -> None:
    """A run folder made with another configuration is never silently reused. With ``cache``,
    a finished run's plan fields (epochs, iteration bounds, schedule unit) that differ but give it
    the same plan (:func:`cmrssp.train.same_plan`) do not count: a budget rule changed for other
    subset sizes leaves this run's training as it was."""
    if not run.run_folder.has_record():
        return
    # read as the typed configuration, so a field newer than the run counts as its default
    saved_config = run.run_folder.config(type(run.config))
    saved, wanted = to_dict(saved_config), to_dict(run.config)
    # where a run trains is not what it is; the data section is checked when the run resumes
    names = [name for name, _, _ in config_differences(saved, wanted)
             if name.split(".")[0] in wanted and name.split(".")[0] != "data" and name != "train.device"]
    # a finished run only: a started one resumes with its saved configuration, which must be the wanted one
    if (cache is not None and run.complete and names and set(names) <= set(PLAN_FIELD_NAMES)
            and same_plan(training_samples(run, cache), saved_config, run.config)):
        return
    differing = sorted({name.split(".")[0] for name in names})
    if differing:
        raise InputError(run.folder, f"was made with a different configuration ({', '.join(differing)}); "
                                     "give the study another --runs-dir, or delete the folder")


def training_samples(run: PlannedRun, cache: Cache) -> int:
    """The samples one epoch of a planned run goes through on ``cache``: the labelled slices of
    its training subjects (fine-tuning), or every frame's slices of the training and unlabelled
    subjects (pretraining)."""
    config = run.config
    if run.kind == "finetune":
        split = resolve_split(config.data, cache)
        return sum(len(cache.meta(key).label_frames) * cache.meta(key).n_slices for key in split.train)
    split = study_split(config.data, cache)
    extra = [key for key in cache.subjects(labelled=False) if key not in set(split.keys)]
    return sum(cache.meta(key).n_frames * cache.meta(key).n_slices for key in split.train + extra)


def optimizer_steps(run: PlannedRun, cache: Cache) -> tuple[int, int]:
    """(optimizer steps, training samples) of a planned run on ``cache`` (no training)."""
    n_samples = training_samples(run, cache)
    plan = make_plan(n_samples, run.config.train, run.config.optimizer)
    return plan.total_steps, n_samples


# Measured seconds per training sample (a slice; DINO: one slice = 8 crops) on the 2-core
# development VM, 2026-12-01, whole runs of the ACDC study at 64² (validation and checkpoints
# included); used only for --dry-run estimates on the CPU. That VM ran at a quarter of its
# 2026-11-28 speed that day (README "ACDC, real scans"), so these are pessimistic. Each pretraining
# method declares its own (PretrainingMethod.cpu_seconds_per_sample).
FINETUNE_CPU_SECONDS_PER_SAMPLE = 1 / 55
CPU_COST_INPUT_SIZE = 64  # the input side those figures were measured at


def describe_plan(runs: Sequence[PlannedRun], cache: Cache | None, evaluate: EvaluateOptions, cpu_runs: int = 1) -> str:
    """The --dry-run table: each run, its state, its length and an estimate of its cost (one run at
    a time; with ``cpu_runs`` at once the header says so)."""
    lines = []
    total_steps = total_samples = 0
    seconds = 0.0
    for run in runs:
        state = "done" if run.complete else ("resume" if run.started else "todo")
        if run.kind == "finetune" and run.complete and evaluation_folder(run.folder, evaluate).is_dir():
            state = "evaluated"
        if cache is None:
            lines.append(f"  {state:9s} {run.kind:8s} {run.folder.name}")
            continue
        steps, samples = optimizer_steps(run, cache)
        batch = min(run.config.train.batch_size, samples)
        processed = steps * batch
        per_sample = (get_method(run.config.method).cpu_seconds_per_sample if run.kind == "pretrain"
                      else FINETUNE_CPU_SECONDS_PER_SAMPLE)
        # measured on 64² inputs; a step's cost goes with its pixels
        size = training_input_size(run.config.train, cache.config.size)
        cost = processed * per_sample * (size / CPU_COST_INPUT_SIZE) ** 2
        if state == "todo":
            total_steps, total_samples, seconds = total_steps + steps, total_samples + processed, seconds + cost
        lines.append(f"  {state:9s} {run.kind:8s} {run.folder.name:34s} {steps:7d} steps x {batch:3d}"
                     f"   ~{cost / 60:6.1f} min on a 2-core CPU")
    todo = sum(not run.complete for run in runs)
    header = f"{len(runs)} runs ({todo} to train) + evaluation of {sum(r.kind == 'finetune' for r in runs)} fine-tuned runs"
    if cache is not None:
        header += (f"; to train: {total_steps} optimizer steps, {total_samples} samples, "
                   f"about {seconds / 60:.0f} min on a 2-core CPU one run at a time (the cpu preset's figures; a GPU "
                   f"is far faster)")
        if cpu_runs > 1:
            header += f"; {cpu_runs} runs at once on the CPU take less (2 on 2 cores: about 1/1.4 of that)"
    else:
        header += "; the data is not prepared yet, so run lengths are not known"
    return "\n".join([header, *lines])


def run_study(
    preset: str,
    grid: StudyGrid,
    runs_dir: Path = Path("runs"),
    data_dir: Path = Path("data"),
    adjust: Callable[[Config], Config] = lambda config: config,
    evaluate: EvaluateOptions = EvaluateOptions(),
    dry_run: bool = False,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
    devices: Sequence[str] = (),
    protocol: Protocol = PROTOCOLS["default"],
    cpu_runs: int = 1,
) -> dict[str, Path] | None:
    """Run (or with ``dry_run`` describe) the study; return the result files written. With
    several ``devices`` ("cuda:0", "cuda:1", ...), independent runs train at once, one per device;
    with ``cpu_runs`` > 1 (and no ``devices``), that many train at once on the CPU, sharing its
    cores (:mod:`cmrssp.scheduler`)."""
    started = time.perf_counter()
    runs_dir = Path(runs_dir)
    runs = plan_study(preset, grid, runs_dir, adjust, protocol)
    data = runs[-1].config.data
    if dry_run:
        cache_dir = Path(data.cache) if data.cache else None
        if cache_dir is None:
            from cmrssp.data.synthetic import synthetic_cache_dir

            cache_dir = synthetic_cache_dir(data.synthetic, data.grid, data_dir)
        cache = open_cache(cache_dir) if (cache_dir / "manifest.json").is_file() else None
        log(describe_plan(runs, cache, evaluate, cpu_runs))
        return None

    cache_dir = resolve_cache(data, data_dir, workers=workers, progress=progress)
    cache = open_cache(cache_dir)
    protocol.check_cache(cache)
    log(f"[study] protocol {protocol.name}, preset {preset}, data: {cache_dir} ({time.perf_counter() - started:.0f} s)")
    pin = lambda config: dataclasses.replace(config, data=dataclasses.replace(config.data, cache=str(cache_dir)))
    runs = [dataclasses.replace(run, config=pin(run.config)) for run in runs]
    for run in runs:
        check_reusable(run, cache)
    if devices or cpu_runs > 1:
        from cmrssp.scheduler import cpu_slots, train_in_parallel

        threads = None
        if not devices:
            devices, threads = cpu_slots(cpu_runs)
            log(f"[study] training {cpu_runs} runs at once on the CPU, {threads} thread(s) each")
        train_in_parallel(runs, devices, runs_dir, data_dir, log=log, threads=threads,
                          train=functools.partial(train_then_evaluate, evaluate))
    else:
        for number, run in enumerate(runs, 1):
            prefix = f"[study] {number}/{len(runs)} {run.folder.name}"
            if run.complete:
                log(f"{prefix}: done already")
                continue
            log(f"{prefix}: {'resuming' if run.started else 'training'} ({time.perf_counter() - started:.0f} s)")
            run.train(runs_dir, data_dir, progress=progress, log=log)

    evaluations = []
    for run in runs:
        if run.kind != "finetune":
            continue
        if not evaluation_folder(run.folder, evaluate).is_dir():
            evaluate_run(run.folder, evaluate, log=log)
        evaluations.append(run_evaluation(run.folder, evaluate))
    written = write_results([run.folder for run in runs if run.kind == "finetune"], evaluations, runs_dir)
    log(f"[study] finished in {time.perf_counter() - started:.0f} s; results: "
        + ", ".join(str(path) for path in written.values()))
    return written


def train_then_evaluate(evaluate: EvaluateOptions, run: PlannedRun, device: str, runs_dir: Path, data_dir: Path,
                        label: str = "", threads: int | None = None) -> str:
    """One slot's work in a study trained side by side: train the run, then evaluate it there
    if it is a fine-tune, on the slot's device, so evaluations overlap other runs' training."""
    from cmrssp.scheduler import train_one

    name = train_one(run, device, runs_dir, data_dir, label, threads)
    if run.kind == "finetune" and not evaluation_folder(run.folder, evaluate).is_dir():
        evaluate_run(run.folder, dataclasses.replace(evaluate, device=device),
                     log=lambda message: print(f"[{label or device}] {message}", flush=True))
    return name


def check_set_sections(assignments: Sequence[str]) -> None:
    """``--set`` for a study goes to every configuration that has its section (``augment.*`` to
    all runs, ``dino.*`` to the DINO pretraining, ...); a section no run has is refused."""
    known = set(to_dict(finetune_preset("tiny"))) | set(to_dict(pretrain_preset("tiny", "dino")))
    unknown = [a for a in assignments if a.split("=", 1)[0].split(".", 1)[0] not in known]
    if unknown:
        raise InputError(None, f"--set {unknown[0]}: no such configuration section (choose from {', '.join(sorted(known))})")
