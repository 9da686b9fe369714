"""The training loop at tiny scale: exact resume, divergence guard, weight transfer, CLI."""

import csv

import numpy as np
import pytest
import torch

import run
from cmrssp.errors import InputError
from cmrssp.finetune import run_finetune
from cmrssp.models import UNet, encoder_state, load_weight_file
from cmrssp.presets import finetune_preset, replace
from cmrssp.segmentation import SegmentationTask
from cmrssp.train import OptimizerConfig, TrainConfig, TrainingError, is_validation_epoch, make_plan, same_plan


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def tiny(epochs=2, **train_changes):
    config = finetune_preset("tiny")
    return replace(config, train=replace(config.train, epochs=epochs, **train_changes))


def weights(path):
    return load_weight_file(path)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_plan_epochs_and_iteration_budget():
    plan = make_plan(100, TrainConfig(epochs=3, batch_size=32), OptimizerConfig())
    assert (plan.iterations_per_epoch, plan.epochs, plan.total_steps) == (3, 3, 9)
    assert np.all(plan.learning_rates[:3] == 0.01) and plan.learning_rates[3] < 0.01  # stepped per epoch
    budget = make_plan(100, TrainConfig(iterations=10, batch_size=32), OptimizerConfig())
    assert (budget.epochs, budget.total_steps) == (4, 10)
    assert np.all(np.diff(budget.learning_rates) < 0)  # stepped per iteration
    small = make_plan(5, TrainConfig(epochs=2, batch_size=32), OptimizerConfig())
    assert (small.batch_size, small.iterations_per_epoch) == (5, 1)
    # epochs bounded by an iteration range: 3 epochs x 3 steps = 9 -> at least 20 / at most 5 steps
    bounded = TrainConfig(epochs=3, batch_size=32, min_iterations=20, max_iterations=50)
    assert (make_plan(100, bounded, OptimizerConfig()).total_steps, make_plan(100, bounded, OptimizerConfig()).epochs) == (20, 7)
    capped = make_plan(100, replace(bounded, min_iterations=0, max_iterations=5), OptimizerConfig())
    assert (capped.total_steps, capped.epochs) == (5, 2) and np.all(np.diff(capped.learning_rates) < 0)
    within = make_plan(1000, bounded, OptimizerConfig())  # 31 steps per epoch: 93 -> 50
    assert within.total_steps == 50
    inside = make_plan(300, bounded, OptimizerConfig())  # 9 per epoch: 27 lies within [20, 50]: epochs as given
    assert (inside.total_steps, inside.epochs) == (27, 3) and np.all(inside.learning_rates[:9] == 0.01)
    with pytest.raises(InputError, match="min_iterations"):
        make_plan(100, replace(bounded, min_iterations=60), OptimizerConfig())


def test_same_plan_holds_where_a_longer_budget_rule_leaves_a_run_as_it_was():
    from cmrssp.train import plan_fields, with_plan_fields

    base = finetune_preset("cpu-real")  # batch 16
    short = with_plan_fields(base, (40, 0, 1000, 1500, "epoch"))
    long = with_plan_fields(base, (100, 0, 1000, 2000, "iteration"))
    assert plan_fields(long) == (100, 0, 1000, 2000, "iteration") and long.unet == base.unet
    # 128 slices: 8 steps an epoch, both rules hit the 1,000-step floor (stepped per iteration)
    assert same_plan(128, short, long)
    # 160 slices: 10 steps an epoch; the long rule's 1,000 natural steps step per iteration as the floor does
    assert same_plan(160, short, long)
    # 282 slices: 17 steps an epoch, 1,000 steps against 1,700
    assert make_plan(282, long.train, long.optimizer).total_steps == 1700 and not same_plan(282, short, long)
    # the same number of steps, but stepped per epoch (no bound reached) against per iteration
    by_epochs = with_plan_fields(base, (10, 0, 0, 0, "epoch"))
    by_iterations = with_plan_fields(base, (1, 0, 160, 0, "epoch"))
    assert make_plan(256, by_epochs.train, by_epochs.optimizer).total_steps == 160
    assert make_plan(256, by_iterations.train, by_iterations.optimizer).total_steps == 160
    assert not same_plan(256, by_epochs, by_iterations)
    assert same_plan(256, by_epochs, with_plan_fields(base, (10, 0, 0, 500, "epoch")))


