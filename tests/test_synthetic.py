import os

from cmrssp.config import PrepareConfig, SyntheticCohortConfig
from cmrssp.data.cache import open_cache
from cmrssp.data.synthetic import prepare_synthetic, synthetic_raw_dir


def test_synthetic_cohort_is_generated_and_prepared_once(tmp_path):
    cohort = SyntheticCohortConfig(subjects=3, seed=5, phantom_preset="tiny")
    config = PrepareConfig(spacing=5.0, size=32)
    cache_dir = prepare_synthetic(cohort, config, data_dir=tmp_path)
    cache = open_cache(cache_dir)
    assert len(cache.keys) == 3 and all(cache.meta(k).labelled for k in cache.keys)
    assert cache.config == config
    raw = synthetic_raw_dir(cohort, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in raw.rglob("*") if p.is_file()}
    manifest = (cache_dir / "manifest.json").stat().st_mtime_ns
    assert prepare_synthetic(cohort, config, data_dir=tmp_path) == cache_dir
    assert {p: p.stat().st_mtime_ns for p in raw.rglob("*") if p.is_file()} == stamps  # not regenerated
    assert os.path.exists(cache_dir / "manifest.json") and manifest <= (cache_dir / "manifest.json").stat().st_mtime_ns
    # a different grid of the same cohort is a different cache
    other = prepare_synthetic(cohort, PrepareConfig(spacing=4.0, size=32), data_dir=tmp_path)
    assert other != cache_dir and len(open_cache(other).keys) == 3
