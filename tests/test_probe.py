"""The linear probe: feature stacking, a separable case, and the command at tiny scale."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

import run
from cmrssp.models import UNet, UNetConfig
from cmrssp.probe import ProbeConfig, decoder_features, encoder_features, summarize_probes, train_linear_probe


def test_encoder_features_stack_every_level_at_input_size():
    model = UNet(UNetConfig(channels=(4, 8, 16)))
    features = encoder_features(model, torch.randn(3, 1, 16, 16), batch_size=2)
    assert features.shape == (3, 4 + 8 + 16, 16, 16)


def test_decoder_features_are_the_decoder_blocks_outputs():
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(4, 8, 16)))
    images = torch.randn(3, 1, 16, 16)
    features = decoder_features(model, images, batch_size=2)
    assert features.shape == (3, 8 + 4, 16, 16)
    # the last 4 channels are the full-resolution block's output, which the main head reads
    logits = model.decoder.output_convs[-1](features[:, 8:])
    torch.testing.assert_close(logits, model(images)[0], rtol=1e-5, atol=1e-5)
    assert not model.decoder.dec_blocks[0]._forward_hooks  # hooks removed


def test_summary_averages_over_seeds_and_compares_with_the_random_network():
    rows = [
        {"init": "random", "features": "encoder", "subset_seed": 0, "dice_mean": 0.2},
        {"init": "random", "features": "encoder", "subset_seed": 1, "dice_mean": 0.4},
        {"init": "mim", "features": "encoder", "subset_seed": 0, "dice_mean": 0.3},
        {"init": "mim", "features": "encoder", "subset_seed": 1, "dice_mean": 0.3},
    ]
    summary = {row["init"]: row for row in summarize_probes(rows)}
    assert summary["random"]["dice_mean"] == 0.3 and summary["random"]["gain_vs_random"] is None
    assert summary["mim"]["gain_vs_random"] == 0.0 and summary["mim"]["seeds_above_random"] == 1
    assert abs(summary["random"]["dice_std"] - 0.1414) < 1e-4 and summary["mim"]["dice_std"] == 0.0


def test_linearly_separable_features_are_probed_perfectly():
    # features that contain the one-hot label (plus noise channels): the probe must find it
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(12, 16, 16, dtype=torch.long)
    for i in range(12):
        labels[i, 4:12, 4:12] = 2
        labels[i, 6:10, 6:10] = 1
        labels[i, 2:4, 3 + i % 4 : 9 + i % 4] = 3
    one_hot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    features = torch.cat([one_hot, torch.randn(12, 5, 16, 16, generator=generator)], dim=1)
    scores = train_linear_probe(features[:8], labels[:8], features[8:], labels[8:], ProbeConfig(steps=300, lr=0.05))
    assert scores["dice_mean"] > 0.99
    noise = torch.randn(12, 9, 16, 16, generator=generator)
    chance = train_linear_probe(noise[:8], labels[:8], noise[8:], labels[8:], ProbeConfig(steps=300, lr=0.05))
    assert chance["dice_mean"] < scores["dice_mean"] - 0.3


def test_probe_command_on_a_random_encoder(tmp_path, capsys):
    args = ["probe", "--preset", "tiny", "--inits", "random", "--n-subjects", "2", "--steps", "20",
            "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    assert run.main(args) == 0
    assert "random" in capsys.readouterr().out
    record = json.loads((tmp_path / "runs" / "probe-n2-s0.json").read_text())
    assert [(row["init"], row["features"]) for row in record["rows"]] == [("random", "encoder"), ("random", "decoder")]
    assert all(0.0 <= row["dice_mean"] <= 1.0 for row in record["rows"])
    assert len(record["train"]) == 2
    assert run.main(args + ["--subset-seed", "0,1", "--features", "decoder"]) == 0
    summary = json.loads((tmp_path / "runs" / "probe-n2-summary.json").read_text())
    assert summary["subset_seeds"] == [0, 1] and summary["rows"][0]["seeds"] == 2
    assert run.main(args + ["--features", "bottleneck"]) == 2
    assert run.main(args[:4] + ["mim"] + args[5:]) == 2  # no MIM pretraining in that runs folder
