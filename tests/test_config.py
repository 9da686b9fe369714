import pytest

from cmrssp import atomic
from cmrssp.config import PrepareConfig, from_dict, load_json, to_dict
from cmrssp.errors import InputError


def test_canvas_defaults_and_parity():
    assert PrepareConfig().canvas_size == 384
    assert PrepareConfig(size=64).canvas_size == 96
    assert PrepareConfig(size=33, canvas=40).canvas_size == 41  # parity matches size
    assert (PrepareConfig(size=16, canvas=24).canvas_size - 16) % 2 == 0


def test_json_roundtrip_and_unknown_keys(tmp_path):
    config = PrepareConfig(spacing=2.5, size=64)
    atomic.write_json(tmp_path / "c.json", to_dict(config))
    assert load_json(PrepareConfig, tmp_path / "c.json") == config
    with pytest.raises(InputError, match="unknown PrepareConfig keys"):
        from_dict(PrepareConfig, {"spacing": 1.0, "sise": 3})


def test_validation():
    with pytest.raises(InputError):
        PrepareConfig(spacing=0).validate()
    with pytest.raises(InputError):
        PrepareConfig(size=64, canvas=32).validate()
