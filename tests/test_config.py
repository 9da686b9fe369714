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


def test_overrides_set_nested_fields_and_refuse_unknown_names():
    from cmrssp.config import apply_overrides
    from cmrssp.presets import finetune_preset

    config = finetune_preset("tiny")
    changed = apply_overrides(config, ["augment.intensity_scale_mode=factor", "augment.scale_range=[0.8, 1.2]",
                                       "train.epochs=7", "data.synthetic.subjects=5"])
    assert changed.augment.intensity_scale_mode == "factor" and changed.augment.scale_range == (0.8, 1.2)
    assert changed.train.epochs == 7 and changed.data.synthetic.subjects == 5
    assert config.train.epochs != 7  # the original is untouched
    with pytest.raises(InputError, match="no such setting"):
        apply_overrides(config, ["augment.centerring=image"])
    with pytest.raises(InputError, match="must be one of"):
        apply_overrides(config, ["augment.centring=heart"])
    with pytest.raises(InputError, match="section.field=value"):
        apply_overrides(config, ["augment"])


def test_paper_preset_precision_is_upstreams():
    """protocol 7.20: supervised training (and so its evaluation) in float32; SimCLR, DINO and MIM
    pretraining with fp16 autocast and a grad scaler; PCL in float32. The small presets: auto."""
    from cmrssp.presets import finetune_preset, pretrain_preset
    from cmrssp.train import resolve_precision

    assert finetune_preset("paper").train.amp == "off"
    assert {m: pretrain_preset("paper", m).train.amp for m in ("simclr", "pcl", "dino", "mim")} == {
        "simclr": "fp16", "pcl": "off", "dino": "fp16", "mim": "fp16"}
    for preset in ("cpu", "cpu-real", "tiny"):
        assert finetune_preset(preset).train.amp == "auto"
        assert all(pretrain_preset(preset, m).train.amp == "auto" for m in ("simclr", "pcl", "dino", "mim"))
    import torch

    fp16 = resolve_precision("fp16", torch.device("cuda"))  # resolved without touching a GPU
    assert fp16.dtype == torch.float16 and fp16.use_scaler


def test_cpu_real_pretrains_pcl_at_the_studys_batch():
    """PCL collapsed at the shared batch of 32 on ACDC (README "ACDC, real scans"): cpu-real keeps
    the study's 64 for it alone; the cpu preset and the other methods keep 32."""
    from cmrssp.presets import pretrain_preset

    assert pretrain_preset("cpu-real", "pcl").train.batch_size == pretrain_preset("paper", "pcl").train.batch_size == 64
    assert {m: pretrain_preset("cpu-real", m).train.batch_size for m in ("simclr", "dino", "mim")} == dict.fromkeys(
        ("simclr", "dino", "mim"), 32)
    assert pretrain_preset("cpu", "pcl").train.batch_size == 32
