"""The one exception type users of the analysis see."""


class AnalysisError(ValueError):
    """A user-facing error: one line saying what is wrong with the input and what to do.

    The CLI prints it as ``metacam analyze: error: <message>`` and returns 2,
    without a traceback; library callers can catch it.
    """
