import io

import pytest

from ccsr.blobs import BlobNotFound, LocalBlobStore, open_blob_store


def test_put_read_stat_delete(tmp_path):
    store = LocalBlobStore(tmp_path)
    info = store.put("results/abc.png", b"hello", content_type="image/png")
    assert (info.size, info.content_type) == (5, "image/png")
    assert store.read("results/abc.png") == b"hello"
    assert store.stat("results/abc.png").content_type == "image/png"
    assert list(store.keys("results/")) == ["results/abc.png"]
    assert store.local_path("results/abc.png").read_bytes() == b"hello"
    assert store.delete("results/abc.png") and not store.delete("results/abc.png")
    with pytest.raises(BlobNotFound):
        store.open("results/abc.png")
    assert store.stat("results/abc.png") is None


def test_streams_and_limit(tmp_path):
    store = LocalBlobStore(tmp_path)
    assert store.put("a", io.BytesIO(b"x" * 10)).size == 10
    assert store.put("b", [b"ab", b"cd"]).size == 4
    with pytest.raises(OverflowError):
        store.put("c", b"x" * 11, max_bytes=10)
    assert store.stat("c") is None and list(store.keys()) == ["a", "b"]


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "a/.hidden/../x"])
def test_bad_keys_refused(tmp_path, key):
    with pytest.raises(ValueError):
        LocalBlobStore(tmp_path).put(key, b"x")


def test_spec_round_trip(tmp_path):
    store = LocalBlobStore(tmp_path)
    store.put("k", b"1")
    assert open_blob_store(store.spec()).read("k") == b"1"
