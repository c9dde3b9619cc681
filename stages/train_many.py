"""Many models trained at once on one memory-mapped copy of the data, and the best kept.

A :class:`TrainMany` stage (``train_many:`` in a spec) is an estimator stage
whose fit trains several candidates: a list of estimators, or one estimator
over a parameter ``grid``. Its input rows are written once to a memory-mapped
file (as for ``fit: full``); every candidate reads them from there, so each
worker process maps the same pages instead of holding its own copy. Each
candidate is scored on a holdout (the last rows; ``score: {holdout: 0.2}``,
the default) or by k-fold cross-validation (``score: {cv: 5}``); the results
table (one row per candidate: parameters, score, fit time) comes back with
the run, and the best model is kept, saved and applied to the rows like any
estimator stage's model.

Running several models side by side only pays when each uses one core. An
estimator that parallelizes itself (``n_jobs``, OpenMP) already keeps every
core busy, and two of them at once only contend for the cores and the memory
bus: 8 HistGradientBoosting fits ran 1.2x slower two at a time than one after
the other with both cores each (the README's W6 benchmark). So
``split: auto`` gives such estimators all the cores, one model at a time, and
runs other models side by side, one core each; ``explain`` says which and why.
An ``n_jobs`` that the installed scikit-learn has deprecated (LogisticRegression's
since 1.8: it has no effect) does not count: such a model uses one core.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import sklearn
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold, ParameterGrid
from threadpoolctl import threadpool_limits

from pipeline.errors import ChunklineError, DataError, SpecError
from pipeline.parallel import ParallelSettings
from pipeline.registry import did_you_mean
from pipeline.stage import Fitted

from .estimators import Estimator, make_estimator, n_jobs_is_deprecated, parallelizes_itself

__all__ = ["Split", "TrainMany", "choose_split"]

_SPLITS = ("auto", "models", "estimator")
#: The keys of a candidate given as a mapping in a ``train_many`` list.
_ENTRY_KEYS = ("sklearn", "params")


@dataclass(frozen=True)
class Split:
    """How many models run at once (``outer``), with how many threads each (``inner``)."""

    outer: int
    inner: int
    why: str

    def describe(self) -> str:
        """e.g. ``1 model at a time x 2 threads each``."""
        models = "1 model at a time" if self.outer == 1 else f"{self.outer} models at a time"
        return f"{models} x {self.inner} thread{'s' if self.inner != 1 else ''} each ({self.why})"


def choose_split(candidates: Sequence[BaseEstimator], cores: int, split: str = "auto") -> Split:
    """Outer (models side by side) or inner (each model's own threads) parallelism.

    >>> from sklearn.ensemble import HistGradientBoostingRegressor
    >>> from sklearn.linear_model import Ridge
    >>> choose_split([HistGradientBoostingRegressor()] * 8, 2).describe()
    '1 model at a time x 2 threads each (HistGradientBoostingRegressor runs OpenMP threads: \
side by side, models would only contend for the cores)'
    >>> choose_split([Ridge()] * 8, 2).describe()
    '2 models at a time x 1 thread each (Ridge uses one core: models run side by side)'
    >>> choose_split([Ridge()] * 8, 1).describe()
    '1 model at a time x 1 thread each (one worker)'
    """
    cores = max(1, cores)
    if cores == 1:
        return Split(1, 1, "one worker")
    reasons = [parallelizes_itself(c) for c in candidates]
    kind = type(candidates[0]).__name__
    if split == "estimator" or (split == "auto" and all(reasons)):
        why = "as the spec says"
        if split == "auto":
            itself = str(reasons[0]).removeprefix("it ")
            why = f"{kind} {itself}: side by side, models would only contend for the cores"
        return Split(1, cores, why)
    outer = min(cores, len(candidates))
    why = "as the spec says"
    if split == "auto":
        # Name a candidate that does use one core: in a mixed list it need not be the first.
        single = next(c for c, reason in zip(candidates, reasons, strict=True) if reason is None)
        note = (
            f": its n_jobs has no effect in scikit-learn {sklearn.__version__}, so"
            if n_jobs_is_deprecated(single)
            else ":"
        )
        why = f"{type(single).__name__} uses one core{note} models run side by side"
    return Split(outer, max(1, cores // outer), why)


def _candidates_of(value: Any, params: Mapping[str, Any], grid: Any) -> list[BaseEstimator]:
    """The unfitted candidate estimators a ``train_many`` names."""
    if isinstance(value, (str, type)) or hasattr(value, "get_params"):
        base, _ = make_estimator(value, params)
        if grid is None:
            return [base]
        try:
            settings = list(ParameterGrid(grid))
        except (TypeError, ValueError) as exc:
            raise SpecError.at("grid", f"{exc}") from None
        if not settings:
            raise SpecError.at(
                "grid", "expected a mapping of parameter lists (or a list of them), got no settings"
            )
        candidates = []
        for setting in settings:
            try:
                candidates.append(make_estimator(base, setting)[0])
            except SpecError as exc:
                raise exc.prefixed("grid") from None
        return candidates
    if grid is not None:
        raise SpecError.at("grid", "only with a single estimator (give each candidate its params)")
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        candidates = []
        for i, item in enumerate(value):
            target, own = item, dict[str, Any]()
            if isinstance(item, Mapping):
                unknown = [str(k) for k in item if k not in _ENTRY_KEYS]
                if unknown:
                    named = ", ".join(f"{k!r}{did_you_mean(k, _ENTRY_KEYS)}" for k in unknown)
                    raise SpecError.at(
                        f"train_many[{i}]",
                        f"unknown key {named}; a candidate is {{sklearn: <estimator>, "
                        "params: {...}}",
                    )
                if "sklearn" not in item:
                    raise SpecError.at(
                        f"train_many[{i}]",
                        "expected {sklearn: <estimator>, params: {...}}, an import string "
                        f"or an estimator, got {dict(item)!r}",
                    )
                target, own = item["sklearn"], item.get("params") or {}
            try:
                candidates.append(make_estimator(target, {**params, **own})[0])
            except SpecError as exc:
                raise exc.prefixed(f"train_many[{i}]") from None
        return candidates
    raise SpecError.at(
        "train_many", f"expected an estimator or a non-empty list of them, got {value!r}"
    )


def _score_rule(score: Any) -> tuple[str, float | int]:
    if not isinstance(score, Mapping) or len(score) != 1:
        raise SpecError.at("score", f"expected {{holdout: 0.2}} or {{cv: 5}}, got {score!r}")
    ((how, value),) = score.items()
    if how == "holdout":
        ok = isinstance(value, float) and 0 < value < 1
        return (how, value) if ok else _bad("score.holdout", "a fraction between 0 and 1", value)
    if how == "cv":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 2
        return (how, value) if ok else _bad("score.cv", "an integer of at least 2", value)
    hint = did_you_mean(str(how), ("holdout", "cv"))
    raise SpecError.at(f"score.{how}", f"unknown way to score{hint}; use holdout or cv")


def _bad(where: str, expected: str, value: Any) -> Any:
    raise SpecError.at(where, f"expected {expected}, got {value!r}")


def _fit_one(
    estimator: BaseEstimator,
    X: Any,
    y: Any,
    rows: tuple[Any, Any],
    threads: int,
    scorer: Any,
    candidate: int,
) -> tuple[BaseEstimator, float, float]:
    """Fit candidate ``candidate`` on rows ``rows[0]`` with ``threads`` threads; score it on
    ``rows[1]``.

    Runs in a worker: ``X`` arrives as a reference to the memory-mapped file,
    and a fold's rows are taken here (a slice is a view; indices copy). A
    failure names the candidate: which one of a grid failed is the question.
    """
    started = time.perf_counter()
    train, test = rows
    described = repr(estimator)  # before fit: its settings, as scikit-learn prints them
    # Threads for OpenMP and BLAS, and for the estimator's own joblib workers
    # (an n_jobs left at None takes the context's); a user's n_jobs stays.
    try:
        with threadpool_limits(threads), joblib.parallel_config(n_jobs=threads):
            X_train, y_train = _rows(X, train), _rows(y, train)
            estimator.fit(X_train) if y is None else estimator.fit(X_train, y_train)
            seconds = time.perf_counter() - started
            score = np.nan
            if test is not None:
                X_test, y_test = _rows(X, test), _rows(y, test)
                score = float(
                    scorer(estimator, X_test, y_test) if scorer else estimator.score(X_test, y_test)
                )
    except ChunklineError:
        raise  # chunkline's own errors say what is wrong already
    except Exception as exc:
        raise _naming(exc, f"candidate {candidate}, {described}, failed: {exc}") from exc
    return estimator, seconds, score


def _naming(exc: Exception, message: str) -> Exception:
    """An exception of ``exc``'s type with ``message``; a ``ValueError`` when that type
    cannot be made from a message alone."""
    try:
        return type(exc)(message)
    except Exception:
        return ValueError(message)


@dataclass(frozen=True)
class TrainMany(Estimator):
    """Train several models on the same rows, score them, keep and apply the best.

    Parameters
    ----------
    estimator
        One estimator (import string, class or instance) with a ``grid``, or
        a list of candidates (each an estimator, or ``{sklearn: ..., params: ...}``).
    grid
        Parameters to search (scikit-learn's ``ParameterGrid``: a mapping of
        lists, or a list of them); ``params`` are shared by every candidate.
    score
        ``{"holdout": 0.2}`` (default: train on the first 80% of the rows,
        score on the last 20%, no copies) or ``{"cv": k}`` (k-fold
        cross-validation; a fold's test rows are a view, its training rows
        are copied; the best candidate is then refitted on all rows).
    scoring
        A scikit-learn scorer name (``"r2"``, ``"roc_auc"``...); default the
        estimator's own ``score``.
    refit
        With a holdout, refit the best candidate on all rows (default: keep it
        as trained).
    split
        ``auto``, ``models`` (several models at once, one core each) or
        ``estimator`` (one model at a time, with every core).

    Other parameters are those of :class:`~stages.estimators.Estimator`.

    Examples
    --------
    >>> stage = TrainMany("sklearn.linear_model.Ridge", grid={"alpha": [0.1, 1.0]}, name="m")
    >>> [c.alpha for c in stage.candidates]
    [0.1, 1.0]
    """

    spec_keys: ClassVar[tuple[str, ...]] = (
        "train_many",
        "name",
        "params",
        "grid",
        "score",
        "scoring",
        "refit",
        "split",
        "apply",
        "features",
        "target",
        "output",
        "n_jobs",
        "backend",
    )

    grid: Any = field(default=None, kw_only=True)
    score: Mapping[str, Any] = field(default_factory=lambda: {"holdout": 0.2}, kw_only=True)
    scoring: str | None = field(default=None, kw_only=True)
    refit: bool = field(default=False, kw_only=True)
    split: str = field(default="auto", kw_only=True)
    candidates: tuple[BaseEstimator, ...] = field(default=(), init=False, compare=False, repr=False)

    @classmethod
    def from_spec(cls, mapping: Mapping[str, Any]) -> TrainMany:
        """The stage from its spec mapping (``{"train_many": ..., "grid": ...}``)."""
        fields = dict(mapping)
        return cls(fields.pop("train_many", None), **fields)

    def _resolve_estimator(self) -> None:
        if self.estimator is None:
            raise SpecError.at("train_many", "give an estimator (with a grid) or a list of them")
        candidates = _candidates_of(self.estimator, self.params, self.grid)
        _score_rule(self.score)
        if self.split not in _SPLITS:
            hint = did_you_mean(str(self.split), _SPLITS)
            raise SpecError.at(
                "split", f"expected one of {', '.join(_SPLITS)}, got {self.split!r}{hint}"
            )
        if not isinstance(self.refit, bool):
            raise SpecError.at("refit", f"expected true or false, got {self.refit!r}")
        if self.scoring is not None:
            try:
                get_scorer(self.scoring)
            except ValueError as exc:
                raise SpecError.at("scoring", str(exc).splitlines()[0]) from None
        self._set(
            candidates=tuple(candidates),
            unfitted=candidates[0],
            target_name=self.estimator if isinstance(self.estimator, str) else "",
            params=dict(self.params),
            name=self.name or "train_many",
        )

    def _unfitted_all(self) -> tuple[BaseEstimator, ...]:
        return self.candidates

    def _resolve_strategy(self) -> None:
        if self.fit != "auto" or self.model is not None:
            raise SpecError.at("fit", "train_many always fits its candidates on all rows at once")
        self._set(strategy="full", why="every candidate reads the memory-mapped rows")

    def fit_rows(self, X: Any, y: Any, parallel: ParallelSettings) -> Fitted:
        split = choose_split(self.candidates, parallel.n_workers, self.split)
        how, amount = _score_rule(self.score)
        scorer = get_scorer(self.scoring) if self.scoring else None
        folds = self._folds(X.shape[0], how, amount)
        jobs = [(i, fold) for i in range(len(self.candidates)) for fold in folds]
        tasks = (
            joblib.delayed(_fit_one)(clone(self.candidates[i]), X, y, fold, split.inner, scorer, i)
            for i, fold in jobs
        )
        if split.outer == 1:  # one model at a time, here, with every core
            done = [fit(*args, **kwargs) for fit, args, kwargs in tasks]
        else:
            # Side by side in worker processes, never threads: BLAS and OpenMP
            # limits are per process, and joblib hands each worker the memmap as
            # a reference to its file, not a copy. dask, if the pass runs there.
            backend = "dask" if parallel.backend == "dask" else "loky"
            with joblib.parallel_config(backend=backend):
                done = joblib.Parallel(n_jobs=split.outer)(tasks)
        rows = self._trials(jobs, done)
        scores = np.array([row["score"] for row in rows], dtype=float)
        if np.isnan(scores).all():
            raise ValueError(
                f"every candidate of {self.name!r} scored NaN: none can be kept (a score is "
                "undefined when, for example, the scored rows hold one class only: test rows "
                "are consecutive rows, not shuffled ones)"
            )
        best = int(np.nanargmax(scores))
        model = done[best * len(folds)][0]
        if how == "cv" or self.refit:
            everything = (slice(None), None)
            model = _fit_one(
                clone(self.candidates[best]), X, y, everything, parallel.n_workers, None, best
            )[0]
        for i, row in enumerate(rows):
            row["best"] = i == best
        return Fitted(
            model=model,
            trials=tuple(rows),
            detail=f"{len(self.candidates)} candidates, {split.describe()}",
        )

    def _folds(self, n: int, how: str, amount: float | int) -> list[tuple[Any, Any]]:
        if how == "holdout":
            cut = n - max(1, round(n * amount))
            if cut < 1:
                raise DataError(f"{n} rows are too few for a holdout of {amount} (score.holdout)")
            return [(slice(0, cut), slice(cut, n))]
        if n < amount:
            raise DataError(f"{n} rows are too few for {amount} folds (score.cv)")
        # KFold's test rows are consecutive: a slice, a view of the memmap. The
        # training rows around them are copied in the worker.
        return [
            (train, slice(int(test[0]), int(test[-1]) + 1))
            for train, test in KFold(n_splits=int(amount)).split(np.zeros(n))
        ]

    def _trials(self, jobs: list[Any], done: list[Any]) -> list[dict[str, Any]]:
        """One row per candidate: its class, its identifying parameters, score, fit time.

        The parameter columns are those that identify some candidate (see
        :func:`_identifying`: set away from its class's defaults, or differing
        between candidates of its class), sorted by name. A row holds each
        such parameter's value for its candidate (``None``, an empty CSV cell,
        when its class has no such parameter).
        """
        params = [c.get_params(deep=False) for c in self.candidates]
        by_kind: dict[type, list[dict[str, Any]]] = {}
        for candidate, mine in zip(self.candidates, params, strict=True):
            by_kind.setdefault(type(candidate), []).append(mine)
        shown = sorted(
            {
                key
                for candidate, mine in zip(self.candidates, params, strict=True)
                for key in _identifying(mine, type(candidate), by_kind[type(candidate)])
            }
        )
        rows = []
        for i, candidate in enumerate(self.candidates):
            mine = [d for job, d in zip(jobs, done, strict=True) if job[0] == i]
            rows.append(
                {
                    "candidate": i,
                    "estimator": type(candidate).__name__,
                    **{k: params[i].get(k) for k in shown},
                    "score": float(np.mean([d[2] for d in mine])),
                    "fit_seconds": float(sum(d[1] for d in mine)),
                }
            )
        return rows

    def _model_files(self, fitted: Fitted, base: str) -> dict[str, Callable[[str], None] | None]:
        files = super()._model_files(fitted, base)
        rows = list(fitted.trials or ())
        names = list(rows[0]) if rows else []
        trials = pa.table({k: _csv_column([row[k] for row in rows]) for k in names})
        files[f"{base}-trials.csv"] = lambda path: pacsv.write_csv(trials, path)
        return files

    def describe_fit(self, parallel: ParallelSettings) -> str:
        how, amount = _score_rule(self.score)
        kinds = sorted({type(c).__name__ for c in self.candidates})
        scored = (
            f"fitted on the first {1 - amount:.0%} of the rows and scored on the rest"
            if how == "holdout"
            else f"{amount}-fold cross-validated, the best refitted on all rows"
        )
        split = choose_split(self.candidates, parallel.n_workers, self.split)
        return (
            f"{self.name!r}: {len(self.candidates)} candidates ({', '.join(kinds)}) on one "
            f"memory-mapped copy of the rows, {scored} ({self.scoring or 'their own score'}); "
            f"{split.describe()}; keeps the best, then {self.method}"
        )

    def to_spec(self) -> dict[str, Any]:
        candidates = _candidates_spec(self.estimator)
        if candidates is None:
            raise TypeError(
                f"stage {self.name!r} was built from estimator objects; only candidates given "
                "by import string (alone, in a list, or as {sklearn: <import string>, "
                "params: {...}}) can be written as a spec"
            )
        spec: dict[str, Any] = {"name": self.name, "train_many": candidates}
        for key in ("params", "grid", "scoring", "apply", "features", "target", "output"):
            value = getattr(self, key)
            if value:
                spec[key] = list(value) if isinstance(value, tuple) else value
        if dict(self.score) != {"holdout": 0.2}:
            spec["score"] = dict(self.score)
        for key, default in (
            ("refit", False),
            ("split", "auto"),
            ("n_jobs", None),
            ("backend", None),
        ):
            if getattr(self, key) != default:
                spec[key] = getattr(self, key)
        return spec


def _candidates_spec(value: Any) -> str | list[Any] | None:
    """``train_many``'s (validated) value as a spec, or ``None`` if it holds estimator objects.

    >>> _candidates_spec(["sklearn.svm.SVR", {"sklearn": "sklearn.linear_model.Ridge"}])
    ['sklearn.svm.SVR', {'sklearn': 'sklearn.linear_model.Ridge'}]
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, Sequence):  # a class or an instance
        return None
    written: list[Any] = []
    for item in value:
        if isinstance(item, str):
            written.append(item)
        elif isinstance(item, Mapping) and isinstance(item["sklearn"], str):
            entry: dict[str, Any] = {"sklearn": item["sklearn"]}
            if item.get("params"):
                entry["params"] = dict(item["params"])
            written.append(entry)
        else:
            return None
    return written


