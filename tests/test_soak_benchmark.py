"""Smoke run of benchmarks/soak.py: a short soak against a real ``ccsr serve``
with the fake engine; the results JSON has every part and the no-5xx and
no-lost-request checks hold. (The 30-minute run and its memory check are the
benchmark's job; its JSON is committed under benchmarks/results/.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_short_soak_writes_results_and_passes_its_checks(tmp_path):
    out = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--minutes", "0.15", "--pollers", "20", "--rate", "5",
         "--submit-every", "0.4", "--sample-seconds", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.exists(), proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert "checks: " in proc.stdout and str(out) in proc.stdout
    assert report["machine"]["cpus"] and report["machine"]["python"]
    checks = report["checks"]
    assert checks["no_5xx"], report["server_errors"]
    assert checks["no_lost_request"], report["lost"]
    assert checks["idempotency_held"] and checks["hostile_never_accepted"]
    answers = report["answers"]
    # every kind of traffic ran
    assert answers["submit"].get("200", 0) > 5 and answers["poll"].get("200", 0) > 100
    assert answers["upload"].get("200", 0) and answers["submit_url"].get("200", 0)
    assert answers["sse"].get("200", 0) and answers["cancel"]
    hostile = {k: v for k, v in answers.items() if k.startswith("hostile_")}
    assert hostile and all(int(code) in (413, 422) for v in hostile.values() for code in v)
    assert report["accepted_requests"] == sum(answers["result"].values())
    # RSS sampled every --sample-seconds, of the server and its children (the worker at least)
    assert report["config"]["rss_sample_s"] == 2
    samples = report["rss_samples"]
    assert len(samples) >= 4 and all(s["total_mib"] > 0 for s in samples)
    assert max(len(s["processes"]) for s in samples) >= 2
    assert {"first_mean_mib", "last_mean_mib", "ratio"} <= set(report["memory"])
