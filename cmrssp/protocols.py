"""Study protocols: which subjects are test, validation and training pool, and which label-scarce
subsets a ``study`` trains on. One protocol per benchmark; ``run.py study --protocol NAME``.

- ``default``: a split drawn from the cache's labelled subjects (test 20 %, valid 20 % of the
  rest, seed 0) and the preset's grid (``paper``: the study's 10, 15, 25, 50, all x seeds 0, 1,
  2). What the built-in synthetic cohort uses.
- ``paper``: the study's published split (``--split paper``, protocol 3.1) and its published
  label-scarce subset files (nr10/15/25/50 x seed 0/1/2, protocol 3.2): M&Ms + M&Ms-2.
- ``acdc``: the 100 ACDC training patients (Bernard et al. 2018). A seeded split stratified over
  the five diagnostic Groups (NOR, MINF, DCM, HCM, RV): 20 test (4 per Group), 10 validation
  (2 per Group), a training pool of 70 (14 per Group) -- the 70/10/20 division of the ACDC
  label-scarce literature. Subsets of 1, 2, 4, 8, 16 patients and all 70, seeds 0, 1, 2, nested
  within a seed as the study's. Pretraining sees every frame of the training patients' cines
  (their ED/ES frames where a cine is missing). Without ``--data`` it runs on the synthetic
  cohort written in the ACDC layout.

A protocol fixes the split rule and the grid; the preset fixes the network, the grid resolution
and the run lengths, so any protocol runs at any preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cmrssp.data.cache import Cache
from cmrssp.errors import InputError
from cmrssp.methods import METHODS

@dataclass(frozen=True)
class StudyGrid:
    """Which runs a study makes: subset sizes (0 = every training subject) x subset seeds,
    fine-tuned from scratch and from each of ``methods``."""

    methods: tuple[str, ...] = METHODS
    subsets: tuple[int, ...] = (10, 15, 25, 50, 0)
    seeds: tuple[int, ...] = (0, 1, 2)

    def validate(self) -> "StudyGrid":
        unknown = [method for method in self.methods if method not in METHODS]
        if unknown:
            raise InputError(None, f"unknown method(s) {unknown} (choose from {', '.join(METHODS)})")
        if not self.subsets or not self.seeds:
            raise InputError(None, "the study needs at least one subset size and one seed")
        if any(n < 0 for n in self.subsets):
            raise InputError(None, f"subset sizes must be positive or 'all', got {list(self.subsets)}")
        return self


# The study's grid; the cpu preset's is what a slow 2-core CPU finishes on the synthetic cohort within
# about 20 minutes (3 of its 15 training subjects and all, one seed); tiny is for tests.
DEFAULT_GRIDS = {
    "paper": StudyGrid(),
    "cpu": StudyGrid(subsets=(3, 0), seeds=(0,)),
    "cpu-real": StudyGrid(subsets=(3, 0), seeds=(0,)),
    "tiny": StudyGrid(subsets=(2, 0), seeds=(0,)),
}
ACDC_GRID = StudyGrid(subsets=(1, 2, 4, 8, 16, 0), seeds=(0, 1, 2))


@dataclass(frozen=True)
class Protocol:
    """A benchmark's split rule and label-scarce grid.

    Attributes:
        name: as given to ``--protocol``.
        grids: the study grid per preset (a preset missing here uses ``grid``).
        grid: the grid of every other preset.
        data: DataConfig fields the protocol sets (the split rule and its stratification).
        datasets: the datasets the cache must hold (empty: any).
        synthetic_layout: the on-disk layout of the synthetic cohort used without --data ("" =
            the preset's), so that the protocol's reader is the one exercised.
        preferred_cpu_preset: the preset a CPU run of this protocol uses unless --preset says.
    """

    name: str
    grid: StudyGrid
    grids: dict[str, StudyGrid] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()
    synthetic_layout: str = ""
    preferred_cpu_preset: str = "cpu"

    def grid_for(self, preset: str) -> StudyGrid:
        return self.grids.get(preset, self.grid)

    def apply(self, data):
        """``data`` (a DataConfig) with the protocol's split rule; the synthetic cohort's layout
        follows the protocol's dataset."""
        changes = dict(self.data)
        if self.synthetic_layout:
            changes["synthetic"] = dataclasses.replace(data.synthetic, layout=self.synthetic_layout)
        return dataclasses.replace(data, **changes)

    def check_cache(self, cache: Cache) -> None:
        """InputError naming the cache when it holds subjects of another dataset than the protocol's."""
        if not self.datasets:
            return
        others = sorted({cache.meta(key).dataset for key in cache.keys} - set(self.datasets))
        if others:
            raise InputError(cache.path, f"the {self.name} protocol needs a cache of {' + '.join(self.datasets)} "
                                         f"subjects only; this one also holds {', '.join(others)} "
                                         "(prepare the dataset into a cache of its own)")


PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol("default", grid=DEFAULT_GRIDS["paper"], grids=DEFAULT_GRIDS),
    "paper": Protocol("paper", grid=StudyGrid(), grids={"tiny": DEFAULT_GRIDS["tiny"]}, data={"split": "paper"},
                      datasets=("mnms", "mnms2")),
    "acdc": Protocol(
        "acdc", grid=ACDC_GRID, grids={"tiny": StudyGrid(subsets=(1, 0), seeds=(0,))},
        # 20 of 100 test (0.2), 10 of the remaining 80 validation (0.125), stratified by Group
        data={"split": "", "test_fraction": 0.2, "valid_fraction": 0.125, "split_seed": 0, "stratify": "pathology"},
        datasets=("acdc",), synthetic_layout="acdc", preferred_cpu_preset="cpu-real",
    ),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise InputError(None, f"unknown protocol {name!r} (choose from {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]
