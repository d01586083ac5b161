"""Whether this CPU computes in half precision natively, and the warning when it does not.

On a CPU without native fp16/bf16 arithmetic (most x86 machines before
AVX512-FP16 / AMX, e.g. a 2-core AMD box without AVX-512) torch emulates half
precision, and a CCSR request runs tens of times slower than in fp32 (868 s
against 14 s measured on such a machine). ``dtype="auto"`` therefore never
picks half precision on a CPU, and an explicit fp16/bf16 there gets a
:class:`SlowHalfPrecisionWarning` unless the CPU reports native support.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from pathlib import Path
from typing import Iterable, Union

import torch

from ccsr.errors import InvalidParameter

#: CPU flags (Linux /proc/cpuinfo names) that mean native arithmetic in each half type.
#: x86: AVX512-FP16 / AMX-FP16 and AVX512-BF16 / AMX-BF16; Arm: FEAT_FP16 (fphp/asimdhp), FEAT_BF16.
NATIVE_FLAGS: dict[torch.dtype, frozenset[str]] = {
    torch.float16: frozenset({"avx512_fp16", "amx_fp16", "fphp", "asimdhp"}),
    torch.bfloat16: frozenset({"avx512_bf16", "amx_bf16", "bf16"}),
}


class SlowHalfPrecisionWarning(UserWarning):
    """Half precision asked for on a CPU that only emulates it."""


@functools.lru_cache(maxsize=8)
def _cpuinfo_field(names: tuple[str, ...], cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The value of the first /proc/cpuinfo line whose key is one of ``names``
    ("" where there is none or the file cannot be read)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in names:
            return value.strip()
    return ""


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (empty where they cannot be read)."""
    return frozenset(_cpuinfo_field(("flags", "features")).split())  # x86 / Arm


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This x86 CPU's vendor as /proc/cpuinfo spells it (``GenuineIntel``,
    ``AuthenticAMD``), or "" where it cannot be read (other systems, Arm).

    Why: which CPU kernels are fastest in fp32 depends on it (measured; see
    :mod:`ccsr.engine.cpu_kernels`)."""
    return _cpuinfo_field(("vendor_id",), cpuinfo)


#: oneDNN ISA limits (``ONEDNN_MAX_CPU_ISA``) below AVX-512: its half-precision kernels are then off.
_BELOW_AVX512 = frozenset({"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2"})


def torch_isa_capped() -> bool:
    """Whether torch was told to use less than this x86 CPU's AVX-512 (``ATEN_CPU_CAPABILITY``
    or ``ONEDNN_MAX_CPU_ISA``, read by torch at start).

    Why: the AVX-512 half-precision flags in /proc/cpuinfo only help when the
    kernels that use them run. With the limit set (as when an AVX-512 machine
    stands in for an AVX2-only one) half precision is emulated, and a 3x3
    convolution ran over a thousand times slower than in fp32 on a 2-core
    AMD EPYC limited so."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().lower() in _BELOW_AVX512:
        return True
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return False
    return capability.upper() in ("DEFAULT", "AVX2", "NO AVX")


def native_half_support(dtype: torch.dtype, flags: Iterable[str] | None = None, machine: str | None = None) -> bool:
    """True when the CPU computes in ``dtype`` natively (fp32 always is).

    With ``flags`` None this machine is read, and on x86 a torch limited below
    AVX-512 (:func:`torch_isa_capped`) counts as no native half precision."""
    if dtype not in NATIVE_FLAGS:
        return True
    machine = (machine if machine is not None else platform.machine()).lower()
    if flags is None:
        if platform.system() == "Darwin" and machine == "arm64":
            return True  # Apple silicon: every M-series core has fp16 (and, since M2, bf16) arithmetic
        if machine in ("x86_64", "amd64") and torch_isa_capped():
            return False
        flags = cpu_flags()
    return bool(NATIVE_FLAGS[dtype] & set(flags))


def warn_if_emulated_half(device: torch.device, dtype: torch.dtype, flags: Iterable[str] | None = None) -> bool:
    """Warn (and return True) when ``dtype`` is half precision on a CPU without native support."""
    if device.type != "cpu" or dtype not in NATIVE_FLAGS or native_half_support(dtype, flags):
        return False
    name = "fp16" if dtype == torch.float16 else "bf16"
    warnings.warn(
        f"dtype {name} on this CPU: it has no native {name} arithmetic, so torch emulates it and a request "
        f"runs tens of times slower than in fp32. Use dtype auto or fp32 on the CPU.",
        SlowHalfPrecisionWarning,
        stacklevel=3,
    )
    return True


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def pick_device(device: str = "auto") -> torch.device:
    """auto: CUDA, then Apple MPS, then CPU."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidParameter("device", f"expected auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("device", "CUDA was asked for but torch sees no CUDA device (a CPU-only torch build, or no driver)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidParameter("device", f"{device} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameter("device", "MPS was asked for but is not available on this machine")
    return dev


def pick_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA and MPS, never half precision on a CPU; an explicit
    fp16/bf16 on a CPU that only emulates it warns (see engine/device.py)."""
    if dtype in (None, "", "auto"):
        return torch.float32 if device.type == "cpu" else torch.float16
    if not isinstance(dtype, torch.dtype):
        try:
            dtype = DTYPES[dtype]
        except KeyError:
            raise InvalidParameter("dtype", f"expected auto, fp32, fp16 or bf16, got {dtype!r}") from None
    warn_if_emulated_half(device, dtype)
    return dtype


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; some torch versions report MPS
    exhaustion as a plain RuntimeError ("MPS backend out of memory")."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
