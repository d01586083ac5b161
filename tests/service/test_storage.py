"""FileStore and the storage routes, including the official Python client's
upload paths (single, multipart and the initiate/PUT fallback) against a live
server, on the local blob store and on S3 (a real SeaweedFS server on
127.0.0.1, started once for the session)."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ccsr.service.auth import KeyRing
from ccsr.storage.files import FileStore, NotFound, TooLarge, clean_content_type, clean_file_name, is_valid_key
from ccsr.service.storage_routes import storage_router
from ccsr.settings import Settings
from s3_server import s3_server  # noqa: F401 - the session fixture

KEY = "test-key-123"


def make_app(tmp_path: Path, keys=(KEY,), blobs=None, **overrides) -> tuple[FastAPI, FileStore]:
    settings = Settings(data_dir=tmp_path, api_keys=list(keys), **overrides)
    files = FileStore(blobs if blobs is not None else tmp_path / "files", scratch_dir=tmp_path / "scratch")
    app = FastAPI()
    app.include_router(storage_router(files, settings=settings, keyring=KeyRing(keys)))
    return app, files


# --- FileStore ---------------------------------------------------------------


def test_save_get_delete_roundtrip(tmp_path):
    store = FileStore(tmp_path)
    stored = store.save(b"hello", "text/plain", "greeting.txt", owner="o1")
    assert is_valid_key(stored.key) and len(stored.key) >= 32
    assert stored.size == 5 and stored.content_type == "text/plain"
    assert stored.file_name == "greeting.txt" and stored.owner == "o1"
    assert store.path(stored.key).read_bytes() == b"hello"
    url = store.url_for(stored.key, "http://h:1/")
    assert url == f"http://h:1/files/{stored.key}/greeting.txt"
    assert FileStore.key_from_url(url) == stored.key
    assert store.delete(stored.key)
    assert store.get(stored.key) is None
    with pytest.raises(FileNotFoundError):
        store.path(stored.key)


def test_keys_are_unique_and_unguessable(tmp_path):
    store = FileStore(tmp_path)
    keys = {store.save(b"x").key for _ in range(20)}
    assert len(keys) == 20


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "..", "a/b", "", "short", "x" * 200, "abc\x00def" * 5, "%2e%2e%2f" * 4, "/" + "a" * 30],
)
def test_hostile_keys_never_touch_the_filesystem(tmp_path, key):
    store = FileStore(tmp_path / "files")
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    assert store.get(key) is None
    assert not store.delete(key)
    with pytest.raises(FileNotFoundError):
        store.path(key)
    assert secret.exists()


def test_file_names_and_types_are_sanitised():
    assert clean_file_name("../../etc/passwd") == "passwd"
    assert clean_file_name("..\\..\\boot.ini") == "boot.ini"
    assert clean_file_name("a b<script>.png") == "a_b_script_.png"
    assert clean_file_name("", "image/png") == "file.png"
    assert clean_file_name("...") == "file.bin"
    assert len(clean_file_name("a" * 500 + ".jpeg")) <= 120
    assert clean_file_name("a" * 500 + ".jpeg").endswith(".jpeg")
    assert clean_content_type("IMAGE/PNG; charset=x") == "image/png"
    assert clean_content_type("text/html\r\nX-Evil: 1") == "application/octet-stream"
    assert clean_content_type(None) == "application/octet-stream"


def test_ttl_expiry_and_purge(tmp_path):
    store = FileStore(tmp_path)
    short = store.save(b"a", ttl=10)
    keep = store.save(b"b")
    assert store.get(short.key) is not None
    assert store.get(short.key, now=time.time() + 11) is None
    assert store.purge_expired(now=time.time() + 11) == 1
    assert not short.path.exists()
    assert store.get(keep.key) is not None


def test_save_limit_and_streams(tmp_path):
    store = FileStore(tmp_path)
    with pytest.raises(TooLarge) as err:
        store.save([b"a" * 10, b"b" * 10], max_bytes=15)
    assert "max_upload_bytes" in str(err.value)
    assert list((tmp_path / "tmp").iterdir()) == []  # partial write cleaned up
    with open(tmp_path / "src.bin", "wb") as f:
        f.write(b"z" * 3000)
    with open(tmp_path / "src.bin", "rb") as f:
        assert store.save(f).size == 3000


def test_upload_secret_is_private(tmp_path):
    store = FileStore(tmp_path)
    store.upload_tokens()
    mode = stat.S_IMODE(os.stat(store.blobs.local_path("secrets/upload-token")).st_mode)
    assert mode == 0o600


def test_upload_tokens_expire_and_resist_tampering(tmp_path):
    tokens = FileStore(tmp_path).upload_tokens()
    token, expires = tokens.issue("owner1", now=1000.0)
    assert tokens.verify(token, now=1001.0) == "owner1"
    assert tokens.verify(token, now=expires.timestamp() + 1) is None
    body, sig = token.split(".")
    assert tokens.verify(body + "." + sig[:-2] + "AA", now=1001.0) is None
    assert tokens.verify("garbage", now=1001.0) is None
    # Another store's secret does not verify this store's tokens.
    assert FileStore(tmp_path / "other").upload_tokens().verify(token, now=1001.0) is None


# --- routes ------------------------------------------------------------------


def test_token_route_shape_and_auth(tmp_path):
    app, _ = make_app(tmp_path)
    client = TestClient(app)
    r = client.post("/rest/storage/auth/token?storage_type=fal-cdn-v3", json={})
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    r = client.post(
        "/rest/storage/auth/token?storage_type=fal-cdn-v3", json={}, headers={"Authorization": f"Key {KEY}"}
    )
    assert r.status_code == 200
    data = r.json()
    assert data["token_type"] == "Bearer" and data["token"]
    assert data["base_url"] == "http://testserver/cdn"
    expires = datetime.fromisoformat(data["expires_at"])
    assert expires.tzinfo is not None and expires > datetime.now(timezone.utc)


def test_raw_upload_needs_token_and_serves_file(tmp_path):
    app, files = make_app(tmp_path)
    client = TestClient(app)
    headers = {"Content-Type": "image/png", "X-Fal-File-Name": "../x.png"}
    assert client.post("/cdn/files/upload", content=b"abc", headers=headers).status_code == 401
    tok = client.post("/rest/storage/auth/token", headers={"Authorization": f"Key {KEY}"}).json()
    r = client.post(
        "/cdn/files/upload",
        content=b"\x89PNGdata",
        headers={**headers, "Authorization": f"{tok['token_type']} {tok['token']}"},
    )
    assert r.status_code == 200, r.text
    url = r.json()["access_url"]
    assert url.startswith("http://testserver/files/") and url.endswith("/x.png")
    # Readable without auth, with the stored content type and no sniffing.
    got = client.get(url)
    assert got.status_code == 200 and got.content == b"\x89PNGdata"
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert client.head(url).status_code == 200
    # A wrong key in the same URL shape is a 404, not an error.
    bad = url.replace(FileStore.key_from_url(url), "A" * 32)
    assert client.get(bad).status_code == 404


def test_html_upload_is_served_as_download(tmp_path):
    app, _ = make_app(tmp_path, keys=())
    client = TestClient(app)
    r = client.post("/cdn/files/upload", content=b"<script>alert(1)</script>", headers={"Content-Type": "text/html"})
    got = client.get(r.json()["access_url"])
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in got.headers["content-security-policy"]


def test_a_file_deleted_during_its_download_is_whole_or_a_404(tmp_path, monkeypatch):
    """Retention may delete a file while it is being served (CI once saw the
    headers go out and the body cut off): a download that opened the file
    completes, one that lost the race is a clean 404."""
    app, files = make_app(tmp_path, keys=())
    client = TestClient(app)
    body = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    url = client.post("/cdn/files/upload", content=body, headers={"Content-Type": "image/png"}).json()["access_url"]
    key = FileStore.key_from_url(url)
    bytes_key = files.get(key).blob_key  # the file's bytes (its metadata is read through open() too)
    real_open = files.blobs.open

    def open_then_delete(blob_key):
        handle = real_open(blob_key)
        if blob_key == bytes_key:
            assert files.delete(key)  # retention runs right after the open
        return handle

    monkeypatch.setattr(files.blobs, "open", open_then_delete)
    got = client.get(url)
    assert got.status_code == 200 and got.content == body
    assert got.headers["content-length"] == str(len(body))
    assert client.get(url).status_code == 404  # and it is gone for the next one

    url = client.post("/cdn/files/upload", content=b"\x89PNG", headers={"Content-Type": "image/png"}).json()["access_url"]
    key = FileStore.key_from_url(url)
    bytes_key = files.get(key).blob_key

    def delete_then_open(blob_key):
        if blob_key == bytes_key:
            files.delete(key)  # retention wins: between the lookup and the open
        return real_open(blob_key)

    monkeypatch.setattr(files.blobs, "open", delete_then_open)
    gone = client.get(url)
    assert gone.status_code == 404 and gone.json()["detail"].startswith("File not found")


def test_upload_limit_answers_413(tmp_path):
    app, files = make_app(tmp_path, keys=(), max_upload_bytes=1000)
    client = TestClient(app)
    r = client.post("/cdn/files/upload", content=b"x" * 1001, headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    assert "1000" in r.json()["detail"] and "max_upload_bytes" in r.json()["detail"]

    def gen():  # no Content-Length: the limit is enforced while streaming
        for _ in range(5):
            yield b"y" * 300

    r = client.post("/cdn/files/upload", content=gen(), headers={"Content-Type": "image/png"})
    assert r.status_code == 413
    assert list(files.blobs.keys("files/")) == []


def test_initiate_then_put_both_storage_types(tmp_path):
    app, _ = make_app(tmp_path)
    client = TestClient(app)
    for storage_type in ("gcs", "fal-cdn-v3"):
        r = client.post(
            f"/rest/storage/upload/initiate?storage_type={storage_type}",
            json={"file_name": "cat.jpg", "content_type": "image/jpeg"},
            headers={"Authorization": f"Key {KEY}"},
        )
        assert r.status_code == 200
        init = r.json()
        assert init["upload_url"].startswith("http://testserver/") and init["file_url"].startswith("http://testserver/")
        assert client.get(init["file_url"]).status_code == 404  # not there yet
        # Plain PUT without auth (the JS client bypasses middleware for it).
        assert client.put(init["upload_url"], content=b"jpegbytes", headers={"Content-Type": "image/jpeg"}).status_code == 200
        got = client.get(init["file_url"])
        assert got.content == b"jpegbytes" and got.headers["content-type"] == "image/jpeg"
        # The upload URL is single use.
        assert client.put(init["upload_url"], content=b"again").status_code == 404
    r = client.post("/rest/storage/upload/initiate?storage_type=s3", json={}, headers={"Authorization": f"Key {KEY}"})
    assert r.status_code == 400
    assert client.post("/rest/storage/upload/initiate", json={}).status_code == 401


def test_js_multipart_protocol(tmp_path):
    app, _ = make_app(tmp_path, keys=())
    client = TestClient(app)
    init = client.post(
        "/rest/storage/upload/initiate-multipart?storage_type=fal-cdn-v3",
        json={"file_name": "big.bin", "content_type": "application/octet-stream"},
    ).json()
    parts = []
    for n, chunk in enumerate([b"a" * 100, b"b" * 50], start=1):
        r = client.put(f"{init['upload_url']}/{n}", content=chunk)
        assert r.status_code == 200
        body = r.json()
        assert body["partNumber"] == n and body["etag"] == r.headers["etag"]
        parts.append(body)
    r = client.post(f"{init['upload_url']}/complete", json={"parts": parts})
    assert r.status_code == 200, r.text
    assert client.get(init["file_url"]).content == b"a" * 100 + b"b" * 50


def test_multipart_rejects_bad_etag_and_part_numbers(tmp_path):
    app, _ = make_app(tmp_path, keys=(), max_upload_bytes=120)
    client = TestClient(app)
    init = client.post("/rest/storage/upload/initiate-multipart", json={}).json()
    up = init["upload_url"]
    assert client.put(f"{up}/0", content=b"x").status_code == 400
    assert client.put(f"{up}/abc", content=b"x").status_code == 400
    assert client.put(f"{up}/%C2%B2", content=b"x").status_code == 400  # "²" passes str.isdigit
    assert client.put(f"{up}/1", content=b"x" * 100).status_code == 200
    # The limit counts all parts together.
    assert client.put(f"{up}/2", content=b"x" * 30).status_code == 413
    r = client.post(f"{up}/complete", json={"parts": [{"partNumber": 1, "etag": '"deadbeef"'}]})
    assert r.status_code == 400 and "ETag" in r.json()["detail"]
    r = client.post(f"{up}/complete", json={"parts": [{"partNumber": 7, "etag": "x"}]})
    assert r.status_code == 400
    # Unknown upload ids and mismatched keys are 404s.
    assert client.put(up.rsplit("/", 1)[0] + "/" + "B" * 32 + "/1", content=b"x").status_code == 404


# --- the official Python client against a live server --------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["local", "s3"])
def live_storage(request, tmp_path):
    blobs = request.getfixturevalue("s3_server").store() if request.param == "s3" else None
    app, files = make_app(tmp_path, blobs=blobs)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", files
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def fal(live_storage, monkeypatch):
    import fal_client
    import fal_client.client as C

    base, _ = live_storage
    monkeypatch.setattr(C, "RUN_URL_FORMAT", base + "/")
    monkeypatch.setattr(C, "QUEUE_URL_FORMAT", base + "/queue/")
    monkeypatch.setattr(C, "REST_URL", base + "/rest")
    monkeypatch.setattr(C, "CDN_URL", base + "/cdn")
    return fal_client.SyncClient(key=KEY)


def test_python_client_upload_v3(fal, live_storage, tmp_path):
    base, _ = live_storage
    url = fal.upload(b"first", "image/png", file_name="a.png")
    url2 = fal.upload(b"second", "image/png", file_name="b.png")  # reuses the cached token
    assert url.startswith(base + "/files/") and url2 != url
    assert httpx.get(url).content == b"first" and httpx.get(url2).content == b"second"
    path = tmp_path / "pic.jpg"
    path.write_bytes(b"jpegish")
    url3 = fal.upload_file(path)
    r = httpx.get(url3)
    assert r.content == b"jpegish" and r.headers["content-type"] == "image/jpeg"


def test_python_client_multipart(fal, live_storage, monkeypatch):
    import fal_client.client as C

    monkeypatch.setattr(C, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(C, "MULTIPART_CHUNK_SIZE", 700)
    data = bytes(range(256)) * 10  # 2560 bytes -> 4 parts
    url = fal.upload(data, "application/octet-stream", file_name="big.bin")
    assert httpx.get(url).content == data


def test_python_client_fallback_initiate(fal, live_storage):
    url = fal.upload(b"via-gcs", "image/webp", file_name="f.webp", repository="fal")
    r = httpx.get(url)
    assert r.content == b"via-gcs" and r.headers["content-type"] == "image/webp"


def test_adopt_moves_a_written_file_in(tmp_path):
    store = FileStore(tmp_path)
    key = store.new_key()
    src = tmp_path / "tmp" / f"result-{key}.png"
    src.write_bytes(b"\x89PNG result")
    stored = store.adopt(src, content_type="image/png", file_name="out.png", key=key, owner="o", ttl=60)
    assert not src.exists() and stored.key == key and stored.size == 11
    assert store.path(key).read_bytes() == b"\x89PNG result"
    assert stored.expires_at is not None and stored.owner == "o"
    with pytest.raises(ValueError):
        store.adopt(src, key="../../x")


def test_register_makes_bytes_at_the_blob_key_a_file(tmp_path):
    """A worker can put a result straight at ``blob_key(key)``; registering it
    writes only the metadata (the bytes are not copied)."""
    store = FileStore(tmp_path)
    key = store.new_key()
    store.blobs.put(FileStore.blob_key(key), b"\x89PNG out", content_type="image/png")
    before = store.blobs.local_path(FileStore.blob_key(key)).stat().st_ino
    assert store.get(key) is None
    stored = store.register(key, content_type="image/png", file_name="out.png", owner="o", ttl=60)
    assert stored.size == 8 and stored.path.stat().st_ino == before
    assert store.url_for(key, "http://h") == f"http://h/files/{key}/out.png"
    with pytest.raises(FileNotFoundError):
        store.register(store.new_key())  # nothing there to register
    with pytest.raises(NotFound):
        store.register("../../etc/passwd")


def test_uploads_trigger_a_sweep_of_expired_files(tmp_path):
    app, files = make_app(tmp_path, keys=())
    old = files.save(b"old", ttl=-1)  # already expired
    keep = files.save(b"keep", ttl=3600)
    with TestClient(app) as client:
        client.post("/cdn/files/upload", content=b"new", headers={"Content-Type": "image/png"})
        deadline = time.monotonic() + 5
        while old.path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert not old.path.exists() and keep.path.exists()


# --- on the S3 blob store -------------------------------------------------------


@pytest.fixture
def s3_files(s3_server, tmp_path):
    """A FileStore on a fresh prefix of the session's S3 bucket."""
    return FileStore(s3_server.store(), scratch_dir=tmp_path / "scratch")


