import csv
import json
import math
import sys
import warnings

import numpy as np
import pytest
from scipy.stats import wilcoxon

from cmrssp.errors import InputError
from cmrssp.results import (
    CLASS_NAMES,
    VOLUME_COLUMNS,
    RunEvaluation,
    format_runs_table,
    paired_wilcoxon,
    read_volumes_csv,
    study_table,
    summarize_volumes,
    to_jsonable,
    write_study_results,
    write_volumes_csv,
)


def volume(key, phase="ED", dice=0.8, lv=None, myo=None, rv=None, hd=(2.0, 3.0, 4.0)):
    """A per-volume row; per-class Dice defaults to ``dice`` so dice_mean equals it exactly."""
    classes = [dice if value is None else value for value in (lv, myo, rv)]
    dataset, subject = key.split("-", 1)
    return {
        "dataset": dataset, "subject": subject, "key": key, "vendor": "A", "phase": phase, "frame": 0 if phase == "ED" else 9,
        **{f"dice_{name}": value for name, value in zip(CLASS_NAMES, classes)},
        "dice_mean": dice if lv is None and myo is None and rv is None else float(np.mean(classes)),
        **{f"hd95_{name}": value for name, value in zip(CLASS_NAMES, hd)},
        "hd95_mean": float(np.mean(hd)),
    }


def run(init, n, seed, dices, keys=None, n_train=None, **kwargs):
    keys = keys or [f"mm-{i}" for i in range(len(dices))]
    return RunEvaluation(run=f"finetune-{init}-n{n}-s{seed}", init=init, n_subjects=n,
                         n_train=n if n_train is None else n_train, seed=seed,
                         volumes=[volume(key, dice=d, **kwargs) for key, d in zip(keys, dices)])


def row_of(rows, init, n):
    return next(row for row in rows if row["init"] == init and row["n_subjects"] == n)


# ---------------------------------------------------------------- study table


def test_means_and_stds_over_seeds_and_delta():
    evaluations = [
        run("scratch", 10, 0, [0.8, 0.6]),  # run mean 0.7
        run("scratch", 10, 1, [0.9, 0.7]),  # run mean 0.8
        run("mim", 10, 0, [0.9, 0.8]),      # 0.85
        run("mim", 10, 1, [0.95, 0.85]),    # 0.90
        run("mim", 10, 2, [0.7, 0.8]),      # 0.75
    ]
    rows = study_table(evaluations)
    scratch, mim = row_of(rows, "scratch", 10), row_of(rows, "mim", 10)
    assert scratch["seeds"] == 2 and mim["seeds"] == 3
    assert scratch["dice_mean"] == pytest.approx(0.75)
    assert scratch["dice_mean_std"] == pytest.approx(math.sqrt(2 * 0.05 ** 2 / 1))
    assert mim["dice_mean"] == pytest.approx(2.5 / 3)
    assert mim["dice_mean_std"] == pytest.approx(np.std([0.85, 0.90, 0.75], ddof=1))
    assert scratch["delta_dice"] is None and scratch["p_value"] is None
    # Δ over the seeds both have (0 and 1), as the paired test: mim 0.875 against scratch 0.75,
    # not the 2.5 / 3 of mim's three seeds, whose third subset scratch never trained on
    assert mim["delta_dice"] == pytest.approx(0.875 - 0.75)
    no_shared = study_table([run("scratch", 10, 0, [0.8]), run("mim", 10, 1, [0.9])])
    assert row_of(no_shared, "mim", 10)["delta_dice"] is None
    assert scratch["hd95_mean"] == pytest.approx(3.0) and scratch["hd95_rv"] == pytest.approx(4.0)


