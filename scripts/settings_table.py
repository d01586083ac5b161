"""Print the README's settings table from ccsr.settings.Settings and the CLI.

Run after adding a setting: python scripts/settings_table.py
(tests/test_readme.py fails when the README misses a setting.)
"""

from __future__ import annotations

import typer.main

from ccsr.cli import app
from ccsr.settings import Settings


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


def table() -> str:
    flags = flags_by_name()
    rows = ["| setting | env var | flag | default | what it does |", "| --- | --- | --- | --- | --- |"]
    singular = {"api_keys": "api_key"}
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else "see text"
        if name == "data_dir":
            default = "~/.local/share/ccsr"
        f = flags.get(name) or flags.get(singular.get(name, "")) or []
        rows.append(f"| `{name}` | `CCSR_{name.upper()}` | {', '.join(f) or '—'} | `{default}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
