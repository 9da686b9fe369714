"""The self-supervised pretraining methods (protocol 2), and their one registry.

Each method is a module that declares a :class:`~cmrssp.methods.method.PretrainingMethod`: its
configuration section, the study's optimiser and length, how the small presets adapt it, its Task
for the one training loop and its cost. The registry below names each method once, with the
attribute that declares it and a line of help; the command line, presets, ``pretrain`` and
``study`` read it. This module imports nothing heavy, so ``run.py --help`` needs no torch.

Adding a method: write ``cmrssp/methods/<name>.py`` declaring ``PretrainingMethod(...)``, and add
one line to ``REGISTRY`` (README "Adding a method").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

from cmrssp.errors import InputError

if TYPE_CHECKING:
    from cmrssp.methods.method import PretrainingMethod


class Registered(NamedTuple):
    name: str
    declared_in: str  # "module:attribute" of the method's PretrainingMethod
    help: str


REGISTRY: tuple[Registered, ...] = (
    Registered("simclr", "cmrssp.methods.contrastive:SIMCLR", "SimCLR: two views of a slice, NT-Xent"),
    Registered("pcl", "cmrssp.methods.contrastive:PCL", "PCL: positives by slice position, across subjects and frames"),
    Registered("dino", "cmrssp.methods.dino:DINO", "DINO: self-distillation with 2 global + 6 local crops"),
    Registered("mim", "cmrssp.methods.mim:MIM", "MIM: masked image modelling with the whole U-Net"),
)

METHODS: tuple[str, ...] = tuple(entry.name for entry in REGISTRY)


def get_method(name: str) -> "PretrainingMethod":
    """The declaration of method ``name`` (imports its module)."""
    for entry in REGISTRY:
        if entry.name == name:
            module, attribute = entry.declared_in.split(":")
            method = getattr(importlib.import_module(module), attribute)
            if method.name != name:
                raise RuntimeError(f"{entry.declared_in} declares {method.name!r}, registered as {name!r}")
            return method
    raise InputError(None, f"unknown pretraining method {name!r} (choose from {', '.join(METHODS)})")


def all_methods() -> tuple["PretrainingMethod", ...]:
    return tuple(get_method(name) for name in METHODS)
