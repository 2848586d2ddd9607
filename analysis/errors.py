"""Error type for bad analysis inputs.

Every function in :mod:`analysis` that rejects its input raises
:class:`AnalysisInputError` with a one-line message that names the fix. The CLI
maps it to exit code 2 (same convention as ``scaling.errors.UserError``; we do
not import the trainer package, so the class is defined here).
"""


class AnalysisInputError(ValueError):
    """Bad input to an analysis function: missing file/column, NaN, too few points.

    The message is a single line and says what to do about it.
    """
