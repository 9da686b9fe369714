"""Summaries of evaluated runs: per-volume tables, per-run lines, and the study's results table.

``run.py evaluate`` scores one fine-tuned run on the test split, one row per 3D volume (protocol
§5.2: every test subject at ED and ES, Dice per class in original space, ``dice_mean`` the mean of
the three classes), and ``run.py study`` gathers the runs of all inits (from scratch and from each
pretraining method), training-subset sizes and subset seeds (protocol §3.2). This module turns
those rows into numbers and files; it never touches a model.

Conventions:

- Seeds are the replication unit of a study cell: a cell's Dice is the mean over its subset seeds
  of each run's mean over test volumes, and its ± is the standard deviation over those seeds.
- HD95 is summarised by medians over volumes, because a class missing from a prediction gives
  an infinite distance that would make any mean infinite. Infinities are never dropped: a mean
  over values containing ``inf`` is ``inf`` and every summary counts them (``n_inf``). NaN (the
  class absent from both prediction and ground truth, so no distance exists) is left out and
  counted (``n_nan``).
- JSON has no infinity or NaN: :func:`to_jsonable` writes ``inf`` as the string ``"inf"`` and NaN as
  ``null``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cmrssp.agreement import measures_markdown, study_measure_rows
from cmrssp.atomic import atomic_path, write_text
from cmrssp.data.subject import CLASS_NAMES
from cmrssp.errors import InputError, read_text
from cmrssp.table import format_table

DICE_COLUMNS = tuple(f"dice_{name}" for name in CLASS_NAMES) + ("dice_mean",)
HD95_COLUMNS = tuple(f"hd95_{name}" for name in CLASS_NAMES) + ("hd95_mean",)
METRIC_COLUMNS = DICE_COLUMNS + HD95_COLUMNS
TEXT_COLUMNS = ("dataset", "subject", "key", "vendor", "phase")
VOLUME_COLUMNS = TEXT_COLUMNS + ("frame",) + METRIC_COLUMNS
ALL_SUBJECTS_LABEL = "all"  # how n_subjects == 0 (the whole training pool) is shown
MISSING = "–"  # shown in Markdown for a value that does not exist (one seed's std, the baseline's Δ)


# --------------------------------------------------------------------------------------------
# JSON-safe numbers and per-volume summaries


def to_jsonable(obj: Any) -> Any:
    """``obj`` with every float JSON-safe: ±inf as ``"inf"``/``"-inf"``, NaN as ``None``.

    Also turns numpy scalars into Python numbers, tuples into lists and paths into strings, so
    the result goes straight to :func:`cmrssp.atomic.write_json`. Idempotent.
    """
    if isinstance(obj, dict):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def describe(values: Iterable[float]) -> dict[str, Any]:
    """n, mean, std (ddof=1; 0.0 for one value), median, min, max of ``values``, plus n_inf and n_nan.

    NaN values are left out of every statistic (and counted); infinite ones are kept, so the mean,
    std and max of a list holding ``inf`` are ``inf`` (the spread of such a list is unbounded). With
    no non-NaN value the statistics are NaN. Returns plain floats (not yet JSON-safe).
    """
    array = np.asarray(list(values), dtype=np.float64)
    kept = array[~np.isnan(array)]
    n_inf = int(np.isinf(kept).sum())
    stats: dict[str, Any] = {"n": int(kept.size), "n_inf": n_inf, "n_nan": int(array.size - kept.size)}
    if kept.size == 0:
        return stats | dict.fromkeys(("mean", "std", "median", "min", "max"), math.nan)
    if n_inf:
        # numpy would give NaN for the std (inf - inf); an unbounded spread is the honest answer.
        mean, std = float(np.sum(kept)), math.inf  # the sum keeps the sign of the infinities
    else:
        mean = float(np.mean(kept))
        std = float(np.std(kept, ddof=1)) if kept.size > 1 else 0.0
    return stats | {"mean": mean, "std": std, "median": float(np.median(kept)),
                    "min": float(np.min(kept)), "max": float(np.max(kept))}


def summarize_volumes(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary JSON content of one evaluated run, already JSON-safe (see :func:`to_jsonable`).

    ``{"n_volumes": N, "groups": {"all": {metric: stats}, "ED": {...}, "ES": {...}}}`` where
    ``"all"`` pools both phases (as upstream ``stats_3d`` does, protocol §5.2), each non-empty phase
    name present gets its own group, and ``stats`` is :func:`describe` of that metric (every
    column of :data:`METRIC_COLUMNS`).
    """
    if not rows:
        raise InputError(None, "no evaluated volumes to summarize")
    groups: dict[str, list[dict[str, Any]]] = {"all": list(rows)}
    for phase in sorted({row["phase"] for row in rows if row["phase"]}):
        groups[phase] = [row for row in rows if row["phase"] == phase]
    summary = {
        "n_volumes": len(rows),
        "groups": {name: {column: describe(row[column] for row in members) for column in METRIC_COLUMNS}
                   for name, members in groups.items()},
    }
    return to_jsonable(summary)


