"""Data-parallel training: two gloo processes equal one process (losses per step, weights)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cmrssp.distributed import SINGLE, CpuSyncBatchNorm, Processes, gather_with_grad, mean_over_processes, sync_batch_norm
from cmrssp.models import load_weight_file

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"
KINDS = ("finetune", "simclr", "pcl", "dino", "mim")


def test_shards_cut_a_global_batch_in_rank_order():
    indices = torch.arange(8)
    shards = [Processes(rank, 4, rank).shard(indices) for rank in range(4)]
    assert torch.equal(torch.cat(shards), indices) and all(len(s) == 2 for s in shards)
    assert torch.equal(SINGLE.shard(indices), indices)
    x = torch.randn(3, 2)
    assert gather_with_grad(x, SINGLE) is x and mean_over_processes(x, SINGLE) is x


def test_cpu_sync_batch_norm_is_plain_batch_norm_in_one_process():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))
    converted = sync_batch_norm(model, torch.device("cpu"))
    assert isinstance(converted[1], CpuSyncBatchNorm) and isinstance(converted[4], CpuSyncBatchNorm)
    assert converted.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(6, 1, 8, 8)
    reference = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))
    reference.load_state_dict(model.state_dict())
    assert torch.allclose(converted(x), reference(x), atol=1e-6)


def _steps(path: Path) -> list[float]:
    with open(path) as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same five tiny runs, once in one process and once in two gloo processes."""
    root = tmp_path_factory.mktemp("distributed")
    data_dir = root / "data"
    single = subprocess.run([sys.executable, str(WORKER), str(root / "one"), str(data_dir), *KINDS],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(WORKER), str(root / "two"), str(data_dir), *KINDS],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_match_one(runs, kind):
    one, two = runs / "one" / kind, runs / "two" / kind
    losses_one, losses_two = _steps(one / "steps.csv"), _steps(two / "steps.csv")
    assert len(losses_one) == len(losses_two) == 3
    assert losses_two == pytest.approx(losses_one, rel=1e-4, abs=1e-5)
    assert losses_one[0] != losses_one[-1]  # the weights did move between the steps compared
    weights_one, weights_two = load_weight_file(one / "weights-last.pt"), load_weight_file(two / "weights-last.pt")
    assert weights_one.keys() == weights_two.keys()
    for key in weights_one:
        if weights_one[key].is_floating_point():
            assert torch.allclose(weights_one[key], weights_two[key], rtol=1e-4, atol=1e-5), key
    assert not (two / "steps.csv.tmp").exists()


def test_a_run_stopped_in_one_process_resumes_in_two(runs, tmp_path, monkeypatch):
    # One process trains one epoch of three and stops; two processes resume it: the losses of the
    # remaining steps and the final weights are those of an uninterrupted single-process run.
    import shutil

    sys.path.insert(0, str(WORKER.parent))
    import distributed_worker as worker
    from cmrssp.finetune import run_finetune
    from cmrssp.segmentation import SegmentationTask

    data_dir = runs / "data"
    reference = run_finetune(worker.config_for("finetune-one"), run_dir=tmp_path / "reference", data_dir=data_dir,
                             progress=False, log=lambda *_: None)
    with open(reference / "metrics.csv") as handle:
        per_epoch = int(next(csv.DictReader(handle))["step"])  # steps in epoch 0 (one subject's slices / batch)
    assert per_epoch < worker.STEPS, "the reference run must have a second epoch to stop in"
    calls = {"n": 0}
    original = SegmentationTask.train_step

    def stop_in_second_epoch(self, *args):
        calls["n"] += 1
        if calls["n"] == per_epoch + 1:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(SegmentationTask, "train_step", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(worker.config_for("finetune-one"), run_dir=tmp_path / "runs" / "finetune-one", data_dir=data_dir,
                     progress=False, log=lambda *_: None)
    monkeypatch.setattr(SegmentationTask, "train_step", original)
    assert torch.load(tmp_path / "runs" / "finetune-one" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(WORKER), str(tmp_path / "runs"), str(data_dir), "--resume", "finetune-one"],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    resumed = tmp_path / "runs" / "finetune-one"
    assert _steps(resumed / "steps.csv") == pytest.approx(_steps(reference / "steps.csv"), rel=1e-5)
    a, b = load_weight_file(reference / "weights-last.pt"), load_weight_file(resumed / "weights-last.pt")
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    shutil.rmtree(tmp_path / "runs")
