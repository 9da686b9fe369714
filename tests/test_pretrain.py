"""SimCLR, PCL, MIM units and all four methods end to end at tiny scale (run, resume, transfer)."""

import json

import pytest
import torch

import run
from cmrssp.data.slices import SliceSet
from cmrssp.methods.contrastive import ProjectionNetwork, mean_pairwise_cosine, slice_positions
from cmrssp.methods.mim import random_patch_mask
from cmrssp.models import PAPER_CHANNELS, UNet, UNetConfig, count_parameters, load_transferable, load_weight_file


def test_projection_network_matches_protocol_parameter_count():
    with torch.device("meta"):
        network = ProjectionNetwork(PAPER_CHANNELS)
    assert count_parameters(network) == 14_946_912
    assert count_parameters(network.mlp) == 787_968
    keys = network.state_dict().keys()
    assert all(key.startswith(("encoder.", "mlp.")) for key in keys)


def test_position_definitions():
    n = 5
    position = torch.arange(n, dtype=torch.float32) / n
    slices = SliceSet(keys=("a",), kind="pretraining", images=torch.zeros(n, 4, 4, dtype=torch.float16), labels=None,
                      subject=torch.zeros(n, dtype=torch.long), frame=torch.zeros(n, dtype=torch.long),
                      frame_from_ed=torch.zeros(n, dtype=torch.long), slice_index=torch.arange(n), position=position,
                      phase=torch.full((n,), -1, dtype=torch.int8), centre=torch.zeros(n, 2),
                      background=torch.zeros(n), max_value=torch.ones(n))
    upstream = slice_positions(slices, torch.tensor([n]), "slice_fraction")
    assert upstream.max() == pytest.approx(0.8)  # never reaches 1 (protocol 7.8)
    normalized = slice_positions(slices, torch.tensor([n]), "normalized")
    assert normalized.tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError):
        slice_positions(slices, torch.tensor([n]), "heart")


def test_patch_mask_masks_exactly_three_quarters_of_patches_per_image():
    generator = torch.Generator().manual_seed(0)
    mask = random_patch_mask(6, 64, 8, 0.75, generator, torch.device("cpu"))
    assert mask.shape == (6, 1, 64, 64) and mask.dtype == torch.bool
    patches = mask[:, 0, ::8, ::8]
    assert patches.sum(dim=(1, 2)).tolist() == [48] * 6
    assert torch.equal(mask[:, 0], patches.repeat_interleave(8, 1).repeat_interleave(8, 2))  # patch aligned
    assert not torch.equal(patches[0], patches[1])  # drawn per image


def test_mean_pairwise_cosine_detects_collapse():
    assert mean_pairwise_cosine(torch.ones(4, 3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(3)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def pretrain_args(method, out, data_dir, *extra):
    return ["pretrain", "--method", method, "--preset", "tiny", "--out", str(out), "--data-dir", str(data_dir),
            "--no-progress", *extra]


@pytest.mark.parametrize("method", ["simclr", "pcl", "dino", "mim"])
def test_each_method_runs_saves_and_transfers(tmp_path, data_dir, method):
    out = tmp_path / f"pretrain-{method}"
    assert run.main(pretrain_args(method, out, data_dir)) == 0
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "weights-transfer.pt", "split.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["method"] == method
    transfer = load_weight_file(out / "weights-transfer.pt")
    assert all(key.startswith(("encoder.", "decoder.")) for key in transfer)
    assert any(key.startswith("encoder.") for key in transfer)
    report = load_transferable(UNet(UNetConfig(channels=(4, 8, 16))), transfer, out / "weights-transfer.pt")
    assert report.transferred == len(transfer)
    if method == "mim":
        assert (out / "weights-encoder.pt").is_file() and (out / "weights-encoder-decoder.pt").is_file()
        assert any(key.startswith("decoder.") for key in transfer)  # encoder + decoder by default
        assert (out / "mim-examples.png").is_file() or (out / "mim-examples.npz").is_file()
    # the fine-tuning command finds it by method name in the runs folder
    args = ["finetune", "--preset", "tiny", "--init", method, "--epochs", "1", "--runs-dir", str(tmp_path),
            "--data-dir", str(data_dir), "--no-progress", "--n-subjects", "2"]
    assert run.main(args) == 0
    assert (tmp_path / f"finetune-{method}-n2-s0" / "weights-last.pt").is_file()


@pytest.mark.parametrize("method", ["pcl", "mim"])
def test_pretraining_resume_is_exact(tmp_path, data_dir, method, monkeypatch):
    import csv

    from cmrssp.methods.contrastive import ContrastiveTask
    from cmrssp.methods.mim import MimTask

    reference = tmp_path / "reference"
    assert run.main(pretrain_args(method, reference, data_dir, "--epochs", "2")) == 0
    with open(reference / "metrics.csv") as handle:
        first_epoch_steps = int(next(csv.DictReader(handle))["step"])
    task_class = ContrastiveTask if method == "pcl" else MimTask
    original, calls = task_class.train_step, {"n": 0}

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == first_epoch_steps + 1:  # the first step of the second epoch
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(task_class, "train_step", interrupted)
    stopped = tmp_path / "stopped"
    assert run.main(pretrain_args(method, stopped, data_dir, "--epochs", "2")) == 130
    monkeypatch.setattr(task_class, "train_step", original)
    assert run.main(pretrain_args(method, stopped, data_dir, "--epochs", "2", "--resume")) == 0
    a, b = load_weight_file(reference / "weights-last.pt"), load_weight_file(stopped / "weights-last.pt")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_patch_size_sets_the_pretraining_input_size(tmp_path, data_dir, monkeypatch):
    seen = set()
    forward = UNet.forward

    def recording(self, x):
        seen.add(tuple(x.shape[-2:]))
        return forward(self, x)

    monkeypatch.setattr(UNet, "forward", recording)
    out = tmp_path / "pretrain-mim"
    assert run.main(pretrain_args("mim", out, data_dir, "--set", "train.patch_size=16")) == 0
    assert json.loads((out / "config.json").read_text())["train"]["patch_size"] == 16
    assert seen == {(16, 16)}  # the whole U-Net, training and validation, on 16-px patches of the 32-px grid


def test_the_log_says_which_subjects_lack_a_cine():
    # ACDC as distributed: 99 of 100 patients come without their 4D cine, so pretraining sees
    # only their ED/ES frames; the run's log must not claim "all frames" for them.
    from types import SimpleNamespace

    from cmrssp.pretrain import describe_frames

    metas = {"cine": SimpleNamespace(labelled=True, n_frames=25, label_frames=[0, 10]),
             "unlabelled": SimpleNamespace(labelled=False, n_frames=30, label_frames=[]),
             "ed-es-only": SimpleNamespace(labelled=True, n_frames=2, label_frames=[0, 1])}
    cache = SimpleNamespace(meta=metas.__getitem__)
    assert describe_frames(cache, ["cine", "unlabelled"]) == "all frames"
    assert describe_frames(cache, ["cine", "ed-es-only", "unlabelled"]) == (
        "all frames; 1 of 3 subjects have no cine, only their labelled frames")
