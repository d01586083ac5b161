"""Python client for a ``ccsr serve`` server.

>>> from ccsr.client import Client
>>> with Client("http://127.0.0.1:8000", key="...") as c:
...     out = c.subscribe({"image_url": "photo.png", "scale": 2},
...                       on_progress=lambda p: print(f"{p.fraction:.0%}"))
...     c.download(out["image"]["url"], "photo_x2.png")

Local paths (or bytes) in ``*_url`` fields are uploaded first. The official
``fal-client`` also works against our server (see docs/clients.md); this one
needs no URL patching and adds progress callbacks and typed errors.
"""

from ccsr.client.aio import AsyncClient
from ccsr.client.protocol import (
    AuthError,
    ClientError,
    Handle,
    HTTPError,
    Log,
    Progress,
    RequestFailed,
    ServerTimeout,
    ServerUnreachable,
    Status,
    ValidationError,
)
from ccsr.client.sync import Client

__all__ = [
    "AsyncClient",
    "AuthError",
    "Client",
    "ClientError",
    "Handle",
    "HTTPError",
    "Log",
    "Progress",
    "RequestFailed",
    "ServerTimeout",
    "ServerUnreachable",
    "Status",
    "ValidationError",
]
