"""Has a study's fine-tuning converged? Train a twin of every finished fine-tune with ``--factor``
times its updates (default 2) and compare where the two end.

``convergence.txt`` (the study's last-fifth rule) cannot tell a converged run from an
unfinished one when the learning rate decays to zero: both flatten at the end. A twin can: it is
the same run (configuration, init, subset, seed, schedule shape) with a longer budget, so if the
original had converged the twin ends at the same validation loss and test Dice, and if it had not
the twin ends lower. A twin's epochs, iteration bounds and iteration budget are ``factor`` times
the original's (so are its updates, for a whole factor, and its schedule keeps its shape); it
starts from the same pretrained weights (read from the study's runs folder) and is evaluated on
the same test volumes.

Usage, after ``python run.py study`` (the main job writes ``runs/``):

    python benchmarks/twins.py --runs-dir runs --out twins [--only nall --only n3] [--cpu-runs 2]

writes the twins under ``--out`` and ``--out/twins.md``: per run, the updates, the last
validation loss and the mean test 3D Dice of the run and of its twin, their differences, and a
paired Wilcoxon p over the test volumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.atomic import write_text  # noqa: E402
from cmrssp.convergence import run_convergence  # noqa: E402
from cmrssp.evaluate import EvaluateOptions, finished_finetunes, run_evaluation  # noqa: E402
from cmrssp.planned_run import PlannedRun  # noqa: E402
from cmrssp.presets import FinetuneConfig  # noqa: E402
from cmrssp.results import paired_wilcoxon  # noqa: E402
from cmrssp.run_folder import RunFolder  # noqa: E402
from cmrssp.scheduler import cpu_slots, default_cpu_runs, train_in_parallel  # noqa: E402
from cmrssp.study import train_then_evaluate  # noqa: E402
from cmrssp.table import format_table  # noqa: E402
from cmrssp.train import PLAN_FIELDS  # noqa: E402

DICE = "dice_mean"


def twin_of(run_dir: Path, out: Path, factor: float) -> PlannedRun:
    """The run of ``run_dir`` again, in ``out``, with ``factor`` times its updates: every length
    field (epochs, the iteration bounds, a fixed budget) scaled, so the budget rule is the run's
    own and the twins of one study form a study again (``run.py results --runs-dir TWINS``)."""
    config = RunFolder(run_dir).config(FinetuneConfig)
    train = config.train
    scaled = {name: round(factor * getattr(train, name)) for name in PLAN_FIELDS["train"]}
    return PlannedRun("finetune", out / run_dir.name, dataclasses.replace(config, train=dataclasses.replace(train, **scaled)))


def compare(run_dir: Path, twin_dir: Path, evaluate: EvaluateOptions) -> dict[str, object]:
    """One table row: the run against its twin."""
    run, twin = run_convergence(run_dir), run_convergence(twin_dir)
    run_score, twin_score = run_evaluation(run_dir, evaluate), run_evaluation(twin_dir, evaluate)
    p, volumes = paired_wilcoxon([twin_score], [run_score])
    dice, twin_dice = run_score.mean(DICE), twin_score.mean(DICE)
    return {"run": run_dir.name, "updates": f"{run.steps} / {twin.steps}",
            "last val loss": f"{run.val_loss:.3f} / {twin.val_loss:.3f}",
            "val Δ": f"{twin.val_loss / run.val_loss - 1:+.1%}",
            "test Dice": f"{dice:.3f} / {twin_dice:.3f}", "Dice Δ": f"{twin_dice - dice:+.3f}",
            "p": "–" if p is None else f"{p:.2g}", "volumes": volumes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="a finished study's runs folder")
    parser.add_argument("--out", type=Path, required=True, help="where the twins and twins.md go")
    parser.add_argument("--factor", type=float, default=2.0, help="the twin's updates over the run's (default 2)")
    parser.add_argument("--only", action="append", default=[],
                        help="only runs whose folder name contains this (e.g. nall); repeatable: any of them")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="as given to the study")
    parser.add_argument("--cpu-runs", type=int, help="twins trained at once on the CPU (default: 2 on 2 or more cores)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or a CUDA device, one twin at a time")
    args = parser.parse_args(argv)
    if args.factor <= 0:
        parser.error(f"--factor must be positive, got {args.factor}")
    if args.cpu_runs is not None and (args.device != "cpu" or args.cpu_runs < 1):
        parser.error(f"--cpu-runs {args.cpu_runs}: a positive number of runs, and only with --device cpu")

    started = time.perf_counter()
    evaluate = EvaluateOptions(device=args.device)
    runs = [path for path in finished_finetunes(args.runs_dir) if not args.only or any(s in path.name for s in args.only)]
    if not runs:
        print(f"{args.runs_dir}: no finished fine-tune{' matching ' + ' or '.join(args.only) if args.only else ''}",
              file=sys.stderr)
        return 1
    twins = [twin_of(path, args.out, args.factor) for path in runs]
    devices, threads = cpu_slots(args.cpu_runs or default_cpu_runs()) if args.device == "cpu" else ((args.device,), None)
    # runs_dir is the study's folder, so a twin's init (a method name) finds the study's pretraining
    train_in_parallel(twins, devices, args.runs_dir, args.data_dir, threads=threads,
                      train=functools.partial(train_then_evaluate, evaluate))
    rows = [compare(path, twin.folder, evaluate) for path, twin in zip(runs, twins)]
    table = format_table(rows)
    write_text(args.out / "twins.md", f"Each run (left of /) against its twin of {args.factor:g}x the updates "
               f"(right); p: paired Wilcoxon over the test volumes.\n\n{table}\n")
    print(table)
    print(f"[twins] {len(twins)} twins in {time.perf_counter() - started:.0f} s; table: {args.out / 'twins.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
