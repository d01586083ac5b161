"""Start a real ``ccsr serve`` in a subprocess for the tests.

Used by the client, browser and serve-flag tests so they all exercise the
same server a user runs, not a fake. (Test-only: it lives under tests/, not
in the package.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import httpx

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(
    weights: Path,
    data_dir: Path,
    *,
    config: Optional[Path] = None,
    api_keys: Optional[list[str]] = None,
    extra_env: Optional[dict[str, str]] = None,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = 180.0,
    log_path: Optional[Path] = None,
) -> Iterator[str]:
    """Run a server on a free port with these weights; yields its base URL once
    ``/readyz`` answers 200 (the model is loaded), and stops it afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "CCSR_WEIGHTS": str(weights),
        "CCSR_DATA_DIR": str(data_dir),
        "CCSR_DEVICE": "cpu",
        "CCSR_HOST": "127.0.0.1",
        "CCSR_PORT": str(port),
        "CCSR_API_KEYS": ",".join(api_keys or []),
        **(extra_env or {}),
    }
    if config is not None:
        env["CCSR_CONFIG"] = str(config)
    env.pop("CCSR_DATABASE_URL", None) if "CCSR_DATABASE_URL" not in (extra_env or {}) else None
    cmd = [sys.executable, "-m", "ccsr.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    log_path = log_path or (Path(data_dir) / "server.log")
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, ready_timeout, log_path)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            r = httpx.get(base + "/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"the server was not ready in {timeout:.0f} s ({last}):\n{_tail(log_path)}")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def small_photo(src: Path, dest: Path, side: int = 64) -> Path:
    """A square centre crop of a real photograph shrunk to ``side`` pixels:
    real image content, yet a run on the tiny model takes seconds."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)
        im.crop(box).resize((side, side), Image.LANCZOS).save(dest)
    return dest
