"""A real `ccsr serve` (tiny random model, one API key) and Debian's headless
Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from serve_helpers import serve, small_photo

WEB_KEY = "web-test-key"


def chromium_path() -> str:
    found = os.environ.get("CCSR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium (scripts/test.sh does it)")
    return found


@pytest.fixture(scope="session")
def web_key() -> str:
    return WEB_KEY


@pytest.fixture(scope="session")
def web_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    with serve(tiny_checkpoint, tmp_path_factory.mktemp("web-server"), api_keys=[WEB_KEY]) as base:
        yield base


@pytest.fixture(scope="session")
def web_photo(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = fixtures_dir / "images" / "chelsea.png"
    return small_photo(src, tmp_path_factory.mktemp("web-photo") / "chelsea.png", side=96)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"], headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors  # type: ignore[attr-defined]
    yield page
    ctx.close()


@pytest.fixture
def shots(tmp_path: Path):
    """Save screenshots: always under tmp, and into docs/screenshots when
    CCSR_UPDATE_SCREENSHOTS=1 (palette PNGs, to keep the repository small)."""
    repo_dir = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    update = os.environ.get("CCSR_UPDATE_SCREENSHOTS") == "1"

    def take(page, name: str, **kw) -> Path:
        from PIL import Image

        path = tmp_path / f"{name}.png"
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(path), **kw)
        if update:
            repo_dir.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as im:
                im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(repo_dir / f"{name}.png", optimize=True)
        return path

    return take
