"""docs/limits.md lists every limit setting (the shared options of
:class:`ccsr.settings.Settings` and the models' sections) with its environment
variable and the default the code has, so the page cannot fall behind the
settings."""

from __future__ import annotations

import re
from pathlib import Path

from ccsr.settings import documented

SETTINGS = {d.name: d.field for d in documented()}

DOC = Path(__file__).resolve().parents[1] / "docs" / "limits.md"

# Settings that bound what the server accepts or spends. Anything named like a
# limit is included automatically; these are the ones whose names do not say so.
LIMIT_NAMES = {"allow_private_urls", "public_ops_routes", "log_repeat_window", "tile_batch_size",
               "s3_presign_expires", "result_ttl", "idempotency_ttl"}
LIMIT_PATTERN = re.compile(r"^max_|_timeout$|_ttl$|_limit$|_concurrency$|_attempts$|_bytes$|_pixels$|_expires$")


def limit_settings() -> list[str]:
    return sorted(n for n in SETTINGS if LIMIT_PATTERN.search(n) or n in LIMIT_NAMES)


def doc_rows() -> dict[str, list[str]]:
    """Rows of the server-limits table: setting -> its cells."""
    text = DOC.read_text()
    table = text[text.index("| setting | environment variable"):]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_every_limit_setting_is_in_the_limits_page_with_its_default():
    rows = doc_rows()
    names = limit_settings()
    assert len(names) >= 25  # the pattern still finds the limits
    missing = [n for n in names if n not in rows]
    assert not missing, f"docs/limits.md does not list {missing}"
    for name in names:
        _, env, default, bounds, answer = rows[name][:5]
        assert f"CCSR_{name.upper()}" in env, name
        assert bounds and answer, name
        want = SETTINGS[name].default
        if isinstance(want, bool):
            assert default == str(want).lower(), (name, default)
        else:
            number = re.match(r"[0-9.]+", default)
            assert number and float(number.group()) == float(want), (name, default, want)


def test_the_limits_page_names_no_setting_that_does_not_exist():
    assert set(doc_rows()) <= set(SETTINGS)
