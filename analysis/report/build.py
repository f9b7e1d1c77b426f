"""The report of one model, or of two compared: :func:`build_report` puts each model's analysis, its headline, the
metric definitions, the command line and the deltas together as ``report.json``'s plain data."""

from __future__ import annotations

import datetime as _dt

from analysis.definitions import DEFINITIONS
from analysis.pipeline import Headline
from analysis.report.types import Analysis, Deltas, HeadlineFigure, ModelEntry, Report, clean


def build_report(models: list[tuple[str, str, dict]], command: str) -> dict:
    """``report.json`` as plain data (:meth:`Report.to_json`, :func:`clean`). ``models``: (label, source, analysis
    result) for one model, or two for a comparison: the subject first, then its baseline; deltas are subject −
    baseline (:class:`Deltas`)."""
    entries = tuple(ModelEntry(label, src, Headline.of(res), Analysis.from_json(res)) for label, src, res in models)
    deltas = None
    if len(models) == 2:
        deltas = Deltas.of((models[0][0], models[0][2]), (models[1][0], models[1][2]))
    figures = HeadlineFigure.rows([e.headline.to_json() for e in entries], None if deltas is None else deltas.headline)
    report = Report(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), command=command,
                    definitions=DEFINITIONS, models=entries, figures=tuple(figures), deltas=deltas)
    return clean(report.to_json())
