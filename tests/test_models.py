"""Tests of the U-Net (protocol 1) and of weight transfer by key name (protocol 1.5, 7.11, 7.12).

The paper-size nets are built on the meta device (no memory, no init) and only counted; every
forward pass uses tiny configs.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from cmrssp.errors import InputError
from cmrssp.models import (
    Block,
    Encoder,
    TransferReport,
    UNet,
    UNetConfig,
    count_parameters,
    encoder_decoder_state,
    encoder_state,
    load_transferable,
    load_weight_file,
    reset_conv_norms,
)

TINY = (4, 8, 16)


def tiny(n_classes: int = 4, nr_output_scales: int = -1, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig(channels=TINY, n_classes=n_classes, nr_output_scales=nr_output_scales))


def paper_net(**overrides) -> UNet:
    with torch.device("meta"):
        return UNet(UNetConfig(**overrides))


# --- architecture -----------------------------------------------------------------------------


def test_paper_parameter_counts_match_protocol_1_4():
    net = paper_net()
    assert net.config.n_heads == 6
    assert count_parameters(net) == 33_474_840
    assert count_parameters(net.encoder) == 14_158_944
    assert [count_parameters(block) for block in net.encoder.enc_blocks] == [
        9_696, 55_680, 221_952, 886_272, 3_542_016, 4_721_664, 4_721_664,
    ]
    assert count_parameters(net.decoder.upconvs) == 2_794_976
    assert count_parameters(net.decoder.dec_blocks) == 16_514_880
    assert count_parameters(net.decoder.output_convs) == 6_040
    assert count_parameters(paper_net(nr_output_scales=1, n_classes=1)) == 33_468_833


def test_paper_head_widths_and_key_layout():
    state = paper_net().state_dict()
    assert len(state) == 206  # 98 encoder + 12 upconv + 84 decoder block + 12 head tensors
    # Heads are indexed coarsest first (upstream): 512 channels at 8², then up to 32 at 256².
    head_widths = [state[f"decoder.output_convs.{k}.weight"].shape[1] for k in range(6)]
    assert head_widths == [512, 512, 256, 128, 64, 32]
    assert state["encoder.enc_blocks.0.conv1.weight"].shape == (32, 1, 3, 3)
    assert state["encoder.enc_blocks.6.bn2.running_var"].shape == (512,)
    assert state["decoder.upconvs.0.weight"].shape == (512, 512, 2, 2)
    assert state["decoder.dec_blocks.5.conv1.weight"].shape == (32, 64, 3, 3)
    assert "encoder.enc_blocks.3.bn1.num_batches_tracked" in state


@pytest.mark.parametrize(
    ("nr_output_scales", "n_heads"), [(0, 3), (1, 1), (2, 2), (3, 3), (9, 3), (-1, 2), (-2, 1), (-7, 1)]
)
def test_output_scales_shapes_and_order(nr_output_scales, n_heads):
    net = tiny(n_classes=3, nr_output_scales=nr_output_scales).eval()
    assert net.config.n_heads == n_heads
    outputs = net(torch.randn(2, 1, 16, 24))
    assert [tuple(out.shape) for out in outputs] == [(2, 3, 16 >> k, 24 >> k) for k in range(n_heads)]


def test_output_zero_is_the_full_resolution_head():
    net = tiny(nr_output_scales=0).eval()
    x = torch.randn(1, 1, 16, 16)
    features = net.encoder(x)
    outputs = net(x)
    # Recompute the full-resolution path by hand: last head applied to the last decoder block.
    d = net.decoder
    y = features[2]
    for j, skip in enumerate([features[1], features[0]]):
        y = d.dec_blocks[j](torch.cat([d.upconvs[j](y), skip], dim=1))
    torch.testing.assert_close(outputs[0], d.output_convs[-1](y))
    torch.testing.assert_close(outputs[2], d.output_convs[0](features[2]))  # bottleneck head


def test_encoder_levels():
    encoder = Encoder((4, 8, 16, 32), in_channels=2).eval()
    features = encoder(torch.randn(3, 2, 32, 16))
    assert [tuple(f.shape) for f in features] == [(3, 4, 32, 16), (3, 8, 16, 8), (3, 16, 8, 4), (3, 32, 4, 2)]


def test_block_structure():
    block = Block(3, 5, stride=2)
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.conv1.padding == (1, 1) and block.conv1.bias is not None
    assert block.lrelu.negative_slope == 0.01
    assert count_parameters(block) == (3 * 9 * 5 + 5) + (5 * 9 * 5 + 5) + 2 * (2 * 5)
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.Dropout)) for m in block.modules())
    assert tuple(block(torch.randn(1, 3, 7, 7)).shape) == (1, 5, 4, 4)


def test_forward_backward_reaches_every_parameter():
    net = tiny(nr_output_scales=0).train()
    outputs = net(torch.randn(2, 1, 16, 16))
    sum(out.square().mean() for out in outputs).backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_bad_input_shapes_raise_value_error():
    net = tiny().eval()
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 1, 18, 16))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError):
        net(torch.randn(1, 16, 16))


def test_config_validation_and_json_lists():
    assert UNetConfig().n_heads == 6 and UNetConfig().size_multiple == 64
    assert UNetConfig(nr_output_scales=1).n_heads == 1
    assert UNetConfig(channels=[4, 8]).channels == (4, 8)  # a list from JSON becomes a tuple
    hash(UNetConfig(channels=[4, 8]))
    for bad in [dict(channels=()), dict(channels=(4, 0)), dict(channels=(4, 2.5)), dict(in_channels=0),
                dict(n_classes=0), dict(n_classes=True), dict(nr_output_scales=1.0)]:
        with pytest.raises(InputError):
            UNetConfig(**bad)


def test_channels_last_matches_contiguous():
    net = tiny(nr_output_scales=0).eval()
    x = torch.randn(2, 1, 16, 16)
    reference = net(x)
    net = net.to(memory_format=torch.channels_last)
    outputs = net(x.to(memory_format=torch.channels_last))
    for out, ref in zip(outputs, reference):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_torch_compile_captures_one_graph():
    net = tiny().eval()
    x = torch.randn(1, 1, 16, 16)
    compiled = torch.compile(net, backend="eager", fullgraph=True)  # fullgraph: fails on any graph break
    for out, ref in zip(compiled(x), net(x)):
        torch.testing.assert_close(out, ref)
    assert encoder_state(compiled).keys() == encoder_state(net).keys()  # no "_orig_mod." prefix


# --- weight transfer --------------------------------------------------------------------------


def assert_same_tensors(a: dict, b: dict, keys) -> None:
    for key in keys:
        assert torch.equal(a[key], b[key]), key


def trained_bn(net: UNet) -> UNet:
    """Run one train-mode pass so BN running stats differ from their init."""
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 1, 16, 16) * 3 + 1)
    return net


def test_encoder_state_transfers_into_fresh_unet_including_bn_stats():
    source = trained_bn(tiny(seed=1))
    target = tiny(seed=2)
    encoder = encoder_state(source)
    assert encoder and all(key.startswith("encoder.enc_blocks.") for key in encoder)
    assert len(encoder) == 3 * 14
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_transferable(target, encoder, "pretrained.pt")
    after = target.state_dict()
    assert (report.transferred, report.left_at_init, report.ignored) == (42, len(after) - 42, 0)
    assert_same_tensors(after, source.state_dict(), encoder)  # running_mean/var too
    assert after["encoder.enc_blocks.0.bn1.num_batches_tracked"].item() == 1
    assert_same_tensors(after, before, [k for k in after if not k.startswith("encoder.")])


def test_mim_encoder_decoder_loads_but_full_state_does_not():
    """Protocol 7.11: a 1-class, 1-head MIM net only transfers without its head."""
    mim = trained_bn(tiny(n_classes=1, nr_output_scales=1, seed=3))
    segmentation = tiny(n_classes=4, nr_output_scales=-1, seed=4)
    partial = encoder_decoder_state(mim)
    assert not any("output" in key for key in partial)
    assert len(partial) == len(mim.state_dict()) - 2
    report = load_transferable(segmentation, partial, "encoder_decoder_model.pt")
    assert report.transferred == len(partial)
    assert report.left_at_init == 4  # two heads (weight + bias each) stay at init
    assert_same_tensors(segmentation.state_dict(), mim.state_dict(), partial)

    with pytest.raises(InputError) as caught:
        load_transferable(tiny(seed=5), mim.state_dict(), "last_model.pt")
    message = str(caught.value)
    assert message.startswith("last_model.pt: ")
    assert "decoder.output_convs.0.weight" in message and "(1, 4, 1, 1)" in message and "(4, 8, 1, 1)" in message


def test_shape_mismatch_leaves_model_untouched():
    target = tiny(seed=6)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = encoder_state(tiny(seed=7))
    state["encoder.enc_blocks.2.conv2.weight"] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(InputError, match=r"enc_blocks\.2\.conv2\.weight"):
        load_transferable(target, state, "w.pt")
    assert_same_tensors(target.state_dict(), before, before)


def test_ssp_head_keys_are_ignored_and_counted():
    state = dict(encoder_state(tiny(seed=8)))
    state["mlp.mlp.0.weight"] = torch.zeros(16, 16)
    state["head.last_layer.weight_g"] = torch.ones(8, 1)
    report = load_transferable(tiny(), state, "simclr.pt")
    assert isinstance(report, TransferReport)
    assert (report.transferred, report.ignored) == (42, 2)
    assert report.ignored_keys == ("head.last_layer.weight_g", "mlp.mlp.0.weight")
    assert report.describe() == (
        f"simclr.pt: transferred 42 of {42 + report.left_at_init} model tensors "
        f"({report.left_at_init} left at init, 2 unexpected keys ignored)"
    )


def test_no_matching_key_is_an_error():
    renamed = {key.replace("enc_blocks", "blocks"): value for key, value in encoder_state(tiny()).items()}
    with pytest.raises(InputError, match="^renamed.pt: no tensor name matches"):
        load_transferable(tiny(), renamed, "renamed.pt")
    with pytest.raises(InputError, match="nothing would transfer"):
        load_transferable(tiny(), {}, "empty.pt")


# --- weight files -----------------------------------------------------------------------------


def test_weight_file_forms_and_prefixes(tmp_path):
    net = tiny(seed=9)
    state = net.state_dict()
    plain, wrapped, ddp, compiled = (tmp_path / name for name in ("plain.pt", "ckpt.pt", "ddp.pt", "comp.pt"))
    torch.save(state, plain)
    torch.save({"model": state, "epoch": 3, "optimizer": {"lr": 0.01}}, wrapped)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, ddp)
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, compiled)
    for path in (plain, wrapped, ddp, compiled):
        loaded = load_weight_file(path)
        assert list(loaded) == list(state), path
        assert_same_tensors(loaded, state, state)
        assert all(v.device.type == "cpu" for v in loaded.values())
    report = load_transferable(tiny(seed=10), load_weight_file(ddp), ddp)
    assert report.transferred == len(state) and report.left_at_init == 0


class Payload:
    """An arbitrary pickled object whose unpickling would create ``marker``: must never happen."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weight_file_refuses_pickled_objects_and_junk(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"encoder.x": Payload(marker)}, evil)
    with pytest.raises(InputError, match=r"evil.pt: refused: the safe \(weights_only\) loader rejected it"):
        load_weight_file(evil)

    raw_pickle = tmp_path / "raw.pt"
    raw_pickle.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(InputError, match="raw.pt: refused"):
        load_weight_file(raw_pickle)
    assert not marker.exists()

    for name, junk in [("text.pt", b"not a checkpoint at all"), ("binary.pt", b"\x00\x01junk")]:
        (tmp_path / name).write_bytes(junk)
        with pytest.raises(InputError, match=f"{name}: "):
            load_weight_file(tmp_path / name)

    with pytest.raises(InputError, match="missing.pt: weight file not found"):
        load_weight_file(tmp_path / "missing.pt")

    non_tensor = tmp_path / "non_tensor.pt"
    torch.save({"encoder.a": torch.zeros(2), "epoch": 3}, non_tensor)
    with pytest.raises(InputError, match="'epoch' is a int, not a named tensor"):
        load_weight_file(non_tensor)

    a_list = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(InputError, match="holds a list, not a state dict"):
        load_weight_file(a_list)

    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    with pytest.raises(InputError, match="empty state dict"):
        load_weight_file(empty)


