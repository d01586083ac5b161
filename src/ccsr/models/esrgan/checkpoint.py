"""Loading Real-ESRGAN weights into the networks.

The official ``.pth`` files are pickled dicts of tensors, sometimes wrapped
as ``{"params_ema": ...}`` (the EMA weights, what upstream inference uses) or
``{"params": ...}``. They are read with ``torch.load(weights_only=True)``, so
a crafted file cannot run code. The architecture is taken from the catalogue
entry, or inferred from the tensor shapes for a file that is not in it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from ccsr.errors import CheckpointError
from ccsr.models.esrgan.catalog import ModelSpec
from ccsr.models.esrgan.networks.rrdbnet import RRDBNet
from ccsr.models.esrgan.networks.srvgg import SRVGGNetCompact

StateDict = dict[str, torch.Tensor]


def unwrap(obj: object, source: str = "checkpoint") -> StateDict:
    """The state dict inside a loaded object: ``params_ema`` first, then ``params``."""
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise CheckpointError(f"{source} is not a Real-ESRGAN state dict (expected tensors, or a 'params_ema'/'params' dict of tensors)")


def load_pth(path: Path | str) -> StateDict:
    """Read an official ``.pth`` safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file does not exist: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a pickle, disallowed globals
        raise CheckpointError(f"could not read {path} as PyTorch weights: {exc.__class__.__name__}: {exc}") from exc
    return unwrap(obj, str(path))


def arch_from_state_dict(sd: Mapping[str, torch.Tensor]) -> tuple[str, dict]:
    """Infer (arch, kwargs) from the key layout and tensor shapes."""
    if "conv_first.weight" in sd:
        num_feat, cin = sd["conv_first.weight"].shape[:2]
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.rdb1\.conv1\.weight$", k))}
        grow = sd["body.0.rdb1.conv1.weight"].shape[0] if blocks else 32
        num_out = sd["conv_last.weight"].shape[0]
        in_ch = num_out
        factor = {1: 4, 4: 2, 16: 1}.get(int(cin) // in_ch)
        if factor is None:
            raise CheckpointError(f"conv_first has {cin} input channels; expected 3, 12 or 48")
        return "rrdbnet", {"num_in_ch": in_ch, "num_out_ch": num_out, "num_feat": int(num_feat), "num_block": len(blocks), "num_grow_ch": int(grow), "scale": factor}
    if "body.0.weight" in sd:
        idx = sorted({int(k.split(".")[1]) for k in sd if k.startswith("body.")})
        last = sd[f"body.{idx[-1]}.weight"]
        num_feat, in_ch = sd["body.0.weight"].shape[:2]
        num_conv = (idx[-1] - 2) // 2
        out_ch = 3 if last.shape[0] % 3 == 0 else 1
        upscale = int(round((last.shape[0] / out_ch) ** 0.5))
        act = "prelu" if "body.1.weight" in sd else "relu"
        return "srvgg", {"num_in_ch": int(in_ch), "num_out_ch": out_ch, "num_feat": int(num_feat), "num_conv": num_conv, "upscale": upscale, "act_type": act}
    raise CheckpointError("state dict is neither RRDBNet (conv_first.*) nor SRVGGNetCompact (body.N.*)")


def build_network(arch: str, kwargs: Mapping) -> nn.Module:
    if arch == "rrdbnet":
        return RRDBNet(**kwargs)
    if arch == "srvgg":
        return SRVGGNetCompact(**kwargs)
    raise CheckpointError(f"unknown architecture {arch!r}")


def network_from_state_dict(sd: Mapping[str, torch.Tensor], spec: Optional[ModelSpec] = None) -> nn.Module:
    """Build the network (catalogue architecture, else inferred) and load ``sd``
    strictly; a missing or extra key is a :class:`CheckpointError` naming it."""
    arch, kwargs = (spec.arch, spec.arch_kwargs) if spec is not None else arch_from_state_dict(sd)
    net = build_network(arch, kwargs)
    expected = net.state_dict()
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        what = spec.name if spec else arch
        raise CheckpointError(f"weights do not fit {what}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{k} has shape {tuple(sd[k].shape)}, {spec.name if spec else arch} expects {tuple(v.shape)}")
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return net.eval().requires_grad_(False)