# --------------------------------------------------------------------------------------------
# The per-volume CSV


def _csv_cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # shortest exact form; repr gives "inf" and "nan"
    return str(value)


def write_volumes_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write per-volume rows as CSV (columns :data:`VOLUME_COLUMNS`), atomically.

    Floats are written exactly (``repr``); infinity as ``inf``, NaN as ``nan``. Extra keys in the
    rows are not written.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VOLUME_COLUMNS)
    for index, row in enumerate(rows):
        missing = [column for column in VOLUME_COLUMNS if column not in row]
        if missing:
            raise ValueError(f"volume row {index} lacks columns {missing}")
        writer.writerow([_csv_cell(row[column]) for column in VOLUME_COLUMNS])
    write_text(path, buffer.getvalue())


def read_volumes_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Per-volume rows written by :func:`write_volumes_csv`, typed: ``frame`` int, metrics float.

    Columns beyond :data:`VOLUME_COLUMNS` are kept as strings.
    """
    path = Path(path)
    text = read_text(path, "per-volume table", missing_hint="evaluate the run first")
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [column for column in VOLUME_COLUMNS if column not in header]
    if missing:
        raise InputError(path, f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    rows = []
    for line_number, raw in enumerate(reader, start=2):
        if None in raw or any(raw[column] is None for column in header):
            raise InputError(path, f"line {line_number}: expected {len(header)} fields")
        row: dict[str, Any] = dict(raw)
        try:
            row["frame"] = int(raw["frame"])
        except ValueError:
            raise InputError(path, f"line {line_number}: frame {raw['frame']!r} is not an integer") from None
        for column in METRIC_COLUMNS:
            try:
                row[column] = float(raw[column])
            except ValueError:
                raise InputError(path, f"line {line_number}: {column} {raw[column]!r} is not a number") from None
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Runs and the study table


@dataclass(frozen=True)
class RunEvaluation:
    """One fine-tuned run scored on the test split.

    Attributes:
        run: the run folder's name.
        init: ``"scratch"``, a pretraining method (``"simclr"``, ``"pcl"``, ``"dino"``, ``"mim"``)
            or the stem of a weight file.
        n_subjects: the requested training-subset size; 0 means the whole training pool.
        n_train: how many training subjects the run actually had.
        seed: the subset seed (protocol §3.2).
        volumes: the per-volume rows (:data:`VOLUME_COLUMNS`).
        measures: the per-subject clinical measures, predicted and reference
            (:mod:`cmrssp.agreement`); empty for an evaluation made before they existed.
    """

    run: str
    init: str
    n_subjects: int
    n_train: int
    seed: int
    volumes: Sequence[dict[str, Any]]
    measures: Sequence[dict[str, Any]] = ()

    def __post_init__(self):
        object.__setattr__(self, "volumes", tuple(self.volumes))
        object.__setattr__(self, "measures", tuple(self.measures))
        if not self.volumes:
            raise InputError(self.run, "the run has no evaluated test volumes")

    def mean(self, column: str) -> float:
        """Mean of ``column`` over the run's volumes (inf-propagating; NaN left out)."""
        return describe(row[column] for row in self.volumes)["mean"]

    def median(self, column: str) -> float:
        """Median of ``column`` over the run's volumes (NaN left out; inf kept)."""
        return describe(row[column] for row in self.volumes)["median"]


