"""One results table from the evaluated fine-tunes of one or several runs folders.

A study need not run in one folder on one machine: its subset seeds, sizes or methods can train
as separate ``run.py study`` calls, each with its own ``--runs-dir`` (one node of a cluster per
seed, or one overnight run per seed on a laptop). ``run.py results`` gathers what those folders
hold into the files the study writes for its own folder (``results.md``, ``results.csv``,
``results.png``, ``convergence.txt``), with the same statistics: a cell's Dice is the mean over
its subset seeds, and the paired Wilcoxon test against scratch averages each test volume over the
seeds both sides have (:mod:`cmrssp.results`).

Runs only belong in one table when they measured the same thing, so gathering refuses, naming
the run folder and what differs:

- a run trained with another configuration than the first run gathered (anything but its
  initialisation, its subset and where it ran: same preset, network, optimiser, budget and
  fine-tuning rule);
- runs whose plan settings (epochs, iteration bounds, schedule unit) differ, unless one of
  their budget rules gives every run the schedule it trained with (:func:`cmrssp.train.same_plan`): a rule that
  lengthens only the larger subsets leaves the finished runs of the smaller ones in the table;
- a run scored on other test volumes (another split or another ``evaluate --on``);
- two runs of the same initialisation, subset size and seed (the same folder given twice, or a
  seed run on two machines).

Gathering reads run folders only (``config.json``, ``complete.json``, ``metrics.csv`` and the
evaluation folder), never weights, so a folder copied without its ``*.pt`` files still counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from cmrssp import atomic
from cmrssp.config import to_dict
from cmrssp.convergence import convergence_rows, read_metrics
from cmrssp.errors import InputError
from cmrssp.evaluate import EvaluateOptions, evaluation_folder, finished_finetunes, run_evaluation
from cmrssp.presets import FinetuneConfig
from cmrssp.results import RunEvaluation, subjects_label, write_study_results
from cmrssp.run_folder import RunFolder
from cmrssp.runs import config_differences
from cmrssp.table import format_table
from cmrssp.train import PLAN_FIELD_NAMES, plan_fields, same_plan, with_plan_fields

CONVERGENCE_FILE = "convergence.txt"
CONVERGENCE_HEADER = """\
Loss at the end of each fine-tune (cmrssp.convergence): the mean training loss of the last 20 % of
its updates against the 20 % before, and its last validation loss against the last one before
that fifth; flat = both within 5 %. What this cannot tell: under a learning rate that decays to
zero the loss still falls over the last fifth of a run that has converged, and a run far from
what a longer one reaches can look flat. A twin of twice the updates is the stronger check:
python benchmarks/twins.py --runs-dir RUNS --out TWINS trains one for each run and compares them.

