"""Run folders: one home for file names, run names, the saved record and the run's log."""

import json
import warnings

import pytest

from cmrssp.errors import InputError
from cmrssp.finetune import default_run_name, run_finetune
from cmrssp.presets import FinetuneConfig, finetune_preset, replace
from cmrssp.run_folder import LOG, RunFolder, finetune_run_name, init_label, pretrain_run_name


def test_run_names_and_one_init_label():
    assert init_label("") == "scratch" and init_label("mim") == "mim"
    assert init_label("/weights/enc.pth") == "enc" and init_label("runs/x/weights-transfer.pt") == "weights-transfer"
    assert pretrain_run_name("pcl") == "pretrain-pcl"
    assert finetune_run_name("", 0, 1) == "finetune-scratch-nall-s1"
    assert finetune_run_name("enc.pth", 10, 0) == "finetune-enc-n10-s0"
    config = finetune_preset("tiny")
    config = replace(config, init="dino", data=replace(config.data, n_subjects=4, subset_seed=2))
    assert default_run_name(config) == "finetune-dino-n4-s2"


def test_record_is_read_once_and_errors_name_the_file(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert not folder.has_record() and folder.kind is None and not folder.complete and not folder.started
    with pytest.raises(InputError, match="no config.json"):
        folder.record()
    folder.path.mkdir()
    folder.config_file.write_text("{broken")
    with pytest.raises(InputError, match="config.json.*unreadable"):
        RunFolder(folder.path).record()
    folder.config_file.write_text(json.dumps({"kind": "finetune", "preset": "x"}))
    fresh = RunFolder(folder.path)
    assert fresh.kind == "finetune"
    folder.config_file.write_text(json.dumps({"kind": "pretrain"}))
    assert fresh.kind == "finetune"  # read once per RunFolder
    assert not fresh.is_finished("finetune")  # no complete.json


def test_old_run_without_init_lr_factor_keeps_its_rate(tmp_path):
    """A run saved before init_lr_factor existed resumes at factor 1 (its optimizer.lr is the halved rate)."""
    from cmrssp.config import to_dict

    config = replace(finetune_preset("tiny"), init="mim")
    record = {"kind": "finetune", **to_dict(config)}
    del record["init_lr_factor"]
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert RunFolder(tmp_path).config(FinetuneConfig).init_lr_factor == 1.0
    record["init_lr_factor"] = 0.5
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert RunFolder(tmp_path).config(FinetuneConfig).init_lr_factor == 0.5


def test_log_holds_lines_until_the_folder_exists(tmp_path):
    shown = []
    log = RunFolder(tmp_path / "run").logger(shown.append)
    log("first")
    assert shown == ["first"] and not (tmp_path / "run").exists()  # a refused command leaves no folder
    log.open()
    log("second\nthird")
    with log.warnings_kept(), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful")
    lines = (tmp_path / "run" / LOG).read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["first", "second", "third", "warning: careful"]


def test_a_training_run_keeps_what_it_printed(tmp_path):
    config = finetune_preset("tiny")
    config = replace(config, train=replace(config.train, epochs=1))
    printed = []
    run_dir = run_finetune(config, run_dir=tmp_path / "run", data_dir=tmp_path / "data", progress=False,
                           log=printed.append)
    folder = RunFolder(run_dir)
    assert folder.is_finished("finetune") and folder.split_file.is_file()
    kept = [line.split(" ", 2)[2] for line in (run_dir / LOG).read_text().splitlines()]
    assert kept == printed and any("device cpu, precision off" in line for line in kept)
    # a resumed (here: already finished) run appends to the same log
    run_finetune(config, run_dir=run_dir, data_dir=tmp_path / "data", progress=False, resume=True, log=printed.append)
    assert len((run_dir / LOG).read_text().splitlines()) == 2 * len(kept)
