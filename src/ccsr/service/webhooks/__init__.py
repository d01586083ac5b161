"""Webhooks: signed, durable, retried deliveries of finished requests.

- :mod:`.signing`: the Ed25519 key, signatures and the JWKS route
- :mod:`.outbox`: the outbox table and the webhook bodies
- :mod:`.sender`: delivery with leases, retries and SSRF checks, and the
  start/stop hooks the app calls
"""

from ccsr.service.webhooks.outbox import (
    DELIVERED,
    FAILED,
    PENDING,
    WebhookDelivery,
    add_to_outbox,
    body_for_view,
    enqueue_webhook,
    webhook_body,
)
from ccsr.service.webhooks.sender import (
    BASE_DELAY,
    PRUNE_AFTER,
    WebhookSender,
    default_backoff,
    make_session_factory,
    start_for_app,
    stop_for_app,
)
from ccsr.service.webhooks.signing import KEY_FILE, WebhookKeys, jwks_router, signed_message, verify_webhook

__all__ = [
    "BASE_DELAY",
    "DELIVERED",
    "FAILED",
    "KEY_FILE",
    "PENDING",
    "PRUNE_AFTER",
    "WebhookDelivery",
    "WebhookKeys",
    "WebhookSender",
    "add_to_outbox",
    "body_for_view",
    "default_backoff",
    "enqueue_webhook",
    "jwks_router",
    "make_session_factory",
    "signed_message",
    "start_for_app",
    "stop_for_app",
    "verify_webhook",
    "webhook_body",
]
