"""docs/limits.md and the other user docs stay true to the code: every request
field's bounds and default, every server limit's default, and every link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ccsr.models.ccsr_v1.app import CCSRApp
from ccsr.settings import documented

DOCS = Path(__file__).resolve().parents[2] / "docs"
LIMITS = (DOCS / "limits.md").read_text()


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _bounds(field) -> str:
    lo = hi = ""
    for m in field.metadata:
        for attr, fmt in (("gt", "{} <"), ("ge", "{} ≤")):
            if getattr(m, attr, None) is not None:
                lo = fmt.format(_num(getattr(m, attr)))
        for attr, fmt in (("lt", "< {}"), ("le", "≤ {}")):
            if getattr(m, attr, None) is not None:
                hi = fmt.format(_num(getattr(m, attr)))
    return f"{lo} x {hi}".strip()


def _row(name: str) -> str:
    m = re.search(rf"^\| `{name}` \|(.*)$", LIMITS, re.M)
    assert m, f"docs/limits.md has no row for {name}"
    return m.group(1)


#: Every request field of fal-ai/ccsr: its engine parameters and the output fields every app has.
REQUEST_FIELDS = {n: f for n, f in CCSRApp.Input.model_fields.items() if n != "image_url"}


@pytest.mark.parametrize("name", list(REQUEST_FIELDS))
def test_request_field_row_matches_the_model(name):
    field = REQUEST_FIELDS[name]
    row = _row(name)
    choices = getattr(field.annotation, "__args__", ())
    if isinstance(field.default, str):
        assert all(f"`{c}`" in row for c in choices), row
        assert row.rstrip(" |").endswith(f"`{field.default}`"), row
    elif isinstance(field.default, bool):
        assert f"`{str(field.default).lower()}`" in row
    else:
        assert _bounds(field) in row, (name, _bounds(field), row)
        if field.default is not None:
            assert row.rstrip(" |").endswith(_num(field.default)), row


LIMIT_SETTINGS = [
    "max_output_pixels", "max_input_pixels", "max_download_bytes", "download_timeout", "max_redirects",
    "max_data_uri_bytes", "max_upload_bytes", "allow_private_urls", "result_ttl", "max_attempts",
    "webhook_max_attempts", "tile_batch_size",
    # issue 11 (hardening)
    "max_request_body_bytes", "max_expiration_seconds", "idempotency_ttl", "decode_memory_bytes", "decode_timeout",
    "header_timeout", "keep_alive_timeout", "max_connections", "max_header_bytes", "log_repeat_limit",
    "log_repeat_window", "public_ops_routes",
    # issue 23 (results)
    "max_sync_mode_bytes",
]


@pytest.mark.parametrize("name", LIMIT_SETTINGS)
def test_server_limit_rows_show_the_real_default(name):
    default = {d.name: d.field for d in documented()}[name].default
    cells = [c.strip() for c in _row(name).split("|")]
    assert cells[0].startswith("`CCSR_"), (name, cells[0])  # the environment variable column
    cell = cells[1]
    shown = str(default).lower() if isinstance(default, bool) else _num(int(default) if float(default).is_integer() else default)
    assert cell.startswith(shown), (name, cell, shown)


def test_relative_links_resolve():
    for doc in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