def test_per_class_means_and_single_seed_std_is_nan():
    evaluations = [RunEvaluation("r", "scratch", 0, 120, 0, [
        volume("mm-a", lv=0.9, myo=0.8, rv=0.7), volume("mm-b", lv=0.7, myo=0.6, rv=0.5)])]
    (row,) = study_table(evaluations)
    assert row["n_subjects"] == "all" and row["n_train"] == 120
    assert row["dice_lv"] == pytest.approx(0.8) and row["dice_myo"] == pytest.approx(0.7)
    assert row["dice_rv"] == pytest.approx(0.6) and row["dice_mean"] == pytest.approx(0.7)
    assert math.isnan(row["dice_mean_std"]) and math.isnan(row["dice_lv_std"])


def test_n_train_is_median_over_seeds():
    evaluations = [run("scratch", 10, s, [0.8], n_train=t) for s, t in enumerate([9, 10, 12])]
    assert study_table(evaluations)[0]["n_train"] == 10
    evaluations = [run("scratch", 10, s, [0.8], n_train=t) for s, t in enumerate([9, 10])]
    assert study_table(evaluations)[0]["n_train"] == 9.5


def test_wilcoxon_pairs_shared_seeds_and_shared_volumes_only():
    keys = [f"mm-{i}" for i in range(6)]
    b1 = np.array([0.80, 0.70, 0.75, 0.60, 0.90, 0.65])
    m1 = b1 + np.array([0.05, -0.01, 0.07, -0.03, 0.09, 0.11])
    b2, m2 = b1 + 0.02, m1 + 0.03
    evaluations = [
        # seed 0 only for the baseline and seed 3 only for mim: both must be ignored by the test
        run("scratch", 10, 0, [0.99] * 7, keys=keys + ["mm-onlybase"]),
        run("scratch", 10, 1, list(b1) + [0.5], keys=keys + ["mm-onlybase"]),
        run("scratch", 10, 2, list(b2), keys=keys),
        run("mim", 10, 1, list(m1) + [0.9], keys=keys + ["mm-onlymim"]),
        run("mim", 10, 2, list(m2), keys=keys),
        run("mim", 10, 3, [0.2] * 6, keys=keys),
    ]
    mim = row_of(study_table(evaluations), "mim", 10)
    ours, theirs = (m1 + m2) / 2, (b1 + b2) / 2
    assert mim["pairs"] == 6
    assert mim["p_value"] == pytest.approx(wilcoxon(ours, theirs).pvalue)
    # Closed form: differences +0.055, -0.005, +0.075, -0.025, +0.095, +0.115 -> W- = 1 + 2 = 3;
    # exact two-sided p = 2 * #{rank subsets summing to <= 3} / 2^6 = 2 * 5 / 64.
    assert mim["p_value"] == pytest.approx(10 / 64)


def test_wilcoxon_all_zero_differences_and_too_few_pairs():
    same = [0.8, 0.7, 0.9]
    evaluations = [run("scratch", 10, 0, same), run("pcl", 10, 0, same)]
    pcl = row_of(study_table(evaluations), "pcl", 10)
    assert pcl["p_value"] == 1.0 and pcl["delta_dice"] == pytest.approx(0.0) and pcl["pairs"] == 3
    one = [run("scratch", 10, 0, [0.8])], [run("pcl", 10, 0, [0.9])]
    assert paired_wilcoxon(one[1], one[0]) == (None, 1)
    no_shared_seed = paired_wilcoxon([run("pcl", 10, 1, same)], [run("scratch", 10, 0, same)])
    assert no_shared_seed == (None, 0)


