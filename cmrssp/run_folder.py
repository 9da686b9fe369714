"""A run folder: the one home of every file name in a run, of run names, and of its record.

Every training run (pretraining or fine-tuning) is one folder::

    RUN/
        config.json          the whole configuration, plus where it ran (RUN_RECORD_KEYS)
        split.json           train / valid / test subject keys the run used
        checkpoint.pt        everything ``--resume`` needs (model, optimizer, RNG, history)
        metrics.csv          one row per epoch; steps.csv: one per step (train.log_steps)
        weights-last.pt, weights-best.pt    the U-Net (or the method's model) at the end / at
                             the lowest validation loss
        weights-transfer.pt  what a pretraining run offers ``finetune --init`` (MIM also writes
                             weights-encoder.pt and weights-encoder-decoder.pt)
        complete.json        written once the last epoch is saved: the run is finished
        log.txt              what the run printed: transfer report, device, precision, warnings
        evaluation-*/        evaluations (:mod:`cmrssp.evaluate`)

Runs of a study are named ``pretrain-<method>`` and ``finetune-<init>-n<N>-s<seed>``, where
``<init>`` is :func:`init_label` of the fine-tune's initialisation, the same label the result
tables use.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from cmrssp.config import from_dict
from cmrssp.errors import InputError

CONFIG = "config.json"
SPLIT = "split.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
STEPS = "steps.csv"
WEIGHTS_LAST = "weights-last.pt"
WEIGHTS_BEST = "weights-best.pt"
TRANSFER_WEIGHTS = "weights-transfer.pt"
ENCODER_WEIGHTS = "weights-encoder.pt"  # MIM: the encoder alone
ENCODER_DECODER_WEIGHTS = "weights-encoder-decoder.pt"  # MIM: encoder and decoder
RUN_COMPLETE = "complete.json"
LOG = "log.txt"
RUN_RECORD_KEYS = ("kind", "toolkit", "torch", "device", "precision")  # written beside the configuration
KINDS = ("pretrain", "finetune")

T = TypeVar("T")


def init_label(init: str) -> str:
    """The one label of a fine-tune's initialisation, in run names and result tables: "scratch"
    for none, a method's name, or a weight file's name without its suffixes (``enc.pth`` ->
    ``enc``)."""
    if not init:
        return "scratch"
    return Path(init).name.split(".")[0]


def pretrain_run_name(method: str) -> str:
    return f"pretrain-{method}"


def finetune_run_name(init: str, n_subjects: int, subset_seed: int) -> str:
    """``finetune-<init label>-n<N or all>-s<seed>``."""
    return f"finetune-{init_label(init)}-n{n_subjects or 'all'}-s{subset_seed}"


class RunFolder:
    """One run's folder: its files, its saved record, whether it is finished, its log."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._record: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def weights(self, which: str) -> Path:
        """``weights-<which>.pt`` ("last", "best", "transfer", ...)."""
        return self.path / f"weights-{which}.pt"

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def split_file(self) -> Path:
        return self.path / SPLIT

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def complete(self) -> bool:
        """The run finished (its last epoch is saved)."""
        return (self.path / RUN_COMPLETE).is_file()

    @property
    def started(self) -> bool:
        """The run has a checkpoint to resume from."""
        return self.checkpoint.is_file()

    def has_record(self) -> bool:
        return self.config_file.is_file()

    def record(self) -> dict[str, Any]:
        """``config.json`` as saved (read once): the configuration and the run record."""
        if self._record is None:
            path = self.config_file
            if not path.is_file():
                raise InputError(self.path, f"not a run folder (no {CONFIG})")
            try:
                self._record = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
                raise InputError(path, f"unreadable run configuration ({error})") from None
            if not isinstance(self._record, dict):
                raise InputError(path, "not a run configuration (expected a JSON object)")
        return self._record

    @property
    def kind(self) -> str | None:
        """"pretrain" or "finetune" from the record; None for a folder without a readable one."""
        try:
            return self.record().get("kind")
        except InputError:
            return None

    def config(self, cls: type[T]) -> T:
        """The configuration the run was started with, as a ``cls`` dataclass. A field the saved
        file lacks (the run predates it) takes ``cls.ABSENT_IN_OLD_RUNS`` where given, so an old
        run resumes as it was made rather than with a newer default."""
        values = {key: value for key, value in self.record().items() if key not in RUN_RECORD_KEYS}
        for name, value in getattr(cls, "ABSENT_IN_OLD_RUNS", {}).items():
            values.setdefault(name, value)
        return from_dict(cls, values, self.config_file)

    def is_finished(self, kind: str) -> bool:
        """A finished run of ``kind`` ("pretrain" or "finetune")."""
        return self.complete and self.kind == kind

    # -- what the run printed ------------------------------------------------------------------

    def logger(self, echo: Callable[[str], None] = print) -> "RunLog":
        return RunLog(self.path / LOG, echo)


class RunLog:
    """Prints like ``echo`` and appends each line, time-stamped, to the run's ``log.txt``.

    Lines said before the folder exists are held back and written once :meth:`open` is called
    (after the run's configuration is checked), so a command refused at the start leaves no
    folder behind. ``log.txt`` is appended to, never rewritten: a resumed run adds its lines.
    """

    def __init__(self, path: Path, echo: Callable[[str], None] = print):
        self.path = path
        self.echo = echo
        self._pending: list[str] | None = []

    def __call__(self, message: Any) -> None:
        text = str(message)
        self.echo(text)
        self.keep(text)

    def keep(self, text: str) -> None:
        """Write ``text`` to log.txt only (for what was shown already, e.g. a warning)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = [f"{stamp} {line}" for line in text.splitlines() or [""]]
        if self._pending is not None:
            self._pending.extend(lines)
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def open(self) -> None:
        """The folder exists now: write the held-back lines and every later one."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if pending:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("\n".join(pending) + "\n")

    @contextmanager
    def warnings_kept(self) -> Iterator[None]:
        """Warnings raised inside are shown as usual and also kept in log.txt."""
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            self.keep(f"warning: {message}")
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = shown


def silent(*_: Any) -> None:
    """The log of a process that is not rank 0 (only rank 0 speaks)."""
