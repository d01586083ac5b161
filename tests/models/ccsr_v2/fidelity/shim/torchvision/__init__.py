"""Stand-in for the parts of torchvision the official CCSR-v2 code imports
(torchvision from PyPI does not import on this CPU torch). Semantics follow
torchvision: to_tensor divides uint8 by 255; ToPILImage on float multiplies
by 255 and truncates with .byte()."""
from . import transforms, utils  # noqa: F401
