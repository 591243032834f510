"""The command line's package: cheap to import, one-way layering, modules of a readable size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import synth

PACKAGE = Path(synth.__file__).parent


def test_importing_the_cli_loads_no_heavy_library():
    """`synth --help` stays fast: Prefect, vLLM, polars and torch load inside the commands."""
    code = "import sys, synth.cli; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)))"
    heavy = "{'prefect', 'vllm', 'polars', 'torch', 'pyarrow', 'redis', 'pydantic'}"
    result = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {heavy}; {code}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_outside_the_cli_imports_it():
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "cli" in path.parents:
            continue
        assert not any(name == "synth.cli" or name.startswith("synth.cli.") for name in _imports(path)), path


def test_each_cli_module_is_under_400_lines():
    for path in (PACKAGE / "cli").glob("*.py"):
        assert len(path.read_text().splitlines()) < 400, path
