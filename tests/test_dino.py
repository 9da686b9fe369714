"""DINO pretraining task (protocol 2.3) at tiny scale: sizes, crop order, teacher, schedules,
the frozen last layer, the loop with exact resume, and the transferable encoder."""

import math

import numpy as np
import pytest
import torch

from cmrssp.augment import AUGMENT_PRESETS
from cmrssp.data.slices import SliceSet
from cmrssp.errors import InputError
from cmrssp.methods import dino as dino_module
from cmrssp.methods.dino import DinoConfig, DinoHead, DinoNetwork, DinoTask, dino_optimizer_config
from cmrssp.models import PAPER_CHANNELS, UNet, UNetConfig, count_parameters, load_transferable, load_weight_file
from cmrssp.train import OptimizerConfig, Precision, TrainConfig, fit, make_plan

CHANNELS = (4, 8, 16)
SIZE = 32
CANVAS = 48
CPU = torch.device("cpu")
TINY = DinoConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16)


def slice_set(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn((n, CANVAS, CANVAS), generator=g).to(torch.float16)
    zeros = torch.zeros(n, dtype=torch.int64)
    return SliceSet(
        keys=("a", "b"), kind="pretraining", images=images, labels=None,
        subject=torch.arange(n) % 2, frame=zeros, frame_from_ed=zeros, slice_index=torch.arange(n),
        position=torch.zeros(n), phase=torch.full((n,), -1, dtype=torch.int8),
        centre=torch.full((n, 2), (CANVAS - 1) / 2) + torch.randn((n, 2), generator=g),
        background=torch.full((n,), -1.5), max_value=torch.full((n,), 4.0),
    )


def make_task(config=TINY, seed=0, n=8):
    torch.manual_seed(seed)
    return DinoTask(CHANNELS, 1, config, AUGMENT_PRESETS, slice_set(n), SIZE, CPU)


def setup_plan(task, epochs=2, batch_size=4):
    train = TrainConfig(epochs=epochs, batch_size=batch_size)
    plan = make_plan(task.n_train(), train, dino_optimizer_config(batch_size))
    task.setup(plan)
    return plan


def test_paper_parameter_counts():
    with torch.device("meta"):
        head = DinoHead(512, 8192, 2048, 256)
        student = DinoNetwork(PAPER_CHANNELS, 1, DinoConfig())
    # Protocol 1.4 counts the 8,192 frozen weight-norm gains: 7,876,864 trainable + 8,192.
    assert count_parameters(head) == 7_885_056
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 7_885_056 - 8192
    assert count_parameters(student) == 22_044_000
    assert count_parameters(student.encoder) == 14_158_944


def test_head_init_and_unit_norm_prototypes():
    torch.manual_seed(0)
    head = DinoHead(16, 64, 32, 8)
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.shape == (64, 1) and not gain.requires_grad and bool((gain == 1).all())
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(64), atol=1e-5)
    assert all(float(layer.bias.detach().abs().max()) == 0 for layer in head.mlp if isinstance(layer, torch.nn.Linear))
    assert abs(float(head.mlp[3].weight.detach().std()) - 0.02) < 0.002
    # L2-normalised bottleneck x unit prototypes: every logit is a cosine, |logit| <= 1.
    with torch.no_grad():
        assert float(head(torch.randn(10, 16)).abs().max()) <= 1 + 1e-5


