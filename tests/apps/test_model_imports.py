"""Nothing outside a model's folder imports it: the service, the queue, the
executors, the CLI, the playground, the client and the test doubles work from
the registry's "module:Class" strings (not imports) and the apps' declared
schemas. An AST scan of every module under src/ccsr, imports inside functions
included."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ccsr"
MODELS = sorted(p.name for p in (SRC / "models").iterdir() if (p / "__init__.py").exists())


def imported_models(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, model folder) of every import of ``ccsr.models.<name>``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from ccsr.models import esrgan" imports the package too
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        hits = {p[2] for p in (n.split(".") for n in names) if p[:2] == ["ccsr", "models"] and len(p) > 2 and p[2] in MODELS}
        found += [(node.lineno, model) for model in sorted(hits)]
    return sorted(found)


def test_the_scan_sees_an_import_inside_a_function():
    code = "def f():\n    from ccsr.models.esrgan.weights import find\n\nimport ccsr.models.ccsr_v1.params\nfrom ccsr.models import esrgan\n"
    assert [m for _, m in imported_models(ast.parse(code))] == ["esrgan", "ccsr_v1", "esrgan"]
    assert imported_models(ast.parse('BUILTIN = ("ccsr.models.esrgan.app:ESRGANApp",)')) == []  # a string is no import


def test_no_module_outside_a_model_folder_imports_that_model():
    assert {"ccsr_v1", "esrgan"} <= set(MODELS)
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        home = rel.parts[1] if rel.parts[0] == "models" and len(rel.parts) > 2 else None
        for line, model in imported_models(ast.parse(path.read_text(), str(path))):
            if model != home:
                offenders.append(f"src/ccsr/{rel}:{line} imports ccsr.models.{model}")
    assert not offenders, "\n".join(offenders)
