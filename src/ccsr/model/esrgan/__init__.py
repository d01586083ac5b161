"""Real-ESRGAN networks (plain PyTorch), the model catalogue and weight loading."""

from ccsr.model.esrgan.catalog import DEFAULT_MODEL, HOSTED_MODELS, MODELS, ModelSpec, get_spec
from ccsr.model.esrgan.checkpoint import arch_from_state_dict, build_network, load_pth, network_from_state_dict, unwrap
from ccsr.model.esrgan.rrdbnet import RRDBNet
from ccsr.model.esrgan.srvgg import SRVGGNetCompact

__all__ = [
    "DEFAULT_MODEL", "HOSTED_MODELS", "MODELS", "ModelSpec", "RRDBNet", "SRVGGNetCompact",
    "arch_from_state_dict", "build_network", "get_spec", "load_pth", "network_from_state_dict", "unwrap",
]
