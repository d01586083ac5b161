"""Upload tokens: short-lived bearer tokens the storage token route hands out
(the official Python client uploads with one instead of the API key).

Stateless HMAC tokens carrying only the owner id and the expiry, so they stay
valid across restarts and across HTTP nodes that share the blob store, where
the signing secret lives (created once, readable only by the server).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timezone
from typing import Optional

from ccsr.storage import keys
from ccsr.storage.base import BlobNotFound, BlobStore

UPLOAD_TOKEN_TTL = 3600.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UploadTokens:
    """Issue and check ``token_type: Bearer`` upload tokens."""

    def __init__(self, secret: bytes, ttl: float = UPLOAD_TOKEN_TTL):
        self._secret = secret
        self.ttl = ttl

    def issue(self, owner: str, now: Optional[float] = None) -> tuple[str, datetime]:
        expires = (time.time() if now is None else now) + self.ttl
        body = _b64(json.dumps({"o": owner, "e": int(expires)}, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())
        return f"{body}.{sig}", datetime.fromtimestamp(int(expires), tz=timezone.utc)

    def verify(self, token: Optional[str], now: Optional[float] = None) -> Optional[str]:
        """The owner id in a valid, unexpired token, else None."""
        if not token or token.count(".") != 1 or len(token) > 512:
            return None
        body, sig = token.split(".")
        want = _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, sig):
            return None
        try:
            data = json.loads(_unb64(body))
            owner, expires = str(data["o"]), float(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if (time.time() if now is None else now) >= expires:
            return None
        return owner


def load_or_create_secret(blobs: BlobStore) -> bytes:
    """The signing secret kept in the blob store, made on first use.

    Two nodes starting together for the very first time may both write one;
    each re-reads what is stored after writing, so the last write wins for
    both and tokens signed before that moment are refused once (the client
    then asks for a new token).
    """
    try:
        return blobs.read(keys.UPLOAD_TOKEN_SECRET)
    except BlobNotFound:
        pass
    blobs.put(keys.UPLOAD_TOKEN_SECRET, secrets.token_bytes(32), content_type="application/octet-stream")
    return blobs.read(keys.UPLOAD_TOKEN_SECRET)
