"""Device and dtype auto-selection (CUDA, then MPS, then CPU; fp16 off the CPU)."""

from __future__ import annotations

import platform

import pytest
import torch

from ccsr.errors import InvalidParameter
from ccsr.engine.device import pick_device, pick_dtype


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto").type == "cpu"
    assert pick_device(None).type == "cpu"


def test_asking_for_a_missing_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(InvalidParameter, match="device: CUDA"):
        pick_device("cuda:1")
    with pytest.raises(InvalidParameter, match="device: MPS"):
        pick_device("mps")


def test_dtype_auto_and_names():
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype(None, torch.device("cuda")) is torch.float16
    assert pick_dtype("auto", torch.device("mps")) is torch.float16
    assert pick_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert pick_dtype(torch.float32, torch.device("cpu")) is torch.float32
    with pytest.raises(InvalidParameter, match="dtype"):
        pick_dtype("int8", torch.device("cpu"))


def test_unknown_or_absent_device_names_are_clear_errors(monkeypatch):
    with pytest.raises(InvalidParameter, match="device: expected auto, cpu"):
        pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(InvalidParameter, match="cuda:3 does not exist"):
        pick_device("cuda:3")


def test_auto_never_picks_half_precision_on_a_cpu(monkeypatch):
    import ccsr.engine.device as device

    for flags in (frozenset(), frozenset({"avx512_fp16", "amx_bf16"})):  # with and without native half
        monkeypatch.setattr(device, "cpu_flags", lambda flags=flags: flags)
        for name in ("auto", None, ""):
            assert pick_dtype(name, torch.device("cpu")) is torch.float32


def test_native_half_support_follows_the_cpu_flags():
    from ccsr.engine.device import native_half_support

    assert not native_half_support(torch.float16, flags={"avx2", "avx512f", "avx512_bf16"}, machine="x86_64")
    assert native_half_support(torch.float16, flags={"avx512_fp16"}, machine="x86_64")
    assert native_half_support(torch.bfloat16, flags={"avx512_bf16"}, machine="x86_64")
    assert native_half_support(torch.bfloat16, flags={"amx_bf16"}, machine="x86_64")
    assert not native_half_support(torch.bfloat16, flags={"avx2"}, machine="x86_64")
    assert native_half_support(torch.float16, flags={"fp", "asimd", "asimdhp"}, machine="aarch64")
    assert native_half_support(torch.float32, flags=set())


def test_explicit_half_on_an_emulating_cpu_warns_and_elsewhere_not(monkeypatch):
    import warnings

    import ccsr.engine.device as device
    from ccsr.engine.device import SlowHalfPrecisionWarning

    monkeypatch.setattr(device.platform, "system", lambda: "Linux")
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        with pytest.warns(SlowHalfPrecisionWarning, match=f"no native {name} arithmetic"):
            assert pick_dtype(name, torch.device("cpu")) is dt
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx512_fp16", "avx512_bf16"}))
    monkeypatch.setattr(device, "torch_isa_capped", lambda: False)  # whatever limit this test run has
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowHalfPrecisionWarning)
        assert pick_dtype("fp16", torch.device("cpu")) is torch.float16
        assert pick_dtype("bf16", torch.device("cpu")) is torch.bfloat16
        monkeypatch.setattr(device, "cpu_flags", lambda: frozenset())
        assert pick_dtype("fp16", torch.device("cuda")) is torch.float16  # not a CPU: no warning


def test_torch_limited_below_avx512_counts_as_emulated_half(monkeypatch):
    """An AVX-512 CPU whose torch is limited to AVX2 (ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY)
    emulates half precision: the flags in /proc/cpuinfo must not silence the warning."""
    import ccsr.engine.device as device
    from ccsr.engine.device import SlowHalfPrecisionWarning

    monkeypatch.setattr(device.platform, "system", lambda: "Linux")
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "avx512_fp16"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert not device.torch_isa_capped() and device.native_half_support(torch.bfloat16)
    for limit in ("AVX2", "avx2_vnni", "SSE41"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert device.torch_isa_capped() and not device.native_half_support(torch.bfloat16)
        with pytest.warns(SlowHalfPrecisionWarning, match="no native bf16 arithmetic"):
            pick_dtype("bf16", torch.device("cpu"))
    for limit in ("AVX512_CORE_BF16", "ALL"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert not device.torch_isa_capped()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert device.torch_isa_capped() and not device.native_half_support(torch.float16)
    # flags given explicitly describe another CPU: the limit of this process does not apply
    assert device.native_half_support(torch.bfloat16, flags={"avx512_bf16"}, machine="x86_64")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 ISA limits")
def test_a_process_started_with_avx2_limits_sees_them():
    """The real torch reads the limits at start: a child process started with them reports them."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    code = ("import torch; from ccsr.engine import device; "
            "print(torch.backends.cpu.get_cpu_capability(), device.torch_isa_capped(), "
            "device.native_half_support(torch.bfloat16))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["AVX2", "True", "False"]


def test_cpu_vendor_reads_cpuinfo(tmp_path):
    from ccsr.engine.device import cpu_vendor

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert cpu_vendor(info) == "AuthenticAMD"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nmodel name\t: some Arm core\n")
    assert cpu_vendor(tmp_path / "missing") == "" and cpu_vendor(arm) == ""
