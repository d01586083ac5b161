"""What a request says about URLs and lifetimes: the base URL clients reach
this server at, and the object lifetime a request asks for. Shared by the
queue routes (result URLs) and the storage routes (upload URLs)."""

from __future__ import annotations

from typing import Optional

from fastapi import Request

from ccsr.settings import Settings

#: Shortest lifetime a request may ask for: a file must outlive its response.
MIN_TTL = 60.0


def public_base_url(request: Request, settings: Settings) -> str:
    """Base URL clients reach us at: ``public_url`` or the request's own base."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def lifecycle_ttl(request: Request, default: Optional[float]) -> Optional[float]:
    """TTL from ``X-Fal-Object-Lifecycle(-Preference)``: strict, finite and capped (see lifecycle.py)."""
    from ccsr.service.lifecycle import lifecycle_ttl as checked

    return checked(request, default)
