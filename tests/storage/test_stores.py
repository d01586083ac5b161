"""The behaviour every BlobStore promises, checked on the local directory
store and on the S3 store against a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import io
import threading

import pytest

from ccsr.storage import BlobNotFound, open_blob_store


def test_put_read_stat_delete(store):
    info = store.put("results/abc.png", b"hello", content_type="image/png")
    assert (info.key, info.size, info.content_type) == ("results/abc.png", 5, "image/png")
    assert store.read("results/abc.png") == b"hello"
    with store.open("results/abc.png") as f:
        assert f.read() == b"hello"
    st = store.stat("results/abc.png")
    assert (st.size, st.content_type) == (5, "image/png")
    assert list(store.keys("results/")) == ["results/abc.png"]
    assert store.delete("results/abc.png") and not store.delete("results/abc.png")
    with pytest.raises(BlobNotFound):
        store.open("results/abc.png")
    with pytest.raises(BlobNotFound):
        store.read("results/abc.png")
    assert store.stat("results/abc.png") is None
    assert list(store.keys()) == []


def test_put_replaces_and_keeps_the_type(store):
    store.put("k", b"old", content_type="text/plain")
    store.put("k", b"newer", content_type="image/jpeg")
    assert store.read("k") == b"newer"
    assert store.stat("k").content_type == "image/jpeg" and store.stat("k").size == 5


def test_streams_and_limit(store):
    assert store.put("a", io.BytesIO(b"x" * 10)).size == 10
    assert store.put("b", [b"ab", b"", b"cd"]).size == 4
    assert store.read("b") == b"abcd"
    big = bytes(range(256)) * 12_000  # 3 MB through 1 MB reads
    assert store.put("c/big.bin", io.BytesIO(big)).size == len(big)
    assert store.read("c/big.bin") == big
    with pytest.raises(OverflowError):
        store.put("d", b"x" * 11, max_bytes=10)
    with pytest.raises(OverflowError):  # a refused stream leaves nothing behind
        store.put("d", iter([b"x" * 6, b"y" * 6]), max_bytes=10)
    assert store.stat("d") is None and sorted(store.keys()) == ["a", "b", "c/big.bin"]


def test_keys_filter_by_prefix(store):
    for key in ("files/ab/one", "files/ab/one.json", "files/cd/two", "uploads/x/meta.json", "other"):
        store.put(key, b"1")
    assert sorted(store.keys("files/")) == ["files/ab/one", "files/ab/one.json", "files/cd/two"]
    assert sorted(store.keys("files/ab/")) == ["files/ab/one", "files/ab/one.json"]
    assert list(store.keys("uploads/x/")) == ["uploads/x/meta.json"]
    assert list(store.keys("nothing/")) == []
    assert len(list(store.keys())) == 5


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "a/.hidden/../x", "a b", "x\x00y"])
def test_bad_keys_refused(store, key):
    with pytest.raises(ValueError):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.stat(key)


def test_put_file_moves_or_copies(store, tmp_path):
    src = tmp_path / "result.png"
    src.write_bytes(b"\x89PNG...")
    info = store.put_file("results/r.png", src, content_type="image/png", move=True)
    assert info.size == 7 and not src.exists()
    assert store.read("results/r.png") == b"\x89PNG..." and store.stat("results/r.png").content_type == "image/png"
    src.write_bytes(b"kept")
    store.put_file("results/k", src)
    assert src.exists() and store.read("results/k") == b"kept"


def test_spec_round_trip(store):
    store.put("k", b"1", content_type="image/webp")
    again = open_blob_store(store.spec())
    assert type(again) is type(store)
    assert again.read("k") == b"1" and again.stat("k").content_type == "image/webp"


def test_concurrent_writers_never_expose_a_part(store):
    """Readers see one whole version or the other, never a mix."""
    a, b = b"a" * 200_000, b"b" * 300_000
    store.put("race", a)
    seen: set[int] = set()
    bad: list[int] = []
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            data = store.read("race")
            if data not in (a, b):
                bad.append(len(data))
            seen.add(len(data))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(6):
            store.put("race", a if i % 2 else b)
    finally:
        stop.set()
        reader.join(30)
    assert seen and not bad


def test_url_and_local_path(store):
    store.put("results/out.png", b"\x89PNGbytes", content_type="image/png")
    # Presigning is off unless the store is told to (see test_s3.py): the
    # server then serves the bytes itself.
    assert store.url("results/out.png", file_name="out.png") is None
    if store.spec()["kind"] == "local":
        assert store.local_path("results/out.png").read_bytes() == b"\x89PNGbytes"
    else:
        assert store.local_path("results/out.png") is None
