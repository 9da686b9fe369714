"""``benchmarks/twins.py``: a twin of each finished fine-tune with twice its updates."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import run
from cmrssp.convergence import run_convergence

ROOT = Path(__file__).resolve().parents[1]


def load_twins():
    spec = importlib.util.spec_from_file_location("twins", ROOT / "benchmarks" / "twins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    args = ["study", "--preset", "tiny", "--methods", "mim", "--n-subjects", "2", "--runs-dir", str(root / "runs"),
            "--data-dir", str(root / "data"), "--no-progress", "--workers", "1", "--cpu-runs", "1"]
    assert run.main(args) == 0
    return root


def test_a_twin_is_the_same_run_with_twice_the_updates(study, capsys):
    twins = load_twins()
    out = study / "twins"
    assert twins.main(["--runs-dir", str(study / "runs"), "--out", str(out), "--only", "mim", "--cpu-runs", "1",
                       "--data-dir", str(study / "data")]) == 0
    original, twin = study / "runs" / "finetune-mim-n2-s0", out / "finetune-mim-n2-s0"
    assert not (out / "finetune-scratch-n2-s0").exists()  # --only
    steps = run_convergence(original).steps
    assert run_convergence(twin).steps == 2 * steps

    config, twin_config = (json.loads((folder / "config.json").read_text()) for folder in (original, twin))
    for key in ("epochs", "iterations", "min_iterations", "max_iterations"):
        assert twin_config["train"].pop(key) == 2 * config["train"].pop(key)
    assert (config["train"].pop("device"), twin_config["train"].pop("device")) == ("auto", "cpu")  # where it ran
    assert twin_config == config  # init, subset, seed, optimiser, augmentation: all the run's own
    # the init is the study's own pretraining, found through the study's runs folder
    assert str(study / "runs" / "pretrain-mim" / "weights-transfer.pt") in (twin / "log.txt").read_text()

    table = (out / "twins.md").read_text()
    row = next(line for line in table.splitlines() if "finetune-mim-n2-s0" in line)
    assert f"{steps} / {2 * steps}" in row
    assert "finetune-mim-n2-s0" in capsys.readouterr().out
    # the twins of a study form a study: one configuration but for init and subset
    assert run.main(["results", "--runs-dir", str(out)]) == 0
    assert (out / "results.csv").is_file()


def test_no_finished_fine_tune_is_an_error(study, capsys):
    twins = load_twins()
    assert twins.main(["--runs-dir", str(study / "runs"), "--out", str(study / "none"), "--only", "dino"]) == 1
    assert "no finished fine-tune matching dino" in capsys.readouterr().err
    assert not (study / "none").exists()


@pytest.mark.parametrize("flags", [["--factor", "0"], ["--device", "cuda", "--cpu-runs", "2"], ["--cpu-runs", "0"]])
def test_flags_it_cannot_honour_are_refused(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_twins().main(["--runs-dir", str(tmp_path), "--out", str(tmp_path / "twins"), *flags])
    assert exit_info.value.code == 2
    assert ("--factor" if "--factor" in flags else "--cpu-runs") in capsys.readouterr().err
    assert not (tmp_path / "twins").exists()