def _identifying(
    params: Mapping[str, Any], kind: type, of_kind: Sequence[Mapping[str, Any]]
) -> set[str]:
    """Parameters that tell a candidate of class ``kind`` (``params``) apart.

    Those set away from the class's defaults, and those that differ between
    the candidates of its class (``of_kind``, their parameters): in a grid
    over ``alpha: [1.0, 10.0]``, the default ``alpha=1.0`` still tells its
    candidate apart. A parameter set to its default does not, as in
    scikit-learn's ``repr``, where ``Ridge(alpha=1.0)`` prints ``Ridge()``.

    >>> from sklearn.linear_model import Ridge
    >>> grid = [Ridge(alpha=a, solver="svd").get_params() for a in (1.0, 2.0)]
    >>> sorted(_identifying(grid[0], Ridge, grid))  # 1.0 is Ridge's default alpha
    ['alpha', 'solver']
    """
    defaults = {k: p.default for k, p in inspect.signature(kind).parameters.items()}
    return {
        key
        for key, value in params.items()
        if defaults.get(key, inspect.Parameter.empty) is inspect.Parameter.empty
        or not _same(value, defaults[key])
        or any(not _same(value, other.get(key)) for other in of_kind)
    }


def _same(a: Any, b: Any) -> bool:
    """``a == b`` for parameter values, including arrays, NaN and estimator objects.

    ``==`` where it gives one truth value (``1 == 1.0``), else, like
    scikit-learn's ``repr``, equal ``repr`` (``nan``, arrays, ``Ridge()``).
    """
    try:
        if bool(a == b):
            return True
    except (TypeError, ValueError):  # arrays: no single truth value
        pass
    return repr(a) == repr(b)


def _csv_column(values: list[Any]) -> pa.Array:
    """A trials column as a CSV file can hold it.

    Numbers, booleans and text stay as they are; a column of anything else
    (tuples, estimator objects, text mixed with numbers as in ``max_features:
    ["sqrt", 0.5]``) is written as text.
    """
    try:
        column = pa.array(values)
    except Exception:  # Arrow's errors, and NumPy's or Python's (2**64, datetimes, complex)
        column = None
    if column is not None and (
        pa.types.is_null(column.type)
        or pa.types.is_string(column.type)
        or pa.types.is_primitive(column.type)
    ):
        return column
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _rows(data: Any, which: Any) -> Any:
    """Rows of ``X`` or ``y`` (a slice: a view of the memmap; indices: a copy)."""
    if data is None or which is None:
        return None
    return data[which]
