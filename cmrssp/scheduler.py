"""Train a study's runs side by side: one run per GPU (``run.py study --gpus 0,1,...``), or
several runs at once on the CPU, each on its share of the cores (``run.py study --cpu-runs N``).

The study's runs are independent except that fine-tuning from a method waits for that method's
pretraining. With several GPUs, running independent runs at once serves the study better than
spreading each run over all GPUs (DDP): a run's batch of 32 slices is small for one modern GPU
already, so splitting it costs utilisation and adds gradient communication, while independent
runs keep every GPU busy with no communication at all. Each run goes to a fresh process (spawn)
that sees only its device.

The same holds on a small CPU: a 2-core machine trains two 1-thread runs at once at 1.4x the
slices/s of one 2-thread run (the cpu preset's batch of 8 at 48²: 107 against 76 slices/s, README
"The main job"), because one small convolution at a time keeps two threads waiting on each other.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

from cmrssp.errors import InputError


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_cpu_runs(cores: int | None = None) -> int:
    """Runs a study trains at once on the CPU when not told: two on two or more cores (measured on
    2 cores, see the module docstring), one on a single core."""
    return 2 if (cores or available_cores()) >= 2 else 1


def cpu_slots(runs: int) -> tuple[tuple[str, ...], int]:
    """``runs`` slots on the CPU for :func:`train_in_parallel`, and the torch threads each run
    gets: the cores shared out, at least one."""
    return ("cpu",) * runs, max(1, available_cores() // runs)


def train_one(run, device: str, runs_dir: Path, data_dir: Path, label: str = "", threads: int | None = None) -> str:
    """Train (or resume) one planned run on ``device`` in this process, with ``threads`` torch
    threads if given; return its folder name. ``label`` names the slot in its log lines."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    prefix = f"[{label or device}] "
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
    train: Callable = train_one, threads: int | None = None,
) -> None:
    """Train every unfinished run of ``runs``, at most one per entry of ``devices`` at a time
    (an entry may repeat: ("cpu", "cpu") trains two runs at once on the CPU, each with
    ``threads`` torch threads), respecting dependencies. A failed run stops new starts; the error
    is raised once running ones end."""
    if not devices:
        raise InputError(None, "no device to train on")
    pending = [run for run in runs if not run.complete]
    finished = {run.folder for run in runs if run.complete}
    for run in runs:
        if run.complete:
            log(f"[study] {run.folder.name}: done already")
    # one slot per entry, labelled "cpu/0", "cpu/1" where a device repeats
    repeated = {device for device in devices if list(devices).count(device) > 1}
    free = [(f"{device}/{index}" if device in repeated else device, device) for index, device in enumerate(devices)]
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
                        slot = free.pop(0)
                        label, device = slot
                        log(f"[study] {run.folder.name}: {'resuming' if run.started else 'training'} on {label}")
                        future = pool.submit(train, run, device, runs_dir, data_dir, label, threads)
                        running[future] = (run, slot, time.perf_counter())
                        pending.remove(run)
            if not running:
                if pending and failure is None:
                    names = ", ".join(run.folder.name for run in pending)
                    raise InputError(runs_dir, f"runs wait for pretraining that is not in the plan: {names}")
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                run, slot, began = running.pop(future)
                free.append(slot)
                try:
                    future.result()
                    finished.add(run.folder)
                    log(f"[study] {run.folder.name}: done on {slot[0]} ({time.perf_counter() - began:.0f} s)")
                except BaseException as error:  # noqa: BLE001 (re-raised below)
                    failure = failure or error
                    log(f"[study] {run.folder.name} failed on {slot[0]}: {error}")
    if failure is not None:
        raise failure