def subjects_label(n_subjects: int) -> int | str:
    return ALL_SUBJECTS_LABEL if n_subjects == 0 else n_subjects


def _mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and std (ddof=1) over seeds; the std of one seed does not exist (NaN)."""
    array = np.asarray(values, dtype=np.float64)
    if np.isinf(array).any():
        return float(np.sum(array)), math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def _volume_dice_over_seeds(runs: Iterable[RunEvaluation]) -> dict[tuple[str, str], float]:
    """Each volume's (key, phase) dice_mean averaged over the given runs (seeds) that have it."""
    collected: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for row in run.volumes:
            collected.setdefault((row["key"], row["phase"]), []).append(float(row["dice_mean"]))
    return {volume: float(np.mean(values)) for volume, values in collected.items()}


def paired_wilcoxon(runs: Sequence[RunEvaluation], baseline_runs: Sequence[RunEvaluation]) -> tuple[float | None, int]:
    """Two-sided paired Wilcoxon signed-rank p of per-volume dice_mean, and the number of pairs.

    Only the seeds both sides have count: each volume's dice_mean is averaged over those seeds on
    each side, then volumes are paired by (key, phase) over those present on both sides. All
    differences zero gives p = 1.0; fewer than 2 pairs gives ``None``.
    """
    shared_seeds = {run.seed for run in runs} & {run.seed for run in baseline_runs}
    ours = _volume_dice_over_seeds(run for run in runs if run.seed in shared_seeds)
    theirs = _volume_dice_over_seeds(run for run in baseline_runs if run.seed in shared_seeds)
    paired = sorted(volume for volume in ours.keys() & theirs.keys()
                    if math.isfinite(ours[volume]) and math.isfinite(theirs[volume]))
    if len(paired) < 2:
        return None, len(paired)
    x = np.array([ours[volume] for volume in paired])
    y = np.array([theirs[volume] for volume in paired])
    if np.all(x == y):
        return 1.0, len(paired)
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():
        # scipy warns about ties, zero differences and small samples (it then uses a normal
        # approximation); the p value is still the one to report and the warnings are noise here.
        warnings.simplefilter("ignore")
        p_value = float(wilcoxon(x, y, alternative="two-sided").pvalue)
    return (p_value if math.isfinite(p_value) else None), len(paired)


def _group_runs(evaluations: Sequence[RunEvaluation]) -> dict[tuple[str, int], list[RunEvaluation]]:
    cells: dict[tuple[str, int], list[RunEvaluation]] = {}
    for evaluation in evaluations:
        cell = cells.setdefault((evaluation.init, evaluation.n_subjects), [])
        twin = next((other for other in cell if other.seed == evaluation.seed), None)
        if twin is not None:
            raise InputError(evaluation.run, f"same init ({evaluation.init}), subset size "
                                             f"({subjects_label(evaluation.n_subjects)}) and seed "
                                             f"({evaluation.seed}) as run {twin.run}; keep one of them")
        cell.append(evaluation)
    return cells


