"""Webhook signing: the server's Ed25519 key, the signature over each
delivery, and the JWKS receivers verify with.

The key pair is created on first start in the data dir (0600). Each delivery
is signed over ``request_id \\n user_id \\n timestamp \\n sha256_hex(body)``
and the public key is published at ``/.well-known/jwks.json``: the scheme the
provider documents, so existing receivers verify our webhooks unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import APIRouter

from ccsr.settings import Settings

KEY_FILE = "webhook-ed25519.pem"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes a signature covers (provider scheme)."""
    return "\n".join([request_id, user_id, str(timestamp), hashlib.sha256(body).hexdigest()]).encode()


class WebhookKeys:
    """The server's webhook signing key."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_raw = raw
        self.kid = _b64url(hashlib.sha256(raw).digest()[:16])

    @classmethod
    def load_or_create(cls, data_dir: Path) -> "WebhookKeys":
        """Load ``<data_dir>/webhook-ed25519.pem``, creating it (mode 0600) if absent."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                return cls(key)
            except FileExistsError:  # another process won the race: use its key
                pass
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(loaded)

    def sign(self, request_id: str, user_id: str, timestamp: str, body: bytes) -> str:
        """Hex Ed25519 signature of :func:`signed_message`."""
        return self._key.sign(signed_message(request_id, user_id, timestamp, body)).hex()

    def jwks(self) -> dict:
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.public_raw), "kid": self.kid, "use": "sig", "alg": "EdDSA"}
            ]
        }


def verify_webhook(
    jwks: dict,
    *,
    request_id: str,
    user_id: str,
    timestamp: str,
    body: bytes,
    signature_hex: str,
    now: Optional[float] = None,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver does: timestamp within ``tolerance`` s, signature by a JWKS key."""
    try:
        if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
            return False
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    message = signed_message(request_id, user_id, timestamp, body)
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        x = jwk["x"]
        try:
            Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def jwks_router(*, settings: Settings, keys: Optional[WebhookKeys] = None, **_: Any) -> APIRouter:
    """``GET /.well-known/jwks.json``: the public key(s) receivers verify with."""
    keys = keys or WebhookKeys.load_or_create(Path(settings.data_dir))
    router = APIRouter()

    @router.get("/.well-known/jwks.json", tags=["webhooks"], summary="Webhook signing keys (JWKS)")
    async def jwks() -> dict:
        return keys.jwks()

    return router
