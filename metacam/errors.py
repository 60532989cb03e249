"""The one exception type users see.

Anything wrong with the *input* (a file, a name, an option value) raises
:class:`MetaCAMError` with a one-line message that names the input and says
what to do. The CLI prints it as ``metacam: error: <message>`` without a
traceback; library callers can catch it.
"""


class MetaCAMError(ValueError):
    """A user-facing error whose message is one line: what is wrong and what to do."""
