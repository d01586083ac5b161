"""The Real-ESRGAN networks: official key layout, shapes, safe loading."""

from __future__ import annotations

import pickle

import pytest
import torch

from ccsr.errors import CheckpointError, InvalidParameter
from ccsr.models.esrgan.catalog import MODELS, get_spec
from ccsr.models.esrgan.checkpoint import arch_from_state_dict, build_network, load_pth, network_from_state_dict


def test_rrdbnet_x4plus_has_the_official_key_layout():
    sd = build_network("rrdbnet", MODELS["RealESRGAN_x4plus"].arch_kwargs).state_dict()
    # 23 blocks x 3 dense blocks x 5 convs x (weight, bias) + 6 single convs x 2
    assert len(sd) == 23 * 3 * 5 * 2 + 6 * 2
    for key, shape in {
        "conv_first.weight": (64, 3, 3, 3),
        "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
        "body.22.rdb3.conv5.weight": (64, 192, 3, 3),
        "conv_body.bias": (64,),
        "conv_up1.weight": (64, 64, 3, 3),
        "conv_up2.weight": (64, 64, 3, 3),
        "conv_hr.weight": (64, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    }.items():
        assert tuple(sd[key].shape) == shape, key


def test_srvgg_animevideov3_has_the_official_key_layout():
    sd = build_network("srvgg", MODELS["realesr-animevideov3"].arch_kwargs).state_dict()
    assert tuple(sd["body.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(sd["body.1.weight"].shape) == (64,)  # PReLU slopes
    assert tuple(sd["body.34.weight"].shape) == (48, 64, 3, 3)  # 3 * 4**2 outputs before the pixel shuffle
    assert len(sd) == 17 * 2 + 17 + 2


@pytest.mark.parametrize("name", list(MODELS))
def test_architecture_is_inferred_back_from_every_catalogue_state_dict(name):
    spec = MODELS[name]
    sd = build_network(spec.arch, spec.arch_kwargs).state_dict()
    assert arch_from_state_dict(sd) == (spec.arch, spec.arch_kwargs)


@pytest.mark.parametrize("name,size", [("RealESRGAN_x2plus", 8), ("realesr-animevideov3", 7)])
def test_output_is_native_scale_times_input(name, size):
    spec = MODELS[name]
    net = build_network(spec.arch, spec.arch_kwargs).eval()
    with torch.inference_mode():
        y = net(torch.rand(1, 3, size, size + 2))
    assert tuple(y.shape) == (1, 3, size * spec.scale, (size + 2) * spec.scale)


def test_srvgg_with_zero_body_returns_nearest_upscale():
    """The residual path: with the last conv zeroed, the output is the nearest-upscaled input."""
    net = build_network("srvgg", MODELS["realesr-animevideov3"].arch_kwargs).eval()
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
        x = torch.rand(1, 3, 5, 6)
        y = net(x)
    assert torch.equal(y, x.repeat_interleave(4, 2).repeat_interleave(4, 3))


@pytest.mark.parametrize("wrapper", ["params_ema", "params", None])
def test_load_pth_unwraps_and_loads_strictly(tmp_path, wrapper):
    spec = MODELS["realesr-animevideov3"]
    sd = build_network(spec.arch, spec.arch_kwargs).state_dict()
    path = tmp_path / "w.pth"
    torch.save({wrapper: sd, "other": {"x": torch.zeros(1)}} if wrapper else sd, path)
    loaded = load_pth(path)
    net = network_from_state_dict(loaded, spec)
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k])


def test_load_pth_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"params": Evil()}))
    with pytest.raises(CheckpointError, match="could not read"):
        load_pth(path)


def test_wrong_weights_are_refused_with_the_key_named():
    spec = MODELS["RealESRGAN_x4plus_anime_6B"]
    sd = build_network(spec.arch, spec.arch_kwargs).state_dict()
    sd["conv_last.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(CheckpointError, match="conv_last.weight"):
        network_from_state_dict(sd, spec)
    del sd["conv_hr.bias"]
    with pytest.raises(CheckpointError, match="conv_hr.bias"):
        network_from_state_dict(sd, spec)


def test_get_spec_accepts_names_aliases_and_file_names():
    assert get_spec("realesrgan-x4plus").name == "RealESRGAN_x4plus"
    assert get_spec("RealESRGAN_x4plus.pth").name == "RealESRGAN_x4plus"
    assert get_spec("realesr-general-x4v3").name == "RealESRGAN_x4_v3"
    with pytest.raises(InvalidParameter) as err:
        get_spec("nope")
    assert err.value.field == "model"
