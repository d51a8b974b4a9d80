"""The layer contract and module hygiene (docs/architecture.md): checked on the source tree itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "divscope"


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.with_suffix("").relative_to(SRC.parent).parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def private_imports(modules: dict[str, Path]) -> list[str]:
    """``from divscope.x import _name`` and ``module._name`` on an imported divscope module, across modules."""
    found = []
    for name, path in sorted(modules.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("divscope"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path.name}:{node.lineno}: from {node.module} import {a.name}")
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("divscope"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and aliases[node.value.id] in modules and aliases[node.value.id] != name \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    assert private_imports(_modules()) == []


def test_the_check_finds_a_planted_private_import(tmp_path: Path) -> None:
    planted = tmp_path / "mod.py"
    planted.write_text("from divscope.io.writers import _typed_rows\nimport divscope.io.shapes as s\ns._x\n")
    mods = {"divscope.planted": planted, "divscope.io.shapes": SRC / "io" / "shapes.py"}
    assert len(private_imports(mods)) == 2


def test_layer_contract_holds() -> None:
    """``lint-imports`` (import-linter) with the contracts in pyproject.toml: layers, and no cycle anywhere."""
    root = SRC.parent.parent
    res = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=root,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "2 kept, 0 broken" in res.stdout