def study_table(evaluations: Sequence[RunEvaluation], baseline: str = "scratch") -> list[dict[str, Any]]:
    """One row per (init, n_subjects): the study's results, ordered for reading.

    Row keys: ``init``, ``n_subjects`` (``"all"`` for 0), ``n_train`` (median over seeds),
    ``seeds``; for each Dice column of :data:`DICE_COLUMNS` the mean over seeds of the run's mean
    over volumes and ``<column>_std`` (over seeds, ddof=1; NaN for one seed); for each HD95 column
    the mean over seeds of the run's median over volumes; ``delta_dice`` (dice_mean minus the
    baseline's at the same n_subjects, each over the seeds both have; ``None`` for the baseline
    and where it or a shared seed is missing);
    ``p_value`` and ``pairs`` from :func:`paired_wilcoxon` against the baseline (``None``/0 likewise).

    Order: n_subjects ascending with the whole pool last; the baseline first within a size, then
    inits alphabetically.
    """
    cells = _group_runs(evaluations)
    order = sorted(cells, key=lambda cell: (cell[1] == 0, cell[1], cell[0] != baseline, cell[0]))
    rows = []
    for init, n_subjects in order:
        runs = sorted(cells[init, n_subjects], key=lambda run: run.seed)
        median_train = float(np.median([run.n_train for run in runs]))
        row: dict[str, Any] = {
            "init": init,
            "n_subjects": subjects_label(n_subjects),
            "n_train": int(median_train) if median_train.is_integer() else median_train,
            "seeds": len(runs),
        }
        for column in DICE_COLUMNS:
            row[column], row[f"{column}_std"] = _mean_and_std([run.mean(column) for run in runs])
        for column in HD95_COLUMNS:
            row[column] = _mean_and_std([run.median(column) for run in runs])[0]
        baseline_runs = cells.get((baseline, n_subjects))
        if init == baseline or baseline_runs is None:
            row["delta_dice"], row["p_value"], row["pairs"] = None, None, 0
        else:
            # over the seeds both have, as the paired test: a seed's subset moves every init alike
            shared = {run.seed for run in runs} & {run.seed for run in baseline_runs}
            row["delta_dice"] = (_mean_and_std([run.mean("dice_mean") for run in runs if run.seed in shared])[0]
                                 - _mean_and_std([run.mean("dice_mean") for run in baseline_runs
                                                  if run.seed in shared])[0]) if shared else None
            row["p_value"], row["pairs"] = paired_wilcoxon(runs, baseline_runs)
        rows.append(row)
    return rows


_SUMMARY_FIRST = (-1, 0, 1, 2)  # the class mean before the classes, for the reader of results.csv
STUDY_COLUMNS = (("init", "n_subjects", "n_train", "seeds")
                 + tuple(name for i in _SUMMARY_FIRST for name in (DICE_COLUMNS[i], f"{DICE_COLUMNS[i]}_std"))
                 + tuple(HD95_COLUMNS[i] for i in _SUMMARY_FIRST) + ("delta_dice", "p_value", "pairs"))


# --------------------------------------------------------------------------------------------
# Files: results.csv, results.md, results.png


def _study_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(STUDY_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[column] is None else _csv_cell(row[column]) for column in STUDY_COLUMNS])
    return buffer.getvalue()


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return MISSING
    return f"{value:.{digits}f}"  # inf prints as "inf"


def _plus_minus(mean: float, std: float) -> str:
    return f"{_number(mean)} ± {_number(std)}"


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.3f}"


def _p_text(p_value: float | None) -> str:
    if p_value is None:
        return MISSING
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    text = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    text += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(text)


def study_markdown(rows: Sequence[dict[str, Any]], baseline: str = "scratch") -> str:
    """The ``results.md`` text: explanation, the main table and a per-class table."""
    main = _markdown_table(
        ("Init", "Subjects", "Train subjects", "Seeds", "Dice", f"Δ Dice vs {baseline}", "p", "HD95 (mm)"),
        [(str(row["init"]), str(row["n_subjects"]), str(row["n_train"]), str(row["seeds"]),
          _plus_minus(row["dice_mean"], row["dice_mean_std"]), _signed(row["delta_dice"]),
          _p_text(row["p_value"]), _number(row["hd95_mean"], 2)) for row in rows])
    per_class = _markdown_table(
        ("Init", "Subjects", *(f"Dice {name.upper()}" for name in CLASS_NAMES),
         *(f"HD95 {name.upper()} (mm)" for name in CLASS_NAMES)),
        [(str(row["init"]), str(row["n_subjects"]),
          *(_plus_minus(row[f"dice_{name}"], row[f"dice_{name}_std"]) for name in CLASS_NAMES),
          *(_number(row[f"hd95_{name}"], 2) for name in CLASS_NAMES)) for row in rows])
    return "\n".join([
        "# Fine-tuning results",
        "",
        "- **Dice**: mean 3D Dice over the test volumes (every test subject at ED and ES, mean of LV, "
        "MYO and RV), averaged over the subset seeds; **±** is the standard deviation over the subset "
        f"seeds ({MISSING} with one seed).",
        f"- **Subjects**: requested number of training subjects ({ALL_SUBJECTS_LABEL}: the whole "
        "training pool); **Train subjects**: the number actually used (median over seeds).",
        f"- **Δ Dice**: Dice minus that of `{baseline}` (training from scratch) at the same number of "
        "training subjects, both over the seeds both have (where a cell has seeds the other lacks, Δ "
        "is not the difference of the two Dice columns).",
        "- **p**: two-sided paired Wilcoxon signed-rank test over the test volumes of per-volume Dice "
        f"against `{baseline}` at the same size (each volume's Dice first averaged over the seeds both "
        "have).",
        "- **HD95**: median over test volumes of the 95th-percentile Hausdorff distance (mean of the "
        "three classes), averaged over seeds; `inf` when a class is missing from the prediction in "
        "at least half of the volumes.",
        "",
        main,
        "",
        "## Per class",
        "",
        per_class,
        "",
    ])


