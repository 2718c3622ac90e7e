"""User-facing errors.

Every mistake a user can make (a bad volume, a broken prediction file, an unknown
sample id) raises a subclass of :class:`AtomBenchError` whose message is one line
saying what is wrong and how to fix it. The command line prints that line and exits
with code 2; library users catch the exception.
"""

from __future__ import annotations

QUOTE_CHARS = 60  # characters of a user value quoted in a message


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A user value as ``repr`` shows it, cut to its first ``limit`` characters.

    Messages quote ids, column names and metadata that the user wrote: a 50 MB id must not
    become a 50 MB "one-line" error. ``repr`` also shows control characters as escapes.
    """
    try:
        text = value if isinstance(value, str) else repr(value)
    except ValueError:  # an integer of more than 4300 digits
        return f"a {type(value).__name__} too long to show"
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{repr(text[:limit]) if isinstance(value, str) else text[:limit]}... ({len(text)} characters)"


class AtomBenchError(ValueError):
    """Base class for errors caused by user input; the message is one actionable line.

    ``parameters`` names the arguments of the library call that the message speaks of (in the
    library's own terms, e.g. ``size`` or ``force=True``), so that the command line can say
    ``--size`` and ``--force`` instead; see :func:`atom_bench.cli.main`.
    """

    exit_code = 2

    def __init__(self, message: str, *, parameters: tuple[str, ...] = ()) -> None:
        super().__init__(" ".join(str(message).split()))
        self.parameters = parameters

    def __reduce__(self):  # keep ``parameters`` when a worker process sends the error back
        return (self.__class__, self.args, {"parameters": self.parameters})


class VolumeError(AtomBenchError):
    """A volume file cannot be used (unreadable, not 3D, NaN, constant, too small)."""


class DataError(AtomBenchError):
    """A built benchmark is missing, incomplete or fails its checksums."""


class PredictionError(AtomBenchError):
    """A prediction file breaks the prediction contract."""


class ModelError(AtomBenchError):
    """A model name, factory or weights file cannot be resolved."""


class HubError(AtomBenchError):
    """The Hugging Face Hub (or a local stand-in) cannot serve a request."""