def test_file_store_on_s3(s3_files, tmp_path):
    store = s3_files
    stored = store.save(b"hello", "text/plain", "greeting.txt", owner="o1", ttl=60)
    assert stored.path is None and stored.blob_key == f"files/{stored.key[:2]}/{stored.key}"
    assert store.get(stored.key).file_name == "greeting.txt" and store.read(stored.key) == b"hello"
    assert store.blobs.read(stored.blob_key) == b"hello"  # the bytes are in the bucket
    with pytest.raises(FileNotFoundError):
        store.path(stored.key)  # no local file behind an S3 blob
    # register: bytes put at the blob key by someone else (a worker) become a file, no copy.
    key = store.new_key()
    store.blobs.put(FileStore.blob_key(key), b"\x89PNG result", content_type="image/png")
    assert store.get(key) is None  # not visible before it is registered
    reg = store.register(key, content_type="image/png", file_name="out.png", owner="o", ttl=60)
    assert reg.size == 11 and store.read(key) == b"\x89PNG result"
    # adopt uploads a local file and removes it.
    src = tmp_path / "result.png"
    src.write_bytes(b"local result")
    adopted = store.adopt(src, content_type="image/png", file_name="r.png")
    assert not src.exists() and store.read(adopted.key) == b"local result"
    # expiry and purge remove the bytes and the metadata from the bucket.
    assert store.purge_expired(now=time.time() + 61) == 2
    assert store.get(stored.key) is None and store.get(key) is None
    assert sorted(store.blobs.keys("files/")) == sorted([adopted.blob_key, adopted.blob_key + ".json"])
    assert store.delete(adopted.key) and list(store.blobs.keys("files/")) == []
    assert not store.delete(adopted.key)


