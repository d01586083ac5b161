"""The client's protocol pieces that need no server: SSE parsing, progress,
error mapping, callbacks, and the HTTP calls against a scripted transport."""

from __future__ import annotations

import json

import httpx
import pytest

from ccsr.client import AsyncClient, AuthError, Client, HTTPError, RequestFailed, ValidationError
from ccsr.client import protocol as P


def test_iter_sse_skips_comments_and_joins_data_lines():
    lines = [": keep-alive", "", 'data: {"status": "IN_QUEUE",', 'data: "queue_position": 2}', "", "data: not json", "", 'data: {"status": "COMPLETED"}']
    events = list(P.iter_sse(lines))
    assert events == [{"status": "IN_QUEUE", "queue_position": 2}, {"status": "COMPLETED"}]


def test_progress_prefers_step_logs_then_fraction():
    st = P.Status.from_json({"status": "IN_PROGRESS", "request_id": "r", "progress": 0.5,
                             "logs": [{"message": "step 1/4"}, {"message": "step 3/4"}, {"message": "other 9/9"}]})
    assert (st.progress.step, st.progress.total) == (3, 4)
    st = P.Status.from_json({"status": "IN_PROGRESS", "request_id": "r", "progress": 0.25, "logs": None})
    assert st.progress.fraction == pytest.approx(0.25)
    assert P.Status.from_json({"status": "IN_QUEUE", "request_id": "r", "queue_position": 0, "progress": 0}).progress is None


def test_reporter_reports_each_log_once_and_progress_on_change():
    logs, progress, updates = [], [], []
    rep = P.Reporter(updates.append, progress.append, logs.append)
    a = {"message": "step 1/2", "level": "INFO", "timestamp": "t1"}
    b = {"message": "step 2/2", "level": "INFO", "timestamp": "t2"}
    rep(P.Status.from_json({"status": "IN_PROGRESS", "request_id": "r", "logs": [a]}))
    rep(P.Status.from_json({"status": "IN_PROGRESS", "request_id": "r", "logs": [a]}))
    rep(P.Status.from_json({"status": "COMPLETED", "request_id": "r", "logs": [a, b]}))
    assert [l.message for l in logs] == ["step 1/2", "step 2/2"]
    assert [(p.step, p.total) for p in progress] == [(1, 2), (2, 2)]
    assert len(updates) == 3


def test_error_mapping_names_fields():
    body = json.dumps({"detail": [{"loc": ["body", "scale"], "msg": "Input should be less than or equal to 16", "type": "x"}]}).encode()
    err = P.error_from_response(422, body, {}, "u")
    assert isinstance(err, ValidationError)
    assert err.field_errors == {"scale": "Input should be less than or equal to 16"}
    assert "scale" in str(err)
    err = P.error_from_response(401, b'{"detail": "Missing API key"}', {}, "u")
    assert isinstance(err, AuthError) and "CCSR_KEY" in str(err)
    err = P.error_from_response(500, b"<html>oops", {"x-fal-error-type": "internal_server_error"}, "u")
    assert type(err) is HTTPError and err.error_type == "internal_server_error" and "oops" in str(err)


def test_urls_follow_our_layout():
    u = P.Urls("http://h:1/", "fal-ai/ccsr")
    assert u.submit("http://w/x?y=1") == "http://h:1/queue/fal-ai/ccsr?fal_webhook=http%3A%2F%2Fw%2Fx%3Fy%3D1"
    assert u.status("abc") == "http://h:1/queue/fal-ai/ccsr/requests/abc/status"
    assert u.stream("abc").endswith("/requests/abc/status/stream")
    assert u.cancel("abc").endswith("/requests/abc/cancel")
    assert u.run() == "http://h:1/fal-ai/ccsr"


