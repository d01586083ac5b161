"""Reading, validating and writing CCSR checkpoints (official key names).

Two formats: the official PyTorch Lightning ``.ckpt`` (a torch zip; weights
under "state_dict") loaded with ``weights_only=True`` and ``mmap=True``, and
``.safetensors`` (e.g. Kijai/ccsr-safetensors, fp16 or fp32), memory-mapped.
In both cases the returned tensors are views of the mapped file: nothing is
copied until the model converts each tensor to its dtype/device, one at a
time, so loading the 3.4 GB fp16 file needs little more RAM than the model.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import struct
from pathlib import Path
from typing import Iterable, Mapping, Optional

import torch

from ccsr.errors import CheckpointError
from ccsr.models.ccsr_v1.networks import keymap
from ccsr.models.ccsr_v1.networks.config import CCSRConfig

log = logging.getLogger(__name__)

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


# ------------------------------------------------------------------ reading
def load_state_dict(
    path: str | os.PathLike, config: CCSRConfig | None = None, validate: bool = True
) -> dict[str, torch.Tensor]:
    """Load an official-layout state dict from a .ckpt or .safetensors file.

    The format is detected from the content, not the suffix. With
    ``validate`` the keys are checked against ``config`` (inferred from the
    shapes when None): missing keys or wrong shapes raise CheckpointError,
    unexpected keys are logged.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    if size < 9:
        raise CheckpointError(f"{path}: file is {size} bytes, too small to be a checkpoint")
    if head[:4] == b"PK\x03\x04":
        sd = _load_torch(path, mmap=True)
    elif head[:1] == b"\x80" and 2 <= head[1] <= 5:  # pickle protocols torch.save writes
        sd = _load_torch(path, mmap=False)  # legacy (non-zip) torch.save format
    elif head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER:
        # A plausible header length too (a cut file still says "truncated"): random bytes
        # have a "{" in the ninth place one time in 256 and should read "not a checkpoint".
        sd = _load_safetensors(path, size)
    else:
        raise CheckpointError(
            f"{path}: not a checkpoint (neither a .safetensors file nor a PyTorch/Lightning .ckpt)"
        )
    if validate:
        validate_state_dict(sd, config)
    return sd


def _load_torch(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "global" in str(exc).lower():
            raise CheckpointError(
                f"{path}: refused to load: the file contains pickled Python objects other than tensors "
                f"and plain containers (torch.load weights_only=True). Only load files you trust; convert "
                f"it to .safetensors elsewhere if needed. Detail: {first}"
            ) from None
        raise CheckpointError(f"{path}: not a valid PyTorch checkpoint ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read the PyTorch checkpoint (truncated or corrupt?): {first}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (or a Lightning checkpoint with 'state_dict')")
    sd: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} of the state dict is not a tensor")
        sd[k] = v
    return sd


def _load_safetensors(path: Path, size: int) -> dict[str, torch.Tensor]:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(
                f"{path}: not a safetensors file or truncated: header of {n} bytes, file has {size} bytes"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    start = 8 + n
    data_size = size - start
    need = 0
    for key, info in header.items():
        try:
            b, e = (int(x) for x in info["data_offsets"])
            dtype = _ST_DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: bad safetensors header entry for {key!r}: {info!r}") from None
        numel = 1
        for s in shape:
            numel *= s
        if e - b != numel * torch.empty((), dtype=dtype).element_size() or b < 0:
            raise CheckpointError(f"{path}: safetensors entry {key!r} has inconsistent offsets {b}..{e}")
        need = max(need, e)
    if need > data_size:
        raise CheckpointError(
            f"{path}: truncated safetensors file: tensor data needs {need} bytes, only {data_size} present"
        )
    if not header:
        return {}
    storage = torch.UntypedStorage.from_file(os.fspath(path), shared=False, nbytes=size)
    whole = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,), (1,))
    sd: dict[str, torch.Tensor] = {}
    for key, info in header.items():
        b, e = (int(x) for x in info["data_offsets"])
        dtype = _ST_DTYPES[info["dtype"]]
        raw_t = whole[start + b : start + e]
        itemsize = torch.empty((), dtype=dtype).element_size()
        if (start + b) % itemsize:
            raw_t = raw_t.clone()  # unaligned: copy this one tensor
        sd[key] = raw_t.view(dtype).reshape(info["shape"])
    return sd


# ------------------------------------------------------ releasing map pages
_MADV_DONTNEED = 4  # Linux


