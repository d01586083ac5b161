"""The app-seam tests share the service tests' helpers (tests/service/svc_helpers.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
