"""engine/winograd.py: large 3x3 CPU convolutions through NNPACK, the same
result up to rounding; the engines turn it on (setting ``winograd``, on by
default) in fp32 on a CPU only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ccsr.engine import winograd

needs_nnpack = pytest.mark.skipif(not winograd.available(), reason="NNPACK is not available on this CPU (needs AVX2 and FMA)")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Winograd's rounding: about 1e-5 of the largest value, never near a grey level."""
    assert a.shape == b.shape and a.dtype == b.dtype
    assert (a - b).abs().max().item() <= 1e-4 * b.abs().max().item()


@needs_nnpack
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv3x3_matches_the_direct_convolution(batch, with_bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 8, 20, 24, generator=g)
    w = torch.randn(16, 8, 3, 3, generator=g) / 9
    b = torch.randn(16, generator=g) if with_bias else None
    _close(winograd.conv3x3(x, w, b), F.conv2d(x, w, b, padding=1))


@needs_nnpack
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("stripe_rows", [1, 5, 17, 40])
def test_large_maps_run_as_stripes_with_the_same_result(batch, stripe_rows, monkeypatch):
    """An image over ``stripe_bytes`` runs as horizontal stripes (each with a
    one-row halo) and matches the convolution of the whole map; each NNPACK
    call then sees at most one stripe plus its two halo rows."""
    monkeypatch.setattr(winograd, "MIN_STRIPE_ROWS", 1)
    seen: list[tuple] = []
    real = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda x, *a: seen.append(tuple(x.shape)) or real(x, *a))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 6, 40, 30, generator=g)
    w = torch.randn(8, 6, 3, 3, generator=g) / 9
    b = torch.randn(8, generator=g)
    _close(winograd.conv3x3(x, w, b, stripe_bytes=stripe_rows * 6 * 30 * 4), F.conv2d(x, w, b, padding=1))
    stripes = -(-40 // stripe_rows)
    assert len(seen) == batch * stripes
    assert all(s[0] == 1 and s[2] <= -(-40 // stripes) + 2 for s in seen)


@needs_nnpack
def test_calls_from_several_threads_at_once_keep_their_own_results():
    """Engines in threads (the thread executor, Ray actors with concurrency)
    call NNPACK at the same time; its workspace and thread pool are shared
    by the process, and no call may see another's data."""
    import threading

    worst: list[float] = []

    def work(seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        for i in range(6):
            c, h = (16, 32, 64)[i % 3], (64, 96, 128)[(i + seed) % 3]
            x = torch.randn(1, c, h, h, generator=g)
            w = torch.randn(c, c, 3, 3, generator=g) / 9
            b = torch.randn(c, generator=g)
            got = winograd.conv3x3(x, w, b, stripe_bytes=c * h * 4 * 20)
            want = F.conv2d(x, w, b, padding=1)
            worst.append(((got - want).abs().max() / want.abs().max()).item())

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(worst) == 24 and max(worst) <= 1e-4


@needs_nnpack
def test_conv3x3_takes_channels_last_input_and_unaligned_weights():
    """Weights mapped from a safetensors file sit at any 4-byte offset; the
    guided latent is channels-last."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g).to(memory_format=torch.channels_last)
    flat = torch.randn(1 + 8 * 4 * 9, generator=g)
    w = flat[1:].view(8, 4, 3, 3)  # 4 bytes past an aligned start
    assert w.data_ptr() % 8 != 0
    _close(winograd.conv3x3(x, w, None), F.conv2d(x, w, None, padding=1))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.plain = nn.Conv2d(8, 8, 3, padding=1)
        self.no_bias = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.strided = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.no_bias(self.plain(x))
        return self.reflect(self.grouped(self.pointwise(self.strided(x))))


@needs_nnpack
def test_enable_swaps_only_plain_3x3_convolutions_and_disable_undoes_it():
    net = _Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert winograd.enable(net) == 2
    assert type(net.plain) is winograd.WinogradConv2d and type(net.no_bias) is winograd.WinogradConv2d
    assert all(type(m) is nn.Conv2d for m in (net.strided, net.pointwise, net.grouped, net.reflect))
    assert winograd.enable(net) == 0  # already on
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert winograd.disable(net) == 2 and type(net.plain) is nn.Conv2d


@needs_nnpack
def test_each_call_decides_by_size_dtype_and_gradient(monkeypatch):
    calls: list[tuple] = []
    real = winograd.conv3x3
    stripes: list = []
    monkeypatch.setattr(winograd, "conv3x3",
                        lambda x, w, b, s=None: calls.append(tuple(x.shape)) or stripes.append(s) or real(x, w, b, s))
    net = _Net().eval()
    winograd.enable(net)
    big = torch.randn(1, 8, 64, 72)
    with torch.no_grad():
        direct = _Net().eval()
        direct.load_state_dict(net.state_dict())
        _close(net(big), direct(big))
        assert calls == [(1, 8, 64, 72), (1, 8, 64, 72)]
        assert stripes == [winograd.STRIPE_BYTES] * 2  # large maps go in stripes, not direct
        calls.clear()
        net(torch.randn(1, 8, 63, 200))  # one side under MIN_SIDE
        net.to(torch.bfloat16)(big.bfloat16())
        net.float()
    assert calls == []
    out = net(big.requires_grad_())  # autograd: PyTorch's own convolution, which has a backward
    out.sum().backward()
    assert calls == [] and big.grad is not None


@needs_nnpack
def test_a_call_nnpack_refuses_runs_as_a_direct_convolution(monkeypatch, caplog):
    """A refusal (here: a workspace NNPACK cannot allocate) costs the speed-up,
    not the request: the same result from the direct convolution, one warning."""
    def refuse(*_a):
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", refuse)
    monkeypatch.setattr(winograd.fallbacks, "warned", False)
    net = _Net().eval()
    direct = _Net().eval()
    direct.load_state_dict(net.state_dict())
    winograd.enable(net)
    big = torch.randn(1, 8, 64, 72)
    with torch.no_grad(), caplog.at_level("DEBUG", logger="ccsr.winograd"):
        assert torch.equal(net(big), direct(big))
    refusals = [r for r in caplog.records if "NNPACK refused" in r.getMessage()]
    assert [r.levelname for r in refusals] == ["WARNING", "DEBUG"]  # the two large layers
    assert "1x8x64x72" in refusals[0].getMessage() and "not enough memory" in refusals[0].getMessage()


@needs_nnpack
def test_few_channels_in_or_out_run_direct(monkeypatch):
    """The VAE's first and last convolutions (3 channels in or out) were
    slower by NNPACK: below MIN_CHANNELS they stay direct."""
    calls: list[tuple] = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda x, w, *a: calls.append((x.shape[1], w.shape[0])) or real(x, w, *a))
    first, last = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 3, 3, padding=1)
    edge = nn.Conv2d(winograd.MIN_CHANNELS, winograd.MIN_CHANNELS, 3, padding=1)
    assert winograd.enable(first, last, edge) == 3  # swapped: the rule is per call
    with torch.no_grad():
        last(first(torch.randn(1, 3, 64, 64)))
        edge(torch.randn(1, winograd.MIN_CHANNELS, 64, 64))
    assert calls == [(winograd.MIN_CHANNELS, winograd.MIN_CHANNELS)]


def test_without_nnpack_nothing_changes(monkeypatch):
    monkeypatch.setattr(winograd, "available", lambda: False)
    net = _Net()
    assert winograd.enable(net) == 0 and type(net.plain) is nn.Conv2d


def _img(side: int = 48) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _convs(*modules: nn.Module) -> set[type]:
    return {type(m) for mod in modules for m in mod.modules() if isinstance(m, nn.Conv2d)}


@needs_nnpack
def test_ccsr_v2_with_the_setting_on_runs_its_large_convolutions_through_nnpack(v2_weights, monkeypatch):
    """The setting (on by default) reaches the engine through the app, in fp32
    only (bf16 and the setting off keep the direct convolution); with every qualifying
    convolution routed (MIN_SIDE 1) a two-step request is within a grey level
    of the direct one."""
    from ccsr.models.ccsr_v2.app import V2App
    from ccsr.models.ccsr_v2.engine import V2Upscaler
    from ccsr.settings import Settings

    app = V2App()  # as in a worker

    def load(**values):
        return app.load_engine(app.worker_settings(Settings(models={"ccsr-v2": {"weights": v2_weights}}, **values)), "cpu")

    assert Settings().winograd is True
    on = load(dtype="fp32")
    off = load(dtype="fp32", winograd=False)
    bf16 = V2Upscaler.from_folder(v2_weights, device="cpu", dtype="bf16", winograd=True)
    assert winograd.WinogradConv2d in _convs(on.nets.unet, on.nets.controlnet, on.nets.vae)
    assert winograd.WinogradConv2d not in _convs(off.nets.unet, off.nets.controlnet, off.nets.vae)
    assert winograd.WinogradConv2d not in _convs(bf16.nets.unet, bf16.nets.controlnet, bf16.nets.vae)
    monkeypatch.setattr(winograd.WinogradConv2d, "min_side", 1)
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a: calls.append(1) or real(*a))
    opts = dict(seed=6, steps=6, t_min=0.5, guidance_scale=4.5, scale=2, process_size=64)
    a = np.asarray(on(_img(), **opts).image, dtype=np.int16)
    assert len(calls) > 50
    b = np.asarray(off(_img(), **opts).image, dtype=np.int16)
    assert np.abs(a - b).max() <= 1


@needs_nnpack
def test_ccsr_v1_and_the_setting(tiny_checkpoint, tiny_config_path):
    """v1 takes it in from_checkpoint and from the setting through its app."""
    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler
    from ccsr.settings import Settings

    v1 = CCSRUpscaler.from_checkpoint(tiny_checkpoint, config=tiny_config_path, device="cpu")  # on by default
    assert winograd.WinogradConv2d in _convs(v1.model.unet, v1.model.controlnet, v1.model.vae)
    app = CCSRApp()
    for value in (True, False):
        worker = app.worker_settings(Settings(weights=tiny_checkpoint, config=tiny_config_path, dtype="fp32", winograd=value))
        assert worker["winograd"] is value
        engine = app.load_engine(worker, "cpu")
        assert (winograd.WinogradConv2d in _convs(engine.model.unet, engine.model.controlnet, engine.model.vae)) is value
