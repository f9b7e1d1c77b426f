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


MAX_PARAMS = 6
# Public APIs whose signatures users call and that stay as they are: a few positional parameters, the rest keyword-only.
WIDE_PUBLIC_APIS = {
    "sparsezoo.hub.upload.push",  # public API: run and repo_id, then keyword-only options
    "sparsezoo.train.loop.finetune",  # public API: recipe and out, then keyword-only options
    "sparsezoo.train.penalties.SparsityPenalty.__init__",  # public API: model, l1, hoyer_square, then keyword-only
    "sparsezoo.train.threshold_search.search_thresholds",  # public API: model, sites, evaluate, then keyword-only
    "analysis.collect.run_pass",  # public API: model, loader, collectors, then keyword-only
    "analysis.layerwise.convergence",  # public API: model, loader, then keyword-only
    "analysis.dsc.pursuit.unroll",  # public API: the input, dictionary and two step tensors, then keyword-only
}


def parameter_counts():
    """``(qualified name, (parameters, positional parameters))`` of every function in the library, self/cls not
    counted."""
    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}.{child.name}")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                bound = 1 if a.posonlyargs + a.args and (a.posonlyargs + a.args)[0].arg in ("self", "cls") else 0
                yield f"{prefix}.{child.name}", (len(names) - bound, len(a.posonlyargs + a.args) - bound)
                yield from visit(child, f"{prefix}.{child.name}")
            else:
                yield from visit(child, prefix)

    for package in ("sparsezoo", "analysis"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield from visit(ast.parse(path.read_text(encoding="utf-8")), module)


def test_no_library_function_takes_more_than_6_parameters():
    """Functions read as steps: more than six parameters are grouped into a typed options object (e.g.
    sparsezoo.train.evaluation.EvalContext, sparsezoo.zoo.BuildOptions) or an existing one is passed."""
    found = dict(parameter_counts())
    counts = {name: n for name, (n, _) in found.items()}
    assert len(counts) > 300 and found["sparsezoo.train.loop.finetune"] == (8, 2)  # the walk really sees the library
    exempt = WIDE_PUBLIC_APIS
    wide = [f"{name} ({n})" for name, n in counts.items() if n > MAX_PARAMS and name not in exempt]
    assert not wide, "group these parameters into a typed options object: " + ", ".join(wide)
    positional = sorted(name for name in WIDE_PUBLIC_APIS if found[name][1] > 4)
    assert not positional, f"allowlisted, but more than four positional parameters: {positional}"
    stale = sorted(name for name in exempt if counts.get(name, 0) <= MAX_PARAMS)
    assert not stale, f"no longer too wide (or gone): drop from the list: {stale}"


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
