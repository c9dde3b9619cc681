"""The stage protocol: what the planner and the workers know about a stage.

A stage is a small, frozen, picklable value with a *kind* that tells the
planner how it runs:

``map``
    chunk -> chunk with the same number of rows (any callable).
``filter``
    chunk -> boolean mask; rows where it is False are dropped (also from ``y``).
``reduce``
    a *tap*: it observes the chunks flowing past and passes them on unchanged;
    per chunk it computes a partial state, the parent combines the states in
    chunk order and finalizes them into the stage's result.

Stage code (``stages/``) implements these contracts; it never needs the
executor. Callables may be given as objects or as import strings
(``"numpy:nan_to_num"``, ``"numpy.nan_to_num"``, or a registered short name
such as ``"clip"``), resolved when the stage is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from . import registry
from .errors import SpecError, SpecIssue

__all__ = [
    "BACKENDS",
    "CallableReduction",
    "Filter",
    "Map",
    "Reduce",
    "Reduction",
    "Stage",
    "StageKind",
    "check_parallel_settings",
]

StageKind = Literal["map", "filter", "reduce"]

#: joblib backends a stage or pipeline may name. ``dask`` needs a running
#: ``dask.distributed`` Client (see README).
BACKENDS = ("loky", "threading", "sequential", "dask")


@runtime_checkable
class Reduction(Protocol):
    """A mergeable reduction: ``chunk`` per chunk, ``combine`` in order, ``finalize``.

    ``combine`` must be associative; chunkline always folds states from left to
    right in chunk order, so the result does not depend on ``n_jobs``.
    ``chunk`` must accept a chunk with zero rows (a filter may empty one).
    """

    def chunk(self, data: Any) -> Any:
        """Partial state of one chunk."""

    def combine(self, left: Any, right: Any) -> Any:
        """Merge two partial states (``left`` holds the earlier rows)."""

    def finalize(self, state: Any) -> Any:
        """Turn the combined state into the result."""


def check_parallel_settings(n_jobs: Any, backend: Any, where: str) -> None:
    """Raise :class:`SpecError` naming ``where`` for a bad ``n_jobs`` or ``backend``."""
    issues = []
    if n_jobs is not None and (
        isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1
    ):
        issues.append(
            SpecIssue(f"{where}n_jobs", f"expected a positive integer or -1, got {n_jobs!r}")
        )
    if backend is not None and backend not in BACKENDS:
        hint = registry.did_you_mean(str(backend), BACKENDS)
        issues.append(
            SpecIssue(
                f"{where}backend", f"expected one of {', '.join(BACKENDS)}, got {backend!r}{hint}"
            )
        )
    if issues:
        raise SpecError(issues)


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target.replace(":", ".").rsplit(".", 1)[-1]
    return getattr(target, "__name__", type(target).__name__)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """Fields every stage has: its name and its parallel settings."""

    kind: ClassVar[StageKind]

    name: str = ""
    n_jobs: int | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        # Every problem of the stage is reported at once, not just the first.
        issues: list[SpecIssue] = []
        try:
            check_parallel_settings(self.n_jobs, self.backend, "")
        except SpecError as exc:
            issues.extend(exc.issues)
        if not isinstance(self.name, str):
            issues.append(SpecIssue("name", f"expected a string, got {self.name!r}"))
        try:
            self._resolve()
        except SpecError as exc:
            issues.extend(exc.issues)
        if issues:
            raise SpecError(issues)

    def _resolve(self) -> None:
        """Check kind-specific fields and resolve derived ones (raise SpecError)."""

    @property
    def changes_data(self) -> bool:
        """Whether the data after this stage differs from the data before it."""
        return self.kind != "reduce"

    def _set(self, **values: Any) -> None:
        # Frozen dataclasses resolve derived fields once, in __post_init__.
        for key, value in values.items():
            object.__setattr__(self, key, value)


@dataclass(frozen=True)
class _CallableStage(Stage):
    """A stage that calls ``func(data, **params)``."""

    func: Callable[..., Any] | str
    params: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    pandas: bool = field(default=False, kw_only=True)
    target: str = field(default="", init=False, compare=False, repr=False)

    def _resolve(self) -> None:
        if not isinstance(self.pandas, bool):
            raise SpecError.at("pandas", f"expected true or false, got {self.pandas!r}")
        if not isinstance(self.params, Mapping):
            raise SpecError.at(
                "params", f"expected a mapping of keyword arguments, got {self.params!r}"
            )
        func = self.func
        if isinstance(func, str):
            try:
                self._set(target=func, func=registry.resolve(self.kind, func))
            except SpecError as exc:
                raise exc.prefixed(self.kind) from None
        elif not callable(func):
            raise SpecError.at(self.kind, f"expected a callable or an import string, got {func!r}")
        if not callable(self.func):
            raise SpecError.at(self.kind, f"{self.target!r} is not callable")
        if not self.name:
            self._set(name=_target_name(self.target or self.func))
        self._set(params=dict(self.params))

    def call(self, data: Any) -> Any:
        """Apply the callable to one chunk (a table as a DataFrame if ``pandas``).

        A DataFrame it returns is turned back into a table by the engine.
        """
        if self.pandas and hasattr(data, "to_pandas"):
            data = data.to_pandas()
        return self.func(data, **self.params)  # type: ignore[operator]


@dataclass(frozen=True)
class Map(_CallableStage):
    """chunk -> chunk with the same rows: ``func(chunk, **params)``.

    Parameters
    ----------
    func
        A callable, or its import string (``"numpy:log1p"``, ``"numpy.log1p"``)
        or registered short name (``"log1p"``).
    name
        Stage name used in reports and errors; defaults to the function name.
    params
        Extra keyword arguments passed to ``func``.
    pandas
        Call ``func`` with a pandas DataFrame instead of a ``pyarrow.Table``
        (table chunks only; pandas must be installed).
    n_jobs, backend
        Override the pipeline's parallel settings for this stage.

    Examples
    --------
    >>> import numpy as np
    >>> Map(np.nan_to_num, name="clean").call(np.array([np.nan, 1.0]))
    array([0., 1.])
    """

    kind: ClassVar[StageKind] = "map"


@dataclass(frozen=True)
class Filter(_CallableStage):
    """Keep the rows where ``func(chunk, **params)`` is True (a 1-D boolean mask).

    Examples
    --------
    >>> import numpy as np
    >>> f = Filter(lambda x: x[:, 0] > 0, name="positive")
    >>> f.call(np.array([[1.0], [-1.0]]))
    array([ True, False])
    """

    kind: ClassVar[StageKind] = "filter"


@dataclass(frozen=True)
class CallableReduction:
    """A reduction from three callables: per-chunk state, combine, finalize."""

    chunk_func: Callable[[Any], Any]
    combine_func: Callable[[Any, Any], Any]
    finalize_func: Callable[[Any], Any] | None = None

    def chunk(self, data: Any) -> Any:
        return self.chunk_func(data)

    def combine(self, left: Any, right: Any) -> Any:
        return self.combine_func(left, right)

    def finalize(self, state: Any) -> Any:
        return state if self.finalize_func is None else self.finalize_func(state)


@dataclass(frozen=True)
class Reduce(Stage):
    """A tap computing a mergeable reduction over all rows flowing past it.

    Parameters
    ----------
    reduction
        A registered name (``"moments"``, ``"histogram"``, ...), an import
        string or class, or an object with ``chunk``/``combine``/``finalize``.
        Omit it and give ``chunk``, ``combine`` (and optionally ``finalize``)
        callables for a user-defined reduction.
    params
        Keyword arguments used to build a reduction given by name or class
        (e.g. ``{"bins": 10, "range": [0, 1]}`` for ``histogram``).

    Examples
    --------
    >>> import numpy as np
    >>> r = Reduce(chunk=np.sum, combine=lambda a, b: a + b, name="total")
    >>> r.reduction.finalize(r.reduction.chunk(np.arange(4)))
    np.int64(6)
    """

    kind: ClassVar[StageKind] = "reduce"

    reduction: Any = None
    params: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    chunk: Callable[[Any], Any] | str | None = field(default=None, kw_only=True)
    combine: Callable[[Any, Any], Any] | str | None = field(default=None, kw_only=True)
    finalize: Callable[[Any], Any] | str | None = field(default=None, kw_only=True)
    target: str = field(default="", init=False, compare=False, repr=False)

    def _resolve(self) -> None:
        reduction = self.reduction
        parts = {"chunk": self.chunk, "combine": self.combine, "finalize": self.finalize}
        if reduction is None:
            if self.chunk is None or self.combine is None:
                raise SpecError.at(
                    "reduce",
                    "give a reduction name (e.g. 'moments') or both 'chunk' and "
                    "'combine' callables (and optionally 'finalize')",
                )
            funcs: dict[str, Any] = {}
            for key, value in parts.items():
                try:
                    funcs[key] = registry.import_object(value) if isinstance(value, str) else value
                except SpecError as exc:
                    raise exc.prefixed(key) from None
                if funcs[key] is not None and not callable(funcs[key]):
                    raise SpecError.at(key, f"{value!r} is not callable")
            reduction = CallableReduction(funcs["chunk"], funcs["combine"], funcs["finalize"])
            self._set(target="custom")
        else:
            if any(value is not None for value in parts.values()):
                raise SpecError.at(
                    "reduce", "give either a reduction or chunk/combine callables, not both"
                )
            if isinstance(reduction, str):
                self._set(target=reduction)
                try:
                    reduction = registry.resolve("reduce", reduction)
                except SpecError as exc:
                    raise exc.prefixed("reduce") from None
            if isinstance(reduction, type):
                try:
                    reduction = reduction(**self.params)
                except (TypeError, ValueError) as exc:
                    raise SpecError.at("params", f"{exc}") from None
            elif self.params:
                raise SpecError.at(
                    "params", "only used when the reduction is given by name or class"
                )
        if not isinstance(reduction, Reduction):
            raise SpecError.at(
                "reduce",
                f"{reduction!r} is not a reduction (it needs chunk, combine and finalize methods)",
            )
        if not self.name:
            self._set(name=self.target if self.target not in ("", "custom") else "reduce")
        self._set(reduction=reduction, params=dict(self.params))
