"""``run.py results``: one results table gathered from several runs folders (cmrssp.gather)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import run


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """A tiny study over subset seeds 0 and 1 in one folder, and the same runs split into one
    folder per seed, copied without their weights (as a study run seed by seed on two machines)."""
    root = tmp_path_factory.mktemp("gather")
    whole = root / "whole"
    args = ["study", "--preset", "tiny", "--methods", "mim", "--n-subjects", "2", "--subset-seed", "0,1",
            "--runs-dir", str(whole), "--data-dir", str(root / "data"), "--no-progress", "--workers", "1",
            "--cpu-runs", "1"]
    assert run.main(args) == 0
    for seed in (0, 1):
        for source in whole.glob(f"finetune-*-s{seed}"):
            shutil.copytree(source, root / f"seed{seed}" / source.name, ignore=shutil.ignore_patterns("*.pt"))
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_of_two_folders_equal_the_study_of_both_seeds(two_seeds, capsys):
    out = two_seeds / "gathered"
    assert run.main(["results", "--runs-dir", str(two_seeds / "seed0"), "--runs-dir", str(two_seeds / "seed1"),
                     "--out", str(out)]) == 0
    assert "4 evaluated runs from 2 runs folder(s)" in capsys.readouterr().out
    gathered, whole = read_rows(out / "results.csv"), read_rows(two_seeds / "whole" / "results.csv")
    assert [(row["init"], row["seeds"]) for row in gathered] == [("scratch", "2"), ("mim", "2")]
    assert gathered == whole  # the same means over seeds, stds, differences and p values
    convergence = (out / "convergence.txt").read_text()
    assert all(f"finetune-{init}-n2-s{seed}" in convergence for init in ("scratch", "mim") for seed in (0, 1))

    # one seed's folder alone: the cell's value is that seed's run, and the two seeds average
    assert run.main(["results", "--runs-dir", str(two_seeds / "seed1")]) == 0
    one = {row["init"]: float(row["dice_mean"]) for row in read_rows(two_seeds / "seed1" / "results.csv")}
    assert run.main(["results", "--runs-dir", str(two_seeds / "seed0")]) == 0
    zero = {row["init"]: float(row["dice_mean"]) for row in read_rows(two_seeds / "seed0" / "results.csv")}
    for row in gathered:
        assert float(row["dice_mean"]) == pytest.approx((zero[row["init"]] + one[row["init"]]) / 2)


def copy_of(folder: Path, name: str) -> Path:
    target = folder.parent / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(folder, target)
    return target


def test_results_refuse_runs_that_do_not_belong_in_one_table(two_seeds, capsys):
    seed0, seed1 = two_seeds / "seed0", two_seeds / "seed1"
    out = ["--out", str(two_seeds / "refused")]

    # the same runs twice
    assert run.main(["results", "--runs-dir", str(seed0), "--runs-dir", str(seed0)] + out) == 2
    err = capsys.readouterr().err
    assert f"{seed0 / 'finetune-mim-n2-s0'}: is the same run as {seed0 / 'finetune-mim-n2-s0'}" in err
    assert "(init mim, subset size 2, seed 0)" in err

    # another recipe
    other = copy_of(seed1, "seed1-other-lr")
    config_path = other / "finetune-mim-n2-s1" / "config.json"
    config = json.loads(config_path.read_text())
    config["optimizer"]["lr"] = 0.123
    config_path.write_text(json.dumps(config))
    assert run.main(["results", "--runs-dir", str(seed0), "--runs-dir", str(other)] + out) == 2
    err = capsys.readouterr().err
    assert "finetune-mim-n2-s1" in err and "another configuration" in err and "optimizer.lr" in err

    # other test volumes
    other = copy_of(seed1, "seed1-other-test")
    volumes = other / "finetune-scratch-n2-s1" / "evaluation-test-last" / "volumes.csv"
    volumes.write_text(volumes.read_text().replace(",ED,", ",ES-renamed,", 1))
    assert run.main(["results", "--runs-dir", str(seed0), "--runs-dir", str(other)] + out) == 2
    err = capsys.readouterr().err
    assert "finetune-scratch-n2-s1" in err and "other test volumes" in err

    # several folders need --out; nothing was written for any refusal
    assert run.main(["results", "--runs-dir", str(seed0), "--runs-dir", str(seed1)]) == 2
    assert "--out" in capsys.readouterr().err
    assert not (two_seeds / "refused").exists()


def test_results_leave_out_and_name_a_run_without_evaluation(two_seeds, capsys):
    partial = copy_of(two_seeds / "seed1", "seed1-unevaluated")
    shutil.rmtree(partial / "finetune-mim-n2-s1" / "evaluation-test-last")
    assert run.main(["results", "--runs-dir", str(partial)]) == 0
    out = capsys.readouterr().out
    assert "1 finished run(s) without an evaluation (evaluation-test-last) left out: finetune-mim-n2-s1" in out
    assert [row["init"] for row in read_rows(partial / "results.csv")] == ["scratch"]

    empty = two_seeds / "empty"
    empty.mkdir()
    assert run.main(["results", "--runs-dir", str(empty)]) == 2
    assert "holds no evaluated fine-tuning run" in capsys.readouterr().err


def test_a_study_skips_finished_runs_copied_without_weights(two_seeds, capsys):
    """The way to finish a study in parts: copy a part's weightless run folders into a new runs
    folder; the study counts them as done and writes one table over all of them."""
    runs = copy_of(two_seeds / "seed0", "continued")
    args = ["study", "--preset", "tiny", "--methods", "mim", "--n-subjects", "2", "--subset-seed", "0,1",
            "--runs-dir", str(runs), "--data-dir", str(two_seeds / "data"), "--no-progress", "--workers", "1",
            "--cpu-runs", "1"]
    assert run.main(args) == 0
    out = capsys.readouterr().out
    assert "finetune-scratch-n2-s0: done already" in out and "finetune-mim-n2-s0: done already" in out
    assert "finetune-mim-n2-s1: training" in out
    assert [(row["init"], row["seeds"]) for row in read_rows(runs / "results.csv")] == [("scratch", "2"), ("mim", "2")]


def test_runs_of_different_lengths_gather_when_one_budget_rule_explains_them_all(tmp_path):
    from cmrssp.config import to_dict
    from cmrssp.errors import InputError
    from cmrssp.gather import check_budget_rule
    from cmrssp.presets import finetune_preset

    def run_folder(name: str, steps_per_epoch: int, epochs: int, min_iterations: int, max_iterations: int) -> Path:
        config = to_dict(finetune_preset("cpu-real"))  # batch 16
        config["train"].update(epochs=epochs, min_iterations=min_iterations, max_iterations=max_iterations)
        config["optimizer"].update(schedule_unit="epoch" if max_iterations == 1500 else "iteration")
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "metrics.csv").write_text(f"epoch,step,train_loss\n0,{steps_per_epoch},0.5\n")
        return folder

    short_8 = run_folder("n8-short", 8, 40, 1000, 1500)  # 1,000 steps under either rule
    long_16 = run_folder("n16-long", 17, 100, 1000, 2000)  # 1,700 steps; the short rule gives 1,000
    short_16 = run_folder("n16-short", 17, 40, 1000, 1500)
    check_budget_rule([short_8, long_16])  # the long rule gives both their schedules
    check_budget_rule([long_16, short_8])
    check_budget_rule([short_8, short_16])
    with pytest.raises(InputError, match="another length"):
        check_budget_rule([short_8, long_16, short_16])
