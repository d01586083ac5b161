"""`ccsr weights download`: a progress bar when the hub answers, a quick clear
error when it does not, and the random-weights marker that `ccsr weights
random` writes.

The hub is a small HTTP server on 127.0.0.1 that answers the two requests
huggingface_hub makes (HEAD for the metadata, GET for the bytes) with a
300 kB stand-in file: no test reaches the real hub, and none downloads
weights. The command runs in a subprocess with HF_ENDPOINT pointing at it,
exactly as a user's shell would run it.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ccsr.models.ccsr_v1 import weights

BODY = b"\0" * 300_000
FILE_PATH = f"/{weights.REPO_ID}/resolve/main/{weights.FILENAME}"


class _Hub(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def _headers(self) -> bool:
        if self.path != FILE_PATH:
            self.send_error(404)
            return False
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", '"stand-in"')
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        return True

    def do_HEAD(self) -> None:  # noqa: N802
        self._headers()

    def do_GET(self) -> None:  # noqa: N802
        if self._headers():
            self.wfile.write(BODY)


@pytest.fixture()
def hub():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def silent_hub():
    """Accepts connections and never answers: a hub behind a black hole."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def _ccsr(args: list[str], endpoint: str, cache: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("CCSR_WEIGHTS", None)
    return subprocess.run([sys.executable, "-m", "ccsr.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_download_shows_a_progress_bar_and_lands_in_the_cache(hub, tmp_path):
    cache = tmp_path / "hub-cache"
    res = _ccsr(["weights", "download", "--timeout", "5"], hub, cache)
    assert res.returncode == 0, res.stderr
    terminal = res.stderr  # the bar is drawn on a terminal and in logs alike
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.stat().st_size == len(BODY) and cache in path.parents
    assert "100%" in terminal and "300k/300k" in terminal and weights.FILENAME in terminal  # the bar, named after the file
    # ... and `ccsr weights path` (which the demo asks first) now finds it without the network.
    again = _ccsr(["weights", "path"], "http://127.0.0.1:9", cache)
    assert again.returncode == 0 and again.stdout.strip() == str(path)


def test_an_unreachable_hub_fails_fast_and_says_what_to_do(silent_hub, tmp_path):
    start = time.monotonic()
    res = _ccsr(["weights", "download", "--timeout", "1"], silent_hub, tmp_path / "cache")
    took = time.monotonic() - start
    assert res.returncode == 1
    assert "Could not download" in res.stderr and "--weights PATH" in res.stderr
    assert "Traceback" not in res.stderr
    assert took < 30, f"took {took:.0f} s: the timeout did not bound the wait"


def test_random_weights_carry_the_marker_and_official_layout_files_do_not(tmp_path):
    from typer.testing import CliRunner

    from ccsr.cli import app

    out = tmp_path / "r.safetensors"
    res = CliRunner().invoke(app, ["weights", "random", "-o", str(out)])  # the packaged tiny config by default
    assert res.exit_code == 0, res.output
    assert weights.is_random(out)
    assert weights.safetensors_metadata(out)[weights.RANDOM_MARKER] == "true"
    # The same tensors saved without the marker (as any other checkpoint) are not random.
    from ccsr.models.ccsr_v1.checkpoint import load_state_dict, save_state_dict

    plain = save_state_dict(load_state_dict(out), tmp_path / "plain.safetensors")
    assert not weights.is_random(plain)
    assert not weights.is_random(tmp_path / "missing.safetensors")
