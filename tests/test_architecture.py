"""The house's rules, checked on the source: no import circles anywhere in the two packages (lazy imports inside
functions count: they run too), no module importing another module's private (``_name``) names, and ``analysis``
never importing ``sparsezoo``. Imports under ``if TYPE_CHECKING:`` never run and are left out."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sparsezoo", "analysis")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    return (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def imports(path: Path, name: str, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import that can run."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for n in child.orelse:
                    visit(n)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, []) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                taken = []
                for a in child.names:
                    if f"{base}.{a.name}" in known:  # `from pkg import submodule`
                        out.append((f"{base}.{a.name}", []))
                    else:
                        taken.append(a.name)
                if taken:
                    out.append((base, taken))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return [(m, names) for m, names in out if m.split(".")[0] in PACKAGES]


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        for target, _ in imports(path, name, known):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_circles_anywhere_in_the_tree():
    assert cycles(graph()) == []


def test_no_module_imports_another_modules_private_names():
    known = modules()
    found = []
    for name, path in known.items():
        for target, names in imports(path, name, known):
            found += [f"{name} imports {target}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert found == []


def test_analysis_never_imports_sparsezoo():
    edges = graph()
    assert [(m, t) for m, ts in edges.items() if m.startswith("analysis") for t in ts if t.startswith("sparsezoo")] == []


def test_the_checker_sees_circles_and_private_imports(tmp_path):
    """The rules above can fail: a two-module circle and a private import are found in a made-up graph/source."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sparsezoo.x import _hidden\n"
                   "def f():\n    from sparsezoo.y import _secret, public\n")
    assert imports(src, "sparsezoo.m", {}) == [("sparsezoo.y", ["_secret", "public"])]
