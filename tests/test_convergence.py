"""cmrssp.convergence against hand-made metrics.csv files."""

import math

import pytest

from cmrssp.convergence import convergence_rows, run_convergence
from cmrssp.errors import InputError


def write_metrics(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,step,lr,train_loss,val_loss"]
    lines += [f"{i},{step},0.1,{train},{'' if val is None else val}" for i, (step, train, val) in enumerate(rows)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_a_flat_end_and_a_falling_end(tmp_path):
    # 10 epochs of 10 steps; the last 20 % = epochs ending at 90, 100; the 20 % before = 70, 80
    flat = write_metrics(tmp_path / "flat", [(10 * (i + 1), 1.0 / (i + 1) if i < 6 else 0.1, 0.2 if i % 2 else None)
                                             for i in range(10)])
    result = run_convergence(flat)
    assert result.steps == 100 and result.train_loss == pytest.approx(0.1) and result.train_change == pytest.approx(0.0)
    assert result.val_change == pytest.approx(0.0) and result.flat  # last validation (100) vs the one at 80
    falling = write_metrics(tmp_path / "falling", [(10 * (i + 1), 1.0 - 0.1 * i, 0.9 - 0.05 * i) for i in range(10)])
    result = run_convergence(falling)
    assert result.train_change == pytest.approx(((0.2 + 0.1) / 2) / ((0.4 + 0.3) / 2) - 1)
    assert result.val_change == pytest.approx(0.45 / 0.55 - 1)
    assert result.best_val_step == 100 and not result.flat
    rows = convergence_rows([flat, falling])
    assert [row["flat"] for row in rows] == ["yes", "no"] and rows[1]["train Δ last 20%"] == "-57.1%"


def test_without_validation_only_the_training_loss_counts(tmp_path):
    run = write_metrics(tmp_path / "r", [(i + 1, 1.0, None) for i in range(20)])
    result = run_convergence(run)
    assert math.isnan(result.val_loss) and result.best_val_step == -1 and result.flat


def test_a_missing_or_empty_metrics_file_is_named(tmp_path):
    with pytest.raises(InputError, match="metrics.csv: missing"):
        run_convergence(tmp_path)
    (tmp_path / "metrics.csv").write_text("epoch,step\n")
    with pytest.raises(InputError, match="no training rows"):
        run_convergence(tmp_path)
