"""Real-ESRGAN's two network families, in plain PyTorch."""

from ccsr.models.esrgan.networks.rrdbnet import RRDBNet
from ccsr.models.esrgan.networks.srvgg import SRVGGNetCompact

__all__ = ["RRDBNet", "SRVGGNetCompact"]
