"""Errors a caller can cause when asking for a measurement.

The CLI maps every :class:`AnalysisError` to one line on stderr and exit code 2.
"""


class AnalysisError(ValueError):
    """Bad input to an analysis function (no matching site, wrong shape, …)."""


class SiteSelectionError(AnalysisError):
    """A site pattern matched no module, or is not a valid regular expression."""
