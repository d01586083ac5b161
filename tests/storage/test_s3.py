"""What only the S3 store does: presigned URLs, key prefixes, settings, and
boto3 staying out of processes that use the local store."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from ccsr.storage import StoreUnavailable, open_blob_store
from ccsr.storage.local import LocalBlobStore
from ccsr.storage.s3 import S3BlobStore
from ccsr.settings import Settings
from s3_server import fresh_prefix


def test_presigned_url_downloads_from_the_bucket(s3_server):
    store = s3_server.store(presign=True, presign_expires=120)
    store.put("results/out.png", b"\x89PNGbytes", content_type="image/png")
    url = store.url("results/out.png", file_name="out put.png", attachment=True)
    assert url.startswith(s3_server.endpoint_url + "/") and "X-Amz-Signature=" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"\x89PNGbytes"
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''out%20put.png"
    forced = httpx.get(store.url("results/out.png", content_type="application/octet-stream"))
    assert forced.status_code == 200 and forced.headers["content-type"] == "application/octet-stream"
    # The signature is checked: a URL for another key or without signature is refused.
    assert httpx.get(url.replace("results/out.png", "results/other.png")).status_code == 403
    assert httpx.get(url.split("?")[0]).status_code == 403


def test_presigned_url_expires(s3_server):
    store = s3_server.store(presign=True)
    store.put("k", b"x")
    url = store.url("k", expires_in=1)
    time.sleep(2.5)
    assert httpx.get(url).status_code == 403


def test_prefix_keeps_stores_apart(s3_server):
    base = fresh_prefix()
    one = s3_server.store(base + "one")
    two = s3_server.store(base + "two/")
    one.put("files/k", b"1")
    two.put("files/k", b"2")
    assert one.read("files/k") == b"1" and two.read("files/k") == b"2"
    assert list(one.keys()) == ["files/k"]
    assert sorted(s3_server.store(base).keys()) == ["one/files/k", "two/files/k"]
    assert one.delete("files/k") and two.read("files/k") == b"2"


def test_wrong_credentials_are_an_error_not_a_miss(s3_server):
    prefix = fresh_prefix()
    s3_server.store(prefix).put("k", b"x")
    bad = S3BlobStore(s3_server.bucket, endpoint_url=s3_server.endpoint_url, region=s3_server.region,
                      access_key_id=s3_server.access_key_id, secret_access_key="wrong", prefix=prefix,
                      retry_seconds=30)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        bad.stat("k")
    # Unusable by this server: not retried (no 30 s wait), the store marked down,
    # and the text names neither the endpoint, the bucket, the prefix nor the key.
    assert time.monotonic() - t0 < 5
    assert not bad.health.ok
    assert str(err.value) == "The blob store is unavailable; try again later."
    assert "SignatureDoesNotMatch" in str(err.value.__cause__) or "403" in str(err.value.__cause__)  # for the log


def test_opened_from_settings(s3_server, tmp_path, monkeypatch):
    local = open_blob_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "blobs").resolve()
    base = fresh_prefix()
    for name, value in s3_server.settings(prefix=base + "ccsr").items():
        monkeypatch.setenv("CCSR_" + name.upper(), value)
    monkeypatch.setenv("CCSR_S3_PRESIGN_URLS", "true")
    store = open_blob_store(Settings(data_dir=tmp_path))
    assert isinstance(store, S3BlobStore) and store.prefix == base + "ccsr/" and store.presign
    store.put("a", b"via settings")
    assert s3_server.store(base).read("ccsr/a") == b"via settings"
    # A worker elsewhere rebuilds the same store from its spec alone.
    assert open_blob_store(store.spec()).read("a") == b"via settings"
    assert s3_server.secret_access_key not in repr(Settings(data_dir=tmp_path))


def test_bad_settings_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="s3_bucket"):
        open_blob_store(Settings(data_dir=tmp_path, blob_store="s3"))
    with pytest.raises(ValueError, match="blob_store"):
        Settings(data_dir=tmp_path, blob_store="ftp")


def test_boto3_is_imported_only_for_the_s3_store(tmp_path):
    code = ("import sys; from ccsr.storage import open_blob_store; from ccsr.settings import Settings; "
            f"open_blob_store(Settings(data_dir={str(tmp_path)!r})).put('k', b'1'); "
            "print('boto3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
