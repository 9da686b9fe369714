"""``run.py study`` at tiny scale: the whole grid, results, and restarting without redoing work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import run
from cmrssp.protocols import PROTOCOLS, StudyGrid
from cmrssp.study import plan_study


def test_plan_covers_the_grid_in_order():
    runs = plan_study("paper", PROTOCOLS["default"].grid_for("paper"), Path("runs"))
    pretrain = [r for r in runs if r.kind == "pretrain"]
    finetune = [r for r in runs if r.kind == "finetune"]
    assert [r.folder.name for r in pretrain] == ["pretrain-simclr", "pretrain-pcl", "pretrain-dino", "pretrain-mim"]
    # 4 sizes x 3 seeds x 5 initialisations, plus the whole pool once per initialisation
    assert len(finetune) == 4 * 3 * 5 + 5
    assert len({r.folder for r in runs}) == len(runs)
    assert runs.index(pretrain[-1]) < runs.index(finetune[0])
    scratch = next(r for r in finetune if r.config.init == "")
    mim = next(r for r in finetune if r.config.init == "mim")
    assert mim.config.optimizer.lr == scratch.config.optimizer.lr  # the from-scratch rate; the factor halves it
    assert mim.config.learning_rate == pytest.approx(scratch.config.learning_rate / 2)  # the study's 0.005
    assert finetune[-1].config.data.n_subjects == 0
    assert (mim.config.init_norm, mim.config.init_lr_factor) == ("pretrained", 0.5)
    # the cpu presets' pretrained inits: full rate, norms rescaled (README "The main job", "ACDC, real scans")
    for preset in ("cpu", "cpu-real"):
        small = [r for r in plan_study(preset, PROTOCOLS["default"].grid_for(preset), Path("runs")) if r.kind == "finetune"]
        pretrained = next(r for r in small if r.config.init == "mim")
        scratch = next(r for r in small if r.config.init == "")
        assert (pretrained.config.init_norm, pretrained.config.learning_rate) == ("initial", scratch.config.learning_rate)
    with pytest.raises(Exception, match="unknown method"):
        plan_study("tiny", StudyGrid(methods=("byol",)), Path("runs"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    args = ["study", "--preset", "tiny", "--methods", "mim", "--n-subjects", "2,all", "--subset-seed", "0",
            "--runs-dir", str(root / "runs"), "--data-dir", str(root / "data"), "--no-progress", "--workers", "1"]
    return root, args


def test_study_runs_everything_then_restarts_without_redoing_work(study, capsys):
    root, args = study
    assert run.main(args + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "5 runs" in plan and "not prepared yet" in plan

    assert run.main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "phantom:" not in captured.err and "prepare:" not in captured.err  # --no-progress: no bars at all
    runs = root / "runs"
    assert "results.md" in out
    names = ["pretrain-mim", "finetune-scratch-n2-s0", "finetune-mim-n2-s0", "finetune-scratch-nall-s0", "finetune-mim-nall-s0"]
    for name in names:
        assert (runs / name / "complete.json").is_file()
    for name in names[1:]:
        assert (runs / name / "evaluation-test-last" / "volumes.csv").is_file()
    markdown = (runs / "results.md").read_text()
    assert "scratch" in markdown and "mim" in markdown
    lines = (runs / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + 4  # header + (scratch, mim) x (2, all)

    # An interrupted run (no completion marker) resumes; finished ones are skipped; its
    # evaluation is redone because its folder is gone; the dry run shows the states.
    (runs / "finetune-mim-n2-s0" / "complete.json").unlink()
    evaluation = runs / "finetune-mim-n2-s0" / "evaluation-test-last"
    for path in evaluation.iterdir():
        path.unlink()
    evaluation.rmdir()
    kept = (runs / "finetune-scratch-n2-s0" / "evaluation-test-last" / "volumes.csv").stat().st_mtime_ns
    assert run.main(args + ["--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "resume" in plan and "steps" in plan and "evaluated" in plan
    assert run.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 4 and "finetune-mim-n2-s0: resuming" in out
    assert evaluation.is_dir()
    assert (runs / "finetune-scratch-n2-s0" / "evaluation-test-last" / "volumes.csv").stat().st_mtime_ns == kept


def test_study_refuses_a_run_folder_made_with_another_configuration(study, capsys):
    root, args = study
    config_path = root / "runs" / "finetune-scratch-n2-s0" / "config.json"
    if not config_path.is_file():
        pytest.skip("needs the study of the previous test")
    config = json.loads(config_path.read_text())
    config["optimizer"]["lr"] = 0.123
    config_path.write_text(json.dumps(config))
    assert run.main(args) == 2
    assert "different configuration" in capsys.readouterr().err


def test_runs_train_side_by_side_two_at_once_on_the_cpu(tmp_path):
    # two slots on the CPU (as --cpu-runs 2; --gpus gives one per GPU): pretraining first, its
    # fine-tuning after it
    from cmrssp.scheduler import dependencies
    from cmrssp.study import run_study

    grid = StudyGrid(methods=("mim",), subsets=(2,), seeds=(0,))
    runs = plan_study("tiny", grid, tmp_path / "runs")
    mim = next(r for r in runs if r.kind == "finetune" and r.config.init == "mim")
    scratch = next(r for r in runs if r.kind == "finetune" and not r.config.init)
    assert [r.folder.name for r in dependencies(mim, runs)] == ["pretrain-mim"] and dependencies(scratch, runs) == []
    messages = []
    written = run_study("tiny", grid, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", progress=False,
                        log=messages.append, cpu_runs=2)
    assert written["markdown"].is_file()
    assert any(m.startswith("[study] training 2 runs at once on the CPU") for m in messages)
    started = [m for m in messages if m.endswith(("on cpu/0", "on cpu/1")) and "training" in m]
    assert len(started) == 3
    mim_started = next(i for i, m in enumerate(messages) if m.startswith("[study] finetune-mim-n2-s0: training"))
    pretrain_done = next(i for i, m in enumerate(messages) if m.startswith("[study] pretrain-mim: done"))
    assert mim_started > pretrain_done
    assert all((r.folder / "complete.json").is_file() for r in runs)


def test_a_cpu_slot_trains_its_run_with_its_share_of_threads(tmp_path):
    import torch

    from cmrssp.scheduler import default_cpu_runs, train_one

    class Run:
        folder = tmp_path / "finetune-x"

        def train(self, runs_dir, data_dir, progress, log, device):
            self.seen = (torch.get_num_threads(), device)
            log("trained")

    before = torch.get_num_threads()
    run = Run()
    try:
        assert train_one(run, "cpu", tmp_path, tmp_path, label="cpu/1", threads=1) == "finetune-x"
        assert run.seen == (1, "cpu")
    finally:
        torch.set_num_threads(before)
    assert default_cpu_runs(1) == 1 and default_cpu_runs(2) == 2 and default_cpu_runs(16) == 2


def test_cpu_runs_is_refused_with_gpus(capsys):
    assert run.main(["study", "--cpu-runs", "2", "--device", "cuda", "--dry-run"]) == 2
    assert "--cpu-runs 2 trains on the CPU" in capsys.readouterr().err


def test_a_run_folder_is_reused_whatever_device_trained_it(tmp_path):
    from cmrssp.config import to_dict
    from cmrssp.errors import InputError
    from cmrssp.study import check_reusable

    run = plan_study("tiny", StudyGrid(methods=("mim",), subsets=(2,), seeds=(0,)), tmp_path)[1]
    run.folder.mkdir(parents=True)
    saved = json.loads(json.dumps(to_dict(run.config)))
    saved["train"]["device"] = "cuda:1"  # e.g. placed on another GPU by --gpus
    (run.folder / "config.json").write_text(json.dumps(saved))
    check_reusable(run)
    del saved["train"]["patch_size"]  # a run made before the field existed: its default is what it did
    (run.folder / "config.json").write_text(json.dumps(saved))
    check_reusable(run)
    saved["train"]["epochs"] += 1
    (run.folder / "config.json").write_text(json.dumps(saved))
    with pytest.raises(InputError, match="different configuration"):
        check_reusable(run)


def test_a_run_folder_is_reused_under_a_length_rule_that_trains_it_alike(tmp_path, monkeypatch):
    import dataclasses

    from cmrssp import study
    from cmrssp.config import to_dict
    from cmrssp.errors import InputError
    from cmrssp.train import with_plan_fields

    run = plan_study("cpu-real", StudyGrid(methods=("mim",), subsets=(8,), seeds=(0,)), tmp_path)[-1]
    run.folder.mkdir(parents=True)
    saved = json.loads(json.dumps(to_dict(run.config)))
    saved["train"].update(epochs=40, min_iterations=1000, max_iterations=1500)
    saved["optimizer"].update(schedule_unit="epoch")
    (run.folder / "config.json").write_text(json.dumps(saved))
    longer = dataclasses.replace(run, config=with_plan_fields(run.config, (100, 0, 1000, 2000, "iteration")))
    with pytest.raises(InputError, match="different configuration"):
        study.check_reusable(longer)  # without the data it cannot tell
    monkeypatch.setattr(study, "training_samples", lambda run, cache: 128)  # 8 patients' slices: 1,000 steps both
    with pytest.raises(InputError, match="different configuration"):
        study.check_reusable(longer, cache=object())  # started, not finished: it would resume with its own config
    (run.folder / "complete.json").write_text("{}")
    study.check_reusable(longer, cache=object())
    monkeypatch.setattr(study, "training_samples", lambda run, cache: 282)  # 16 patients': 1,000 against 1,700
    with pytest.raises(InputError, match=r"different configuration \(optimizer, train\)"):
        study.check_reusable(longer, cache=object())


def test_acdc_protocol_plans_the_stratified_split_and_its_grid():
    acdc = PROTOCOLS["acdc"]
    runs = plan_study("cpu-real", acdc.grid_for("cpu-real"), Path("runs"), protocol=acdc)
    finetune = [r for r in runs if r.kind == "finetune"]
    # 1, 2, 4, 8, 16 patients x seeds 0, 1, 2 x 5 inits, plus the whole pool once per init
    assert len(finetune) == 5 * 3 * 5 + 5
    assert sorted({r.config.data.n_subjects for r in finetune}) == [0, 1, 2, 4, 8, 16]
    for r in runs:  # pretraining and fine-tuning share the split rule, so the same test patients
        data = r.config.data
        assert (data.stratify, data.test_fraction, data.valid_fraction, data.split) == ("pathology", 0.2, 0.125, "")
        assert data.synthetic.layout == "acdc"
    paper = plan_study("paper", PROTOCOLS["paper"].grid_for("paper"), Path("runs"), protocol=PROTOCOLS["paper"])
    assert {r.config.data.split for r in paper} == {"paper"}


def test_acdc_protocol_study_runs_on_a_synthetic_acdc_cohort(tmp_path, capsys):
    args = ["study", "--protocol", "acdc", "--preset", "tiny", "--methods", "mim", "--runs-dir", str(tmp_path / "runs"),
            "--data-dir", str(tmp_path / "data"), "--no-progress", "--workers", "1"]
    assert run.main(args) == 0
    out = capsys.readouterr().out
    assert "protocol acdc" in out
    runs = tmp_path / "runs"
    split = json.loads((runs / "finetune-scratch-n1-s0" / "split.json").read_text())
    assert len(split["train"]) == 1 and split["provenance"]["stratified_by"] == "pathology"
    assert all(key.startswith("acdc-") for key in split["train"] + split["valid"] + split["test"])
    pool = json.loads((runs / "finetune-mim-nall-s0" / "split.json").read_text())
    assert pool["test"] == split["test"] and pool["valid"] == split["valid"] and split["train"][0] in pool["train"]
    assert len((runs / "results.csv").read_text().splitlines()) == 1 + 4  # (scratch, mim) x (1, all)
    assert "finetune-mim-n1-s0" in (runs / "convergence.txt").read_text()

    # The probe draws its subset from the same protocol split as the study's fine-tunes.
    probe = ["probe", "--protocol", "acdc", "--preset", "tiny", "--inits", "random,mim", "--n-subjects", "1",
             "--steps", "5", "--runs-dir", str(runs), "--data-dir", str(tmp_path / "data")]
    assert run.main(probe) == 0
    record = json.loads((runs / "probe-n1-s0.json").read_text())
    assert record["train"] == split["train"] and record["valid"] == split["valid"]


def test_a_protocol_refuses_a_cache_of_another_dataset(tmp_path):
    from cmrssp.data.cache import open_cache
    from cmrssp.data.synthetic import prepare_synthetic
    from cmrssp.errors import InputError
    from cmrssp.presets import finetune_preset

    data = finetune_preset("tiny").data
    cache = open_cache(prepare_synthetic(data.synthetic, data.grid, data_dir=tmp_path, workers=1))  # M&Ms layout
    with pytest.raises(InputError, match="acdc protocol needs a cache of acdc subjects only; this one also holds mnms"):
        PROTOCOLS["acdc"].check_cache(cache)
    PROTOCOLS["default"].check_cache(cache)
