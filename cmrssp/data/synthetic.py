"""The built-in synthetic cohort: generated once, written in a real layout, prepared once.

When a user gives no data, every command runs on this cohort. It is written to disk in the
M&Ms layout and read back through the real M&Ms reader, so the synthetic path exercises exactly
the code a real dataset goes through.
"""

from __future__ import annotations

from pathlib import Path

from cmrssp.atomic import atomic_directory
from cmrssp.config import PrepareConfig, SyntheticCohortConfig


def synthetic_raw_dir(cohort: SyntheticCohortConfig, data_dir: str | Path) -> Path:
    return Path(data_dir) / cohort.name


def synthetic_cache_dir(cohort: SyntheticCohortConfig, config: PrepareConfig, data_dir: str | Path) -> Path:
    grid = f"{config.spacing:g}mm-{config.size}px-canvas{config.canvas_size}"
    if config.geometry != "auto":
        grid += f"-geometry-{config.geometry}"
    return Path(data_dir) / f"cache-{cohort.name}-{grid}"


def ensure_synthetic_cohort(cohort: SyntheticCohortConfig, data_dir: str | Path, workers: int = 1,
                            progress: bool = True) -> Path:
    """Write the phantom cohort under ``data_dir`` unless it is already there (atomically)."""
    from cmrssp.data.phantom import write_cohort

    raw = synthetic_raw_dir(cohort, data_dir)
    if not raw.is_dir():
        with atomic_directory(raw) as temporary:
            write_cohort(temporary, cohort.subjects, seed=cohort.seed, layout=cohort.layout,
                         preset=cohort.phantom_preset, workers=workers, progress=progress)
    return raw


def prepare_synthetic(
    cohort: SyntheticCohortConfig,
    config: PrepareConfig,
    data_dir: str | Path = "data",
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate (once) and prepare (once) the synthetic cohort; return the cache folder
    (``progress``: the preparation's progress bar)."""
    from cmrssp.data.prepare import prepare_cache
    from cmrssp.data.sources import discover

    raw = ensure_synthetic_cohort(cohort, data_dir, workers=workers, progress=progress)
    cache = Path(cache_dir) if cache_dir is not None else synthetic_cache_dir(cohort, config, data_dir)
    prepare_cache(discover(cohort.layout, raw), cache, config, workers=workers, progress=progress)
    return cache
