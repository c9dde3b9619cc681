"""Every error chunkline raises on purpose.

::

    ChunklineError                 base of everything below
    ├── SpecError (ValueError)     the pipeline as declared is wrong: found before
    │                              running, or once a model it needs is fitted
    │                              (CLI exit code 2). Carries every problem found.
    ├── SourceError (OSError)      an input file is missing, unreadable or not what
    │                              it claims to be (CLI exit code 1)
    ├── StageError (RuntimeError)  a stage raised, or returned something that does
    │                              not fit, on a given chunk (CLI exit code 1)
    ├── DataError (ValueError)     rows failed one of chunkline's own checks
    │                              (NaN, a feature count, an unseen class); raised
    │                              in a stage, it becomes a StageError
    └── SinkError (OSError)        an output could not be written or committed
                                   (CLI exit code 1)

Each class also derives from the builtin a caller would naturally catch, so
``except ValueError`` around a bad spec keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ChunklineError",
    "DataError",
    "SinkError",
    "SourceError",
    "SpecError",
    "SpecIssue",
    "StageError",
]


class ChunklineError(Exception):
    """Base class of every error chunkline raises deliberately."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where it is (a field path) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ChunklineError, ValueError):
    """The declared pipeline is invalid; all problems found are reported together.

    Parameters
    ----------
    issues
        The problems, each a :class:`SpecIssue` (field path and message), or a
        single message string.
    """

    def __init__(self, issues: Iterable[SpecIssue] | str) -> None:
        if isinstance(issues, str):
            issues = [SpecIssue("", issues)]
        self.issues: tuple[SpecIssue, ...] = tuple(issues)
        super().__init__(self.issues)

    def __str__(self) -> str:
        if len(self.issues) == 1:
            return str(self.issues[0])
        lines = [f"{len(self.issues)} problems in the pipeline spec:"]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)

    def __reduce__(self) -> tuple[type, tuple[tuple[SpecIssue, ...]]]:
        return (type(self), (self.issues,))

    @classmethod
    def at(cls, path: str, message: str) -> SpecError:
        """A single problem at field ``path``.

        >>> str(SpecError.at("chunks.rows", "expected a positive integer, got -3"))
        'chunks.rows: expected a positive integer, got -3'
        """
        return cls([SpecIssue(path, message)])

    def prefixed(self, prefix: str) -> SpecError:
        """The same problems, with ``prefix`` put in front of every field path.

        >>> str(SpecError.at("n_jobs", "bad").prefixed("stages[1]"))
        'stages[1].n_jobs: bad'
        """

        def join(path: str) -> str:
            if not path:
                return prefix
            return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"

        return SpecError(SpecIssue(join(i.path), i.message) for i in self.issues)


class SourceError(ChunklineError, OSError):
    """An input file is missing, unreadable, truncated or of the wrong format."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class SinkError(ChunklineError, OSError):
    """An output could not be written or committed to its final path."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class DataError(ChunklineError, ValueError):
    """Rows failed one of chunkline's own checks: NaN where a model rejects it,
    a wrong feature count, a class not listed, and so on.

    Its message is the whole diagnosis. Raised inside a stage, it becomes a
    :class:`StageError` with ``data_error`` set, which the command line
    reports without a traceback. Derives from ``ValueError``, as scikit-learn's
    own input checks do.
    """


class StageError(ChunklineError, RuntimeError):
    """A stage failed on one chunk.

    The message names the stage, the chunk index and its row range (or, for a
    table, its file and row groups). The original exception is chained as
    ``__cause__``: the exception itself when the stage ran in the calling
    process, or its formatted traceback (joblib's remote traceback) when it
    ran in a worker process. ``data_error`` says that the original was a
    :class:`DataError`, whose message says all there is to say; it travels
    with the error from worker processes, where the original does not.
    """

    def __init__(
        self,
        stage: str,
        chunk: int | None,
        rows: tuple[int, int] | str | None,
        reason: str,
        data_error: bool = False,
    ):
        self.stage = stage
        self.chunk = chunk
        self.rows = rows
        self.reason = reason
        self.data_error = data_error
        super().__init__(stage, chunk, rows, reason, data_error)

    @classmethod
    def caused_by(
        cls,
        exc: BaseException,
        stage: str,
        chunk: int | None = None,
        rows: tuple[int, int] | str | None = None,
        where: str = "",
    ) -> StageError:
        """The error for ``exc`` raised by ``stage``: its message, then ``where``.

        The message follows the exception's type, except for a
        :class:`DataError`, whose message is the diagnosis. The caller raises
        it ``from exc``.
        """
        data_error = isinstance(exc, DataError)
        reason = f"{exc}{where}" if data_error else f"{type(exc).__name__}: {exc}{where}"
        return cls(stage, chunk, rows, reason, data_error=data_error)

    def __str__(self) -> str:
        where = ""
        if self.chunk is not None:
            where = f" on chunk {self.chunk}"
            if isinstance(self.rows, str):  # a table chunk: its file and row groups
                where += f" ({self.rows})"
            elif self.rows is not None:
                where += f" (rows {self.rows[0]}-{self.rows[1]})"
        return f"stage {self.stage!r} failed{where}: {self.reason}"
