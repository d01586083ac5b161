"""Every blob key is named in ccsr.storage.keys: the helpers, and no other
module under src/ccsr spelling a key prefix."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ccsr.storage import keys
from ccsr.storage.base import check_key
from ccsr.storage.files import FileStore

SRC = Path(__file__).resolve().parents[2] / "src" / "ccsr"


def test_request_keys():
    assert keys.submitted_input("r1") == "submitted/r1"
    assert keys.run_input("r1", "t1") == "inputs/r1.t1" and keys.run_input("r1", "t1").startswith(keys.run_inputs("r1"))
    ref = keys.input_ref(keys.submitted_input("r1"))
    assert ref == "blob:submitted/r1"
    assert keys.input_ref_key({"image_url": ref}) == "submitted/r1"
    assert keys.input_ref_key({"image_url": "https://example.com/blob:x"}) is None
    assert keys.input_ref_key({}) is None and keys.input_ref_key(None) is None
    assert keys.ref_key("/files/abc/x.png") is None


def test_file_keys_round_trip():
    key = FileStore.new_key()
    data, meta = keys.file_bytes(key), keys.file_meta(key)
    assert data == f"files/{key[:2]}/{key}" and meta == data + ".json"
    assert keys.file_key_of(data) == key and keys.file_key_of(meta) == key
    assert keys.is_file_meta(meta) and not keys.is_file_meta(data)
    for other in ("inputs/" + key, f"files/zz/{key}", "files/" + key, "files/ab/short", keys.upload_meta(key)):
        assert keys.file_key_of(other) is None, other


def test_upload_keys():
    uid = FileStore.new_key()
    assert keys.upload_meta(uid) == f"uploads/{uid}/meta"
    part, etag = keys.upload_part(uid, 3), keys.upload_etag(uid, 3)
    assert (part, etag) == (f"uploads/{uid}/3", f"uploads/{uid}/3.etag")
    assert keys.upload_part_number(part) == 3
    assert keys.upload_part_number(etag) is None and keys.upload_part_number(keys.upload_meta(uid)) is None
    assert {keys.upload_id_of(k) for k in (part, etag, keys.upload_meta(uid))} == {uid}


@pytest.mark.parametrize("make", [
    lambda: keys.submitted_input("3f2a0c4e-8d1b-4b7a-9c55-0f1e2d3c4b5a"),
    lambda: keys.run_input("3f2a0c4e-8d1b-4b7a-9c55-0f1e2d3c4b5a", "Zk3_x-9QwErT"),
    lambda: keys.file_meta(FileStore.new_key()),
    lambda: keys.upload_etag(FileStore.new_key(), 10_000),
    lambda: keys.UPLOAD_TOKEN_SECRET,
    lambda: keys.server_marker("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
])
def test_every_key_passes_the_stores_check(make):
    key = make()
    assert check_key(key) == key and key.startswith(keys.PREFIXES)


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_other_module_spells_a_key_prefix():
    """A string literal (f-string parts included) that starts with a blob key
    prefix, or the old results/ one, outside storage/keys.py is a second home
    for a key."""
    spelled = keys.PREFIXES + (keys.INPUT_REF, "results/")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "storage" / "keys.py":
            continue
        for line, value in _string_constants(path):
            if value.startswith(spelled):
                found.append(f"{path.relative_to(SRC)}:{line}: {value[:40]!r}")
    assert found == []
