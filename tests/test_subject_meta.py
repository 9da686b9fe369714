"""cmrssp.data.subject_meta: the one typed reader of a prepared subject's meta.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cmrssp
from cmrssp.config import PrepareConfig, SyntheticCohortConfig
from cmrssp.data.cache import open_cache
from cmrssp.data.prepare import prepare_subject
from cmrssp.data.subject import Subject
from cmrssp.data.subject_meta import MANIFEST_FIELDS, CanvasGrid, GeometryRecord, IntensityStats, SubjectMeta
from cmrssp.data.synthetic import prepare_synthetic
from cmrssp.errors import InputError

ROOT = Path(cmrssp.__file__).resolve().parents[1]
CONFIG = PrepareConfig(spacing=5.0, size=32)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A two-subject cache prepared from phantom NIfTI files (so the source header is recorded)."""
    data = tmp_path_factory.mktemp("meta")
    return prepare_synthetic(SyntheticCohortConfig(subjects=2, seed=2, phantom_preset="tiny"), CONFIG, data_dir=data)


@pytest.fixture
def meta_path(cache_dir, tmp_path):
    """A writable copy of the cache and the meta.json of its first subject."""
    copy = shutil.copytree(cache_dir, tmp_path / "cache")
    key = open_cache(copy).keys[0]
    return copy / "subjects" / key / "meta.json"


def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_written_meta_round_trips_byte_for_byte(cache_dir):
    cache = open_cache(cache_dir)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    for key, entry in zip(cache.keys, manifest["subjects"]):
        path = cache_dir / "subjects" / key / "meta.json"
        text = path.read_text()
        meta = cache.meta(key)
        assert meta is cache.meta(key)  # read once
        assert meta.to_dict() == json.loads(text)
        assert json.dumps(meta.to_dict(), indent=2) + "\n" == text
        assert SubjectMeta.from_dict(json.loads(text), path) == meta
        assert meta.manifest_entry() == {name: entry[name] for name in MANIFEST_FIELDS}
        # typed: tuples, records and the config, not JSON lists and dicts
        assert meta.config == CONFIG and isinstance(meta.grid, CanvasGrid) and isinstance(meta.stats, IntensityStats)
        assert isinstance(meta.geometry, GeometryRecord) and meta.geometry.file == meta.source[0]
        assert meta.native_shape[2:] == (meta.n_slices, meta.n_frames) and len(meta.label_frames) == 2
        assert meta.evaluation_window[1] - meta.evaluation_window[0] == meta.size == CONFIG.size
        assert meta.source_header["dim"][1:4] == list(meta.native_shape[:3])
        assert np.asarray(meta.affine).shape == (4, 4) and np.asarray(meta.canvas_affine).shape == (4, 4)


def test_the_writer_builds_what_the_reader_reads():
    rng = np.random.default_rng(0)
    labels = np.zeros((12, 10, 2, 1), dtype=np.uint8)
    labels[4:8, 3:7] = 1
    subject = Subject("mnms", "M1", (rng.random((12, 10, 2, 3)) + 1).astype(np.float32), np.diag([2.0, 2.0, 8.0, 1.0]),
                      labels=labels, label_frames=(1,), label_phases=("ED",), ed=1, extra={"age": np.int64(40)})
    meta = prepare_subject(subject, PrepareConfig(spacing=2.0, size=8)).meta
    data = json.loads(json.dumps(meta.to_dict()))
    assert SubjectMeta.from_dict(data, "x") == meta and data["extra"] == {"age": 40}
    assert meta.es is None and meta.source_header is None and meta.geometry.affine_source == "in memory"
    assert meta.label_frames == (1,) and meta.heart_centre_canvas is not None


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("label_frames"), "'label_frames'"),
    (lambda d: d["stats"].pop("std"), "'stats.std'"),
    (lambda d: d["config"].pop("size"), "'config.size'"),
])
def test_a_missing_field_is_named_with_the_file(meta_path, change, field):
    _rewrite(meta_path, change)
    cache = open_cache(meta_path.parents[2])
    with pytest.raises(InputError, match=f"lacks the field {field}") as caught:
        cache.meta(meta_path.parent.name)
    assert caught.value.path == str(meta_path)


@pytest.mark.parametrize("change, field, expected", [
    (lambda d: d.update(n_slices="3"), "'n_slices'", "an integer"),
    (lambda d: d.update(labelled=1), "'labelled'", "true or false"),
    (lambda d: d.update(n_frames=True), "'n_frames'", "an integer"),
    (lambda d: d.update(evaluation_window=[4]), "'evaluation_window'", "a list of 2 integers"),
    (lambda d: d["grid"].update(scale=[1.0, "x"]), r"'grid.scale\[1\]'", "a number"),
    (lambda d: d.update(heart_centre_canvas={}), "'heart_centre_canvas'", "a list of 2 numbers or null"),
    (lambda d: d.update(extra=[]), "'extra'", "an object"),
    (lambda d: d.update(label_phases=["ED", None]), r"'label_phases\[1\]'", "a string"),
])
def test_a_wrongly_typed_field_is_named_with_the_file(meta_path, change, field, expected):
    _rewrite(meta_path, change)
    with pytest.raises(InputError, match=f"field {field} should be {expected}") as caught:
        SubjectMeta.read(meta_path)
    assert caught.value.path == str(meta_path)


def test_other_formats_and_broken_files_are_refused(meta_path):
    text = meta_path.read_text()
    for change, message in ((lambda d: d.update(version=1), "version 1"), (lambda d: d.update(format="x"), "not a")):
        _rewrite(meta_path, change)
        with pytest.raises(InputError, match=message):
            SubjectMeta.read(meta_path)
        meta_path.write_text(text)
    meta_path.write_text("{")
    with pytest.raises(InputError, match="unreadable subject meta"):
        SubjectMeta.read(meta_path)
    with pytest.raises(InputError, match="should be a JSON object"):
        SubjectMeta.from_dict([], meta_path)


def test_unknown_keys_still_read_and_are_kept(meta_path):
    original = SubjectMeta.read(meta_path)
    _rewrite(meta_path, lambda d: d.update(future_field={"a": [1, 2]}))
    meta = open_cache(meta_path.parents[2]).meta(meta_path.parent.name)
    assert meta == original and meta.unknown_fields == {"future_field": {"a": [1, 2]}}
    assert meta.to_dict() == json.loads(meta_path.read_text())


def test_reading_a_cache_does_not_import_torch(cache_dir):
    code = (
        "import sys\n"
        "from cmrssp.data.cache import open_cache\n"
        f"cache = open_cache({str(cache_dir)!r})\n"
        "assert 'subjects' in cache.describe()\n"
        "meta = cache.meta(cache.keys[0])\n"
        "assert meta.n_slices > 0 and meta.grid.scale[0] > 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok', meta.key)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok mnms-")
