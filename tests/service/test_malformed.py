"""Malformed bodies and headers get a JSON 4xx naming the problem, on every
route that reads them, never a plain-text 500 (issue 11, points 1 and 6).

Real app on uvicorn with the fake engine; bodies are sent as raw bytes, the
way a hostile or buggy client would."""

from __future__ import annotations

import json

import httpx
import pytest

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app

Q = "/queue/fal-ai/ccsr"
RUN = "/fal-ai/ccsr"
JSON = {"content-type": "application/json"}
LIFE = "x-fal-object-lifecycle-preference"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("malformed"), max_expiration_seconds=86400)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)))
    with serve_app(app) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client


def body(extra: str) -> bytes:
    return ('{"image_url": "%s", "steps": 4, %s}' % (png_data_uri(), extra)).encode()


def assert_json_4xx(r: httpx.Response, *loc_parts, status: int = 422) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    loc = [str(x) for x in detail[0]["loc"]]
    for part in loc_parts:
        assert part in loc, (loc, part)
    return detail[0]["msg"]


@pytest.mark.parametrize("route", [Q, RUN])
@pytest.mark.parametrize("value,word", [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "Infinity"),
                                         ("1e999", "out of range")])
def test_non_finite_numbers_are_422_naming_the_field(server, route, value, word):
    r = server.post(route, content=body(f'"scale": {value}'), headers=JSON)
    msg = assert_json_4xx(r, "body")
    assert word in msg and "finite" in msg


def test_non_finite_number_in_a_nested_field_names_its_path(server):
    r = server.post(Q, content=body('"t_max": 1e999'), headers=JSON)
    assert "finite" in assert_json_4xx(r, "body")


def test_lone_surrogate_is_422_naming_the_field(server):
    r = server.post(Q, content=b'{"image_url": "ftp://\\ud800"}', headers=JSON)
    assert "surrogate" in assert_json_4xx(r, "body", "image_url")
    r = server.post(RUN, content=b'{"image_url": "https://example.com/\\udfff.png"}', headers=JSON)
    assert "surrogate" in assert_json_4xx(r, "body", "image_url")


def test_a_body_without_json_content_type_is_not_parsed(server):
    # FastAPI parses only JSON content types: anything else is refused as "not an object".
    r = server.post(Q, content=b'{"image_url": "https://x.example/\\ud800"}')
    assert_json_4xx(r, "body")


def test_deep_json_body_is_422(server):
    deep = b'{"image_url": "x", "a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    r = server.post(Q, content=deep, headers=JSON)
    assert "nested deeper" in assert_json_4xx(r, "body")


def test_validation_error_with_odd_input_still_renders(server):
    # No strict-JSON problem, but the input echoed in the error has a control char and unicode.
    r = server.post(Q, json={"image_url": "ftp://é\u0000", "scale": 2})
    assert_json_4xx(r, "body", "image_url")


@pytest.mark.parametrize("path", [Q, "/cdn/files/upload"])
def test_deeply_nested_lifecycle_header_is_422(server, path):
    header = '{"a":' * 5000 + "1" + "}" * 5000
    if path == Q:
        r = server.post(Q, json={"image_url": png_data_uri(), "steps": 4}, headers={LIFE: header[:4000]})
    else:
        r = server.post(path, content=b"x", headers={LIFE: header[:4000], "content-type": "image/png"})
    assert "nested deeper" in assert_json_4xx(r, "header", LIFE)
    r = server.post(path, json={"image_url": png_data_uri(), "steps": 4}, headers={LIFE: header})
    assert "limit" in assert_json_4xx(r, "header", LIFE)


@pytest.mark.parametrize("value", ["Infinity", "NaN", "-5", "0", "1e999", '"soon"', "true", "1e12"])
@pytest.mark.parametrize("path", ["/cdn/files/upload", Q, "/rest/storage/upload/initiate"])
def test_expiration_must_be_finite_positive_and_capped(server, value, path):
    header = '{"expiration_duration_seconds": %s}' % value
    if path == Q:
        r = server.post(Q, json={"image_url": png_data_uri(), "steps": 4}, headers={LIFE: header})
    elif path == "/cdn/files/upload":
        r = server.post(path, content=b"abc", headers={LIFE: header, "content-type": "text/plain"})
    else:
        r = server.post(path, json={"content_type": "image/png", "file_name": "a.png"}, headers={LIFE: header})
    msg = assert_json_4xx(r, "header", LIFE)
    if value == "1e12":
        assert "86400" in msg and "max_expiration_seconds" in msg


def test_a_valid_expiration_is_kept(server):
    header = json.dumps({"expiration_duration_seconds": 3600})
    r = server.post("/cdn/files/upload", content=b"abc", headers={LIFE: header, "content-type": "text/plain"})
    assert r.status_code == 200, r.text
    r = server.post(Q, json={"image_url": png_data_uri(), "steps": 4}, headers={LIFE: header})
    assert r.status_code == 200, r.text


def test_storage_json_routes_refuse_non_finite_bodies(server):
    r = server.post("/rest/storage/upload/initiate", content=b'{"content_type": "image/png", "x": NaN}',
                    headers=JSON)
    assert "NaN" in assert_json_4xx(r, "body")
    # A raw upload is bytes, not JSON: "NaN" inside a file of another type is just data.
    r = server.post("/cdn/files/upload", content=b'{"x": NaN}', headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text


def test_an_unexpected_error_is_a_json_500(server, monkeypatch):
    from ccsr.jobs.scheduler import Scheduler

    async def boom(self, *a, **kw):
        raise RuntimeError("database gone")

    monkeypatch.setattr(Scheduler, "submit", boom)
    r = server.post(Q, json={"image_url": png_data_uri(), "steps": 4})
    assert r.status_code == 500
    assert r.json()["error_type"] == "internal_server_error"
    assert "database gone" not in r.text


def test_an_unexpected_error_is_a_json_500_on_a_connection_that_stays_open(tmp_path):
    """A bug behind a route (here: the scheduler's lookup raising) answers a JSON
    500 with its body, and the keep-alive connection is not closed: the next
    request on it works (uvicorn closes a connection on an exception that escapes
    the app, so none may)."""
    settings = Settings(data_dir=tmp_path)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)))
    with serve_app(app) as base:
        sched = app.state.scheduler
        real_get = sched.get

        async def broken(*a, **k):
            raise RuntimeError("a bug, not the client's fault")

        with httpx.Client(base_url=base, timeout=30) as client:
            sub = client.post(Q, json={"image_url": png_data_uri(), "steps": 4}).json()
            sched.get = broken
            try:
                r = client.get(f"{Q}/requests/{sub['request_id']}/status")
            finally:
                sched.get = real_get
            assert r.status_code == 500 and r.json()["error_type"] == "internal_server_error"
            assert "bug" not in r.text  # nothing internal in the answer
            assert r.headers.get("connection", "").lower() != "close"
            pool = client._transport._pool  # one connection, reused
            assert len(pool.connections) == 1
            conn = pool.connections[0]
            assert client.get(f"{Q}/requests/{sub['request_id']}/status").status_code in (200, 202)
            assert pool.connections == [conn]
