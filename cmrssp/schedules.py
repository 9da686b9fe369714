"""Schedules precomputed as one value per training iteration (DINO's style).

Every schedule is a float64 numpy array indexed by the global step, so resuming at step k
continues exactly where a run stopped, and a schedule can be inspected or plotted before training.
"""

from __future__ import annotations

import numpy as np


def per_epoch(values_per_epoch: np.ndarray, iterations_per_epoch: int) -> np.ndarray:
    """Repeat one value per epoch over that epoch's iterations (a scheduler stepped per epoch)."""
    return np.repeat(np.asarray(values_per_epoch, dtype=np.float64), iterations_per_epoch)


def poly(base: float, steps: int, power: float = 0.9) -> np.ndarray:
    """``base · (1 − s/steps)^power`` for s = 0..steps−1 (torch ``PolynomialLR``, protocol 4)."""
    s = np.arange(steps, dtype=np.float64)
    return base * (1.0 - s / steps) ** power


def cosine(base: float, final: float, steps: int) -> np.ndarray:
    """Cosine from ``base`` at s = 0 towards ``final`` (torch ``CosineAnnealingLR`` with
    ``T_max = steps``, whose value at step ``steps`` would be exactly ``final``)."""
    s = np.arange(steps, dtype=np.float64)
    return final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * s / steps))


def linear(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` values from ``start`` to ``end`` inclusive (DINO warm-ups)."""
    return np.linspace(start, end, steps, dtype=np.float64) if steps > 1 else np.full(steps, end, np.float64)


def learning_rate_schedule(
    kind: str,
    base: float,
    epochs: int,
    iterations_per_epoch: int,
    unit: str = "epoch",
    power: float = 0.9,
    final: float = 0.0,
    warmup_epochs: int = 0,
    total_steps: int | None = None,
) -> np.ndarray:
    """The learning rate of every iteration of a run.

    Args:
        kind: "poly" (supervised, protocol 4), "cosine" (SimCLR/PCL/MIM/DINO) or "constant".
        unit: "epoch" steps the schedule once per epoch (the study, protocol 7.13); "iteration"
            steps it every iteration (what an iteration budget needs).
        warmup_epochs: linear warm-up from 0 before the schedule (DINO: 10 epochs, per iteration).
        total_steps: the run's length when it ends within its last epoch (an iteration budget);
            with ``unit="iteration"`` the schedule then runs its whole course over exactly these
            steps, so it decays to its end value at the budget's last step, not past it.

    Returns:
        float64 array of length ``total_steps`` (default ``epochs · iterations_per_epoch``).
    """
    if kind not in ("poly", "cosine", "constant"):
        raise ValueError(f"unknown schedule {kind!r}")
    if unit not in ("epoch", "iteration"):
        raise ValueError(f"unknown schedule unit {unit!r}")
    total = epochs * iterations_per_epoch if total_steps is None else total_steps
    if unit == "epoch" and total_steps is not None and total_steps > epochs * iterations_per_epoch:
        raise ValueError(f"total_steps {total_steps} exceeds {epochs} epochs of {iterations_per_epoch} iterations")
    warmup = min(warmup_epochs * iterations_per_epoch, total)
    if unit == "epoch":
        steps, repeat = epochs - min(warmup_epochs, epochs), iterations_per_epoch
    else:
        steps, repeat = total - warmup, 1
    if kind == "poly":
        body = poly(base, steps, power)
    elif kind == "cosine":
        body = cosine(base, final, steps)
    else:
        body = np.full(steps, base, dtype=np.float64)
    body = per_epoch(body, repeat) if repeat > 1 else body
    ramp = np.linspace(0.0, base, warmup, endpoint=False) if warmup else np.zeros(0)
    return np.concatenate([ramp, body])[:total]
