"""Train each kind of run for a few steps at tiny scale, augmentation off, BN synchronised.

Run as a plain script (one process) or under ``torchrun --nproc_per_node=2`` (two processes
with gloo); tests/test_distributed.py compares the two: per-step losses and final weights.

    python tests/distributed_worker.py OUT DATA_DIR [--resume] KIND [KIND ...]
    (KIND: finetune finetune-one simclr pcl dino mim)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.augment import NO_AUGMENTATION  # noqa: E402
from cmrssp.distributed import start, stop  # noqa: E402
from cmrssp.finetune import run_finetune  # noqa: E402
from cmrssp.presets import finetune_preset, pretrain_preset  # noqa: E402
from cmrssp.pretrain import run_pretrain  # noqa: E402

STEPS = 3
GLOBAL_BATCH = 8


def config_for(kind: str):
    """``finetune-one``: one training subject, so each step is an epoch (for resuming mid-run)."""
    config = finetune_preset("tiny") if kind.startswith("finetune") else pretrain_preset("tiny", kind)
    if kind == "finetune-one":
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, n_subjects=1))
    train = dataclasses.replace(config.train, iterations=STEPS, epochs=0, batch_size=GLOBAL_BATCH,
                                sync_batch_norm=True, log_steps=True, device="cpu")
    # A small step keeps float round-off (summation order differs between 1 and 2 processes, and
    # with the number of threads) from being amplified over the compared steps; the methods' own
    # rates reach 0.1. At 0.002, MIM, SimCLR, PCL and DINO weights differed by 1e-4 with one thread.
    optimizer = dataclasses.replace(config.optimizer, lr=min(config.optimizer.lr, 0.0005))
    config = dataclasses.replace(config, train=train, augment=NO_AUGMENTATION, optimizer=optimizer)
    if kind == "dino":
        dino = dataclasses.replace(config.dino, global_blur_augment="none", global_solarize_augment="none",
                                   local_augment="none", n_local_crops=2)
        # The teacher's sharp softmax (temperature 0.04) amplifies round-off in the gradients
        # far more than the other losses do: at 0.002 the two runs' weights differed by 3e-4
        # on one machine type (AMD EPYC) and not on another.
        optimizer = dataclasses.replace(config.optimizer, lr=min(config.optimizer.lr, 0.0001))
        config = dataclasses.replace(config, dino=dino, optimizer=optimizer)
    return config


def main(out: Path, data_dir: Path, kinds: list[str]) -> None:
    """``--resume KIND`` continues the run in OUT/KIND from its checkpoint."""
    processes, _ = start("cpu")
    resume = kinds[0] == "--resume"
    try:
        for kind in kinds[resume:]:
            config = config_for(kind)
            train = run_finetune if kind.startswith("finetune") else run_pretrain
            train(config, run_dir=out / kind, runs_dir=out, data_dir=data_dir, progress=False,
                  log=lambda *_: None, processes=processes, resume=resume)
    finally:
        stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
