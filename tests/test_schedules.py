import numpy as np
import pytest
import torch

from cmrssp import schedules


def torch_reference(scheduler_factory, epochs, lr=0.01):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = scheduler_factory(optimizer)
    values = []
    for _ in range(epochs):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(values)


def test_poly_per_epoch_matches_torch_polynomial_lr():
    lr = schedules.learning_rate_schedule("poly", 0.01, epochs=20, iterations_per_epoch=3, power=0.9)
    reference = torch_reference(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=20, power=0.9), 20)
    np.testing.assert_allclose(lr[::3], reference, rtol=1e-9)
    assert np.all(lr.reshape(20, 3) == lr.reshape(20, 3)[:, :1])  # constant within an epoch


def test_cosine_per_epoch_matches_torch():
    lr = schedules.learning_rate_schedule("cosine", 0.01, epochs=10, iterations_per_epoch=2)
    reference = torch_reference(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.0), 10)
    np.testing.assert_allclose(lr[::2], reference, rtol=1e-9, atol=1e-15)


def test_iteration_unit_and_warmup():
    lr = schedules.learning_rate_schedule("cosine", 1.0, epochs=4, iterations_per_epoch=5, unit="iteration",
                                          warmup_epochs=1, final=1e-6)
    assert lr.shape == (20,)
    np.testing.assert_allclose(lr[:5], [0.0, 0.2, 0.4, 0.6, 0.8])
    assert lr[5] == pytest.approx(1.0) and np.all(np.diff(lr[5:]) < 0) and lr[-1] > 1e-6
    assert schedules.linear(0.02, 0.04, 3).tolist() == pytest.approx([0.02, 0.03, 0.04])


def test_an_iteration_budget_gets_the_whole_schedule():
    # 3 epochs of 10 iterations, but a budget of 23 steps: poly over exactly 23 steps (torch PolynomialLR, total_iters=23)
    lr = schedules.learning_rate_schedule("poly", 0.1, epochs=3, iterations_per_epoch=10, unit="iteration", total_steps=23)
    reference = torch_reference(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=23, power=0.9), 23, lr=0.1)
    assert lr.shape == (23,)
    np.testing.assert_allclose(lr, reference, rtol=1e-9)
    with pytest.raises(ValueError, match="exceeds"):
        schedules.learning_rate_schedule("poly", 0.1, epochs=3, iterations_per_epoch=10, total_steps=31)