def test_network_groups_crops_by_resolution_in_order():
    torch.manual_seed(0)
    net = DinoNetwork(CHANNELS, 1, TINY)
    b = 3
    globals_ = [torch.randn(b, 1, SIZE, SIZE) for _ in range(2)]
    locals_ = [torch.randn(b, 1, SIZE // 2, SIZE // 2) for _ in range(6)]
    grouped = net([torch.cat(globals_), torch.cat(locals_)])
    assert grouped.shape == (8 * b, 64)
    # A list of single crops groups into the same two encoder calls (train-mode BN: same batches).
    assert torch.allclose(net(globals_ + locals_), grouped, atol=1e-6)
    net.eval()  # per-sample outputs, so each row can be checked against its own crop
    grouped = net([torch.cat(globals_), torch.cat(locals_)])
    for view, crop in enumerate(globals_ + locals_):
        assert torch.allclose(grouped[view * b:(view + 1) * b], net(crop), atol=1e-5)


def test_train_step_crop_order_sizes_and_teacher_input(monkeypatch):
    task = make_task()
    setup_plan(task)
    b, calls = 4, []

    def fake_augment(images, labels, centre, background, max_value, size, config, generator):
        calls.append((config, size, images.shape[0]))
        assert labels is None
        rows = torch.arange(images.shape[0], dtype=torch.float32)
        tag = {id(task.blur): 100.0, id(task.solarize): 200.0, id(task.local): 0.0}[id(config)]
        if config is task.local:
            assert torch.equal(images, images[:b].repeat(6, 1, 1))  # the batch repeated crop-major
            tag_rows = 300.0 + rows // b  # local crop k of every slice
        else:
            tag_rows = tag + 0 * rows
        return tag_rows.view(-1, 1, 1, 1).expand(-1, 1, size, size).clone(), None

    seen = {}
    task.model.register_forward_pre_hook(lambda _, args: seen.setdefault("student", args[0]))
    task.teacher.register_forward_pre_hook(lambda _, args: seen.setdefault("teacher", args[0]))
    monkeypatch.setattr(dino_module, "augment_batch", fake_augment)
    loss, parts = task.train_step(torch.arange(b), torch.Generator(), 0)

    assert [(c is task.blur, c is task.solarize, c is task.local, s, n) for c, s, n in calls] == [
        (True, False, False, SIZE, b), (False, True, False, SIZE, b), (False, False, True, SIZE // 2, 6 * b)]
    global_crops, local_crops = seen["student"]
    assert global_crops.shape == (2 * b, 1, SIZE, SIZE) and local_crops.shape == (6 * b, 1, SIZE // 2, SIZE // 2)
    assert global_crops[:, 0, 0, 0].tolist() == [100.0] * b + [200.0] * b
    assert local_crops[:, 0, 0, 0].tolist() == [300.0 + k for k in range(6) for _ in range(b)]
    assert torch.equal(seen["teacher"], global_crops)  # the teacher sees the 2 global crops only
    assert loss.ndim == 0 and loss.requires_grad and set(parts) == {"teacher_entropy", "kl_divergence"}
    # entropy is between 0 and log K; the parts add up to the loss
    assert 0 <= float(parts["teacher_entropy"]) <= math.log(64) + 1e-5
    assert math.isclose(float(parts["teacher_entropy"] + parts["kl_divergence"]), float(loss.detach()), rel_tol=1e-6)


def test_teacher_init_independent_or_copy():
    independent = make_task()
    copy = make_task(DinoConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16, teacher_init="student_copy"))
    for task, same in ((independent, False), (copy, True)):
        pairs = list(zip(task.model.state_dict().items(), task.teacher.state_dict().items()))
        # conv / linear weights (BN weights start at 1 in both networks)
        weights = [(k, s, t) for (k, s), (_, t) in pairs if s.ndim > 1 and "original0" not in k]
        assert len(weights) == 2 * len(CHANNELS) + 4
        assert all(torch.equal(s, t) == same for _, s, t in weights)
        assert not any(p.requires_grad for p in task.teacher.parameters())
        assert task.teacher.training


def test_schedules():
    task = make_task()
    plan = make_plan(8, TrainConfig(epochs=40, batch_size=4), dino_optimizer_config(4))
    task.setup(plan)
    m = task.momentum_schedule
    assert len(m) == plan.total_steps == 80 and m[0] == pytest.approx(0.996)
    s = np.arange(80)
    assert np.allclose(m, 1 - (1 - 0.996) * (np.cos(np.pi * s / 80) + 1) / 2) and np.all(np.diff(m) > 0)
    temps = task.teacher_temp_schedule
    assert len(temps) == 40 and temps[0] == 0.02 and temps[29] == pytest.approx(0.04)
    assert temps[1] == pytest.approx(0.02 + 0.02 / 29) and np.all(temps[29:] == 0.04)


def test_optimizer_config_and_parameter_groups():
    config = dino_optimizer_config(64)
    assert config == OptimizerConfig(lr=0.0075, momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="cosine",
                                     schedule_unit="iteration", final_lr=1e-6, warmup_epochs=10)
    task = make_task()
    decay, no_decay = task.parameter_groups()
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    trainable = [p for p in task.model.parameters() if p.requires_grad]
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable) == len(list(task.model.parameters())) - 1


def test_ema_and_centre_update_after_one_step():
    task = make_task()
    plan = setup_plan(task)
    loss, _ = task.train_step(torch.arange(4), torch.Generator().manual_seed(0), 1)
    loss.backward()
    teacher_views = [v.clone() for v in task._teacher_views]
    old_center = task.center.clone()
    teacher_params = [p.clone() for p in task.teacher.parameters()]
    teacher_buffers = {k: b.clone() for k, b in task.teacher.named_buffers()}
    with torch.no_grad():  # stands in for an optimizer step: move the student
        for p in task.model.parameters():
            p.add_(0.1)
    task.after_step(1)
    m = task.momentum_schedule[1]
    assert 0.996 < m < 1
    for before, student, after in zip(teacher_params, task.model.parameters(), task.teacher.parameters()):
        assert torch.allclose(after, m * before + (1 - m) * student, atol=1e-7)
    for k, b in task.teacher.named_buffers():
        assert torch.equal(b, teacher_buffers[k])  # BN statistics are not EMA'd
    batch_mean = torch.cat(teacher_views).mean(dim=0, keepdim=True)
    assert task.center.shape == (1, 64)
    assert torch.allclose(task.center, 0.9 * old_center + 0.1 * batch_mean, atol=1e-7)
    assert float(task.center.abs().sum()) > 0
    assert plan.iterations_per_epoch == 2


def test_last_layer_frozen_in_first_epoch_only():
    task = make_task()
    plan = setup_plan(task)
    last = task.model.head.last_layer.parametrizations.weight.original1
    for step, frozen in ((plan.iterations_per_epoch - 1, True), (plan.iterations_per_epoch, False)):
        task.model.zero_grad(set_to_none=True)
        loss, _ = task.train_step(torch.arange(4), torch.Generator().manual_seed(step), step)
        loss.backward()
        assert last.grad is not None and float(last.grad.abs().sum()) > 0
        task.before_optimizer_step(step)
        assert (last.grad is None) == frozen
        assert task.model.head.mlp[0].weight.grad is not None


def test_config_validation():
    with pytest.raises(InputError, match="teacher_init"):
        DinoConfig(teacher_init="copy")
    assert DinoConfig(teacher_momentum=[0.99, 1.0]).teacher_momentum == (0.99, 1.0)  # from JSON
    with pytest.raises(InputError, match="presets"):
        DinoTask(CHANNELS, 1, DinoConfig(local_augment="nope"), AUGMENT_PRESETS, slice_set(), SIZE, CPU)


def _fit(task, run_dir, resume=False):
    return fit(task, run_dir, TrainConfig(epochs=2, batch_size=4, device="cpu"), dino_optimizer_config(4), CPU,
               Precision(None, False), {"method": "dino"}, resume=resume, progress=False)


def test_fit_resume_exact_and_transfer(tmp_path, monkeypatch):
    reference = make_task()
    history = _fit(reference, tmp_path / "a")
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(np.isfinite(row[k]) for row in history for k in ("train_loss", "train_teacher_entropy"))
    assert not any(k.startswith("val_") for k in history[-1])

    interrupted = make_task()
    calls = {"n": 0}
    original = DinoTask.train_step

    def stop_in_second_epoch(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # the second step of epoch 1
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(DinoTask, "train_step", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        _fit(interrupted, tmp_path / "b")
    monkeypatch.setattr(DinoTask, "train_step", original)
    resumed = make_task(seed=123)  # a fresh process: different init, all restored from the checkpoint
    _fit(resumed, tmp_path / "b", resume=True)

    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for key, value in reference.teacher.state_dict().items():
        assert torch.equal(value, resumed.teacher.state_dict()[key]), key
    assert torch.equal(reference.center, resumed.center)

    path = tmp_path / "a" / "weights-transfer.pt"
    transfer = load_weight_file(path)
    assert transfer and all(key.startswith("encoder.") for key in transfer)
    first_conv = reference.model.encoder.enc_blocks[0].conv1.weight
    assert torch.equal(transfer["encoder.enc_blocks.0.conv1.weight"], first_conv)
    unet = UNet(UNetConfig(channels=CHANNELS))
    report = load_transferable(unet, transfer, path)
    assert report.transferred == len(transfer) == len(unet.encoder.state_dict()) and report.ignored == 0
    assert set(load_weight_file(tmp_path / "a" / "weights-last.pt")) == set(reference.model.state_dict())
