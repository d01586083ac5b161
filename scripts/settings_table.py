"""Print the README's settings tables from ccsr.settings and the CLI: the
shared options, then one table per model (its settings section).

Run after adding a setting or a model: python scripts/settings_table.py
(tests/test_readme.py fails when the README misses a setting.)
"""

from __future__ import annotations

import typer.main

from ccsr.apps.registry import default_registry
from ccsr.cli import app
from ccsr.settings import SettingDoc, documented

HEADER = ["| setting | env var | flag | default | what it does |", "| --- | --- | --- | --- | --- |"]


def flags_by_name() -> dict[str, list[str]]:
    """Which command takes a flag of each setting's name."""
    group = typer.main.get_command(app)
    found: dict[str, list[str]] = {}
    for cmd_name in ("serve", "upscale"):
        cmd = group.commands.get(cmd_name)
        for param in getattr(cmd, "params", []):
            for opt in param.opts:
                if opt.startswith("--"):
                    found.setdefault(opt[2:].replace("-", "_"), []).append(f"`{cmd_name} {opt}`")
    return found


def row(doc: SettingDoc, flags: dict[str, list[str]]) -> str:
    field = doc.field
    default = field.default if field.default_factory is None else "see text"
    if doc.name == "data_dir":
        default = "~/.local/share/ccsr"
    singular = {"api_keys": "api_key"}
    f = flags.get(doc.name) or flags.get(singular.get(doc.name, "")) or []
    return f"| `{doc.name}` | `{doc.env}` | {', '.join(f) or '—'} | `{default}` | {field.description} |"


def table() -> str:
    flags = flags_by_name()
    docs = documented()
    out = [*HEADER, *(row(d, flags) for d in docs if d.model is None)]
    for a in default_registry():
        section = type(a).Settings
        out += ["", f"### Settings of {a.name} ({a.app_id})", "",
                f"Its section, `settings.models[\"{a.name}\"]` (`{section.__module__}.{section.__name__}`); "
                "`Settings(<setting>=...)` sets a field by the name in the first column.", "",
                *HEADER, *(row(d, flags) for d in docs if d.model == a.name)]
    return "\n".join(out)


if __name__ == "__main__":
    print(table())
