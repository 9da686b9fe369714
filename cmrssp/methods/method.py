"""What a pretraining method declares to the toolkit (see the registry in :mod:`cmrssp.methods`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from cmrssp.train import OptimizerConfig, TrainConfig


def unchanged(config: Any, preset: str) -> Any:
    return config


@dataclass(frozen=True)
class PretrainingMethod:
    """One self-supervised pretraining method.

    Attributes:
        name: as on the command line and in run names (``pretrain-<name>``).
        section: the field of ``PretrainConfig`` holding the method's settings (SimCLR and PCL
            share ``contrastive``); ``config_class`` is that section's dataclass.
        paper: the study's optimiser, length and precision: () -> (OptimizerConfig, TrainConfig).
        make_task: (PretrainConfig, train SliceSet, valid SliceSet or None, input size, device,
            stack sizes {subject key: number of slices}) -> the method's Task for the one loop.
        cpu_seconds_per_sample: measured seconds per training sample on the 2-core development
            CPU (``study --dry-run`` estimates; :mod:`cmrssp.study` says where they come from).
        small_preset: (PretrainConfig, preset name) -> PretrainConfig: how the ``cpu``,
            ``cpu-real`` and ``tiny`` presets adapt the method beyond their shared batch and
            length (e.g. DINO's optimiser follows the batch).
    """

    name: str
    section: str
    config_class: type
    paper: Callable[[], "tuple[OptimizerConfig, TrainConfig]"]
    make_task: Callable[..., Any]
    cpu_seconds_per_sample: float
    small_preset: Callable[[Any, str], Any] = unchanged
