"""What the service benchmarks share: waiting for a spawned ``ccsr serve`` to be ready."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_until_ready(proc: subprocess.Popen, base: str, log_path: Path, timeout: float = 300,
                     poll: float = 0.2) -> None:
    """Return once ``/readyz`` answers 200; exit the benchmark (naming the log) if the server
    exits or is not ready within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited; see {log_path}")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise SystemExit("server did not become ready")
