"""Apps: one module per endpoint (``ccsr.models.ccsr_v1.app`` for ``fal-ai/ccsr``), the
:class:`App` seam they implement, and the :class:`Registry` the service serves."""

from ccsr.apps.base import App, FileInfo, Image, Produced
from ccsr.apps.registry import BUILTIN, Registry, default_registry

__all__ = ["App", "BUILTIN", "FileInfo", "Image", "Produced", "Registry", "default_registry"]
