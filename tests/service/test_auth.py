"""API keys: hashing, owner ids, the 401 dependency and the bind guard."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from ccsr.service.auth import (
    LOCAL_OWNER,
    BindNotAllowed,
    KeyRing,
    check_bind_allowed,
    get_owner,
    owner_id_for_key,
    parse_authorization,
)
from ccsr.settings import Settings


def test_keys_are_not_kept_in_clear():
    ring = KeyRing(["sekrit-key-1"])
    assert "sekrit-key-1" not in repr(vars(ring))


def test_owner_ids_are_stable_distinct_and_not_the_key():
    ring = KeyRing(["alpha", "beta"])
    a = ring.owner_for("Key alpha")
    assert a == ring.owner_for("Key alpha") == owner_id_for_key("alpha")
    assert a != ring.owner_for("Key beta")
    assert "alpha" not in a and len(a) == 16
    assert ring.owner_for("Bearer alpha") == a
    assert ring.owner_for("key   alpha  ") == a


@pytest.mark.parametrize("header", [None, "", "Key", "Key ", "Basic alpha", "alpha", "Key alph", "Key alpha2"])
def test_unknown_or_malformed_headers_are_refused(header):
    assert KeyRing(["alpha"]).owner_for(header) is None


def test_no_keys_means_everyone_is_local():
    ring = KeyRing([])
    assert not ring.enabled
    assert ring.owner_for(None) == LOCAL_OWNER
    assert ring.owner_for("Key whatever") == LOCAL_OWNER


def test_from_settings_merges_sources(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# comment\nfilekey\n\nk2 # trailing\n")
    ring = KeyRing.from_settings(Settings(api_keys=["k1,k2"], api_keys_file=keys_file))
    assert len(ring) == 3
    for k in ("k1", "k2", "filekey"):
        assert ring.owner_for(f"Key {k}") is not None


def test_parse_authorization():
    assert parse_authorization("Key abc:def") == "abc:def"
    assert parse_authorization("Bearer t") == "t"
    assert parse_authorization("Token t") is None


def _app(ring: KeyRing) -> TestClient:
    app = FastAPI()
    app.state.keyring = ring

    @app.get("/me")
    def me(owner: str = Depends(ring.dependency())) -> dict:
        return {"owner": owner}

    @app.get("/me2")
    def me2(owner: str = Depends(get_owner)) -> dict:
        return {"owner": owner}

    return TestClient(app)


@pytest.mark.parametrize("path", ["/me", "/me2"])
def test_dependency_answers_401_with_detail(path):
    client = _app(KeyRing(["alpha"]))
    r = client.get(path)
    assert r.status_code == 401 and "Authorization: Key" in r.json()["detail"]
    r = client.get(path, headers={"Authorization": "Key nope"})
    assert r.status_code == 401 and r.json()["detail"] == "Unknown API key."
    r = client.get(path, headers={"Authorization": "Basic xyz"})
    assert r.status_code == 401 and "Malformed" in r.json()["detail"]
    r = client.get(path, headers={"Authorization": "Key alpha"})
    assert r.status_code == 200 and r.json()["owner"] == owner_id_for_key("alpha")


def test_dependency_without_keys_is_local():
    r = _app(KeyRing([])).get("/me")
    assert r.json() == {"owner": "local"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.5"])
def test_loopback_bind_needs_no_keys(host):
    check_bind_allowed(host, KeyRing([]))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_public_bind_without_keys_is_refused(host):
    with pytest.raises(BindNotAllowed) as err:
        check_bind_allowed(host, KeyRing([]))
    assert "CCSR_API_KEYS" in str(err.value)
    check_bind_allowed(host, KeyRing(["k"]))


@pytest.mark.parametrize("path", ["/me", "/me2"])
def test_the_key_check_runs_on_the_event_loop_not_the_thread_pool(path, monkeypatch):
    """Every queue route depends on the key check; as a plain ``def`` FastAPI
    would run it in its thread pool, a thread hop that halved the status polls
    one server answers on two cores (about 850/s with it, 1750/s without)."""
    import anyio.to_thread

    hops: list = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    app = FastAPI()
    ring = KeyRing(["alpha"])
    app.state.keyring = ring

    @app.get("/me")
    async def me(owner: str = Depends(ring.dependency())) -> dict:
        return {"owner": owner}

    @app.get("/me2")
    async def me2(owner: str = Depends(get_owner)) -> dict:
        return {"owner": owner}

    r = TestClient(app).get(path, headers={"Authorization": "Key alpha"})
    assert r.status_code == 200 and r.json()["owner"] == owner_id_for_key("alpha")
    assert hops == []
