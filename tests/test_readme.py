"""The README stays true: its two commands exist, and every setting is documented."""

from __future__ import annotations

from pathlib import Path

from ccsr.settings import documented

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table():
    """The shared options and every model's section (each model has its own table)."""
    docs = documented()
    assert {d.model for d in docs} >= {None, "ccsr-v1", "esrgan"}
    missing = [d.env for d in docs if f"`{d.env}`" not in README]
    assert not missing, f"README settings tables miss {missing}; regenerate with scripts/settings_table.py"
    settings = README[README.index("## Settings"):]
    for model in {d.model for d in docs} - {None}:
        table = settings[settings.index(f"### Settings of {model}"):]
        table = table[:table.index("\n\n", table.index("| ---"))]
        assert all(f"`{d.env}`" in table for d in docs if d.model == model), model  # each in its model's table


def test_the_two_commands_exist_and_ci_runs_the_test_command():
    assert "bash scripts/demo.sh" in README and "bash scripts/test.sh" in README
    assert (ROOT / "scripts" / "demo.sh").exists() and (ROOT / "scripts" / "test.sh").exists()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_no_placeholders_left():
    for marker in ("SETTINGS_TABLE", "FIDELITY_NOTE", "BENCHMARK_NOTE", "LOAD_MEMORY_NOTE"):
        assert marker not in README


def test_nothing_reads_a_folder_beside_the_repository():
    """A fresh clone with nothing beside it runs the README commands, the tests
    and the benchmarks: no path leaves the repository for the old fixtures folder."""
    needles = ("../" + "shared", "/work/" + "shared", '"shared"' + ' / "fixtures"', "CCSR_" + "SHARED")
    offenders = []
    for folder in ("scripts", ".ci", "tests", "benchmarks", "src"):
        for path in (ROOT / folder).rglob("*"):
            if ".egg-info" in str(path) or "node_modules" in path.parts:
                continue  # build outputs, not part of a clone
            if path.is_file() and path.suffix in ("", ".sh", ".py", ".yaml", ".yml", ".js", ".html", ".toml", ".md"):
                text = path.read_text(errors="replace")
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in needles if n in text]
    offenders += [f"README.md: {n}" for n in needles if n in README]
    assert not offenders, offenders


def test_the_demo_reads_only_files_in_the_repository():
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    for rel in ("tests/fixtures/images/chelsea.png", "src/ccsr/models/ccsr_v1/configs/ccsr-tiny.yaml"):
        assert rel in demo and (ROOT / rel).is_file()
    assert "weights download --timeout" in demo  # the real weights first, bounded wait
    assert demo.count("RANDOM") >= 2  # said before and after the fallback


def test_install_section_covers_the_machines_people_have():
    install = README[README.index("## Install"):README.index("## Quick start")]
    for needle in ("CUDA", "https://download.pytorch.org/whl/cpu", "Apple silicon", "docker build", "Dockerfile.cpu",
                   "docker compose", "have not been built"):
        assert needle in install, needle
    python = README[README.index("### Python"):]
    assert 'dtype="auto"' in python.split("```")[1]  # the example never asks for half precision on a CPU
    assert "random weights" in README.split("## The two commands")[0].lower()  # the first picture is labelled
