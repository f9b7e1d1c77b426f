"""The distribution is complete: what the code imports is declared, and what it reads ships inside the wheel."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_hub_cards import make_run

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sparsezoo", "analysis")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalize(re.match(r"[A-Za-z0-9._-]+", r.strip()).group()) for r in requirements}


def is_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def third_party_imports() -> dict[str, dict[str, list[str]]]:
    """``{"required"|"optional": {top-level module: [files importing it]}}`` for every absolute import in the
    source of the two packages; an import inside ``try: … except ImportError`` is optional."""
    found: dict[str, dict[str, list[str]]] = {"required": {}, "optional": {}}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            guarded = {id(node) for t in ast.walk(tree) if isinstance(t, ast.Try) and any(map(is_import_error, t.handlers))
                       for stmt in t.body for node in ast.walk(stmt)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in sys.stdlib_module_names or top in PACKAGES or top == "__future__":
                        continue
                    kind = "optional" if id(node) in guarded else "required"
                    found[kind].setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    imports = third_party_imports()
    assert {"torch", "huggingface_hub", "safetensors"} <= set(imports["required"])  # the walk sees the imports
    providers = importlib.metadata.packages_distributions()
    declared = requirement_names(PYPROJECT["dependencies"])
    extras = set().union(*map(requirement_names, PYPROJECT.get("optional-dependencies", {}).values()))
    problems = []
    for kind, allowed in (("required", declared), ("optional", declared | extras)):
        for module, files in sorted(imports[kind].items()):
            dists = {normalize(d) for d in providers.get(module, [])}
            if not dists:
                problems.append(f"{module} (imported by {files[0]}) is provided by no installed distribution")
            elif not dists & allowed:
                where = "[project] dependencies" if kind == "required" else "dependencies or an optional extra"
                problems.append(f"{module} (imported by {files[0]}, distribution {'/'.join(sorted(dists))}) "
                                f"is not in pyproject.toml's {where}")
    assert not problems, "\n".join(problems)


def test_the_import_walk_sees_guarded_and_nested_imports(tmp_path, monkeypatch):
    """The walk itself, on a known source: a function-level import is required, a guarded one optional."""
    source = ("import os\nfrom . import x\n\ndef f():\n    import numpy.linalg\n\n"
              "try:\n    import captum\nexcept (ImportError, ValueError):\n    captum = None\n")
    (tmp_path / "sparsezoo").mkdir()
    (tmp_path / "sparsezoo" / "m.py").write_text(source)
    (tmp_path / "analysis").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert third_party_imports() == {"required": {"numpy": ["sparsezoo/m.py"]},
                                     "optional": {"captum": ["sparsezoo/m.py"]}}


@pytest.mark.slow  # an end-to-end subprocess or real-weights run; CI runs it (quick loop <= 120 s)
def test_an_installed_wheel_renders_cards_outside_the_source_tree(tmp_path):
    """Built as a wheel and installed elsewhere, sparsezoo finds its card template (package data), run from a folder
    that is not the source tree. (CI does the same in a fresh virtual environment: .ci/run.)"""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src], check=True,
                   timeout=300, capture_output=True)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True, timeout=300,
                   capture_output=True)
    assert (tmp_path / "site" / "sparsezoo" / "hub" / "templates" / "model_card.md").is_file()
    assert (tmp_path / "site" / "sparsezoo" / "zoo" / "zoo-results.json").is_file()
    assert all((tmp_path / "site" / package / "py.typed").is_file() for package in PACKAGES)  # PEP 561: typed
    shutil.rmtree(src)  # nothing may be read from a source tree
    run = make_run(tmp_path / "elsewhere" / "r18-l1")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import sparsezoo.hub.cards; print(sparsezoo.hub.cards.__file__)"], env=env,
                           cwd=run.parent, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(tmp_path / "site")), where  # the installed copy, not the checkout
    r = subprocess.run([sys.executable, "-m", "sparsezoo", "card", run.name, "--repo", "myorg/r18-l1", "--out",
                        "card.md"], env=env, cwd=run.parent, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    card = (run.parent / "card.md").read_text()
    assert card.startswith("---\n") and "# r18-l1" in card and "does not make this model faster" in card


@pytest.mark.parametrize("package, name", [("sparsezoo", "recipes"), ("sparsezoo.hub", "templates"),
                                           ("sparsezoo.zoo", ".")])
def test_package_data_is_declared(package, name):
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][package]
    folder = ROOT / package.replace(".", "/")
    files = [p.relative_to(folder).as_posix() for p in (folder / name).iterdir() if p.suffix in (".yaml", ".json", ".md")]
    assert files and all(any(Path(f).match(p) for p in patterns) for f in files), (files, patterns)
