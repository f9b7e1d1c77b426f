"""Reports: ``report.json`` data and a self-contained ``report.html`` (inline CSS, plots as embedded PNG).

:func:`build_report` assembles the analysis of one model (or two, for a comparison) with the metric
definitions, the command line and the deltas; :func:`render_html` turns it into one HTML file that needs no
network and no JavaScript. The rooms: :mod:`.types` (the typed sections of ``report.json`` and their JSON form),
:mod:`.build` (assembling a report), :mod:`.figures` (the plots, drawn on :class:`matplotlib.figure.Figure` objects:
no pyplot, so a caller's matplotlib state is left as it was), :mod:`.format` (how values and tables are written,
shared with the explain section) and :mod:`.page` (the HTML page).
"""

from analysis.report.build import build_report
from analysis.report.format import CSS, change_text, figure_text, fmt, table
from analysis.report.page import MARGINS_NOTE, headline_html, render_html
from analysis.report.types import (
    DELTA_KEY,
    HEADLINE_FIGURES,
    NEAR_ZERO_ABS,
    REPORT_VERSION,
    Analysis,
    CoherenceDelta,
    Deltas,
    HeadlineFigure,
    MarginDelta,
    ModelEntry,
    Report,
    SiteDelta,
    clean,
    headline_figures,
)

__all__ = ["build_report", "render_html", "headline_html", "Report", "ModelEntry", "Analysis", "HeadlineFigure", "Deltas",
           "SiteDelta", "CoherenceDelta", "MarginDelta", "headline_figures", "clean", "figure_text", "change_text",
           "fmt", "table", "CSS", "MARGINS_NOTE", "DELTA_KEY", "HEADLINE_FIGURES", "NEAR_ZERO_ABS", "REPORT_VERSION"]