def plot_study(rows: Sequence[dict[str, Any]], path: str | os.PathLike, baseline: str = "scratch") -> Path | None:
    """Mean Dice ± std over seeds against training subjects, one line per init, to a PNG.

    Returns the path, or ``None`` when matplotlib is not installed (the figure is optional).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    # A bare Figure on the Agg canvas: no pyplot, so no global backend or GUI state is touched.
    figure = Figure(figsize=(6.0, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    inits = list(dict.fromkeys(row["init"] for row in rows))
    inits.sort(key=lambda init: (init != baseline, init))
    log_x = all(row["n_train"] > 0 for row in rows)
    for index, init in enumerate(inits):
        points = sorted((row["n_train"], row["dice_mean"], row["dice_mean_std"]) for row in rows if row["init"] == init)
        # Inits share their x values; a small per-init shift keeps the error bars apart.
        shift = 1.0 + 0.015 * (index - (len(inits) - 1) / 2)
        x = [point[0] * shift if log_x else point[0] for point in points]
        y = [point[1] for point in points]
        error = [0.0 if math.isnan(point[2]) else point[2] for point in points]
        style = (dict(color="black", linestyle="--", marker="s", linewidth=2.0, zorder=3) if init == baseline
                 else dict(marker="o", linewidth=1.5))
        axes.errorbar(x, y, yerr=error, capsize=3, label=init, **style)
    if log_x:
        axes.set_xscale("log")
        ticks = sorted({row["n_train"] for row in rows})
        axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
        axes.minorticks_off()
    axes.set_xlabel("training subjects")
    axes.set_ylabel("mean 3D Dice (test)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    return path


def write_study_results(evaluations: Sequence[RunEvaluation], out_dir: str | os.PathLike,
                        baseline: str = "scratch") -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and (with matplotlib) ``results.png`` to ``out_dir``.

    Returns ``{"csv": ..., "markdown": ..., "figure": ...}`` for the files written (no
    ``"figure"`` without matplotlib).
    """
    out_dir = Path(out_dir)
    if not evaluations:
        raise InputError(out_dir, "no evaluated runs to summarize")
    rows = study_table(evaluations, baseline)
    written = {"csv": out_dir / "results.csv", "markdown": out_dir / "results.md"}
    write_text(written["csv"], _study_csv(rows))
    write_text(written["markdown"], study_markdown(rows, baseline) + measures_markdown(study_measure_rows(evaluations)))
    figure = plot_study(rows, out_dir / "results.png", baseline)
    if figure is not None:
        written["figure"] = figure
    return written


# --------------------------------------------------------------------------------------------
# The terminal line per run


def format_runs_table(evaluations: Sequence[RunEvaluation]) -> str:
    """One aligned line per run (in the order given), for ``run.py evaluate`` to print."""
    rows = [{
        "run": evaluation.run,
        "init": evaluation.init,
        "n": subjects_label(evaluation.n_subjects),
        "seed": evaluation.seed,
        "volumes": len(evaluation.volumes),
        "dice": evaluation.mean("dice_mean"),
        **{name.upper(): evaluation.mean(f"dice_{name}") for name in CLASS_NAMES},
        "HD95 median (mm)": evaluation.median("hd95_mean"),
    } for evaluation in evaluations]
    return format_table(rows)
