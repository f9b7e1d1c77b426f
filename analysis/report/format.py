"""How reports write values: :func:`fmt` (one value in a table cell), :func:`table` (a table in its own scroll box),
:func:`figure_text` / :func:`change_text` (a headline figure and a change, with their units) and the pages'
stylesheet :data:`CSS`. The analysis report and the explain section (:mod:`analysis.interpret.render`) share them."""

from __future__ import annotations

import html
from typing import Any


def fmt(v: Any) -> str:
    """One value as a table cell shows it: None as "—", booleans as yes/no, integers with thousands separators,
    floats with 4 decimals (scientific below 1e-3 and from 1e5), sequences as ``a×b``, anything else escaped."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return "×".join(fmt(x) for x in v)
    return html.escape(str(v))


def table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """A table in its own scroll box (``tw``), so a wide one scrolls instead of widening the page."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="tw {cls}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure_text(v: float | None, unit: str) -> str:
    """A headline figure as the report shows it: fractions in %, counts as integers."""
    if v is None:
        return "—"
    if unit == "fraction":
        return f"{100 * v:.1f} %"
    return fmt(int(v)) if unit == "count" else f"{v:.3g}"


def change_text(d: float | None, unit: str) -> str:
    """A signed change with its unit: points for fractions."""
    if d is None:
        return "—"
    if unit == "fraction":
        return f"{100 * d:+.1f} pts"
    return f"{int(d):+,}" if unit == "count" else f"{d:+.3g}"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;max-width:1600px}
h1{font-size:22px}h2{margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}h4{margin:6px 0}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f6;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
.tw{max-width:100%;overflow:auto;margin:8px 0}.wide{max-height:420px}
.row{display:flex;gap:18px;flex-wrap:wrap}.col{flex:1 1 420px;min-width:0}
img{max-width:100%}code{background:#f4f4f6;padding:1px 4px;overflow-wrap:anywhere}nav a{margin-right:12px}
dt{font-weight:600}dd{margin:0 0 6px 12px}dt:target{background:#fff3b0}
#headline table{font-size:15px}#headline td,#headline th{padding:4px 12px}.note{color:#555}
"""
