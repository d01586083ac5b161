"""A newcomer's first hour, in real headless Chromium against a real `ccsr serve`:
the random-weights warning wherever a person looks (start-up log, /readyz, a
banner in the playground), a request run and its result downloaded, and the
API docs page working with the network cut off."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image

from serve_helpers import serve

WEB_KEY = "web-test-key"  # the key tests/web/conftest.py gives web_server

READY = "body[data-ready=true]"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def open_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """A server without API keys, as a newcomer starts it, with the random tiny weights; (url, log path)."""
    data = tmp_path_factory.mktemp("first-hour")
    log = data / "serve.log"
    with serve(tiny_checkpoint, data, log_path=log) as base:
        yield base, log


def _offline(page) -> list[str]:
    """Abort every request that leaves this machine; returns the list of those tried."""
    tried: list[str] = []

    def route(r):
        host = urlparse(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            r.continue_()
        else:
            tried.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return tried


def test_random_weights_are_said_in_the_log_and_readyz(open_server):
    base, log = open_server
    assert "RANDOM WEIGHTS" in log.read_text(errors="replace")
    body = httpx.get(base + "/readyz").json()
    assert body["random_weights"] is True


def test_first_hour_banner_run_and_download(page, open_server, web_photo, tmp_path, shots):
    base, _ = open_server
    tried = _offline(page)
    page.goto(base + "/")
    page.wait_for_selector(READY)
    banner = page.locator("#random-weights-banner")
    banner.wait_for(state="visible")
    assert "Random weights" in banner.inner_text() and "ccsr weights download" in banner.inner_text()

    page.set_input_files("#image-file", str(web_photo))
    page.wait_for_selector("#input-preview:not([hidden])")
    page.fill("[name=steps]", "3")
    page.fill("[name=seed]", "5")
    # 64 px tiles keep the diffusion image at the output's size (a plain run works at 512 px).
    page.select_option("[name=tile_diffusion]", "gaussian")
    page.fill("[name=tile_diffusion_size]", "64")
    page.fill("[name=tile_diffusion_stride]", "64")
    page.click("#submit")
    page.wait_for_selector("#run-status[data-state=done]", timeout=180_000)
    assert page.inner_text("#result-size") == "192 × 192"
    assert banner.is_visible()  # still there next to the result
    page.wait_for_function("document.querySelector('#after-image').complete && document.querySelector('#after-image').naturalWidth === 192")
    shots(page, "playground-random-weights")  # the README's first picture: banner and result

    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "result.png"
    info.value.save_as(saved)
    with Image.open(saved) as im:
        assert im.format == "PNG" and im.size == (192, 192)
    assert tried == [] and page.js_errors == []


def test_api_docs_work_offline(page, web_server):
    """/docs with every non-loopback request aborted: the operations are listed
    (FastAPI's default page would wait forever for its CDN script)."""
    tried = _offline(page)
    page.set_extra_http_headers({"Authorization": f"Key {WEB_KEY}"})  # with API keys set, /docs needs one
    page.goto(web_server + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/queue/fal-ai/ccsr" in p.replace("\u200b", "") for p in paths), paths
    assert tried == [], f"the docs page tried to reach {tried}"
    assert page.js_errors == []