def test_validation_by_steps_is_independent_of_the_epoch_length():
    # 2 steps per epoch, 20 steps: every 6 steps -> after the epochs ending at steps 6, 12, 18 and the last (20)
    short = TrainConfig(iterations=20, batch_size=10, validate_steps=6)
    plan = make_plan(20, short, OptimizerConfig())
    assert [e for e in range(plan.epochs) if is_validation_epoch(e, plan, short)] == [2, 5, 8, 9]
    # 5 steps per epoch: the epochs ending at 10 (crossing 6), 15 (12), 20 (18 and the last)
    long = TrainConfig(iterations=20, batch_size=10, validate_steps=6)
    plan = make_plan(50, long, OptimizerConfig())
    assert [e for e in range(plan.epochs) if is_validation_epoch(e, plan, long)] == [1, 2, 3]
    by_epochs = TrainConfig(epochs=7, batch_size=10, validate_every=3)
    plan = make_plan(20, by_epochs, OptimizerConfig())
    assert [e for e in range(plan.epochs) if is_validation_epoch(e, plan, by_epochs)] == [2, 5, 6]


def test_training_writes_run_folder_and_resume_is_exact(tmp_path, data_dir, monkeypatch):
    config = tiny(epochs=3)
    reference = run_finetune(config, run_dir=tmp_path / "a", data_dir=data_dir, progress=False, log=lambda *_: None)
    with open(reference / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for column in ("lr", "train_loss", "train_ce", "train_dice_loss", "val_loss", "val_dice_lv", "val_dice_myo",
                   "val_dice_rv", "val_dice_mean"):
        assert np.isfinite(float(rows[-1][column])), column
    for name in ("config.json", "split.json", "checkpoint.pt", "weights-last.pt", "weights-best.pt"):
        assert (reference / name).is_file()

    # stop the same run in the middle of its second epoch, then resume it
    calls = {"n": 0}
    original = SegmentationTask.train_step
    stop_at = int(rows[0]["step"]) + 2  # in the middle of the second epoch

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(SegmentationTask, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(config, run_dir=tmp_path / "b", data_dir=data_dir, progress=False, log=lambda *_: None)
    monkeypatch.setattr(SegmentationTask, "train_step", original)
    stopped = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert 0 < stopped["epoch"] < 3
    with pytest.raises(InputError, match="--resume"):
        run_finetune(config, run_dir=tmp_path / "b", data_dir=data_dir, progress=False, log=lambda *_: None)
    run_finetune(config, run_dir=tmp_path / "b", data_dir=data_dir, resume=True, progress=False, log=lambda *_: None)
    assert_same_weights(weights(reference / "weights-last.pt"), weights(tmp_path / "b" / "weights-last.pt"))
    with open(tmp_path / "b" / "metrics.csv") as handle:
        assert [r["train_loss"] for r in csv.DictReader(handle)] == [r["train_loss"] for r in rows]


def test_validate_every_skips_validation_and_best_selection_between(tmp_path, data_dir):
    run_dir = run_finetune(tiny(epochs=3, validate_every=2), run_dir=tmp_path / "v", data_dir=data_dir,
                           progress=False, log=lambda *_: None)
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [bool(r["val_loss"]) for r in rows] == [False, True, True]  # epoch 2 is the last: validated
    complete = __import__("json").loads((run_dir / "complete.json").read_text())
    assert complete["epochs"] == 3 and complete["last"]["epoch"] == 2
    assert (run_dir / "weights-best.pt").is_file()


def test_checkpoint_seconds_defers_checkpoints_to_the_end(tmp_path, data_dir, monkeypatch):
    written = []
    original = torch.save

    def recording_save(obj, target, *args, **kwargs):
        written.append(obj.get("epoch") if isinstance(obj, dict) and "optimizer" in obj else None)
        return original(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", recording_save)
    run_dir = run_finetune(tiny(epochs=3, checkpoint_seconds=1e9), run_dir=tmp_path / "c", data_dir=data_dir,
                           progress=False, log=lambda *_: None)
    assert [epoch for epoch in written if epoch is not None] == [3]  # one checkpoint, after the last epoch
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    config = tiny(epochs=3)
    original_step, original_epoch = SegmentationTask.train_step, SegmentationTask.before_epoch

    def remember_epoch(self, epoch):
        self.current_epoch = epoch
        original_epoch(self, epoch)

    def poisoned(self, indices, generator, step):
        loss, parts = original_step(self, indices, generator, step)
        return (loss * float("nan") if self.current_epoch == 2 else loss), parts

    monkeypatch.setattr(SegmentationTask, "before_epoch", remember_epoch)
    monkeypatch.setattr(SegmentationTask, "train_step", poisoned)
    with pytest.raises(TrainingError, match="non-finite"):
        run_finetune(config, run_dir=tmp_path / "nan", data_dir=data_dir, progress=False, log=lambda *_: None)
    checkpoint = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2
    assert all(torch.isfinite(v.float()).all() for v in checkpoint["model"].values())
    assert all(torch.isfinite(v.float()).all() for v in weights(tmp_path / "nan" / "weights-last.pt").values())


def test_init_transfers_encoder_and_freezing_keeps_it(tmp_path, data_dir):
    config = tiny(epochs=1)
    torch.manual_seed(123)
    donor = UNet(config.unet)
    source = tmp_path / "encoder.pt"
    torch.save(encoder_state(donor), source)
    messages = []
    frozen = replace(config, init=str(source), freeze_encoder_epochs=1)
    run_dir = run_finetune(frozen, run_dir=tmp_path / "ft", data_dir=data_dir, progress=False, log=messages.append)
    assert any("transferred" in m and str(source) in m for m in messages)
    trained = weights(run_dir / "weights-last.pt")
    for key, value in encoder_state(donor).items():
        if "running" in key or "num_batches" in key:
            continue  # BN statistics keep updating while frozen (protocol 7.19)
        assert torch.equal(trained[key], value), key
    assert not torch.equal(trained["decoder.output_convs.0.weight"], donor.state_dict()["decoder.output_convs.0.weight"])
    # the study's halved rate from Python too, not only from the command line (epoch 0 of poly: the base rate)
    with open(run_dir / "metrics.csv") as handle:
        first = next(csv.DictReader(handle))
    assert float(first["lr"]) == pytest.approx(config.optimizer.lr * 0.5)
    assert any(f"lr {config.optimizer.lr * 0.5:g}" in m for m in messages)

    messages.clear()
    rescaled = replace(config, init=str(source), init_norm="initial")
    run_finetune(rescaled, run_dir=tmp_path / "rescaled", data_dir=data_dir, progress=False, log=messages.append)
    assert any(f"{2 * len(config.unet.channels)} transferred convolutions rescaled" in m for m in messages)
    with pytest.raises(InputError, match="init_norm"):
        replace(config, init_norm="grown")

    bad = tmp_path / "other.pt"
    torch.save({"something.else": torch.zeros(3)}, bad)
    with pytest.raises(InputError, match="nothing would transfer"):
        run_finetune(replace(config, init=str(bad)), run_dir=tmp_path / "bad", data_dir=data_dir, progress=False)
    with pytest.raises(InputError, match="pretrain --method pcl"):
        run_finetune(replace(config, init="pcl"), run_dir=tmp_path / "pcl", runs_dir=tmp_path / "runs",
                     data_dir=data_dir, progress=False)


def test_cli_finetune_default_name_and_resume(tmp_path, data_dir, capsys):
    args = ["finetune", "--preset", "tiny", "--n-subjects", "2", "--subset-seed", "1", "--epochs", "1",
            "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir), "--no-progress"]
    assert run.main(args) == 0
    run_dir = tmp_path / "runs" / "finetune-scratch-n2-s1"
    assert (run_dir / "weights-last.pt").is_file()
    assert '"train"' in (run_dir / "split.json").read_text()
    assert run.main(args) == 2  # a finished run is not overwritten
    assert "--resume" in capsys.readouterr().err
    assert run.main(args + ["--resume"]) == 0  # nothing left to do
    switched = args[:-1] + ["--out", str(tmp_path / "switched"), "--set", "augment.intensity_scale_mode=factor"]
    assert run.main(switched) == 0
    import json

    assert json.loads((tmp_path / "switched" / "config.json").read_text())["augment"]["intensity_scale_mode"] == "factor"


def test_a_model_that_fails_to_compile_trains_eagerly(tmp_path, data_dir, monkeypatch):
    class Broken(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

        def forward(self, *args, **kwargs):
            raise RuntimeError("inductor backend unavailable")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: Broken(module))
    with pytest.warns(UserWarning, match="torch.compile failed"):
        run_dir = run_finetune(tiny(epochs=1, compile="on"), run_dir=tmp_path / "k", data_dir=data_dir,
                               progress=False, log=lambda *_: None)
    assert (run_dir / "complete.json").is_file() and (run_dir / "weights-last.pt").is_file()
    with pytest.raises(InputError, match="train.compile"):
        run_finetune(tiny(epochs=1, compile="sometimes"), run_dir=tmp_path / "k2", data_dir=data_dir,
                     progress=False, log=lambda *_: None)


def test_resume_refuses_flags_that_differ_from_the_saved_configuration(tmp_path, data_dir, capsys):
    args = ["finetune", "--preset", "tiny", "--n-subjects", "2", "--epochs", "1", "--out", str(tmp_path / "run"),
            "--data-dir", str(data_dir), "--no-progress"]
    assert run.main(args) == 0
    capsys.readouterr()
    # the flags given are compared with the saved configuration, not with the preset's defaults
    assert run.main(["finetune", "--out", str(tmp_path / "run"), "--data-dir", str(data_dir), "--no-progress",
                     "--resume"]) == 0
    assert run.main(args + ["--resume", "--device", "cpu"]) == 0  # where it trains may change
    capsys.readouterr()
    assert run.main(args[:5] + ["--epochs", "3"] + args[7:] + ["--resume", "--lr", "0.5"]) == 2
    error = capsys.readouterr().err
    assert "train.epochs (saved 1, given 3)" in error and "optimizer.lr (saved 0.01, given 0.5)" in error
    with pytest.raises(InputError, match="n_subjects"):  # from Python too
        config = tiny(epochs=1)
        run_finetune(replace(config, data=replace(config.data, n_subjects=3)), run_dir=tmp_path / "run",
                     data_dir=data_dir, resume=True, progress=False)


def test_patch_size_trains_on_patches_and_validates_on_the_whole_grid(tmp_path, data_dir, monkeypatch):
    seen = {"train": set(), "eval": set()}
    forward = UNet.forward

    def recording(self, x):
        seen["train" if self.training else "eval"].add(tuple(x.shape[-2:]))
        return forward(self, x)

    monkeypatch.setattr(UNet, "forward", recording)
    run_dir = run_finetune(tiny(epochs=1, patch_size=16), run_dir=tmp_path / "p", data_dir=data_dir,
                           progress=False, log=lambda *_: None)
    assert seen == {"train": {(16, 16)}, "eval": {(32, 32)}}  # the tiny grid is 32 px
    assert (run_dir / "complete.json").is_file()


def test_a_patch_size_the_network_cannot_take_is_refused_before_any_folder(tmp_path, data_dir):
    with pytest.raises(InputError, match=r"train.patch_size 18 is not a multiple of 4"):
        run_finetune(tiny(epochs=1, patch_size=18), run_dir=tmp_path / "bad", data_dir=data_dir,
                     progress=False, log=lambda *_: None)
    assert not (tmp_path / "bad").exists()
    from cmrssp.train import training_input_size

    assert training_input_size(TrainConfig(patch_size=0), 64) == 64
    assert training_input_size(TrainConfig(patch_size=48), 64) == 48
    with pytest.raises(InputError, match="patch_size must be >= 0"):
        training_input_size(TrainConfig(patch_size=-1), 64)


def test_a_bad_training_setting_is_refused_before_a_run_folder_is_made(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    args = ["finetune", "--preset", "tiny", "--epochs", "1", "--out", str(out), "--data-dir", str(data_dir),
            "--no-progress", "--set", "train.validate_every=0"]
    assert run.main(args) == 2
    assert "train.validate_every must be at least 1" in capsys.readouterr().err
    assert not out.exists()