def _scripted(final_error: bool):
    """A transport playing a server: submit, an SSE stream, the result."""
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        path = req.url.path
        if req.method == "POST" and path == "/queue/fal-ai/ccsr":
            return httpx.Response(200, json={"request_id": "r1", "queue_position": 1, "status_url": "x", "response_url": "y", "cancel_url": "z"})
        if path.endswith("/status/stream"):
            events = [
                {"status": "IN_QUEUE", "request_id": "r1", "queue_position": 1},
                {"status": "IN_PROGRESS", "request_id": "r1", "logs": [{"message": "step 1/2", "level": "INFO", "timestamp": "a"}]},
                {"status": "COMPLETED", "request_id": "r1", "logs": [{"message": "step 1/2", "level": "INFO", "timestamp": "a"}, {"message": "step 2/2", "level": "INFO", "timestamp": "b"}],
                 **({"error": "boom", "error_type": "internal_server_error"} if final_error else {})},
            ]
            text = ": hi\n\n" + "".join(f"data: {json.dumps(e)}\n\n" for e in events)
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        if req.method == "GET" and path == "/queue/fal-ai/ccsr/requests/r1":
            if final_error:
                return httpx.Response(500, json={"detail": "boom", "error_type": "internal_server_error"})
            return httpx.Response(200, json={"image": {"url": "http://h/files/k/o.png", "width": 4, "height": 2}, "seed": 7})
        return httpx.Response(404, json={"detail": "Not Found"})

    return handler, seen


def test_subscribe_streams_and_reports_callbacks():
    handler, seen = _scripted(final_error=False)
    positions, logs, progress = [], [], []
    with Client("http://h", key="k1", transport=httpx.MockTransport(handler)) as c:
        out = c.subscribe({"image_url": "http://img/a.png", "scale": 2},
                          on_queue_update=lambda s: positions.append(s.queue_position),
                          on_log=lambda l: logs.append(l.message), on_progress=lambda p: progress.append(p.fraction))
    assert out["seed"] == 7
    assert positions[0] == 1
    assert logs == ["step 1/2", "step 2/2"] and progress == [0.5, 1.0]
    assert all(r.headers["authorization"] == "Key k1" for r in seen)
    assert json.loads(seen[0].content) == {"image_url": "http://img/a.png", "scale": 2}


def test_subscribe_raises_request_failed_with_server_detail():
    handler, _ = _scripted(final_error=True)
    with Client("http://h", key=None, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(RequestFailed) as info:
            c.subscribe({"image_url": "http://img/a.png"})
    assert info.value.request_id == "r1" and "boom" in str(info.value) and info.value.status_code == 500


@pytest.mark.asyncio
async def test_async_subscribe_matches_sync():
    handler, _ = _scripted(final_error=False)
    logs = []
    async with AsyncClient("http://h", transport=httpx.MockTransport(handler)) as c:
        out = await c.subscribe({"image_url": "http://img/a.png"}, on_log=lambda l: logs.append(l.message))
    assert out["image"]["width"] == 4 and logs == ["step 1/2", "step 2/2"]


def test_unreachable_server_is_a_clear_error():
    with Client("http://127.0.0.1:9", key=None) as c:
        with pytest.raises(P.ServerUnreachable, match="cannot reach http://127.0.0.1:9"):
            c.status("x")


def test_env_defaults(monkeypatch):
    monkeypatch.setenv("CCSR_SERVER", "http://example:1")
    monkeypatch.delenv("CCSR_KEY", raising=False)
    monkeypatch.setenv("FAL_KEY", "fk")
    c = Client()
    assert c.server == "http://example:1" and c.key == "fk"
    monkeypatch.setenv("CCSR_KEY", "ck")
    assert Client().key == "ck"


def test_strings_that_cannot_be_paths_are_sent_as_they_are():
    """A long non-URL string (say, base64 without its data: prefix) or one with a
    NUL byte used to crash the client's local-file check with an OSError."""
    bodies = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(422, json={"detail": [{"loc": ["body", "image_url"], "msg": "must be an http(s) URL",
                                                     "type": "value_error"}]})

    for value in ("A" * 5000, "a\x00b"):
        with Client("http://h", key=None, transport=httpx.MockTransport(handler)) as c:
            with pytest.raises(ValidationError) as info:
                c.submit({"image_url": value})
        assert "image_url" in info.value.field_errors
    assert [b["image_url"] for b in bodies] == ["A" * 5000, "a\x00b"]


def test_sse_decoder_is_incremental():
    d = P.SSEDecoder()
    assert d.feed(": keep-alive") is None and d.feed("") is None
    assert d.feed('data: {"a":') is None and d.feed("data: 1}") is None
    assert d.feed("") == {"a": 1}
    assert d.feed('data: {"b": 2}') is None and d.flush() == {"b": 2} and d.flush() is None
