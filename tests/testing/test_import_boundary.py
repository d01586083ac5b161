"""ccsr.testing holds test doubles: no module of the package outside it may
import it (the service must never run on a fake engine by accident)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ccsr"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_of_testing(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if (root / "testing") in path.parents:
            continue
        if any(n == "ccsr.testing" or n.startswith("ccsr.testing.") for n in _imports(path)):
            found.append(str(path.relative_to(root)))
    return found


def test_nothing_outside_ccsr_testing_imports_it():
    assert imports_of_testing(SRC) == []


def test_the_check_sees_an_import(tmp_path):
    (tmp_path / "testing").mkdir()
    (tmp_path / "testing" / "x.py").write_text("import ccsr.testing\n")  # inside: allowed
    (tmp_path / "service.py").write_text("def f():\n    from ccsr.testing import FakeEngine\n")
    (tmp_path / "other.py").write_text("from ccsr import testing\n")
    (tmp_path / "fine.py").write_text("import ccsr.testing_notes\nfrom ccsr.storage import testing_keys\n")
    assert imports_of_testing(tmp_path) == ["other.py", "service.py"]
