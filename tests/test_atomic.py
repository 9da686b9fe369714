import json

import numpy as np
import pytest

from cmrssp import atomic


def test_write_json_roundtrip_and_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic.write_json(target, {"x": [1, 2]})
    assert json.loads(target.read_text()) == {"x": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_save_npy_is_memory_mappable(tmp_path):
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    atomic.save_npy(tmp_path / "a.npy", array)
    loaded = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, array)


def test_atomic_directory_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "subject"
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(target) as folder:
            (folder / "image.npy").write_bytes(b"partial")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic.atomic_directory(target) as folder:
        (folder / "meta.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["subject"]
    assert (target / "meta.json").read_text() == "{}"
