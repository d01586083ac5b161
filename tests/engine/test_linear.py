"""engine/linear.py: linear layers through oneDNN, the same result as
F.linear up to rounding, only in fp32 on a CPU without gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccsr.engine import linear

needs_onednn = pytest.mark.skipif(not linear.available(), reason="this PyTorch build has no oneDNN linear op")


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 32), (2, 77, 32), (2, 32, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_f_linear(shape, bias):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g)
    if shape[-1] != 32:
        x = x.transpose(1, 2)  # a strided input, as attention's reshapes give
    w = torch.randn(48, 32, generator=g)
    b = torch.randn(48, generator=g) if bias else None
    _close(linear.linear(x, w, b), F.linear(x, w, b))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 24), nn.Linear(24, 8, bias=False)
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@needs_onednn
def test_enable_swaps_plain_linears_each_call_decides_and_disable_undoes_it(monkeypatch):
    net = _Net().eval()
    keys = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3, 16)
    with torch.no_grad():
        ref = net(x)
        assert linear.enable(net) == 2 and type(net.a) is linear.OneDNNLinear and type(net.conv) is nn.Conv2d
        assert linear.enable(net) == 0  # once
        calls = []
        real = linear.linear
        monkeypatch.setattr(linear, "linear", lambda *a: calls.append(1) or real(*a))
        _close(net(x), ref)
        assert len(calls) == 2
        calls.clear()
        net.to(torch.bfloat16)(x.bfloat16())  # another dtype: F.linear
        net.float()
    out = net(x.requires_grad_())  # autograd: F.linear, which has a backward
    out.sum().backward()
    assert calls == [] and x.grad is not None
    assert net.state_dict().keys() == keys.keys()
    assert linear.disable(net) == 2 and type(net.a) is nn.Linear


def test_a_refused_call_runs_f_linear_and_warns_once(monkeypatch, caplog):
    def refuse(*_a):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(linear, "linear", refuse)
    monkeypatch.setattr(linear.fallbacks, "warned", False)
    monkeypatch.setattr(linear, "available", lambda: True)
    net = _Net().eval()
    x = torch.randn(3, 16)
    with torch.no_grad():
        ref = net(x)
        linear.enable(net)
        with caplog.at_level("DEBUG", logger="ccsr.linear"):
            assert torch.equal(net(x), ref)
    refusals = [r for r in caplog.records if "oneDNN refused" in r.getMessage()]
    assert [r.levelname for r in refusals] == ["WARNING", "DEBUG"]
    assert "3x16" in refusals[0].getMessage() and "no kernel" in refusals[0].getMessage()


def test_without_the_op_nothing_changes(monkeypatch):
    monkeypatch.setattr(linear, "available", lambda: False)
    net = _Net()
    assert linear.enable(net) == 0 and type(net.a) is nn.Linear
