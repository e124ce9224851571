"""The package's layers (docs/design.md): import-linter's contract in pyproject.toml holds, and a module that
reached up a layer would break it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """import-linter's command (installed with the dev extra, beside this interpreter) in ``cwd``."""
    tool = Path(sys.executable).with_name("lint-imports")
    command = [str(tool)] if tool.exists() else [shutil.which("lint-imports") or "lint-imports"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_every_import_points_down_the_layers() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in out.stdout


def test_an_import_up_a_layer_is_caught(tmp_path: Path) -> None:
    """The contract is not vacuous: the same package with the data layer importing the round loop fails it, naming
    the import."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "perfedavg", copy / "perfedavg", ignore=shutil.ignore_patterns("__pycache__", "conf"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    types = copy / "perfedavg" / "data" / "types.py"
    types.write_text(types.read_text() + "\n\ndef _up() -> None:\n    from perfedavg.federation import loop  # noqa\n")
    out = lint_imports(copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1, out.stdout[-2000:]
    assert "perfedavg.data is not allowed to import perfedavg.federation" in out.stdout
    assert "perfedavg.data.types -> perfedavg.federation.loop" in out.stdout


def test_no_test_imports_another_test_module_conftest_or_a_script_by_path() -> None:
    """Shared helpers live in tests/support.py (and the data writers beside it); what benchmarks and tests both
    drive (fault injection, the plain loop) ships in perfedavg.testing. A test module imported by another runs its
    module-level code twice and couples unrelated files; a script found through ``sys.path`` breaks when it moves."""
    import ast

    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            imported = [n for n in names if n.split(".")[0].startswith("test_") or n.split(".")[0] == "conftest"]
            found += [f"{path.name}:{node.lineno} imports {n}" for n in imported]
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if is_call and ast.unparse(node.func) in ("sys.path.insert", "sys.path.append"):
                found.append(f"{path.name}:{node.lineno} changes sys.path")
    assert not found, found
