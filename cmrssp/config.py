"""Configuration dataclasses with presets, saved as JSON in every run or cache folder.

Only plain dataclasses of JSON-able fields: a run is reproducible from its ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cmrssp.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class PrepareConfig:
    """How ``run.py prepare`` resamples subjects into the cache.

    Attributes:
        spacing: target in-plane spacing in mm (protocol 3.5: 1.25).
        size: side of the network's input grid in pixels (protocol 3.5: 256, i.e. a 320 mm FOV).
        canvas: side of the stored in-plane canvas in pixels, centred like the input grid but
            larger, so that the study's augmentation (zoom-out to 1.4×, ±40 px shifts, any
            rotation) samples real image wherever the original image had content. ``size`` +
            ``canvas`` must have the same parity so the evaluation grid is an exact sub-grid.
            0 means the default, 1.5 × size (384 for 256: a 480 mm field of view, more than
            the 95th percentile of real M&Ms/M&Ms-2 fields of view, data-formats.md 1.8).
        geometry: how each file's voxel geometry is resolved from its affine and pixdim:
            "auto" (the documented rule of :mod:`cmrssp.data.geometry`), "affine" or "header"
            (pixdim spacing with the affine's direction, as ITK reads NIfTI).
    """

    spacing: float = 1.25
    size: int = 256
    canvas: int = 0
    geometry: str = "auto"

    @property
    def canvas_size(self) -> int:
        canvas = self.canvas or (3 * self.size) // 2
        return canvas + ((canvas - self.size) % 2)

    def validate(self) -> "PrepareConfig":
        if self.spacing <= 0:
            raise InputError(None, f"--spacing must be positive, got {self.spacing}")
        if self.size < 8:
            raise InputError(None, f"--size must be at least 8 pixels, got {self.size}")
        if self.canvas and self.canvas < self.size:
            raise InputError(None, f"--canvas ({self.canvas}) must be at least --size ({self.size})")
        from cmrssp.data.geometry import check_mode

        check_mode(self.geometry)
        return self


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], values: dict[str, Any], source: str | Path | None = None) -> T:
    """Build ``cls`` from a dict (nested dataclasses and tuples included), rejecting unknown keys
    (a typo must not pass silently)."""
    if not isinstance(values, dict):
        raise InputError(source, f"expected an object for {cls.__name__}, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(source, f"unknown {cls.__name__} keys {unknown}")
    hints = typing.get_type_hints(cls)
    converted = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, source)
        elif isinstance(value, list) and typing.get_origin(hint) is tuple:
            value = tuple(value)
        converted[name] = value
    return cls(**converted)


def load_json(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON ({error})") from None
    return from_dict(cls, values, path)


# Resampling presets: "paper" is the study's grid (protocol 3.5); "cpu" keeps the same 320 mm field
# of view at 4× coarser pixels so the whole study fits a laptop CPU.
PREPARE_PRESETS: dict[str, PrepareConfig] = {
    "paper": PrepareConfig(spacing=1.25, size=256),
    "cpu": PrepareConfig(spacing=5.0, size=64),
}


@dataclass(frozen=True)
class SyntheticCohortConfig:
    """The built-in synthetic cohort used when no data is given (see docs/phantom.md).

    Attributes:
        subjects: number of phantom subjects.
        seed: cohort seed (subject i depends only on seed and i).
        phantom_preset: generator preset ("default" is realistic: ~256×216 px, 8–14 slices, 18–35 frames).
        layout: the on-disk layout it is written in and read back from (exercises the real reader).
    """

    subjects: int = 24
    seed: int = 0
    phantom_preset: str = "default"
    layout: str = "mnms"

    @property
    def name(self) -> str:
        return f"synthetic-{self.layout}-{self.phantom_preset}-n{self.subjects}-seed{self.seed}"


def apply_overrides(config: T, assignments: list[str]) -> T:
    """Set nested fields from ``section.field=value`` strings (the command line's ``--set``).

    Values are parsed as JSON when they can be (numbers, true/false, lists), else taken as
    strings, e.g. ``augment.intensity_scale_mode=factor`` or ``augment.scale_range=[0.8,1.2]``.
    The result is rebuilt through :func:`from_dict`, so unknown names and bad values are refused.
    """
    values = to_dict(config)
    for assignment in assignments:
        name, separator, text = assignment.partition("=")
        if not separator or not name:
            raise InputError(None, f"--set expects section.field=value, got {assignment!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        node = values
        *parents, leaf = name.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise InputError(None, f"--set {name}: no configuration section {part!r}")
            node = node[part]
        if leaf not in node:
            raise InputError(None, f"--set {name}: no such setting (choose from {', '.join(sorted(node))})")
        node[leaf] = value
    return from_dict(type(config), values)
