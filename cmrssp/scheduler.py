"""Train a study's runs side by side, one run per device (``run.py study --gpus 0,1,...``).

The study's runs are independent except that fine-tuning from a method waits for that method's
pretraining. With several GPUs, running independent runs at once serves the study better than
spreading each run over all GPUs (DDP): a run's batch of 32 slices is small for one modern GPU
already, so splitting it costs utilisation and adds gradient communication, while independent
runs keep every GPU busy with no communication at all. Each run goes to a fresh process (spawn)
that sees only its device.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

from cmrssp.errors import InputError


def train_one(run, device: str, runs_dir: Path, data_dir: Path) -> str:
    """Train (or resume) one planned run on ``device`` in this process; return its folder name."""
    prefix = f"[{device}] "
    run.train(runs_dir, data_dir, progress=False, log=lambda message: print(prefix + str(message), flush=True),
              device=device)
    return run.folder.name


def dependencies(run, runs: Sequence) -> list:
    """The planned runs ``run`` needs finished first: its init method's pretraining."""
    if run.kind != "finetune" or not run.config.init:
        return []
    return [other for other in runs if other.kind == "pretrain" and other.config.method == run.config.init]


def train_in_parallel(
    runs: Sequence, devices: Sequence[str], runs_dir: Path, data_dir: Path, log: Callable[[str], None] = print,
    train: Callable = train_one,
) -> None:
    """Train every unfinished run of ``runs``, at most one per device at a time, respecting
    dependencies. A failed run stops new starts; the error is raised once running ones end."""
    if not devices:
        raise InputError(None, "no device to train on")
    pending = [run for run in runs if not run.complete]
    finished = {run.folder for run in runs if run.complete}
    free = list(devices)
    running: dict[Future, tuple] = {}
    failure: BaseException | None = None
    context = multiprocessing.get_context("spawn")
    # A fresh process per run (Python >= 3.11) returns each run's GPU memory when it ends.
    fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with ProcessPoolExecutor(max_workers=len(devices), mp_context=context, **fresh) as pool:
        while pending or running:
            if failure is None:
                for run in list(pending):
                    if not free:
                        break
                    if all(need.folder in finished for need in dependencies(run, runs)):
                        device = free.pop(0)
                        log(f"[study] {run.folder.name}: {'resuming' if run.started else 'training'} on {device}")
                        running[pool.submit(train, run, device, runs_dir, data_dir)] = (run, device)
                        pending.remove(run)
            if not running:
                if pending and failure is None:
                    names = ", ".join(run.folder.name for run in pending)
                    raise InputError(runs_dir, f"runs wait for pretraining that is not in the plan: {names}")
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run, device = running.pop(future)
                free.append(device)
                try:
                    future.result()
                    finished.add(run.folder)
                    log(f"[study] {run.folder.name}: done on {device}")
                except BaseException as error:  # noqa: BLE001 (re-raised below)
                    failure = failure or error
                    log(f"[study] {run.folder.name} failed on {device}: {error}")
    if failure is not None:
        raise failure
