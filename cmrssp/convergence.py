"""Did a run converge? Its training and validation loss over the last part of the run, from
``metrics.csv``, so a study can show that every fine-tune had flattened by its end.

For a run of T optimizer steps, the *tail* is the epochs that end in the last ``tail`` fraction of
the steps (default the last 20 %), and the *window before* the same number of steps just before
it. ``train_change`` is the tail's mean training loss relative to the window before (-0.01: 1 %
lower); ``val_change`` compares the last validation with the last one at or before the tail's
start. ``flat`` says both changed by less than ``tolerance`` (default 5 %) in either direction.

What this cannot say: with a schedule that decays to zero (poly, cosine) the loss flattens at the
end whatever the run has learnt; a run that is still far from what a longer run reaches looks
flat too. Comparing with a run of twice the budget is the stronger check
(``benchmarks/twins.py``; README, "ACDC, real scans").
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cmrssp.errors import InputError
from cmrssp.run_folder import METRICS


@dataclass(frozen=True)
class Convergence:
    """The end of one run's loss curves (see the module docstring)."""

    run: str
    steps: int
    train_loss: float  # mean over the tail
    train_change: float  # relative to the window before the tail
    val_loss: float  # the last validation (NaN without validation)
    val_change: float
    best_val_loss: float
    best_val_step: int
    flat: bool


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` as numbers (an empty cell, e.g. no validation that epoch, is NaN)."""
    path = Path(run_dir) / METRICS
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise InputError(path, "missing; has the run trained at least one epoch?") from None
    if not rows or "train_loss" not in rows[0] or "step" not in rows[0]:
        raise InputError(path, "no training rows (expected the columns step and train_loss)")
    return [{key: float(value) if value not in ("", None) else math.nan for key, value in row.items()} for row in rows]


def run_convergence(run_dir: Path, tail: float = 0.2, tolerance: float = 0.05) -> Convergence:
    """The convergence summary of one run folder."""
    if not 0 < tail <= 0.5:
        raise InputError(None, f"tail must be in (0, 0.5], got {tail}")
    rows = read_metrics(run_dir)
    steps = int(rows[-1]["step"])
    start = steps * (1 - tail)
    before = steps * (1 - 2 * tail)
    in_tail = [row["train_loss"] for row in rows if row["step"] > start]
    in_before = [row["train_loss"] for row in rows if before < row["step"] <= start]
    train_loss = _mean(in_tail)
    train_change = train_loss / _mean(in_before) - 1 if in_before else math.nan

    validated = [row for row in rows if not math.isnan(row.get("val_loss", math.nan))]
    val_loss = val_change = best_val_loss = math.nan
    best_val_step = -1
    if validated:
        val_loss = validated[-1]["val_loss"]
        earlier = [row for row in validated if row["step"] <= start]
        val_change = val_loss / earlier[-1]["val_loss"] - 1 if earlier else math.nan
        best = min(validated, key=lambda row: row["val_loss"])
        best_val_loss, best_val_step = best["val_loss"], int(best["step"])
    changes = [change for change in (train_change, val_change) if not math.isnan(change)]
    flat = bool(changes) and all(abs(change) < tolerance for change in changes)
    return Convergence(Path(run_dir).name, steps, train_loss, train_change, val_loss, val_change, best_val_loss,
                       best_val_step, flat)


def convergence_rows(run_dirs: Iterable[Path], tail: float = 0.2, tolerance: float = 0.05) -> list[dict[str, object]]:
    """One printable row per run (for :func:`cmrssp.table.format_table`)."""
    rows = []
    for run_dir in run_dirs:
        c = run_convergence(run_dir, tail, tolerance)
        rows.append({"run": c.run, "steps": c.steps, "train loss": f"{c.train_loss:.4f}",
                     "train Δ last 20%": _percent(c.train_change), "val loss": f"{c.val_loss:.4f}",
                     "val Δ last 20%": _percent(c.val_change), "best val (step)": f"{c.best_val_loss:.4f} ({c.best_val_step})",
                     "flat": "yes" if c.flat else "no"})
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:+.1f}%"
