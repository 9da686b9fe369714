"""Self-supervised losses (protocol 2.1-2.4): closed forms, invariances, reference loops, dtypes, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from cmrssp.losses import dino_loss, mim_loss, nt_xent_loss, pcl_loss, update_dino_center


def _views(n=5, d=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)


def _reference_pcl(z_a, z_b, positions, temperature, threshold):
    """Direct loop over anchors and positives in float64, written from protocol 2.2."""
    z = [v / v.norm() for v in torch.cat([z_a, z_b]).double()]
    pos = [float(p) for p in positions] * 2
    n_views = len(z)
    n = n_views // 2
    total = 0.0
    for i in range(n_views):
        s = [float(z[i] @ z[k]) / temperature for k in range(n_views)]
        log_denominator = math.log(sum(math.exp(s[k]) for k in range(n_views) if k != i))
        partner = (i + n) % n_views
        positives = [j for j in range(n_views) if j != i and (j == partner or abs(pos[i] - pos[j]) < threshold)]
        total += sum(-(s[p] - log_denominator) for p in positives) / len(positives)
    return total / n_views


# --- NT-Xent ------------------------------------------------------------------------------------


def test_nt_xent_collinear_views_give_log_2n_minus_1():
    n = 3
    z = torch.ones(n, 4)
    loss = nt_xent_loss(z, 2 * z, temperature=0.1)
    assert loss.dtype == torch.float32
    assert math.isclose(float(loss), math.log(2 * n - 1), rel_tol=1e-6)


@pytest.mark.parametrize("n, temperature", [(2, 0.5), (2, 0.1), (3, 0.2)])
def test_nt_xent_orthogonal_images_closed_form(n, temperature):
    # partner at 1/T, the 2N-2 views of the other images at 0: log(1 + (2N-2)·exp(-1/T))
    z = torch.eye(n, 4)
    loss = nt_xent_loss(z, z.clone(), temperature)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / temperature))
    # s_ip − logsumexp cancels to ~1e-4 at T = 0.1: float32 leaves ~1e-6 absolute error
    assert math.isclose(float(loss), expected, rel_tol=1e-5, abs_tol=2e-6)


def test_nt_xent_matches_reference_and_invariances():
    z_a, z_b = _views()
    loss = nt_xent_loss(z_a, z_b, 0.1)
    far_apart = torch.arange(5.0)
    assert math.isclose(float(loss), _reference_pcl(z_a, z_b, far_apart, 0.1, 0.0), rel_tol=1e-5)
    assert torch.allclose(nt_xent_loss(z_b, z_a, 0.1), loss, rtol=1e-6)
    order = torch.tensor([3, 0, 4, 2, 1])
    assert torch.allclose(nt_xent_loss(z_a[order], z_b[order], 0.1), loss, rtol=1e-6)
    assert torch.allclose(nt_xent_loss(3 * z_a, 0.5 * z_b, 0.1), loss, rtol=1e-6)  # cosine: scale-free


def test_nt_xent_gradient_flows_to_both_views():
    z_a, z_b = (z.requires_grad_() for z in _views())
    nt_xent_loss(z_a, z_b, 0.1).backward()
    assert z_a.grad.abs().sum() > 0 and z_b.grad.abs().sum() > 0


# --- PCL ----------------------------------------------------------------------------------------


def test_pcl_reduces_to_nt_xent_without_close_positions():
    z_a, z_b = _views()
    positions = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8])
    reference = nt_xent_loss(z_a, z_b, 0.1)
    assert torch.equal(pcl_loss(z_a, z_b, positions, 0.1, threshold=0.0), reference)
    assert torch.equal(pcl_loss(z_a, z_b, positions, 0.1, threshold=0.1), reference)
    assert not torch.allclose(pcl_loss(z_a, z_b, positions, 0.1, threshold=0.25), reference)


def test_pcl_threshold_is_strict():
    z_a, z_b = _views(n=2)
    positions = torch.tensor([0.0, 0.1], dtype=torch.float64)  # exactly 0.1 apart
    assert torch.equal(pcl_loss(z_a, z_b, positions, 0.1, 0.1), nt_xent_loss(z_a, z_b, 0.1))
    assert not torch.allclose(pcl_loss(z_a, z_b, positions, 0.1, 0.1 + 1e-9), nt_xent_loss(z_a, z_b, 0.1))


def test_pcl_hand_computed_small_case():
    z_a = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.2]])
    z_b = torch.tensor([[0.9, 0.3], [0.5, 1.0], [-0.7, -0.7]])
    positions = torch.tensor([0.0, 0.05, 0.5])  # images 0 and 1 are positives, image 2 is alone
    for temperature, threshold in [(0.1, 0.1), (0.5, 0.1), (0.5, 0.6)]:
        loss = pcl_loss(z_a, z_b, positions, temperature, threshold)
        expected = _reference_pcl(z_a, z_b, positions, temperature, threshold)
        assert math.isclose(float(loss), expected, rel_tol=1e-5), (temperature, threshold)


def test_pcl_invariances_and_all_positive_batch():
    z_a, z_b = _views(n=6, seed=1)
    positions = torch.tensor([0.0, 0.05, 0.3, 0.35, 0.38, 0.9])
    loss = pcl_loss(z_a, z_b, positions, 0.1, 0.1)
    assert math.isclose(float(loss), _reference_pcl(z_a, z_b, positions, 0.1, 0.1), rel_tol=1e-5)
    assert torch.allclose(pcl_loss(z_b, z_a, positions, 0.1, 0.1), loss, rtol=1e-6)
    order = torch.tensor([5, 2, 0, 4, 1, 3])
    assert torch.allclose(pcl_loss(z_a[order], z_b[order], positions[order], 0.1, 0.1), loss, rtol=1e-6)
    everything_positive = pcl_loss(z_a, z_b, torch.zeros(6), 0.1, 0.1)
    assert torch.isfinite(everything_positive)
    assert math.isclose(float(everything_positive), _reference_pcl(z_a, z_b, torch.zeros(6), 0.1, 0.1), rel_tol=1e-5)


# --- DINO ---------------------------------------------------------------------------------------


def _dino_views(batch=4, k=16, n_students=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    students = [torch.randn(batch, k, generator=generator) for _ in range(n_students)]
    teachers = [torch.randn(batch, k, generator=generator) for _ in range(2)]
    center = torch.randn(1, k, generator=generator)
    return students, teachers, center


def _reference_dino(students, teachers, center, student_temp, teacher_temp):
    """The official DINOLoss.forward loop, on the concatenated views as DINO passes them."""
    student_out = (torch.cat(students).double() / student_temp).chunk(len(students))
    teacher_out = F.softmax((torch.cat(teachers).double() - center.double()) / teacher_temp, dim=-1)
    total, n_terms = 0.0, 0
    for iq, q in enumerate(teacher_out.chunk(len(teachers))):
        for v in range(len(student_out)):
            if v == iq:
                continue
            total += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
            n_terms += 1
    return float(total / n_terms)


def test_dino_uniform_teacher_and_student_give_log_k():
    k = 32
    students = [torch.full((3, k), 0.7) for _ in range(8)]
    teachers = [torch.full((3, k), -2.0) for _ in range(2)]
    loss = dino_loss(students, teachers, torch.zeros(k), 0.1, 0.04)
    assert loss.dtype == torch.float32
    assert math.isclose(float(loss), math.log(k), rel_tol=1e-6)


def test_dino_uniform_teacher_arbitrary_student_closed_form():
    students, _, _ = _dino_views()
    teachers = [torch.zeros(4, 16), torch.zeros(4, 16)]
    tau = 0.1
    # -Σ_k (1/K) log_softmax(s/τ) = logsumexp(s/τ) - mean_k(s/τ), per sample; pairs: v≠0 and v≠1
    per_view = [float((s / tau).logsumexp(-1).sub((s / tau).mean(-1)).mean()) for s in students]
    expected = (sum(per_view[1:]) + per_view[0] + sum(per_view[2:])) / 14
    loss = dino_loss(students, teachers, torch.zeros(1, 16), tau, 0.04)
    assert math.isclose(float(loss), expected, rel_tol=1e-5)


def test_dino_matches_official_loop_and_batch_permutation():
    students, teachers, center = _dino_views(n_students=5)
    loss = dino_loss(students, teachers, center, 0.1, 0.04)
    assert math.isclose(float(loss), _reference_dino(students, teachers, center, 0.1, 0.04), rel_tol=1e-5)
    assert torch.allclose(dino_loss(students, teachers, center[0], 0.1, 0.04), loss)  # (K,) centre
    order = torch.tensor([2, 0, 3, 1])
    permuted = dino_loss([s[order] for s in students], [t[order] for t in teachers], center, 0.1, 0.04)
    assert torch.allclose(permuted, loss, rtol=1e-6)


def test_dino_gradient_reaches_student_only():
    students, teachers, center = _dino_views()
    students = [s.requires_grad_() for s in students]
    teachers = [t.requires_grad_() for t in teachers]
    center.requires_grad_()
    dino_loss(students, teachers, center, 0.1, 0.04).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in students)
    assert all(t.grad is None for t in teachers) and center.grad is None


def test_update_dino_center_ema_and_reduce():
    generator = torch.Generator().manual_seed(3)
    teachers = [torch.randn(4, 6, generator=generator, requires_grad=True) for _ in range(2)]
    center = torch.randn(1, 6, generator=generator)
    batch_mean = torch.cat(teachers).detach().mean(dim=0, keepdim=True)
    updated = update_dino_center(center, teachers, 0.9)
    assert updated.shape == (1, 6) and updated.dtype == torch.float32 and not updated.requires_grad
    assert torch.allclose(updated, 0.9 * center + 0.1 * batch_mean)
    flat = update_dino_center(center[0], teachers, 0.9)
    assert flat.shape == (6,) and torch.allclose(flat, updated[0])
    seen = []

    def fake_all_reduce_mean(local_mean):
        seen.append(local_mean.shape)
        return local_mean + 1.0  # as if the other ranks' means were higher

    reduced = update_dino_center(center, teachers, 0.9, reduce=fake_all_reduce_mean)
    assert seen == [(1, 6)]
    assert torch.allclose(reduced, 0.9 * center + 0.1 * (batch_mean + 1.0))
    assert torch.equal(update_dino_center(center, teachers, 1.0), center)


# --- MIM ----------------------------------------------------------------------------------------


def test_mim_closed_forms():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(2, 1, 8, 8, generator=generator)
    mask = (torch.rand(2, 1, 8, 8, generator=generator) < 0.75).float()
    assert float(mim_loss(target.clone(), target, mask)) == 0.0
    noisy_outside = target + 5.0 * (1 - mask)  # errors only on unmasked pixels
    assert float(mim_loss(noisy_outside, target, mask)) == 0.0
    zeros = mim_loss(torch.zeros_like(target), target, mask)
    assert math.isclose(float(zeros), float((target**2)[mask.bool()].mean()), rel_tol=1e-6)
    # batch-wide mean over masked pixels, not a mean of per-image means
    uneven = torch.zeros_like(mask)
    uneven[0, 0, 0, :1] = 1
    uneven[1, 0, :, :] = 1
    pred = target + 1.0
    pred[0] += 9.0  # image 0: error 10 on its single masked pixel; image 1: error 1 on 64
    assert math.isclose(float(mim_loss(pred, target, uneven)), (100 + 64) / 65, rel_tol=1e-6)
    # (B, H, W), a bool mask and a broadcast mask
    assert torch.allclose(mim_loss(torch.zeros(2, 8, 8), target[:, 0], mask[:, 0].bool()), zeros)
    column_mask = torch.zeros(1, 1, 1, 8)
    column_mask[..., 3] = 1
    expected = float((target[..., 3] ** 2).mean())
    assert math.isclose(float(mim_loss(torch.zeros_like(target), target, column_mask)), expected, rel_tol=1e-6)


# --- precision ----------------------------------------------------------------------------------


def _all_losses(dtype, device="cpu"):
    z_a, z_b = (z.to(device, dtype) for z in _views())
    students, teachers, center = _dino_views()
    students = [s.to(device, dtype) for s in students]
    teachers = [t.to(device, dtype) for t in teachers]
    target = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    mask = torch.ones_like(target)
    positions = torch.linspace(0, 0.8, 5, device=device)
    return [
        nt_xent_loss(z_a, z_b, 0.1),
        pcl_loss(z_a, z_b, positions, 0.1, 0.3),
        dino_loss(students, teachers, center.to(device), 0.1, 0.04),
        update_dino_center(center.to(device), teachers, 0.9),
        mim_loss(torch.zeros_like(target), target, mask),
    ]


def test_float32_under_cpu_bf16_autocast():
    plain = _all_losses(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_fp32_inputs = _all_losses(torch.float32)
        bf16_inputs = _all_losses(torch.bfloat16)
    for reference, same_inputs, half_inputs in zip(plain, autocast_fp32_inputs, bf16_inputs):
        assert same_inputs.dtype == torch.float32 and half_inputs.dtype == torch.float32
        # autocast must not touch the math itself: float32 inputs give the very same value
        assert torch.allclose(same_inputs, reference, rtol=1e-6, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float32_under_cuda_fp16_autocast():
    plain = _all_losses(torch.float32, "cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        autocast_fp32_inputs = _all_losses(torch.float32, "cuda")
        fp16_inputs = _all_losses(torch.float16, "cuda")
    for reference, same_inputs, half_inputs in zip(plain, autocast_fp32_inputs, fp16_inputs):
        assert same_inputs.dtype == torch.float32 and half_inputs.dtype == torch.float32
        assert torch.allclose(same_inputs, reference, rtol=1e-5, atol=0)


# --- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_contrastive_reject_bad_temperature(temperature):
    z_a, z_b = _views()
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z_a, z_b, temperature)
    with pytest.raises(ValueError, match="temperature"):
        pcl_loss(z_a, z_b, torch.zeros(5), temperature, 0.1)


def test_contrastive_reject_bad_shapes_and_single_image():
    z_a, z_b = _views()
    for bad_a, bad_b in [(z_a, z_b[:4]), (z_a, z_b[:, :3]), (z_a[0], z_b[0]), (z_a[:1], z_b[:1])]:
        with pytest.raises(ValueError):
            nt_xent_loss(bad_a, bad_b, 0.1)
        with pytest.raises(ValueError):
            pcl_loss(bad_a, bad_b, torch.zeros(len(bad_a)), 0.1, 0.1)
    with pytest.raises(ValueError, match="positions"):
        pcl_loss(z_a, z_b, torch.zeros(4), 0.1, 0.1)
    with pytest.raises(ValueError, match="positions"):
        pcl_loss(z_a, z_b, torch.zeros(5, 1), 0.1, 0.1)
    with pytest.raises(ValueError, match="threshold"):
        pcl_loss(z_a, z_b, torch.zeros(5), 0.1, -0.1)


def test_dino_rejects_bad_arguments():
    students, teachers, center = _dino_views()
    with pytest.raises(ValueError, match="student_temp"):
        dino_loss(students, teachers, center, 0.0, 0.04)
    with pytest.raises(ValueError, match="teacher_temp"):
        dino_loss(students, teachers, center, 0.1, -1.0)
    with pytest.raises(ValueError, match="center"):
        dino_loss(students, teachers, torch.zeros(2, 16), 0.1, 0.04)
    with pytest.raises(ValueError, match="center"):
        dino_loss(students, teachers, torch.zeros(15), 0.1, 0.04)
    with pytest.raises(ValueError):
        dino_loss(students[:1], teachers[:1], center, 0.1, 0.04)  # no pair left
    with pytest.raises(ValueError):
        dino_loss(students[:1], teachers, center, 0.1, 0.04)  # more teacher than student views
    with pytest.raises(ValueError):
        dino_loss(students, [t[:, :8] for t in teachers], center, 0.1, 0.04)
    with pytest.raises(ValueError):
        dino_loss(students[:-1] + [students[-1][:2]], teachers, center, 0.1, 0.04)
    with pytest.raises(ValueError):
        dino_loss(torch.cat(students), teachers, center, 0.1, 0.04)  # a tensor, not a list of views
    with pytest.raises(ValueError):
        dino_loss([], teachers, center, 0.1, 0.04)
    with pytest.raises(ValueError, match="momentum"):
        update_dino_center(center, teachers, 1.5)
    with pytest.raises(ValueError, match="center"):
        update_dino_center(torch.zeros(1, 8), teachers, 0.9)


def test_mim_rejects_bad_arguments():
    target = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="pred and target"):
        mim_loss(torch.zeros(2, 8, 8), target, torch.ones_like(target))
    with pytest.raises(ValueError, match="pred and target"):
        mim_loss(torch.zeros(8, 8), torch.zeros(8, 8), torch.ones(8, 8))
    with pytest.raises(ValueError, match="mask"):
        mim_loss(target, target, torch.ones(2, 8, 8))  # (B, H, W) does not broadcast to (B, 1, H, W)
    with pytest.raises(ValueError, match="mask"):
        mim_loss(target, target, torch.ones(3, 1, 8, 8))
    with pytest.raises(ValueError, match="no pixel"):
        mim_loss(target, target, torch.zeros_like(target))