def mapped_ranges(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of the file ``path`` (Linux; [] elsewhere)."""
    target = os.path.realpath(path)
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].strip() == target:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((lo, hi))
    except OSError:
        return []
    return ranges


@functools.lru_cache(maxsize=1)
def _libc():  # noqa: ANN202 - ctypes handle
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def is_mapped(t: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    """Whether the tensor's data lies in one of ``ranges`` (see :func:`mapped_ranges`)."""
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    return any(lo <= start and end <= hi for lo, hi in ranges)


def release_mapped_pages(path: str | os.PathLike, tensors: Iterable[torch.Tensor],
                         ranges: Optional[list[tuple[int, int]]] = None) -> int:
    """Drop this process's resident pages of ``tensors`` where they are views of
    the memory-mapped checkpoint ``path``; return the bytes released.

    Why: a memory-mapped checkpoint's pages count in the process's resident
    memory for as long as the mapping lives (the whole load), so the text
    tower's weights, read once for the empty-prompt context, would stay in
    the peak (about 1.4 GB of the full-size model). The mapping is private and
    never written, so dropping the pages loses nothing: a later read faults
    them back in from the file. Only ranges inside a mapping of that very file
    (from /proc/self/maps) are touched, whole pages only: an in-memory tensor
    is never advised, since MADV_DONTNEED would zero anonymous memory.
    Linux only; elsewhere (or when anything is unexpected) it does nothing.
    ``ranges``: the file's mappings when the caller already read them
    (:func:`mapped_ranges`; reading /proc/self/maps for every tensor of a
    model cost seconds of loading).
    """
    try:
        import mmap

        if ranges is None:
            ranges = mapped_ranges(path)
        if not ranges:
            return 0
        libc = _libc()
        page = mmap.PAGESIZE
        released = 0
        for t in tensors:
            start = t.data_ptr()
            end = start + t.numel() * t.element_size()
            start = -(-start // page) * page  # whole pages inside the tensor only
            end = end // page * page
            if end <= start or not any(lo <= start and end <= hi for lo, hi in ranges):
                continue
            if libc.madvise(start, end - start, _MADV_DONTNEED) == 0:
                released += end - start
        return released
    except (OSError, AttributeError, ValueError):
        return 0


# --------------------------------------------------------------- validation
def validate_state_dict(sd: Mapping[str, torch.Tensor], config: CCSRConfig | None = None) -> list[str]:
    """Check an official-layout state dict; return (and log) the unexpected keys.

    Raises CheckpointError when it is not a CCSR checkpoint, when expected keys
    are missing (naming a few and the count) or when shapes do not match.
    ``decoder_loss.*`` and schedule buffers are ignored silently.
    """
    if not any(k.startswith(keymap.PREFIX_UNET) for k in sd):
        raise CheckpointError("not a CCSR checkpoint: no UNet weights (model.diffusion_model.*)")
    if not any(k.startswith(keymap.PREFIX_CONTROL) for k in sd):
        raise CheckpointError(
            "not a CCSR checkpoint: no ControlNet weights (control_model.*); "
            "a plain Stable Diffusion checkpoint cannot be used"
        )
    if config is None:
        config = CCSRConfig.from_state_dict(sd)
    expected = keymap.entries(config)
    missing = [e.key for e in expected if e.key not in sd]
    if missing:
        shown = ", ".join(missing[:5])
        raise CheckpointError(
            f"checkpoint is missing {len(missing)} of {len(expected)} expected keys, e.g. {shown}"
        )
    wrong = [
        f"{e.key} {tuple(sd[e.key].shape)} != {e.shape}" for e in expected if tuple(sd[e.key].shape) != e.shape
    ]
    if wrong:
        raise CheckpointError(
            f"checkpoint has {len(wrong)} tensors of the wrong shape for this architecture, e.g. "
            + "; ".join(wrong[:3])
        )
    names = {e.key for e in expected}
    unexpected = sorted(k for k in sd if k not in names and not keymap.is_ignorable(k))
    if unexpected:
        log.warning(
            "checkpoint has %d unexpected keys (ignored), e.g. %s", len(unexpected), ", ".join(unexpected[:5])
        )
    return unexpected


# ------------------------------------------------------------------ writing
def save_state_dict(sd: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a state dict: ``.safetensors`` (streamed), or ``.ckpt``/``.pt`` as {"state_dict": sd}."""
    path = Path(path)
    if path.suffix == ".safetensors":
        specs = [(k, tuple(v.shape), v.dtype) for k, v in sd.items()]
        return write_safetensors_stream(path, specs, sd.items())
    if path.suffix in (".ckpt", ".pt", ".pth"):
        torch.save({"state_dict": dict(sd)}, path)
        return path
    raise CheckpointError(f"{path}: unknown checkpoint suffix {path.suffix!r} (use .safetensors or .ckpt)")


def write_safetensors_stream(
    path: Path,
    specs: list[tuple[str, tuple[int, ...], torch.dtype]],
    tensors: Iterable[tuple[str, torch.Tensor]],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a safetensors file from a known list of (key, shape, dtype) and a stream of tensors.

    The header is computed from ``specs`` first, so only one tensor needs to
    exist in memory at a time. ``tensors`` must yield the keys in spec order.
    """
    header: dict[str, object] = {}
    offset = 0
    for key, shape, dtype in specs:
        if dtype not in _ST_NAMES:
            raise CheckpointError(f"cannot write {key}: dtype {dtype} has no safetensors name")
        nbytes = torch.empty((), dtype=dtype).element_size()
        for s in shape:
            nbytes *= int(s)
        header[key] = {"dtype": _ST_NAMES[dtype], "shape": [int(s) for s in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        it = iter(tensors)
        for key, shape, dtype in specs:
            got_key, t = next(it)
            if got_key != key or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise CheckpointError(f"stream out of order at {key}: got {got_key} {tuple(t.shape)} {t.dtype}")
            t = t.detach().to("cpu").contiguous()
            if t.numel():
                f.write(t.reshape(-1).view(torch.uint8).numpy().data)
    os.replace(tmp, path)
    return path
