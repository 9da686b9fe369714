"""Clinical measures of an evaluated run against its ground truth (issue 13): what a pretraining
method changes in the numbers a CMR report holds, not only in Dice.

Per evaluated subject with an ED and an ES volume, :func:`subject_measure_rows` gives two rows of
:class:`cmrssp.measures.CardiacMeasures` columns: one from the prediction, one from the manual
labels (same voxel size, same ED/ES frames, same height and weight). An evaluation folder keeps
them as ``measures.csv`` (column ``source``: ``prediction`` or ``reference``) and their
agreement per measure as ``agreement.csv`` (MAE, bias, 95 % limits of agreement, Pearson's r;
:func:`cmrssp.measures.agreement`). ``study`` reports the MAE and bias per init × subset size
(:func:`study_measure_rows`), and :func:`plot_agreement` draws a Bland-Altman and a scatter
plot per measure (with matplotlib).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmrssp.atomic import atomic_path
from cmrssp.data.subject_meta import SubjectMeta
from cmrssp.errors import read_text
from cmrssp.measures import MEASURES, agreement_table, cardiac_measures
from cmrssp.table import write_csv

SOURCES = ("prediction", "reference")
MEASURES_FILE = "measures.csv"  # in an evaluation folder
AGREEMENT_FILE = "agreement.csv"
MEASURE_LABELS = {
    "lvef_pct": "LVEF (%)", "rvef_pct": "RVEF (%)", "lvedv_ml": "LVEDV (mL)", "lvesv_ml": "LVESV (mL)",
    "rvedv_ml": "RVEDV (mL)", "rvesv_ml": "RVESV (mL)", "lvmass_g": "LV mass (g)",
}
AGREEMENT_COLUMNS = ("measure", "n", "n_dropped", "mae", "bias", "sd", "loa_low", "loa_high", "pearson_r")


def subject_measure_rows(predictions: Sequence[Any], meta: SubjectMeta) -> list[dict[str, Any]]:
    """The prediction's and the reference's measures of one subject (two rows), or ``[]`` when the
    subject has no ED and ES volume. ``predictions``: its :class:`cmrssp.prediction.VolumePrediction` s
    (labels and target (X, Y, Z) on the original grid); height and weight from ``meta.extra``."""
    by_phase = {prediction.phase: prediction for prediction in predictions}
    if "ED" not in by_phase or "ES" not in by_phase:
        return []
    ed, es = by_phase["ED"], by_phase["ES"]
    extra = meta.extra
    common = dict(height_cm=extra.get("height"), weight_kg=extra.get("weight"), ed_frame=ed.frame, es_frame=es.frame)
    rows = []
    for source, (ed_labels, es_labels) in zip(SOURCES, ((ed.labels, es.labels), (ed.target, es.target))):
        measures = cardiac_measures(ed_labels, es_labels, ed.spacing, **common)
        rows.append({"key": ed.key, "source": source, **measures.as_row()})
    return rows


def split_by_source(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(prediction rows, reference rows), paired by subject key in the order of the predictions."""
    reference = {row["key"]: row for row in rows if row["source"] == "reference"}
    predicted = [row for row in rows if row["source"] == "prediction" and row["key"] in reference]
    return predicted, [reference[row["key"]] for row in predicted]


def run_agreement(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Agreement per measure (:data:`cmrssp.measures.MEASURES`) of one run's measure rows."""
    predicted, reference = split_by_source(rows)
    return agreement_table(predicted, reference, MEASURES) if predicted else []


def write_rows_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV, floats exact (``repr``: ``nan``, ``inf``), None as an empty cell; atomic."""
    write_csv(path, rows, columns)


def read_measures_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """``measures.csv`` rows typed back (numbers float, frames int, empty cells None); [] if absent
    (an evaluation made before measures existed)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(read_text(path, "measures table"))):
        typed: dict[str, Any] = {}
        for name, value in row.items():
            if name in ("key", "source"):
                typed[name] = value
            elif value == "":
                typed[name] = None
            elif name.endswith("_frame"):
                typed[name] = int(value)
            else:
                typed[name] = float(value)
        rows.append(typed)
    return rows