"""

# What may differ between runs of one table: what a study varies (the initialisation and the
# subset) and where a run happened to train or find its files (the split file's path may differ
# between machines; the test volumes themselves are compared).
_VARIED_FIELDS = ("init", "data.n_subjects", "data.subset_seed", "data.cache", "data.split", "train.device")


def _comparable(run_dir: Path) -> dict:
    config = to_dict(RunFolder(run_dir).config(FinetuneConfig))
    for name in _VARIED_FIELDS + PLAN_FIELD_NAMES:  # compared by check_budget_rule
        section, _, field = name.rpartition(".")
        (config[section] if section else config).pop(field, None)
    return config


def _training_samples(run_dir: Path, config: FinetuneConfig) -> int:
    """A training-set size that gives the run its recorded batches per epoch (the first row of
    ``metrics.csv`` ends epoch 0), which is all its plan depends on."""
    first = read_metrics(run_dir)[0]
    return round(first["step"] / (first["epoch"] + 1)) * config.train.batch_size


def check_budget_rule(run_dirs: Sequence[Path]) -> None:
    """Refuse runs of different plan settings unless one budget rule among theirs explains them all."""
    configs = [RunFolder(run_dir).config(FinetuneConfig) for run_dir in run_dirs]
    rules = list(dict.fromkeys(plan_fields(config) for config in configs))
    if len(rules) == 1:
        return
    samples = [_training_samples(run_dir, config) for run_dir, config in zip(run_dirs, configs)]

    def first_unexplained(rule: tuple) -> Path | None:
        for run_dir, config, n in zip(run_dirs, configs, samples):
            if not same_plan(n, config, with_plan_fields(config, rule)):
                return run_dir
        return None

    unexplained = [first_unexplained(rule) for rule in rules]
    if None not in unexplained:
        raise InputError(unexplained[0], f"was trained for another length than {run_dirs[0]} allows "
                                         f"({', '.join(PLAN_FIELD_NAMES)}), "
                                         "and no budget rule of the runs gathered gives every run the schedule it "
                                         "trained with; its results belong in another table")


def check_comparable(run_dirs: Sequence[Path], evaluations: Sequence[RunEvaluation]) -> None:
    """Refuse runs that do not belong in one table (see the module docstring)."""
    if not run_dirs:
        return
    seen: dict[tuple[str, int, int], Path] = {}
    for run_dir, evaluation in zip(run_dirs, evaluations):
        cell = (evaluation.init, evaluation.n_subjects, evaluation.seed)
        twin = seen.setdefault(cell, run_dir)
        if twin is not run_dir:
            raise InputError(run_dir, f"is the same run as {twin} (init {evaluation.init}, subset size "
                                      f"{subjects_label(evaluation.n_subjects)}, seed {evaluation.seed}); "
                                      "gather each run once")
    reference_dir, reference = run_dirs[0], evaluations[0]
    reference_config = _comparable(reference_dir)
    reference_volumes = {(row["key"], row["phase"]) for row in reference.volumes}
    for run_dir, evaluation in zip(run_dirs[1:], evaluations[1:]):
        differing = [name for name, _, _ in config_differences(reference_config, _comparable(run_dir))]
        if differing:
            raise InputError(run_dir, f"was trained with another configuration than {reference_dir} "
                                      f"({', '.join(differing)}); its results belong in another table")
        volumes = {(row["key"], row["phase"]) for row in evaluation.volumes}
        if volumes != reference_volumes:
            raise InputError(run_dir, f"was scored on other test volumes than {reference_dir} "
                                      f"({len(volumes - reference_volumes)} of its {len(volumes)} are not among "
                                      f"the {len(reference_volumes)} of the first run)")
    check_budget_rule(run_dirs)


def gather(runs_dirs: Iterable[Path], options: EvaluateOptions = EvaluateOptions(),
           log=print) -> tuple[list[Path], list[RunEvaluation]]:
    """The evaluated fine-tunes of every folder in ``runs_dirs``, checked to belong in one table.

    A finished run without an evaluation for ``options`` is left out and named in the log (it
    needs ``run.py evaluate --runs-dir`` on the machine that has its weights)."""
    run_dirs: list[Path] = []
    for runs_dir in runs_dirs:
        finished = finished_finetunes(runs_dir)
        unevaluated = [run for run in finished if not evaluation_folder(run, options).is_dir()]
        if unevaluated:
            log(f"[results] {runs_dir}: {len(unevaluated)} finished run(s) without an evaluation "
                f"({evaluation_folder(Path(), options).name}) left out: {', '.join(run.name for run in unevaluated)}")
        run_dirs += [run for run in finished if run not in unevaluated]
    if not run_dirs:
        raise InputError(", ".join(str(path) for path in runs_dirs), "holds no evaluated fine-tuning run")
    evaluations = [run_evaluation(run, options) for run in run_dirs]
    check_comparable(run_dirs, evaluations)
    return run_dirs, evaluations


def write_results(run_dirs: Sequence[Path], evaluations: Sequence[RunEvaluation], out_dir: Path) -> dict[str, Path]:
    """The study's result files for these runs in ``out_dir``: results.md / .csv / .png
    (:func:`cmrssp.results.write_study_results`) and ``convergence.txt`` (how each fine-tune's
    losses ended, :mod:`cmrssp.convergence`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_study_results(evaluations, out_dir)
    convergence = out_dir / CONVERGENCE_FILE
    atomic.write_text(convergence, CONVERGENCE_HEADER + format_table(convergence_rows(run_dirs)) + "\n")
    written["convergence"] = convergence
    return written
