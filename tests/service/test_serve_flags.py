"""`ccsr serve` flags that are not settings-only: --api-key (repeatable, added
to CCSR_API_KEYS) and --allow-private-urls."""

from __future__ import annotations

import http.server
import io
import threading

import httpx
from PIL import Image

from serve_helpers import serve


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(buf.getvalue())))
        self.end_headers()
        self.wfile.write(buf.getvalue())

    def log_message(self, *args):
        pass


def test_api_key_flags_and_allow_private_urls(tmp_path, tiny_checkpoint, tiny_config_path):
    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    image_url = f"http://127.0.0.1:{images.server_address[1]}/red.png"
    env = {"CCSR_ENGINE_FACTORY": "ccsr.testing:fake_engine_factory", "CCSR_ALLOW_PRIVATE_URLS": "0"}
    try:
        with serve(tiny_checkpoint, tmp_path / "data", config=tiny_config_path, api_keys=["from-env"],
                   extra_env=env, extra_args=("--api-key", "k1", "--api-key", "k2", "--allow-private-urls")) as base:
            for key in ("k1", "k2", "from-env"):
                r = httpx.get(f"{base}/queue/fal-ai/ccsr/requests/nope/status", headers={"Authorization": f"Key {key}"})
                assert r.status_code == 404, (key, r.text)  # authenticated: the id is simply unknown
            r = httpx.get(f"{base}/queue/fal-ai/ccsr/requests/nope/status", headers={"Authorization": "Key wrong"})
            assert r.status_code == 401
            # --allow-private-urls (the flag wins over the env var) lets a loopback image_url through
            r = httpx.post(f"{base}/fal-ai/ccsr", json={"image_url": image_url, "steps": 4},
                           headers={"Authorization": "Key k1"}, timeout=120)
            assert r.status_code == 200, r.text
            assert r.json()["image"]["width"] == 64
    finally:
        images.shutdown()


def test_private_urls_refused_by_default(tmp_path, tiny_checkpoint, tiny_config_path):
    env = {"CCSR_ENGINE_FACTORY": "ccsr.testing:fake_engine_factory"}
    with serve(tiny_checkpoint, tmp_path / "data", config=tiny_config_path, extra_env=env) as base:
        r = httpx.post(f"{base}/fal-ai/ccsr", json={"image_url": "http://127.0.0.1:9/x.png"}, timeout=60)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert detail[0]["loc"][-1] == "image_url"
