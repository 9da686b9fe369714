"""cmrssp.agreement: per-subject measures from predictions, their files and the study table."""

from types import SimpleNamespace

import numpy as np
import pytest

from cmrssp.agreement import (measures_markdown, plot_agreement, read_measures_csv, run_agreement, split_by_source,
                              study_measure_rows, subject_measure_rows, write_rows_csv)
from cmrssp.prediction import VolumePrediction


def volume(lv, myo, rv, shape=(6, 6, 2)):
    """A label volume with the first lv voxels LV, the next myo MYO, the next rv RV (in C order)."""
    flat = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    flat[:lv] = 1
    flat[lv:lv + myo] = 2
    flat[lv + myo:lv + myo + rv] = 3
    return flat.reshape(shape)


def subject(key, predicted, truth, spacing=(10.0, 10.0, 10.0)):
    """ED and ES predictions; each of predicted/truth: ((lv, myo, rv) at ED, (lv, myo, rv) at ES)."""
    return [VolumePrediction(key, phase, frame, volume(*p), volume(*t), spacing)
            for phase, frame, p, t in zip(("ED", "ES"), (0, 7), predicted, truth)]


def test_measures_of_prediction_and_reference_side_by_side():
    # 1 voxel = 1 mL; ED LV 10, ES LV 4 -> EF 60 %; MYO 5 at ED -> 5.25 g
    rows = subject_measure_rows(subject("a", ((10, 5, 8), (4, 5, 4)), ((10, 5, 8), (5, 5, 4))),
                                SimpleNamespace(extra={"height": 180.0, "weight": 81.0}))
    predicted, reference = split_by_source(rows)
    assert predicted[0]["lvef_pct"] == pytest.approx(60.0) and reference[0]["lvef_pct"] == pytest.approx(50.0)
    assert predicted[0]["lvmass_g"] == pytest.approx(5.25) and predicted[0]["ed_frame"] == 0 and predicted[0]["es_frame"] == 7
    assert reference[0]["bsa_m2"] == pytest.approx(np.sqrt(180 * 81 / 3600))
    only_ed = [p for p in subject("b", ((1, 1, 1), (1, 1, 1)), ((1, 1, 1), (1, 1, 1))) if p.phase == "ED"]
    assert subject_measure_rows(only_ed, SimpleNamespace(extra={})) == []


def test_agreement_files_round_trip_and_the_study_table(tmp_path):
    rows = []
    for key, es_lv in (("a", 4), ("b", 6), ("c", 5)):
        rows += subject_measure_rows(subject(key, ((10, 5, 8), (es_lv, 5, 4)), ((10, 5, 8), (5, 5, 4))), SimpleNamespace(extra={}))
    path = tmp_path / "measures.csv"
    write_rows_csv(path, rows, list(rows[0]))
    back = read_measures_csv(path)
    assert back == rows  # floats exact, frames int, missing BSA stays None
    assert read_measures_csv(tmp_path / "absent.csv") == []
    table = {row["measure"]: row for row in run_agreement(back)}
    # LVEF predicted 60, 40, 50 vs 50: differences +10, -10, 0
    assert table["lvef_pct"]["bias"] == pytest.approx(0.0) and table["lvef_pct"]["mae"] == pytest.approx(20 / 3)
    assert table["lvedv_ml"]["mae"] == 0.0
    evaluations = [SimpleNamespace(init="scratch", n_subjects=2, measures=back),
                   SimpleNamespace(init="scratch", n_subjects=2, measures=[r for r in back if r["key"] != "a"]),
                   SimpleNamespace(init="mim", n_subjects=0, measures=())]
    study = study_measure_rows(evaluations)
    assert len(study) == 1 and study[0]["seeds"] == 2
    assert study[0]["lvef_pct_mae"] == pytest.approx((20 / 3 + 5) / 2)  # mean over the seeds' runs (b, c: 10, 0)
    text = measures_markdown(study)
    assert "## Clinical measures" in text and "| scratch | 2 | 2 | 5.8 (-2.5)" in text
    assert measures_markdown([]) == ""


def test_the_agreement_figure_is_written_when_matplotlib_is_there(tmp_path):
    pytest.importorskip("matplotlib")
    rows = []
    for key, es_lv in (("a", 4), ("b", 6), ("c", 5)):
        rows += subject_measure_rows(subject(key, ((10, 5, 8), (es_lv, 5, 4)), ((10, 5, 8), (5, 5, 4))), SimpleNamespace(extra={}))
    path = plot_agreement(rows, tmp_path / "agreement.png", title="run")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
