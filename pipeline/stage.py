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
``fit``
    learns from every row flowing past it, then applies what it learned (a
    fitted model) to the same rows and passes the result on. A fit is a
    *barrier*: the rows after it can only be computed once it has seen all
    the rows before it. :class:`Fit` says how it learns (its
    :class:`FitSchedule`) and gives the engine small, picklable pieces to run
    in workers; the engine (:mod:`pipeline.fitting`) runs the strategies.

Stage code (``stages/``) implements these contracts; it never needs the
executor. Callables may be given as objects or as import strings
(``"numpy:nan_to_num"``, ``"numpy.nan_to_num"``, or a registered short name
such as ``"clip"``), resolved when the stage is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from . import registry
from .errors import SpecError, SpecIssue

if TYPE_CHECKING:
    import os

    from .parallel import ParallelSettings

__all__ = [
    "BACKENDS",
    "FIT_STRATEGIES",
    "CallableReduction",
    "Filter",
    "Fit",
    "FitSchedule",
    "FitStrategy",
    "Fitted",
    "Map",
    "Reduce",
    "Reduction",
    "Stage",
    "StageKind",
    "check_parallel_settings",
]

#: ``feed`` is the worker-side half of a ``fit`` (see :mod:`pipeline.fitting`).
StageKind = Literal["map", "filter", "reduce", "fit", "feed"]
FitStrategy = Literal["merge", "partial_fit", "full", "sample"]
#: How a fit can see the rows: an exact merge of per-chunk statistics, chunks
#: consumed one by one in chunk order, all rows at once, or a uniform sample.
FIT_STRATEGIES: tuple[FitStrategy, ...] = ("merge", "partial_fit", "full", "sample")

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
    #: Keys of the stage's spec mapping, the key naming its kind first.
    spec_keys: ClassVar[tuple[str, ...]] = ()

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

    @property
    def role(self) -> str:
        """What the stage does, as reports and ``explain`` name it (its kind by default)."""
        return self.kind

    @property
    def chunk_bytes(self) -> int | None:
        """Input bytes per chunk the stage runs best with, when the spec sets none.

        ``None``: the engine's default. A pass takes the largest its stages ask for.
        """
        return None

    @property
    def prefers_threads(self) -> bool:
        """Whether the stage runs best on threads: its work releases the GIL.

        A pass whose stages all prefer threads runs on the threading backend
        unless told otherwise (no worker start-up, imports or pickling); user
        functions might hold the GIL, so by default they do not.
        """
        return False

    @classmethod
    def from_spec(cls, mapping: Mapping[str, Any]) -> Stage:
        """The stage from its spec mapping (keys checked against :attr:`spec_keys`)."""
        fields = dict(mapping)
        target = fields.pop(cls.spec_keys[0])
        if not isinstance(target, str):
            raise SpecError.at(
                cls.spec_keys[0], f"expected a name or an import string, got {target!r}"
            )
        return cls(target, **fields)  # type: ignore[call-arg]

    def to_spec(self) -> dict[str, Any]:
        """The stage as a spec mapping; only for stages given by name or import string.

        Raises
        ------
        TypeError
            If the stage was built from a Python object, which a spec cannot name.
        """
        target = getattr(self, "target", "")
        if not target or target == "custom":
            raise TypeError(
                f"stage {self.name!r} was built from a Python object; only stages given by "
                "name or import string can be written as a spec"
            )
        spec: dict[str, Any] = {"name": self.name, self.spec_keys[0]: target}
        params = getattr(self, "params", None)
        if params:
            spec["params"] = dict(params)
        if getattr(self, "pandas", False):
            spec["pandas"] = True
        for key in ("n_jobs", "backend"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        return spec

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
    spec_keys: ClassVar[tuple[str, ...]] = ("map", "name", "params", "pandas", "n_jobs", "backend")


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
    spec_keys: ClassVar[tuple[str, ...]] = (
        "filter",
        "name",
        "params",
        "pandas",
        "n_jobs",
        "backend",
    )


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
    spec_keys: ClassVar[tuple[str, ...]] = (
        "reduce",
        "name",
        "params",
        "chunk",
        "combine",
        "finalize",
        "n_jobs",
        "backend",
    )

    reduction: Any = None
    params: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    chunk: Callable[[Any], Any] | str | None = field(default=None, kw_only=True)
    combine: Callable[[Any, Any], Any] | str | None = field(default=None, kw_only=True)
    finalize: Callable[[Any], Any] | str | None = field(default=None, kw_only=True)
    target: str = field(default="", init=False, compare=False, repr=False)

    @classmethod
    def from_spec(cls, mapping: Mapping[str, Any]) -> Reduce:
        """``reduce:`` holds a reduction's name, or its ``chunk``/``combine``/``finalize``."""
        fields = dict(mapping)
        target = fields.pop("reduce")
        if isinstance(target, Mapping):
            parts = ("chunk", "combine", "finalize")
            unknown = [k for k in target if k not in parts]
            if unknown:
                hint = registry.did_you_mean(str(unknown[0]), parts)
                raise SpecError.at(
                    f"reduce.{unknown[0]}", f"unknown key{hint}; allowed keys: {', '.join(parts)}"
                )
            return cls(**fields, **target)
        if not isinstance(target, str):
            raise SpecError.at("reduce", f"expected a name or an import string, got {target!r}")
        return cls(target, **fields)

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


@dataclass(frozen=True, kw_only=True)
class FitSchedule:
    """How the engine hands the rows to a fit.

    Parameters
    ----------
    strategy
        ``merge``: every chunk gives a small statistic (in parallel), combined in
        chunk order into the fitted model. ``partial_fit``: chunks are consumed
        one after another, in chunk order, by the parent, while workers prepare
        the next ones. ``full``: all rows are written once to a memory-mapped
        file and fitted at once. ``sample``: a uniform random sample of
        ``sample_rows`` rows, drawn across all chunks, is fitted at once.
    epochs
        ``partial_fit`` only: passes over the chunks.
    shuffle_chunks
        ``partial_fit`` only: consume the chunks of every epoch in a random
        order (drawn from ``seed``) instead of chunk order.
    seed
        Seed of the chunk order (``shuffle_chunks``) and of the sample.
    sample_rows
        ``sample`` only: rows in the sample (all rows when there are fewer).

    Examples
    --------
    >>> FitSchedule(strategy="partial_fit", epochs=3).epochs
    3
    >>> FitSchedule(strategy="merge", epochs=0)
    Traceback (most recent call last):
    ...
    pipeline.errors.SpecError: epochs: expected a positive integer, got 0
    """

    strategy: FitStrategy
    epochs: int = 1
    shuffle_chunks: bool = False
    seed: int = 0
    sample_rows: int = 100_000

    @property
    def needs_rows(self) -> bool:
        """Whether the fit reads the training rows themselves back (not only states)."""
        return self.strategy in ("partial_fit", "full")

    def __post_init__(self) -> None:
        issues = []
        if self.strategy not in FIT_STRATEGIES:
            hint = registry.did_you_mean(str(self.strategy), FIT_STRATEGIES)
            issues.append(
                SpecIssue(
                    "fit",
                    f"expected one of {', '.join(FIT_STRATEGIES)}, got {self.strategy!r}{hint}",
                )
            )
        for key in ("epochs", "sample_rows"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                issues.append(SpecIssue(key, f"expected a positive integer, got {value!r}"))
        if not isinstance(self.shuffle_chunks, bool):
            issues.append(
                SpecIssue("shuffle_chunks", f"expected true or false, got {self.shuffle_chunks!r}")
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            issues.append(SpecIssue("seed", f"expected a non-negative integer, got {self.seed!r}"))
        if issues:
            raise SpecError(issues)


@dataclass(frozen=True, kw_only=True)
class Fitted:
    """What a fit produced: the model, and for model searches, one row per candidate.

    ``columns``: the columns of the table the fit learnt from, set by the
    engine (``None`` for arrays), for the saved model's description.
    """

    model: Any
    trials: tuple[dict[str, Any], ...] | None = None
    detail: str = ""
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Fit(Stage):
    """A stage that learns from all the rows flowing past it, then applies the model.

    This is the contract between the engine and learning stages such as
    ``stages.Estimator`` (a scikit-learn estimator). The engine plans the
    passes, feeds the rows by the stage's :meth:`schedule` and hands the
    fitted model back to :meth:`applier`. Methods marked *worker* return
    small picklable objects that run in worker processes, and should import
    as little as they can there (no scikit-learn, when NumPy will do).

    A stage that applies a model fitted earlier (saved to a file) returns no
    schedule: it never fits and runs as a map.
    """

    kind: ClassVar[StageKind] = "fit"

    def schedule(self) -> FitSchedule | None:
        """How the rows reach the fit; ``None`` when the stage only applies a saved model."""
        raise NotImplementedError

    def training_rows(self) -> Callable[[Any, Any], tuple[Any, Any]]:
        """*worker*: ``(chunk, y) -> (X, y)``, the arrays the model learns from.

        It also checks them (missing values the estimator refuses, labels
        outside the given classes), so that a bad chunk is named.
        """
        raise NotImplementedError

    def chunk_state(self) -> Reduction | None:
        """*worker*: a reduction over ``(X, y)`` the fit needs, or ``None``.

        For ``merge``, the per-chunk statistic; for ``partial_fit``, what must be
        known before the first call (a classifier's classes, when not given).
        """
        return None

    def fit_state(self, state: Any) -> Fitted:
        """The model from the combined chunk states (``merge``)."""
        raise NotImplementedError

    def fit_rows(self, X: Any, y: Any, parallel: ParallelSettings) -> Fitted:
        """The model fitted on all ``X`` at once (``full``, ``sample``).

        ``X`` may be a read-only memmap larger than memory. ``parallel`` is
        how the stage may run in parallel itself (the fit runs inside
        ``joblib.parallel_config`` of it).
        """
        raise NotImplementedError

    def partial_fit(self, model: Any, X: Any, y: Any, state: Any) -> Any:
        """One incremental step (``partial_fit``); ``model`` is ``None`` on the first.

        ``state`` is the combined :meth:`chunk_state`, when there is one.
        """
        raise NotImplementedError

    def saved_model(self) -> tuple[Any, str | None]:
        """The saved model to apply and its file (if any), when ``schedule()`` is ``None``."""
        raise NotImplementedError

    def applier(self, model: Any, model_path: str | None) -> Callable[[Any], Any]:
        """*worker*: ``chunk -> output`` applying the fitted ``model`` to one chunk.

        ``model_path`` is a file holding the same model (``joblib.dump``, or
        the saved model's own file) that worker processes can load instead of
        receiving the model with every task; ``None`` when there is none. The
        applier must accept a chunk with zero rows.
        """
        raise NotImplementedError

    def apply_chunk_bytes(self, model: Any) -> int | None:
        """Input bytes per chunk that applying ``model`` runs best with (``None``: default).

        A model with a fixed cost per call wants larger chunks than a NumPy
        function does. ``model`` is ``None`` when a plan is made before the fit.
        """
        return None

    def threaded_apply(self, model: Any) -> bool:
        """Whether applying ``model`` runs best on threads (it releases the GIL).

        See :attr:`Stage.prefers_threads`: one copy of the model, no worker
        start-up. ``model`` is ``None`` when a plan is made before the fit.
        """
        return False

    def save_model(
        self, fitted: Fitted, folder: str | os.PathLike[str]
    ) -> list[tuple[str | None, str]]:
        """Write the model's files into ``folder`` under temporary names.

        Returns ``(temporary, final)`` pairs (see :func:`pipeline.sinks.stage_files`):
        the engine renames them when the whole run has succeeded, and removes
        them otherwise; a ``None`` temporary removes a stale file at ``final``.
        If writing fails, no temporary file may be left behind.
        """
        raise NotImplementedError

    def describe_fit(self, parallel: ParallelSettings) -> str:
        """One line for ``explain``: what is fitted, how, and why.

        ``parallel`` is how the fit's pass runs (a fit may parallelize by it).
        """
        return f"{self.name}: fit {getattr(self.schedule(), 'strategy', 'none')}"

    def describe_parent_memory(
        self, n_rows: int | None, row_nbytes: int | None, chunk_rows: int
    ) -> str:
        """For ``explain``: what the fit holds in the parent process, or "" if nothing to say.

        ``n_rows`` training rows of about ``row_nbytes`` each, in chunks of
        ``chunk_rows`` (``None``: not known before the run, as when the rows
        come from a model fitted earlier in the run). The pass's estimated
        peak memory counts the workers, not this.
        """
        return ""
