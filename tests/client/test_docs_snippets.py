"""The code in docs/clients.md runs as written against a real server: our
client, the official Python fal-client and the official JS @fal-ai/client.
Only the server address is replaced; `photo.jpg` is a real photo in the cwd."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "clients.md"
JS_DIR = REPO / "tests" / "js"
DOC_SERVER = "http://127.0.0.1:8000"


def snippet(tag: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- test:{re.escape(tag)} -->\s*```\w+\n(.*?)```", text, re.S)
    assert m, f"docs/clients.md has no block tagged test:{tag}"
    assert DOC_SERVER in m.group(1)
    return m.group(1)


@pytest.fixture
def workdir(tmp_path, photo, server, api_key, monkeypatch):
    with Image.open(photo) as im:
        im.convert("RGB").save(tmp_path / "photo.jpg", quality=92)
    monkeypatch.setenv("CCSR_KEY", api_key)
    monkeypatch.setenv("FAL_KEY", api_key)
    return tmp_path


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_ccsr_client_snippet(workdir, server):
    code = snippet("ccsr-client").replace(DOC_SERVER, server)
    (workdir / "snippet.py").write_text(code)
    out = _run([sys.executable, "snippet.py"], workdir)
    assert "128 128" in out and "step " in out
    assert Image.open(workdir / "photo_x2.png").size == (128, 128)


def test_official_python_client_snippet(workdir, server):
    code = snippet("fal-python").replace(DOC_SERVER, server)
    (workdir / "snippet.py").write_text(code)
    out = _run([sys.executable, "snippet.py"], workdir)
    assert f"{server}/files/" in out and "Completed" in out


def test_official_js_client_snippet(workdir, server):
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@fal-ai" / "client").is_dir():
        pytest.fail("node and tests/js/node_modules are needed (scripts/test.sh runs `npm ci` in tests/js)")
    code = snippet("fal-js").replace(DOC_SERVER, server)
    # Resolve the pinned @fal-ai/client from tests/js, as an app beside it would.
    (workdir / "node_modules").symlink_to(JS_DIR / "node_modules")
    (workdir / "package.json").write_text('{"type": "module"}')
    (workdir / "snippet.mjs").write_text(code)
    out = _run([node, "snippet.mjs"], workdir)
    assert f"{server}/files/" in out and "step " in out