def test_wilcoxon_emits_no_warnings():
    # Ties and a zero difference make scipy warn / switch method; none of that may leak.
    evaluations = [run("scratch", 10, 0, [0.5, 0.5, 0.5, 0.5]), run("dino", 10, 0, [0.6, 0.4, 0.5, 0.6])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = row_of(study_table(evaluations), "dino", 10)
    assert 0.0 < row["p_value"] <= 1.0


def test_no_baseline_at_size_and_row_order():
    evaluations = [
        run("mim", 25, 0, [0.8]), run("scratch", 0, 0, [0.9]), run("dino", 10, 0, [0.7]),
        run("scratch", 10, 0, [0.6]), run("mim", 10, 0, [0.75]), run("mim", 0, 0, [0.9]),
    ]
    rows = study_table(evaluations)
    assert [(row["n_subjects"], row["init"]) for row in rows] == [
        (10, "scratch"), (10, "dino"), (10, "mim"), (25, "mim"), ("all", "scratch"), ("all", "mim")]
    assert row_of(rows, "mim", 25)["delta_dice"] is None and row_of(rows, "mim", 25)["p_value"] is None


def test_duplicate_seed_and_empty_run_are_input_errors():
    with pytest.raises(InputError, match="seed"):
        study_table([run("mim", 10, 0, [0.8]), run("mim", 10, 0, [0.7])])
    with pytest.raises(InputError, match="no evaluated"):
        RunEvaluation("r", "mim", 10, 10, 0, [])


# ---------------------------------------------------------------- per-volume summary


def test_summarize_volumes_inf_nan_and_phases():
    rows = [volume("mm-a", "ED", 0.8), volume("mm-b", "ED", 0.6), volume("mm-a", "ES", 0.7),
            volume("mm-b", "ES", 0.5)]
    for row, hd in zip(rows, [1.0, math.inf, math.nan, 3.0]):
        row["hd95_rv"] = hd
    summary = summarize_volumes(rows)
    json.dumps(summary, allow_nan=False)  # strictly JSON-safe
    assert summary["n_volumes"] == 4 and set(summary["groups"]) == {"all", "ED", "ES"}
    dice = summary["groups"]["all"]["dice_mean"]
    assert dice["n"] == 4 and dice["mean"] == pytest.approx(0.65) and dice["median"] == pytest.approx(0.65)
    assert dice["std"] == pytest.approx(np.std([0.8, 0.6, 0.7, 0.5], ddof=1))
    assert dice["min"] == 0.5 and dice["max"] == 0.8 and dice["n_inf"] == 0 and dice["n_nan"] == 0
    rv = summary["groups"]["all"]["hd95_rv"]
    assert rv == {"n": 3, "n_inf": 1, "n_nan": 1, "mean": "inf", "std": "inf", "median": 3.0, "min": 1.0, "max": "inf"}
    ed, es = summary["groups"]["ED"], summary["groups"]["ES"]
    assert ed["hd95_rv"]["mean"] == "inf" and ed["dice_mean"]["mean"] == pytest.approx(0.7)
    assert es["hd95_rv"] == {"n": 1, "n_inf": 0, "n_nan": 1, "mean": 3.0, "std": 0.0, "median": 3.0, "min": 3.0, "max": 3.0}


def test_summarize_all_nan_metric_is_null_and_empty_is_error():
    rows = [volume("mm-a", hd=(math.nan, 1.0, 1.0))]
    lv = summarize_volumes(rows)["groups"]["all"]["hd95_lv"]
    assert lv["n"] == 0 and lv["n_nan"] == 1 and lv["mean"] is None and lv["median"] is None
    with pytest.raises(InputError):
        summarize_volumes([])


def test_to_jsonable():
    value = to_jsonable({"a": (np.float32(0.5), math.inf, -math.inf, math.nan), "b": np.int64(3)})
    assert value == {"a": [0.5, "inf", "-inf", None], "b": 3}
    assert to_jsonable(value) == value


# ---------------------------------------------------------------- per-volume CSV


def test_volumes_csv_round_trip(tmp_path):
    rows = [volume("mm-a", "ED", 0.1 + 0.2), volume("mm2-b", "ES", 0.5, hd=(math.inf, math.nan, 1 / 3))]
    rows[1]["vendor"] = ""
    path = tmp_path / "volumes.csv"
    write_volumes_csv(path, rows)
    assert [p.name for p in tmp_path.iterdir()] == ["volumes.csv"]
    assert path.read_text().splitlines()[0] == ",".join(VOLUME_COLUMNS)
    back = read_volumes_csv(path)
    assert len(back) == 2 and back[1]["frame"] == 9 and isinstance(back[1]["frame"], int)
    for original, read in zip(rows, back):
        for column in VOLUME_COLUMNS:
            a, b = original[column], read[column]
            if isinstance(a, float) and math.isnan(a):
                assert math.isnan(b)
            else:
                assert a == b and type(a) is type(b), column
    assert back[1]["hd95_lv"] == math.inf and back[0]["dice_mean"] == 0.1 + 0.2


def test_volumes_csv_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_volumes_csv(tmp_path / "absent.csv")
    path = tmp_path / "v.csv"
    columns = [column for column in VOLUME_COLUMNS if column != "dice_rv"]
    path.write_text(",".join(columns) + "\n")
    with pytest.raises(InputError, match="dice_rv") as caught:
        read_volumes_csv(path)
    assert str(path) in str(caught.value)
    write_volumes_csv(path, [volume("mm-a")])
    path.write_text(path.read_text().replace("0.8,", "abc,", 1))
    with pytest.raises(InputError, match="not a number"):
        read_volumes_csv(path)


# ---------------------------------------------------------------- files and terminal table


def _study():
    return [
        run("scratch", 10, 0, [0.8, 0.6, 0.7]),   # 0.7
        run("scratch", 10, 1, [0.9, 0.7, 0.8]),   # 0.8
        run("mim", 10, 0, [0.85, 0.75, 0.8]),     # 0.8
        run("mim", 10, 1, [0.95, 0.85, 0.9]),     # 0.9
        run("scratch", 0, 0, [0.9, 0.88, 0.86], n_train=140),
        run("mim", 0, 0, [0.9, 0.88, 0.86], n_train=140),
    ]


def test_write_study_results(tmp_path):
    written = write_study_results(_study(), tmp_path / "study")
    assert written["csv"].name == "results.csv" and written["markdown"].name == "results.md"
    markdown = written["markdown"].read_text()
    assert "0.750 ± 0.071" in markdown and "0.850 ± 0.071" in markdown  # mean ± std over seeds
    assert "+0.100" in markdown and "+0.000" in markdown
    assert "0.880 ± –" in markdown  # one seed: no std
    assert "| 1.000 |" in markdown  # identical runs: p = 1
    assert "Wilcoxon" in markdown and "## Per class" in markdown
    with open(written["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["init"], row["n_subjects"]) for row in rows] == [("scratch", "10"), ("mim", "10"), ("scratch", "all"), ("mim", "all")]
    assert float(rows[1]["delta_dice"]) == pytest.approx(0.1) and rows[0]["delta_dice"] == ""
    assert float(rows[1]["p_value"]) == pytest.approx(wilcoxon([0.9, 0.8, 0.85], [0.85, 0.65, 0.75]).pvalue)
    assert math.isnan(float(rows[2]["dice_mean_std"]))
    if "figure" in written:
        assert written["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "study").iterdir() if p.name.startswith(".tmp")]


def test_figure_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    written = write_study_results(_study(), tmp_path)
    assert written["figure"] == tmp_path / "results.png" and written["figure"].stat().st_size > 1000


def test_figure_skipped_without_matplotlib(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    written = write_study_results(_study(), tmp_path)
    assert "figure" not in written and not (tmp_path / "results.png").exists()
    assert (tmp_path / "results.md").exists()


def test_empty_evaluations_is_input_error(tmp_path):
    with pytest.raises(InputError, match="no evaluated runs to summarize") as caught:
        write_study_results([], tmp_path / "out")
    assert caught.value.path == str(tmp_path / "out")


def test_format_runs_table():
    text = format_runs_table(_study()[:1] + _study()[4:5])
    lines = text.splitlines()
    assert len(lines) == 3 and "run" in lines[0] and "LV" in lines[0]
    assert "finetune-scratch-n10-s0" in lines[1] and "0.700" in lines[1] and "3.000" in lines[1]
    assert " all " in lines[2]
