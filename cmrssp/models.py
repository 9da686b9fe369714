"""The study's 2D U-Net (protocol section 1), and the weight transfer between pretraining and fine-tuning.

Architecture (protocol 1.1-1.3):

* ``Block``: conv3x3(stride s) -> BatchNorm2d -> LeakyReLU(0.01) -> conv3x3 -> BatchNorm2d ->
  LeakyReLU(0.01). The stride of the first conv is the only downsampling: there is no max-pooling
  (the upstream docstring says so, the upstream code does not; protocol 7.22). No dropout, no
  residual, PyTorch's default init.
* ``Encoder``: level 0 is Block(in -> ch[0], stride 1), level i >= 1 is Block(ch[i-1] -> ch[i],
  stride 2). With the paper's 7 channels a 256² input gives 32@256², 64@128², ... 512@4².
* ``Decoder``: walks the reversed channel list up from the bottleneck; each step is
  ConvTranspose2d(kernel 2, stride 2) -> concat [upsampled, skip] -> Block(2c -> c, stride 1).
  1x1 heads sit at the ``n_heads`` highest resolutions (protocol 1.3, ``nr_output_scales``).
* ``UNet``: ``forward(x)`` returns the logits of every head, **highest resolution first**
  (element 0 is the full-resolution map used for inference).

State-dict key layout. The attribute names follow upstream qcardia-models v1.0.0
(``models/building_blocks.py``, ``models/networks/u_net2d.py``), so the study's published weight
files (``encoder_model.pt``, ``encoder_decoder_model.pt``) load by key (protocol 1.5, 7.12)::

    encoder.enc_blocks.<i>.{conv1,conv2}.{weight,bias}                       i = 0 .. L-1
    encoder.enc_blocks.<i>.{bn1,bn2}.{weight,bias,running_mean,running_var,num_batches_tracked}
    decoder.upconvs.<j>.{weight,bias}                                        j = 0 .. L-2
    decoder.dec_blocks.<j>.<same as an encoder block>                        j = 0 .. L-2
    decoder.output_convs.<k>.{weight,bias}                                   k = 0 .. n_heads-1

Decoder index ``j`` counts up from the bottleneck: ``upconvs.0`` turns the 4² bottleneck into 8²,
``dec_blocks.5`` works at full resolution. The heads are also indexed **coarsest first** (as
upstream): ``output_convs.0`` is the lowest-resolution head (512 -> n_classes at 8² in the
segmentation net; 32 -> 1 at full resolution in the 1-head MIM net), ``output_convs.<n_heads-1>``
is the full-resolution head. That is why a full MIM checkpoint cannot load into the segmentation
net (protocol 7.11): ``output_convs.0`` is 1x32x1x1 there and 4x512x1x1 here. The forward output
list is reversed relative to that index order. A paper-size segmentation net has 206 tensors:
98 encoder, 12 upconv, 84 decoder block, 12 head.

Transfer helpers (protocol 1.5): ``encoder_state`` (keys under ``encoder.``),
``encoder_decoder_state`` (every key not containing "output", upstream's rule for
``encoder_decoder_model.pt``), ``load_weight_file`` (safe ``weights_only`` load) and
``load_transferable`` (load by key name, refusing shape mismatches and zero overlap).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from cmrssp.errors import InputError

PAPER_CHANNELS: tuple[int, ...] = (32, 64, 128, 256, 512, 512, 512)

# Prefixes that wrappers put in front of every key: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def heads_for(n_levels: int, nr_output_scales: int) -> int:
    """Number of output heads for upstream's ``nr_output_scales`` (protocol 1.3).

    0 means every resolution, k > 0 the top min(L, k), k < 0 max(1, L + k).
    """
    if nr_output_scales == 0:
        return n_levels
    if nr_output_scales > 0:
        return min(n_levels, nr_output_scales)
    return max(1, n_levels + nr_output_scales)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the U-Net (protocol 1.2, 1.3).

    Attributes:
        channels: output channels per encoder level, highest resolution first. The paper's 7
            levels give a total downsampling of 2^6 = 64.
        in_channels: image channels (1 for cine MRI).
        n_classes: channels of every head (4 for background/LV/MYO/RV; 1 for MIM).
        nr_output_scales: upstream semantics, see :func:`heads_for`. Segmentation uses -1
            (6 heads, the 4² bottleneck has none); MIM uses 1.
    """

    channels: tuple[int, ...] = PAPER_CHANNELS
    in_channels: int = 1
    n_classes: int = 4
    nr_output_scales: int = -1

    def __post_init__(self) -> None:
        # A config read back from JSON carries a list; keep the frozen dataclass hashable.
        if isinstance(self.channels, (list, tuple)):
            object.__setattr__(self, "channels", tuple(self.channels))
        self.validate()

    def validate(self) -> UNetConfig:
        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not isinstance(self.channels, tuple) or not self.channels:
            raise InputError(None, f"U-Net channels must be a non-empty list of integers, got {self.channels!r}")
        if not all(is_int(c) and c > 0 for c in self.channels):
            raise InputError(None, f"U-Net channels must all be positive integers, got {list(self.channels)}")
        if not is_int(self.in_channels) or self.in_channels < 1:
            raise InputError(None, f"U-Net in_channels must be a positive integer, got {self.in_channels!r}")
        if not is_int(self.n_classes) or self.n_classes < 1:
            raise InputError(None, f"U-Net n_classes must be a positive integer, got {self.n_classes!r}")
        if not is_int(self.nr_output_scales):
            raise InputError(None, f"U-Net nr_output_scales must be an integer, got {self.nr_output_scales!r}")
        return self

    @property
    def n_levels(self) -> int:
        return len(self.channels)

    @property
    def n_heads(self) -> int:
        return heads_for(self.n_levels, self.nr_output_scales)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (the total downsampling)."""
        return 2 ** (self.n_levels - 1)


class Block(nn.Module):
    """Two conv3x3 -> BN -> LeakyReLU(0.01) layers; the first conv's stride downsamples (protocol 1.1).

    (B, in_ch, H, W) -> (B, out_ch, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.lrelu = nn.LeakyReLU(0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.lrelu(self.bn1(self.conv1(x)))
        return self.lrelu(self.bn2(self.conv2(x)))


class Encoder(nn.Module):
    """The U-Net encoder (protocol 1.2), also the backbone of SimCLR, PCL and DINO.

    forward((B, in_channels, H, W)) -> list of L tensors, highest resolution first:
    level i is (B, channels[i], H/2^i, W/2^i). The SSP heads use only the last (bottleneck).
    """

    def __init__(self, channels: tuple[int, ...] | list[int] = PAPER_CHANNELS, in_channels: int = 1) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.enc_blocks = nn.ModuleList(
            Block(widths[i], widths[i + 1], stride=1 if i == 0 else 2) for i in range(len(channels))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for block in self.enc_blocks:
            x = block(x)
            features.append(x)
        return features


class Decoder(nn.Module):
    """The U-Net decoder with deep-supervision heads (protocol 1.3).

    Args:
        channels: the **encoder's** channel list (highest resolution first); the decoder walks it
            in reverse, from the bottleneck up.
        n_classes: channels of each 1x1 head.
        n_heads: how many of the highest resolutions get a head (1 .. len(channels)).

    forward(list of encoder outputs, highest resolution first) -> list of n_heads logit maps,
    highest resolution first: element k is (B, n_classes, H/2^k, W/2^k).
    """

    def __init__(self, channels: tuple[int, ...] | list[int], n_classes: int, n_heads: int) -> None:
        super().__init__()
        reversed_channels = list(channels)[::-1]
        n_levels = len(reversed_channels)
        if not 1 <= n_heads <= n_levels:
            raise ValueError(f"n_heads must be in 1..{n_levels}, got {n_heads}")
        self.upconvs = nn.ModuleList(
            nn.ConvTranspose2d(reversed_channels[j], reversed_channels[j + 1], kernel_size=2, stride=2)
            for j in range(n_levels - 1)
        )
        self.dec_blocks = nn.ModuleList(
            Block(2 * reversed_channels[j + 1], reversed_channels[j + 1]) for j in range(n_levels - 1)
        )
        # Heads are indexed coarsest first to keep upstream's key names (see module docstring).
        self.first_head_level = n_levels - n_heads
        self.output_convs = nn.ModuleList(
            nn.Conv2d(reversed_channels[level], n_classes, kernel_size=1)
            for level in range(self.first_head_level, n_levels)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        skips = features[::-1]
        x = skips[0]
        outputs = []
        # level counts decoder resolutions from the bottleneck (0) to full resolution (L-1).
        for level in range(len(skips)):
            if level > 0:
                x = self.upconvs[level - 1](x)
                x = self.dec_blocks[level - 1](torch.cat([x, skips[level]], dim=1))
            if level >= self.first_head_level:
                outputs.append(self.output_convs[level - self.first_head_level](x))
        return outputs[::-1]


class UNet(nn.Module):
    """The study's 2D U-Net (protocol 1).

    forward((B, in_channels, H, W)) -> list of config.n_heads tensors, highest resolution first:
    element k is (B, n_classes, H/2^k, W/2^k). H and W must be multiples of 2^(L-1) (64 for the
    paper's channels). Works under ``.to(memory_format=torch.channels_last)`` and ``torch.compile``.
    """

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config.validate()
        self.encoder = Encoder(config.channels, config.in_channels)
        self.decoder = Decoder(config.channels, config.n_classes, config.n_heads)

    def forward(self, x: Tensor) -> list[Tensor]:
        self._check_input(x)
        return self.decoder(self.encoder(x))

    def _check_input(self, x: Tensor) -> None:
        config = self.config
        if x.ndim != 4 or x.shape[1] != config.in_channels:
            raise ValueError(
                f"U-Net expects input of shape (B, {config.in_channels}, H, W), got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if height % config.size_multiple or width % config.size_multiple:
            raise ValueError(
                f"U-Net input height and width must be multiples of {config.size_multiple} "
                f"(2^{config.n_levels - 1} for {config.n_levels} levels), got {height}x{width}"
            )

    def set_encoder_requires_grad(self, requires_grad: bool) -> None:
        """Freeze or unfreeze the encoder's parameters (protocol 1.5: frozen-encoder epochs).

        As upstream, this only flips ``requires_grad``: BN running statistics still update in
        train mode (protocol 7.19).
        """
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(requires_grad)


def memory_format(channels_last: bool) -> torch.memory_format:
    """The activations' memory format: channels_last (NHWC) speeds convolutions up on CUDA and on
    CPU alike (oneDNN; +20 % train-step throughput for the cpu preset on 2 cores)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not; buffers excluded)."""
    return sum(parameter.numel() for parameter in module.parameters())


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside torch.compile (``_orig_mod``) and DistributedDataParallel (``module``)
    wrappers, whose state-dict keys would carry those prefixes."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def encoder_state(model: nn.Module) -> dict[str, Tensor]:
    """The ``encoder.*`` entries of the state dict (parameters and BN buffers), as in
    upstream's ``encoder_model.pt``. Tensors are shared with the model, not copied."""
    return {key: value for key, value in unwrap(model).state_dict().items() if key.startswith("encoder.")}


def encoder_decoder_state(model: nn.Module) -> dict[str, Tensor]:
    """Every state-dict entry except the heads: upstream's rule for ``encoder_decoder_model.pt``
    is "every key not containing 'output'" (protocol 1.5). Tensors are shared with the model."""
    return {key: value for key, value in unwrap(model).state_dict().items() if "output" not in key}


@dataclass(frozen=True)
class TransferReport:
    """What :func:`load_transferable` did.

    Attributes:
        source: where the weights came from (a file path or a description).
        transferred: tensors copied into the model (parameters and buffers).
        left_at_init: tensors of the model that the source did not provide.
        ignored: keys of the source that the model does not have.
        ignored_keys: those keys, sorted (e.g. an SSP projection head's ``mlp.*`` or ``head.*``).
    """

    source: str
    transferred: int
    left_at_init: int
    ignored: int
    ignored_keys: tuple[str, ...] = field(default=(), repr=False)

    def describe(self) -> str:
        total = self.transferred + self.left_at_init
        return (
            f"{self.source}: transferred {self.transferred} of {total} model tensors "
            f"({self.left_at_init} left at init, {self.ignored} unexpected keys ignored)"
        )


def load_transferable(model: nn.Module, state: Mapping[str, Tensor], source: str | os.PathLike) -> TransferReport:
    """Copy every tensor of ``state`` whose key the model has, by name (protocol 1.5, 7.12).

    Like ``load_state_dict(strict=False)``, but refuses what would transfer nothing or the wrong
    thing: a key present in both with different shapes, or no key in common at all, raises
    :class:`InputError` naming ``source``. BN running statistics transfer with the weights.
    """
    source = os.fspath(source)
    target = unwrap(model)
    model_state = target.state_dict()
    matching = [key for key in state if key in model_state]
    if not matching:
        example_model = next(iter(model_state), "?")
        example_file = next(iter(state), "?") if state else "nothing"
        raise InputError(
            source,
            f"no tensor name matches the model (the model has e.g. {example_model!r}, "
            f"the weights have e.g. {example_file!r}); nothing would transfer",
        )
    for key in matching:
        value = state[key]
        if not isinstance(value, Tensor):
            raise InputError(source, f"entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.shape != model_state[key].shape:
            raise InputError(
                source,
                f"tensor {key!r} has shape {tuple(value.shape)} in the weights but "
                f"{tuple(model_state[key].shape)} in the model (different architecture or n_classes?)",
            )
    target.load_state_dict({key: state[key] for key in matching}, strict=False)
    ignored_keys = tuple(sorted(key for key in state if key not in model_state))
    return TransferReport(
        source=source,
        transferred=len(matching),
        left_at_init=len(model_state) - len(matching),
        ignored=len(ignored_keys),
        ignored_keys=ignored_keys,
    )


INIT_NORMS = ("pretrained", "initial")


@torch.no_grad()
def reset_conv_norms(model: nn.Module, initial: Mapping[str, Tensor], transferred: Iterable[str]) -> int:
    """Give every transferred convolution that feeds a batch norm (both convs of each
    :class:`Block`) the norm it had at initialisation; return how many were rescaled.

    ``initial``: the model's state dict before the transfer (at least its ``*.conv?.weight``);
    ``transferred``: the keys that were loaded. The convolution's weight and bias are multiplied
    by a = ‖w_initial‖ / ‖w‖ and the batch norm's running mean by a, its running variance by a²,
    so the network computes the same function (in train and eval mode, up to BN's eps). Why:
    pretraining grows these weights (up to 3x in the study's MIM on the cpu preset), and a
    convolution followed by batch norm learns with an effective step of lr / ‖w‖², so fine-tuning
    from grown weights is several times slower than from scratch at the same learning rate.
    Not in the study (its fine-tuning keeps the pretrained norms).
    """
    transferred = set(transferred)
    count = 0
    for name, block in unwrap(model).named_modules():
        if not isinstance(block, Block):
            continue
        for index in (1, 2):
            key = f"{name}.conv{index}.weight"
            if key not in transferred or key not in initial:
                continue
            conv, norm = getattr(block, f"conv{index}"), getattr(block, f"bn{index}")
            scale = (initial[key].float().norm() / conv.weight.float().norm().clamp(min=1e-12)).item()
            conv.weight.mul_(scale)
            if conv.bias is not None:
                conv.bias.mul_(scale)
            if norm.running_mean is not None:
                norm.running_mean.mul_(scale)
                norm.running_var.mul_(scale * scale)
            count += 1
    return count


def _strip_wrapper_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                stripped = True
    return key


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """One line for the user, instead of torch's multi-paragraph advice to disable the safety check."""
    # torch's message names what it rejected after "WeightsUnpickler error:" (a global, an opcode).
    match = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(error))
    detail = f" ({match.group(1).split('. ')[0].strip()})" if match else ""
    return (
        f"the safe (weights_only) loader rejected it{detail}; "
        "only files of plain tensors are loaded, never pickled Python objects"
    )


def load_weight_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a weight file into a plain ``{key: tensor}`` state dict, on the CPU.

    Loads with ``weights_only=True``, so a file that would run arbitrary code on unpickling is
    refused. Accepts a bare state dict or a checkpoint dict holding one under "model" or
    "state_dict"; strips the "module." (DistributedDataParallel) and "_orig_mod." (torch.compile)
    key prefixes. Anything else raises :class:`InputError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "weight file not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():  # e.g. "invalid load key": just not a weight file
            raise InputError(path, f"not a loadable PyTorch weight file ({error})") from None
        raise InputError(path, f"refused: {_unpickling_reason(error)}") from None
    except Exception as error:  # a corrupt file raises RuntimeError, EOFError, struct.error, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(path, f"not a loadable PyTorch weight file ({reason})") from None
    if isinstance(loaded, Mapping):
        for wrapper_key in ("model", "state_dict"):
            if isinstance(loaded.get(wrapper_key), Mapping):
                loaded = loaded[wrapper_key]
                break
    if not isinstance(loaded, Mapping):
        raise InputError(path, f"holds a {type(loaded).__name__}, not a state dict")
    if not loaded:
        raise InputError(path, "holds an empty state dict")
    state: dict[str, Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise InputError(path, f"entry {key!r} is a {type(value).__name__}, not a named tensor")
        state[_strip_wrapper_prefixes(key)] = value
    return state
