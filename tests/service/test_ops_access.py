"""With API keys configured, /metrics, /docs, /redoc and the worker details
of /readyz need a key, unless public_ops_routes opts them public (issue 11,
point 10). /healthz and /openapi.json (the playground reads it) stay open."""

from __future__ import annotations

import httpx
import pytest

from ccsr.executors.thread import ThreadExecutor
from ccsr.testing import FakeEngine
from ccsr.service.app import create_app
from ccsr.settings import Settings

from svc_helpers import serve_app

KEY = "ops-key"


def _client(tmp_path, **settings):
    app = create_app(Settings(data_dir=tmp_path, **settings), executor=ThreadExecutor(FakeEngine(0.01)))
    return serve_app(app)


@pytest.mark.parametrize("path", ["/metrics", "/docs"])
def test_private_routes_need_a_key(tmp_path, path):
    with _client(tmp_path, api_keys=[KEY]) as base:
        r = httpx.get(base + path)
        assert r.status_code == 401 and "public_ops_routes" in r.json()["detail"]
        assert httpx.get(base + path, headers={"Authorization": "Key wrong"}).status_code == 401
        assert httpx.get(base + path, headers={"Authorization": f"Key {KEY}"}).status_code == 200


def test_readyz_hides_worker_details_without_a_key(tmp_path):
    with _client(tmp_path, api_keys=[KEY]) as base:
        anon = httpx.get(base + "/readyz").json()
        assert anon["status"] == "ready" and not isinstance(anon["workers"], list)
        keyed = httpx.get(base + "/readyz", headers={"Authorization": f"Key {KEY}"}).json()
        assert isinstance(keyed["workers"], list)
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.get(base + "/openapi.json").status_code == 200


def test_the_setting_opts_them_public(tmp_path):
    with _client(tmp_path, api_keys=[KEY], public_ops_routes=True) as base:
        assert httpx.get(base + "/metrics").status_code == 200
        assert isinstance(httpx.get(base + "/readyz").json()["workers"], list)


def test_without_keys_everything_is_local_and_open(tmp_path):
    with _client(tmp_path) as base:
        assert httpx.get(base + "/metrics").status_code == 200
        assert httpx.get(base + "/docs").status_code == 200
