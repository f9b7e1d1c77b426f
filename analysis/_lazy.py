"""Lazy package exports: a package's public names are imported from their modules on first use, so importing the
package stays cheap (no torch), while type checkers and IDEs see the real names through ``TYPE_CHECKING`` imports.

Usage in a package ``__init__``::

    if TYPE_CHECKING:
        from pkg.module import name
    __getattr__, __dir__ = lazy_exports(__name__, {"name": "pkg.module"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``table`` maps each public name to the module defining it."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(table) | set(vars(import_module(package))))

    return __getattr__, __dir__