def test_routes_on_s3_stream_files_from_the_bucket(s3_files, tmp_path):
    app, files = make_app(tmp_path, keys=(), blobs=s3_files.blobs, max_upload_bytes=1000)
    client = TestClient(app)
    r = client.post("/cdn/files/upload", content=b"\x89PNGdata", headers={"Content-Type": "image/png", "X-Fal-File-Name": "a.png"})
    assert r.status_code == 200, r.text
    url = r.json()["access_url"]
    key = FileStore.key_from_url(url)
    assert files.blobs.read(FileStore.blob_key(key)) == b"\x89PNGdata"
    got = client.get(url)
    assert got.status_code == 200 and got.content == b"\x89PNGdata"
    assert got.headers["content-type"] == "image/png" and got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-length"] == "8" and got.headers["content-disposition"].startswith("inline")
    head = client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == "8" and head.content == b""
    html = client.post("/cdn/files/upload", content=b"<script>x</script>", headers={"Content-Type": "text/html"})
    got = client.get(html.json()["access_url"])
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment")
    assert client.get(url.replace(key, "A" * 32)).status_code == 404
    # The JS client's initiate + multipart, and the single PUT.
    init = client.post("/rest/storage/upload/initiate-multipart", json={"file_name": "big.bin"}).json()
    parts = [client.put(f"{init['upload_url']}/{n}", content=c).json() for n, c in ((1, b"a" * 300), (2, b"b" * 200))]
    assert client.post(f"{init['upload_url']}/complete", json={"parts": parts}).status_code == 200
    assert client.get(init["file_url"]).content == b"a" * 300 + b"b" * 200
    assert list(files.blobs.keys("uploads/")) == []  # the parts are gone once joined
    single = client.post("/rest/storage/upload/initiate", json={"file_name": "c.jpg", "content_type": "image/jpeg"}).json()
    assert client.put(single["upload_url"], content=b"jpeg").status_code == 200
    assert client.get(single["file_url"]).content == b"jpeg"
    # Too large: 413 and nothing left in the bucket.
    before = sorted(files.blobs.keys("files/"))
    assert client.post("/cdn/files/upload", content=b"x" * 1001).status_code == 413
    assert sorted(files.blobs.keys("files/")) == before


