"""How a request's :class:`ccsr.jobs.outcome.Outcome` looks over HTTP: the
status code of the result route, FastAPI's 422 body for invalid input, and
the error body (the scheduler decides outcomes, this module renders them)."""

from __future__ import annotations

from typing import Any, Optional

from ccsr.jobs.outcome import CANCELLED_TYPE, INTERNAL_TYPE, INVALID_TYPE, TIMEOUT_TYPE

_STATUS = {CANCELLED_TYPE: 400, INVALID_TYPE: 422, TIMEOUT_TYPE: 504}


def validation_body(field: str, message: str, loc: str = "body") -> dict:
    """FastAPI's 422 shape for one bad field (of the body, a header or the query)."""
    return {"detail": [{"loc": [loc] + ([field] if field and field != "body" else []), "msg": message,
                        "type": "value_error"}]}


def _legacy(view: Any) -> Optional[tuple[int, dict]]:
    # Rows finished before outcomes were typed stored the HTTP answer itself.
    body = view.error_body
    if view.error_status and isinstance(body, dict) and "detail" in body:
        return view.error_status, body
    return None


def error_status(view: Any) -> int:
    """The result route's status code for a request that did not complete."""
    legacy = _legacy(view)
    if legacy:
        return legacy[0]
    return _STATUS.get(view.error_type or INTERNAL_TYPE, 500)


def error_body(view: Any) -> dict:
    """The result route's (and the webhook's) body for a request that did not complete."""
    legacy = _legacy(view)
    if legacy:
        return legacy[1]
    outcome = view.outcome
    if outcome is not None and outcome.error_type == INVALID_TYPE and outcome.field:
        return validation_body(outcome.field, outcome.message or "")
    return {"detail": view.error, "error_type": view.error_type}


class WebhookView:
    """A finished view as the webhook body builder reads it: the same fields,
    with ``error_body`` rendered as the result route answers."""

    def __init__(self, view: Any):
        self._view = view
        self.error_body = None if view.status == "completed" else error_body(view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)
