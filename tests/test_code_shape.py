"""The code's shape, checked: no function in the library is longer than a reader can hold (60 lines, docstring
included; the DSC lab's plots too, so nothing is exempt). A long function is split into named steps (see
sparsezoo/train/loop.py: plan_steps, train_epoch, end_epoch, …).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def functions():
    for package in ("sparsezoo", "analysis"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield path.relative_to(ROOT).as_posix(), node.name, node.end_lineno - node.lineno + 1


def test_no_library_function_is_longer_than_60_lines():
    found = list(functions())
    assert len(found) > 300  # the walk really sees the library
    long = [f"{rel}::{name} ({n} lines)" for rel, name, n in found if n > MAX_LINES]
    assert not long, "split these into named steps: " + ", ".join(long)


def test_the_library_is_ruff_clean():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ruff", "check", "sparsezoo", "analysis", "tests"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]


@pytest.mark.slow
def test_the_public_api_type_checks():
    """mypy over the modules behind sparsezoo.__all__, analysis.__all__ and analysis.dsc.__all__ ([tool.mypy])."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-5000:]
