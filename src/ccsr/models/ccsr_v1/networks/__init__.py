"""CCSR v1 model layer: config, checkpoint I/O, key mapping, networks, random weights.

Heavy imports (diffusers) happen only when the network classes are used.
"""

from ccsr.models.ccsr_v1.networks.config import CCSRConfig, TextConfig, UNetConfig, VAEConfig

__all__ = ["CCSRConfig", "UNetConfig", "VAEConfig", "TextConfig"]
