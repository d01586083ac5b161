"""ccsr.storage.Storage, the service's one handle on stored bytes: submitted
inputs, run inputs, results registered in place (no copy), leftovers."""

from __future__ import annotations

import pytest

from ccsr.storage import BlobNotFound, LocalBlobStore, Storage, keys


class CountingStore(LocalBlobStore):
    """A local store that records every put and delete (by key)."""

    def __init__(self, root):
        super().__init__(root)
        self.puts: list[str] = []
        self.deletes: list[str] = []

    def put(self, key, data, **kw):
        self.puts.append(key)
        return super().put(key, data, **kw)

    def delete(self, key):
        self.deletes.append(key)
        return super().delete(key)


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(CountingStore(tmp_path / "blobs"))


def test_a_submitted_input_is_kept_by_reference_and_forgotten(storage):
    ref = storage.keep_submitted("r1", b"\x89PNG in", "image/png")
    assert ref == keys.input_ref(keys.submitted_input("r1"))
    assert storage.kept_input({"image_url": ref}) == b"\x89PNG in"
    assert storage.kept_input({"image_url": "https://example.com/a.png"}) is None  # fetched instead
    storage.delete_owned(ref)
    with pytest.raises(BlobNotFound):
        storage.kept_input({"image_url": ref})


def test_a_result_is_registered_in_place_without_a_copy(storage):
    blobs = storage.blobs
    out = storage.new_result_key()
    assert out != storage.new_result_key()  # a new file per attempt
    blobs.put(out, b"\x89PNG result", content_type="image/png")  # what the worker does
    assert storage.files.get(keys.file_key_of(out)) is None  # invisible until published
    blobs.puts.clear()
    stored = storage.publish_result(out, size=11, content_type="image/png", file_name="r.png", owner="o", ttl=60)
    # The result's blob is the stored file's blob; the only write is its metadata.
    assert stored.blob_key == out and blobs.puts == [keys.file_meta(stored.key)] and blobs.deletes == []
    assert stored.path == blobs.root / out  # on a local store: the very file the worker wrote
    assert storage.files.read(stored.key) == b"\x89PNG result"
    assert (stored.size, stored.content_type, stored.file_name, stored.owner) == (11, "image/png", "r.png", "o")
    storage.delete_owned(stored.url_path)  # retention removes it through its URL path
    assert storage.files.get(stored.key) is None and blobs.stat(out) is None


def test_only_a_result_key_can_be_published(storage):
    storage.blobs.put(keys.run_input("r1", "t1"), b"x")
    with pytest.raises(ValueError, match="not a result key"):
        storage.publish_result(keys.run_input("r1", "t1"), size=1, content_type="image/png", file_name="a.png",
                               owner=None, ttl=None)


def test_a_run_leaves_nothing_behind_but_its_published_result(storage):
    blobs = storage.blobs
    ref = storage.keep_submitted("r1", b"in", "image/png")
    mine = storage.put_run_input("r1", b"png")
    assert mine.startswith(keys.run_inputs("r1"))
    theirs = storage.put_run_input("r1", b"png")  # another server's run of the same request
    killed = storage.put_run_input("r1", b"png")  # a run whose server was killed
    assert len({mine, theirs, killed}) == 3  # one key per run
    lost = storage.new_result_key()
    blobs.put(lost, b"half")  # an attempt whose worker died: never published
    storage.run_leftovers("r1", mine, lost, {"image_url": ref}, ended=False)
    assert blobs.stat(lost) is None and blobs.stat(mine) is None
    assert blobs.stat(theirs) is not None  # not this server's to remove
    assert blobs.stat(keys.submitted_input("r1")) is not None  # the request goes on: a retry reads it
    storage.run_leftovers("r1", None, None, {"image_url": ref}, ended=False)  # a cancel that did not end it here
    assert blobs.stat(theirs) is not None and blobs.stat(killed) is not None
    done = storage.new_result_key()
    blobs.put(done, b"\x89PNG")
    stored = storage.publish_result(done, size=4, content_type="image/png", file_name="a.png", owner=None, ttl=None)
    storage.run_leftovers("r1", theirs, None, {"image_url": ref}, ended=True)  # published: no output key to drop
    assert blobs.stat(keys.submitted_input("r1")) is None
    assert list(blobs.keys(keys.run_inputs("r1"))) == []  # the killed run's input went with the ending
    assert storage.files.read(stored.key) == b"\x89PNG"


def test_a_failing_delete_is_logged_not_raised(storage, monkeypatch, caplog):
    def boom(key):
        raise OSError("disk gone")

    monkeypatch.setattr(storage.blobs, "delete", boom)
    storage.discard(["inputs/r1"])
    assert "deleting blob inputs/r1 failed" in caplog.text
