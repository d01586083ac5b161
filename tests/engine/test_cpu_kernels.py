"""engine/cpu_kernels.py: the CPU kernels chosen at load by the CPU's vendor
and the settings ``winograd``, ``fused_upsample`` and ``onednn_linear``;
every choice keeps the CCSR-v2 goldens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ccsr.engine import cpu_kernels, linear, upsample, winograd
from ccsr.engine.cpu_kernels import AMD, fused_upsample_below, onednn_linear_on

INTEL = "GenuineIntel"
FIDELITY = Path(__file__).resolve().parents[1] / "models" / "ccsr_v2" / "fidelity"


def test_the_rules_by_vendor():
    assert fused_upsample_below("auto", True, AMD) == winograd.MIN_SIDE  # Winograd wins from there on
    assert fused_upsample_below("auto", False, AMD) is None  # no Winograd: phases everywhere
    assert fused_upsample_below("auto", True, INTEL) is None and fused_upsample_below("auto", True, "") is None
    assert fused_upsample_below("on", True, AMD) is None
    assert fused_upsample_below("off", True, INTEL) == 0
    assert onednn_linear_on("auto", AMD) and not onednn_linear_on("auto", INTEL) and not onednn_linear_on("auto", "")
    assert onednn_linear_on("on", INTEL) and not onednn_linear_on("off", AMD)


def _kinds(*modules: nn.Module) -> dict[str, int]:
    count = {"fused": 0, "onednn": 0, "winograd": 0, "silu_in_place": 0}
    for mod in modules:
        for m in mod.modules():
            count["fused"] += isinstance(m, upsample._Fused)
            count["onednn"] += type(m) is linear.OneDNNLinear
            count["winograd"] += type(m) is winograd.WinogradConv2d
            count["silu_in_place"] += type(m) is nn.SiLU and m.inplace
    return count


def _load(v2_weights, **kw):
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    return V2Upscaler.from_folder(v2_weights, device="cpu", dtype=kw.pop("dtype", "fp32"), auto_memory=False, **kw)


def _nets(engine):
    n = engine.nets
    return n.unet, n.controlnet, n.vae, n.text_encoder


@pytest.mark.skipif(not (linear.available() and winograd.available()), reason="needs oneDNN's linear and NNPACK")
def test_speed_up_by_vendor_and_setting(v2_weights, monkeypatch):
    eng = _load(v2_weights, winograd=False, fused_upsample="off", onednn_linear="off")
    nets = _nets(eng)
    assert _kinds(*nets)["fused"] == _kinds(*nets)["onednn"] == _kinds(*nets)["winograd"] == 0
    vae_silu = _kinds(eng.nets.vae)["silu_in_place"]
    assert vae_silu > 0 and _kinds(eng.nets.unet)["silu_in_place"] == 0  # the UNet's time embedding is shared
    done = cpu_kernels.speed_up(nets, eng.nets.vae, torch.device("cpu"), torch.float32, vendor=AMD)
    assert done["onednn_linear"] == _kinds(*nets)["onednn"] > 0 and done["winograd"] > 0 and done["fused_upsample"] > 0
    assert {m.below_side for m in eng.nets.vae.modules() if isinstance(m, upsample._Fused)} == {winograd.MIN_SIDE}
    intel = _load(v2_weights)  # this machine's vendor; then Intel's rule by hand
    cpu_kernels.speed_up(_nets(intel), intel.nets.vae, torch.device("cpu"), torch.float32, vendor=INTEL)
    assert {m.below_side for m in intel.nets.vae.modules() if isinstance(m, upsample._Fused)} == {None}
    bf16 = _load(v2_weights, dtype="bf16", onednn_linear="on")
    assert _kinds(*_nets(bf16))["onednn"] == _kinds(*_nets(bf16))["winograd"] == 0  # fp32 only
    on_gpu = cpu_kernels.speed_up(_nets(bf16), bf16.nets.vae, torch.device("cuda"), torch.float16, onednn_linear="on")
    assert on_gpu == {"silu_in_place": 0}  # its SiLUs were already in place; nothing else off the CPU


def test_the_settings_reach_both_engines(v2_weights, tiny_checkpoint, tiny_config_path):
    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.models.ccsr_v2.app import V2App
    from ccsr.settings import Settings

    s = Settings(models={"ccsr-v2": {"weights": v2_weights}}, weights=tiny_checkpoint, config=tiny_config_path,
                 dtype="fp32", fused_upsample="off", onednn_linear="on")
    assert Settings().fused_upsample == "auto" and Settings().onednn_linear == "auto"
    v2 = V2App().load_engine(V2App().worker_settings(s), "cpu")
    v1 = CCSRApp().load_engine(CCSRApp().worker_settings(s), "cpu")
    for k in (_kinds(*_nets(v2)), _kinds(v1.model)):
        assert k["fused"] == 0 and (k["onednn"] > 0) is linear.available() and k["silu_in_place"] > 0
    with pytest.raises(ValueError, match="onednn_linear"):
        Settings(onednn_linear="sometimes")


@pytest.mark.parametrize("fused, onednn", [("on", "on"), ("off", "off")])
def test_each_choice_keeps_the_goldens(v2_weights, monkeypatch, fused, onednn):
    """Two official-code cases with every speed-up forced on (Winograd down to
    1 px maps) and with all off."""
    ref = json.loads((FIDELITY / "data" / "reference.json").read_text())
    monkeypatch.setattr(winograd.WinogradConv2d, "min_side", 1)
    monkeypatch.setattr(winograd.WinogradConv2d, "min_channels", 1)
    eng = _load(v2_weights, winograd=fused == "on", fused_upsample=fused, onednn_linear=onednn)
    threads = torch.get_num_threads()
    torch.set_num_threads(ref["threads"])
    try:
        for name in sorted(n for n, c in ref["cases"].items() if "psnr" not in c)[:2]:
            case = ref["cases"][name]
            ours = np.asarray(eng(Image.open(FIDELITY / "data" / case["input"]), **case["opts"]).image, np.float64)
            gold = np.asarray(Image.open(FIDELITY / "data" / f"{name}.png").convert("RGB"), np.float64)
            diff = np.abs(ours - gold)
            assert diff.mean() < 0.25 and diff.max() <= 2, f"{name}: mean {diff.mean():.4f}, max {diff.max()}"
    finally:
        torch.set_num_threads(threads)
