"""A run the study plans: its kind, folder and configuration, and the one way to train it.

``run.py study`` trains its runs one after another (:mod:`cmrssp.study`) or side by side on
several GPUs (:mod:`cmrssp.scheduler`); both hand each run to :meth:`PlannedRun.train`, which
starts it, or resumes it from its checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from cmrssp.presets import FinetuneConfig, PretrainConfig
from cmrssp.run_folder import RunFolder

Config = Union[FinetuneConfig, PretrainConfig]


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the study."""

    kind: str  # "pretrain" or "finetune"
    folder: Path
    config: Config

    @property
    def run_folder(self) -> RunFolder:
        return RunFolder(self.folder)

    @property
    def complete(self) -> bool:
        return self.run_folder.complete

    @property
    def started(self) -> bool:
        return self.run_folder.started

    def train(self, runs_dir: Path, data_dir: Path, progress: bool = True,
              log: Callable[[Any], None] = print, device: str | None = None) -> Path:
        """Train the run (resuming it when it has a checkpoint), on ``device`` if given."""
        from cmrssp.finetune import run_finetune
        from cmrssp.pretrain import run_pretrain

        config = self.config
        if device is not None:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
        train = run_pretrain if self.kind == "pretrain" else run_finetune
        return train(config, run_dir=self.folder, runs_dir=runs_dir, data_dir=data_dir, resume=self.started,
                     progress=progress, log=log)