def test_presigned_redirect_on_s3(s3_server, tmp_path):
    store = s3_server.store(presign=True, presign_expires=300)
    app, files = make_app(tmp_path, keys=(), blobs=store)
    client = TestClient(app)
    url = client.post("/cdn/files/upload", content=b"\x89PNGdata", headers={"Content-Type": "image/png", "X-Fal-File-Name": "a b.png"}).json()["access_url"]
    r = client.get(url, follow_redirects=False)
    assert r.status_code == 307
    direct = r.headers["location"]
    assert direct.startswith(s3_server.endpoint_url + "/") and "X-Amz-Signature=" in direct
    got = httpx.get(direct)  # straight from the bucket, no server in between
    assert got.status_code == 200 and got.content == b"\x89PNGdata"
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"] == "inline; filename*=UTF-8''a_b.png"
    html = client.post("/cdn/files/upload", content=b"<script>x</script>", headers={"Content-Type": "text/html"}).json()
    got = httpx.get(client.get(html["access_url"], follow_redirects=False).headers["location"])
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment")


def test_upload_url_download_and_retention_on_s3(s3_server, tmp_path):
    """The whole queue protocol with blob_store=s3: upload the input, run,
    download the result through its file URL, and see retention delete the
    result from the bucket."""
    from ccsr.storage import open_blob_store
    from ccsr.executors.thread import ThreadExecutor
    from ccsr.testing import FakeEngine
    from ccsr.service.app import create_app
    from PIL import Image
    from svc_helpers import png_data_uri, serve_app, wait_status
    import base64
    import io

    settings = Settings(data_dir=tmp_path, result_ttl=2.0, **s3_server.settings())
    bucket = open_blob_store(settings)
    app = create_app(settings, executor=ThreadExecutor(FakeEngine(0.01)), sweep_interval=0.2)
    png = base64.b64decode(png_data_uri(24, 16).split(",", 1)[1])
    with serve_app(app) as base, httpx.Client(base_url=base) as client:
        up = client.post("/cdn/files/upload", content=png, headers={"Content-Type": "image/png", "X-Fal-File-Name": "in.png"})
        assert up.status_code == 200, up.text
        input_url = up.json()["access_url"]
        assert bucket.read(FileStore.blob_key(FileStore.key_from_url(input_url))) == png
        sub = client.post("/queue/fal-ai/ccsr", json={"image_url": input_url, "steps": 4, "scale": 2}).json()
        wait_status(client, sub["status_url"], "COMPLETED")
        image = client.get(sub["response_url"]).json()["image"]
        result_key = FileStore.key_from_url(image["url"])
        assert bucket.stat(FileStore.blob_key(result_key)).size == image["file_size"]  # the result is in the bucket
        got = client.get(image["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == (48, 32) == (image["width"], image["height"])
        assert not (tmp_path / "blobs").exists()  # nothing went to the local blob dir
        deadline = time.time() + 15
        while client.get(image["url"]).status_code != 404:
            assert time.time() < deadline, "the result was not deleted"
            time.sleep(0.1)
        # The metadata goes first (the URL is dead at once), the bytes right after.
        while bucket.stat(FileStore.blob_key(result_key)) is not None:
            assert time.time() < deadline, "the result bytes stayed in the bucket"
            time.sleep(0.05)
        assert bucket.stat(FileStore.blob_key(result_key) + ".json") is None
