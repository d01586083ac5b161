"""API keys: who is calling, and whether the server may listen publicly.

Keys are kept only as SHA-256 digests and compared with
``hmac.compare_digest`` against every stored digest, so neither memory dumps
nor response timing reveal a key. A caller is identified by an *owner id*, a
stable, domain-separated hash prefix of its key: jobs, uploads and webhooks
record the owner id, never the key itself.

With no keys configured the server is a single-user tool: every caller is the
owner ``"local"``. That is only safe on a loopback address, which
:func:`check_bind_allowed` enforces at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Callable, Iterable, Optional

from fastapi import HTTPException, Request

from ccsr.errors import CCSRError
from ccsr.settings import Settings

LOCAL_OWNER = "local"
# Schemes accepted in the Authorization header: the official clients send
# "Key <key>"; "Bearer <key>" is accepted for tools that only know bearer auth.
_SCHEMES = ("key", "bearer")


class BindNotAllowed(CCSRError):
    """The server would listen on a non-loopback address without API keys."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def owner_id_for_key(key: str) -> str:
    """The stable owner id of a key (16 hex chars of a separate hash).

    Domain-separated from the stored digest so an owner id, which appears in
    webhook headers and logs, says nothing about the digest used for lookup.
    """
    return hashlib.sha256(b"ccsr-owner\x00" + key.encode("utf-8")).hexdigest()[:16]


def parse_authorization(authorization: Optional[str]) -> Optional[str]:
    """The key in ``Key <key>`` / ``Bearer <key>``, or None when absent/malformed."""
    if not authorization:
        return None
    parts = authorization.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() not in _SCHEMES:
        return None
    key = parts[1].strip()
    return key or None


class KeyRing:
    """The accepted API keys, held as digests, mapped to owner ids."""

    def __init__(self, keys: Iterable[str] = ()):
        self._entries: list[tuple[bytes, str]] = []
        seen: set[bytes] = set()
        for key in keys:
            key = key.strip()
            if not key:
                continue
            digest = _digest(key)
            if digest not in seen:
                seen.add(digest)
                self._entries.append((digest, owner_id_for_key(key)))

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        """Keys from ``api_keys``, ``CCSR_API_KEYS`` and ``api_keys_file``."""
        return cls(settings.all_api_keys())

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured (authentication required)."""
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def owner_for_key(self, key: Optional[str]) -> Optional[str]:
        """Owner id of a bare key, ``"local"`` when no keys are configured, else None."""
        if not self.enabled:
            return LOCAL_OWNER
        if not key:
            return None
        digest = _digest(key)
        found: Optional[str] = None
        # Compare against every entry without stopping early: time does not
        # depend on which (if any) key matched.
        for stored, owner in self._entries:
            if hmac.compare_digest(stored, digest):
                found = owner
        return found

    def owner_for(self, authorization: Optional[str]) -> Optional[str]:
        """Owner id for an ``Authorization`` header value, or None if not accepted."""
        if not self.enabled:
            return LOCAL_OWNER
        return self.owner_for_key(parse_authorization(authorization))

    def require(self, authorization: Optional[str]) -> str:
        """Owner id, or an HTTP 401 with a ``detail`` saying what is wrong."""
        owner = self.owner_for(authorization)
        if owner is not None:
            return owner
        if not authorization:
            detail = "Missing API key: send the header 'Authorization: Key <your key>'."
        elif parse_authorization(authorization) is None:
            detail = "Malformed Authorization header: expected 'Key <your key>'."
        else:
            detail = "Unknown API key."
        raise HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Key"})

    def dependency(self) -> Callable[[Request], str]:
        """A FastAPI dependency returning the caller's owner id (401 otherwise)."""

        async def _owner(request: Request) -> str:
            return self.require(request.headers.get("authorization"))

        return _owner


async def get_owner(request: Request) -> str:
    """FastAPI dependency using the KeyRing stored at ``app.state.keyring``.

    Lets routers declared before the app exists authenticate against the
    app's key ring (no keyring on the app means no authentication: "local").
    ``async`` though it never awaits: FastAPI runs a plain ``def`` dependency
    in its thread pool, and that hop cost every status poll more than the
    check itself (one SHA-256 per configured key).
    """
    keyring: Optional[KeyRing] = getattr(request.app.state, "keyring", None)
    if keyring is None:
        return LOCAL_OWNER
    return keyring.require(request.headers.get("authorization"))


def is_loopback_host(host: str) -> bool:
    """True for 'localhost' and loopback IP literals (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_allowed(host: str, keyring: KeyRing) -> None:
    """Refuse to listen beyond loopback without API keys.

    Without keys every caller is the same owner and may run jobs and read
    every result, so exposing that to a network must be a deliberate choice.
    """
    if keyring.enabled or is_loopback_host(host):
        return
    raise BindNotAllowed(
        f"Refusing to listen on {host!r} without API keys: anyone who can reach it could use "
        "the server. Set CCSR_API_KEYS (comma-separated) or --api-keys-file, or bind to "
        "127.0.0.1."
    )