def study_measure_rows(evaluations: Sequence[Any]) -> list[dict[str, Any]]:
    """Per init × subset size: each measure's MAE and bias, averaged over the subset seeds' runs
    (each run's agreement over its test subjects). ``evaluations``: :class:`cmrssp.results.RunEvaluation`
    with ``measures`` rows."""
    groups: dict[tuple[str, int], list[list[dict[str, Any]]]] = {}
    for evaluation in evaluations:
        table = run_agreement(evaluation.measures)
        if table:
            groups.setdefault((evaluation.init, evaluation.n_subjects), []).append(table)
    rows = []
    for (init, n_subjects), tables in sorted(groups.items(), key=lambda item: (item[0][1] == 0, item[0][1], item[0][0] != "scratch", item[0][0])):
        row: dict[str, Any] = {"init": init, "n_subjects": n_subjects, "seeds": len(tables)}
        for index, measure in enumerate(MEASURES):
            for field in ("mae", "bias"):
                values = [float(table[index][field]) for table in tables]
                row[f"{measure}_{field}"] = float(np.mean(values)) if values else math.nan
        rows.append(row)
    return rows


def plot_agreement(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path | None:
    """A Bland-Altman plot (difference against mean, bias and 95 % limits) over a scatter plot
    (prediction against reference, identity line) for each measure; None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    predicted, reference = split_by_source(rows)
    if not predicted:
        return None
    # A bare Figure on the Agg canvas, as results.plot_study: no pyplot state is touched.
    figure = Figure(figsize=(3.2 * len(MEASURES), 6.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(MEASURES), squeeze=False)
    for column, (measure, summary) in enumerate(zip(MEASURES, agreement_table(predicted, reference, MEASURES))):
        pairs = [(p[measure], r[measure]) for p, r in zip(predicted, reference)
                 if p[measure] is not None and r[measure] is not None and not (math.isnan(p[measure]) or math.isnan(r[measure]))]
        x = np.array([r for _, r in pairs])
        y = np.array([p for p, _ in pairs])
        top, bottom = axes[0][column], axes[1][column]
        top.scatter((x + y) / 2, y - x, s=10)
        for value, style in ((summary["bias"], "-"), (summary["loa_low"], "--"), (summary["loa_high"], "--")):
            if not math.isnan(value):
                top.axhline(value, color="k", linestyle=style, linewidth=0.8)
        top.set_title(MEASURE_LABELS[measure], fontsize=9)
        top.set_xlabel("mean", fontsize=8)
        top.set_ylabel("prediction − reference", fontsize=8)
        bottom.scatter(x, y, s=10)
        if len(x):
            low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            bottom.plot([low, high], [low, high], color="k", linewidth=0.8)
        bottom.set_xlabel("reference", fontsize=8)
        bottom.set_ylabel("prediction", fontsize=8)
        bottom.set_title(f"r {summary['pearson_r']:.2f}, MAE {summary['mae']:.1f}", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    return path


def measures_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The ``results.md`` section of :func:`study_measure_rows`: MAE (bias) per measure."""
    if not rows:
        return ""
    header = ["Init", "Subjects", "Seeds", *(MEASURE_LABELS[m] for m in MEASURES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [str(row["init"]), "all" if row["n_subjects"] == 0 else str(row["n_subjects"]), str(row["seeds"])]
        cells += ["–" if math.isnan(row[f"{m}_mae"]) else f"{row[f'{m}_mae']:.1f} ({row[f'{m}_bias']:+.1f})"
                  for m in MEASURES]  # – : no subject with both values (e.g. no LV predicted: no EF)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([
        "",  # a blank line after the table before it
        "## Clinical measures",
        "",
        "Mean absolute error (bias: mean of prediction − reference) over the test subjects with an ED and "
        "an ES volume, of the measures computed from the predicted and from the manual labels "
        "(volumes by voxel sums, EF, LV mass = 1.05 g/mL × myocardial volume at ED; cmrssp.measures), "
        "averaged over the subset seeds. Per run: `evaluation-*/agreement.csv` (with 95 % limits of "
        "agreement and r) and `agreement.png`.",
        "",
        *lines,
        "",
    ])