def test_reset_conv_norms_restores_initial_norms_and_keeps_the_function():
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=TINY))
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    # "pretraining": grow every weight (3x), shift the BN statistics to match, as training would
    grown = {key: value * 3 if key.endswith((".weight", ".bias")) and "bn" not in key else value.clone()
             for key, value in initial.items()}
    for key in grown:
        if key.endswith("running_mean"):
            grown[key] = torch.randn_like(grown[key])
        if key.endswith("running_var"):
            grown[key] = torch.rand_like(grown[key]) + 0.5
    model.load_state_dict(grown)
    for module in model.modules():  # with a negligible eps the rescaling is function-preserving
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-12
    reference = copy.deepcopy(model)
    encoder_keys = [key for key in grown if key.startswith("encoder.")]
    assert reset_conv_norms(model, initial, encoder_keys) == 2 * len(TINY)  # two convs per encoder block
    state = model.state_dict()
    for key in encoder_keys:
        if key.endswith(("conv1.weight", "conv2.weight")):
            torch.testing.assert_close(state[key].norm(), initial[key].norm())
    assert torch.equal(state["decoder.dec_blocks.0.conv1.weight"], grown["decoder.dec_blocks.0.conv1.weight"])
    x = torch.randn(3, 1, 16, 16)
    for train_mode in (False, True):  # eval first: a train-mode forward updates the running statistics
        model.train(train_mode)
        reference.train(train_mode)
        torch.testing.assert_close(model(x)[0], reference(x)[0], rtol=1e-4, atol=1e-4)
