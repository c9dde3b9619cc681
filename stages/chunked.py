"""A scikit-learn estimator whose ``fit`` and ``predict`` run chunked, through chunkline.

:class:`ChunkedEstimator` wraps any scikit-learn estimator, in the spirit of
dask-ml's ``ParallelPostFit`` and ``Incremental``. It is itself a
scikit-learn estimator (``clone``, ``get_params``, grid searches, pipelines,
``check_estimator``), and behind its methods it runs a one-stage chunkline
:class:`~pipeline.Pipeline` with an :class:`~stages.Estimator` stage:

``fit``
    by one of the stage's strategies (``fit_strategy``): ``merge`` (exact
    per-chunk statistics, in parallel), ``partial_fit`` (chunk by chunk, in
    chunk order), ``full`` (the estimator's own ``fit`` on all rows) or
    ``sample`` (a uniform sample of ``sample_rows`` rows);
``predict``, ``predict_proba``, ``decision_function``, ``transform``, ``score_samples``
    the fitted model applied to the rows chunk by chunk, in parallel; only the
    methods the wrapped estimator has exist on the wrapper;
``partial_fit``
    one more increment of data, fed to the model's ``partial_fit`` one chunk
    at a time, in this process.

The fitted model is ``estimator_``, a plain scikit-learn estimator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone, is_classifier, is_regressor
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils import Tags, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from pipeline.chunking import ChunkSpec, plan_chunks, resolve_chunk_rows
from pipeline.errors import ChunklineError, DataError, SpecError, SpecIssue, StageError
from pipeline.pipeline import Pipeline, RunResult
from pipeline.registry import did_you_mean
from pipeline.sources import ArraySource
from pipeline.stage import FIT_STRATEGIES, FitSchedule, check_parallel_settings

from .estimators import Estimator
from .learning import native_labels
from .sklearn_merge import check_params, has_merge, merger_for

__all__ = ["ChunkedEstimator"]

_STRATEGIES = ("auto", *FIT_STRATEGIES)
# The knobs that only some strategies use, with their defaults (those of the Estimator stage).
_KNOBS: dict[str, tuple[Any, str]] = {
    "epochs": (1, "partial_fit"),
    "shuffle_chunks": (False, "partial_fit"),
    "sample_rows": (100_000, "sample"),
}


def _inner_has(method: str) -> Callable[[ChunkedEstimator], bool]:
    """Whether the wrapped estimator has ``method``: the fitted one once there is one.

    As for scikit-learn's own meta-estimators, ``hasattr(wrapper, method)`` then
    answers as ``hasattr(inner, method)`` does, including methods that the inner
    estimator itself only offers for some parameters (``SVC.predict_proba``).
    """

    def check(self: ChunkedEstimator) -> bool:
        inner = self.estimator_ if hasattr(self, "estimator_") else self.estimator
        return hasattr(inner, method)

    return check


def _invalid(who: str, issues: list[SpecIssue]) -> ValueError:
    """One ``ValueError`` naming every bad parameter (``who.parameter: problem``)."""
    lines = [f"{who}.{issue.path}: {issue.message}" for issue in issues]
    if len(lines) == 1:
        return ValueError(lines[0])
    listed = "\n".join(f"  - {line}" for line in lines)
    return ValueError(f"{len(lines)} problems in the parameters of {who}:\n{listed}")


def _original(error: StageError) -> BaseException:
    """The exception the wrapped estimator raised, which a StageError carries as its cause.

    scikit-learn's contract is that ``fit`` raises the estimator's own errors
    (a ``ValueError`` for one class, bad labels, ...). The engine wraps them in
    a :class:`~pipeline.errors.StageError` naming the stage and the chunk,
    which become a note on the original. The cause is the original only when
    the engine ran the failing code in this process (the fit itself, its
    check of the first rows, any chunk with ``n_jobs=1``); from a worker
    process it is a remote traceback, and the StageError itself is raised.
    """
    cause = error.__cause__
    if not isinstance(cause, Exception):
        return error
    # chunkline's checks of the rows (DataError) stand in for the estimator's own.
    own_error = not isinstance(cause, ChunklineError) and error.reason.startswith(
        f"{type(cause).__name__}: "
    )
    if not (own_error or isinstance(cause, DataError)):
        return error
    if hasattr(cause, "add_note"):  # Python >= 3.11
        where = "" if error.chunk is None else f" on chunk {error.chunk}"
        if isinstance(error.rows, tuple):
            where += f" (rows {error.rows[0]}-{error.rows[1]})"
        cause.add_note(f"(raised inside chunkline, in stage {error.stage!r}{where})")
    return cause


class ChunkedEstimator(MetaEstimatorMixin, BaseEstimator):
    """A scikit-learn estimator fitted and applied chunk by chunk, in parallel, by chunkline.

    Parameters
    ----------
    estimator
        The scikit-learn estimator to wrap (an unfitted instance). It is
        cloned at ``fit``; the fitted clone is ``estimator_``.
    fit_strategy
        How ``fit`` learns from the rows (``fit`` cannot be the parameter's name,
        it is the method's):

        ``"auto"`` (default)
            ``"merge"`` when the estimator has an exact merge
            (:func:`stages.has_merge`: the scalers, naive Bayes), else
            ``"full"``. The data is in memory already, so the estimator's own
            ``fit`` on all rows is the faithful default; ``"partial_fit"`` and
            ``"sample"``, which give a different model, are used only when asked.
        ``"merge"``
            per-chunk sufficient statistics computed in parallel and merged in
            chunk order: the same model as ``fit`` on all rows, to rounding.
        ``"partial_fit"``
            the estimator's ``partial_fit`` on every chunk, in chunk order, for
            ``epochs`` passes (chunks shuffled by ``seed`` if ``shuffle_chunks``).
        ``"full"``
            the estimator's ``fit`` on all rows at once.
        ``"sample"``
            ``fit`` on ``sample_rows`` rows drawn uniformly at random (``seed``).
    chunk_rows
        Rows per chunk; ``None``: chunkline's default (about 4 MiB of rows).
    n_jobs, backend
        joblib's meaning, for chunkline's parallel passes (``backend``: ``"loky"``,
        ``"threading"``, ``"sequential"`` or ``"dask"``). ``None``: a caller's
        ``joblib.parallel_config``, else all cores on ``loky``.
    epochs, shuffle_chunks
        ``fit_strategy="partial_fit"`` only: passes over the chunks, and whether
        each pass visits them in a random order.
    seed
        Seed of the chunk order (``shuffle_chunks``) and of the sample (``"sample"``).
    sample_rows
        ``fit_strategy="sample"`` only: rows in the sample.

    Attributes
    ----------
    estimator_
        The fitted estimator (a plain scikit-learn estimator, fitted on
        NumPy arrays).
    fit_strategy_
        The strategy ``fit`` used (``"auto"`` resolved).
    classes_
        The class labels, for classifiers. Labels given as an object array are
        fitted as their NumPy equivalent (strings as ``str``, numbers as numbers).
    n_features_in_, feature_names_in_
        As in scikit-learn (``feature_names_in_`` when ``X`` had column names).

    Notes
    -----
    chunkline's engine handles dense arrays: sparse ``X`` raises a
    ``TypeError``; ``sample_weight`` and other fit parameters are not
    supported. Input is validated as scikit-learn validates it, following
    the wrapped estimator's tags (missing values, number of features, targets).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from stages import ChunkedEstimator
    >>> X = np.arange(40.0).reshape(20, 2)
    >>> y = (X[:, 0] > 19).astype(int)
    >>> clf = ChunkedEstimator(LogisticRegression(), chunk_rows=6, n_jobs=1).fit(X, y)
    >>> clf.fit_strategy_, clf.predict(X[[0, -1]]).tolist()
    ('full', [0, 1])
    >>> bool(np.array_equal(clf.predict_proba(X), LogisticRegression().fit(X, y).predict_proba(X)))
    True
    """

    # Learned in fit; annotations only: an unfitted instance must not have them.
    estimator_: Any
    fit_strategy_: str
    classes_: np.ndarray

    def __init__(
        self,
        estimator: Any = None,
        *,
        fit_strategy: str = "auto",
        chunk_rows: int | None = None,
        n_jobs: int | None = None,
        backend: str | None = None,
        epochs: int = 1,
        shuffle_chunks: bool = False,
        seed: int = 0,
        sample_rows: int = 100_000,
    ) -> None:
        self.estimator = estimator
        self.fit_strategy = fit_strategy
        self.chunk_rows = chunk_rows
        self.n_jobs = n_jobs
        self.backend = backend
        self.epochs = epochs
        self.shuffle_chunks = shuffle_chunks
        self.seed = seed
        self.sample_rows = sample_rows

    # ------------------------------------------------------------ scikit-learn API

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        if self.estimator is None or not hasattr(self.estimator, "get_params"):
            return tags
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.target_tags = dataclasses.replace(inner.target_tags)
        for kind in ("classifier_tags", "regressor_tags", "transformer_tags"):
            value = getattr(inner, kind)
            setattr(tags, kind, None if value is None else dataclasses.replace(value))
        # chunkline cuts dense arrays of numbers into chunks: no sparse matrices,
        # strings, dicts or categorical columns, whatever the estimator takes.
        tags.input_tags = dataclasses.replace(
            inner.input_tags, sparse=False, string=False, dict=False, categorical=False
        )
        tags.non_deterministic = inner.non_deterministic
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "estimator_")

    def fit(self, X: Any, y: Any = None) -> ChunkedEstimator:
        """Fit a clone of ``estimator`` on ``X`` (and ``y``) by ``fit_strategy``.

        Returns
        -------
        self
        """
        self._fit(X, y, apply=None)
        return self

    @available_if(_inner_has("transform"))
    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit, then transform ``X`` in the same chunkline run (as ``fit(X, y).transform(X)``)."""
        out = self._fit(X, y, apply="transform")
        assert out is not None
        return out

    @available_if(_inner_has("partial_fit"))
    def partial_fit(self, X: Any, y: Any = None, classes: Any = None) -> ChunkedEstimator:
        """Learn from one more batch: ``estimator_.partial_fit`` on its chunks, in order.

        The first call clones ``estimator``; later calls (also after ``fit``)
        continue from ``estimator_``. ``classes``: every class label, needed
        by classifiers on the first call, as for their own ``partial_fit``.
        The chunks are fed in this process: ``partial_fit`` is sequential, and
        the batch is in memory already.

        Returns
        -------
        self
        """
        estimator = self._checked_estimator()
        self._check_params()
        first = not hasattr(self, "estimator_")
        X, y = self._validated_fit_data(X, y, reset=first)
        model = clone(estimator) if first else self.estimator_
        rows = resolve_chunk_rows(ChunkSpec(rows=self.chunk_rows), X[:1].nbytes, 1)
        kwargs = {} if classes is None else {"classes": classes}
        for chunk in plan_chunks(X.shape[0], rows):
            part = slice(chunk.start, chunk.stop)
            if y is None:
                model.partial_fit(X[part], **kwargs)
            else:
                model.partial_fit(X[part], y[part], **kwargs)
            kwargs = {}  # classes are given once, on the first call, as scikit-learn asks
        self.estimator_ = model
        if first:
            self.fit_strategy_ = "partial_fit"
        self._copy_fitted_attributes()
        return self

    @available_if(_inner_has("predict"))
    def predict(self, X: Any) -> np.ndarray:
        """``estimator_.predict`` on the chunks of ``X``, in parallel."""
        return self._apply("predict", X)

    @available_if(_inner_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        """``estimator_.predict_proba`` on the chunks of ``X``, in parallel."""
        return self._apply("predict_proba", X)

    @available_if(_inner_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        """``estimator_.decision_function`` on the chunks of ``X``, in parallel."""
        return self._apply("decision_function", X)

    @available_if(_inner_has("transform"))
    def transform(self, X: Any) -> np.ndarray:
        """``estimator_.transform`` on the chunks of ``X``, in parallel."""
        return self._apply("transform", X)

    @available_if(_inner_has("score_samples"))
    def score_samples(self, X: Any) -> np.ndarray:
        """``estimator_.score_samples`` on the chunks of ``X``, in parallel."""
        return self._apply("score_samples", X)

    @available_if(_inner_has("score"))
    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy (classifiers) or R² (regressors) of the chunked ``predict``.

        Other estimators' ``score`` (a clusterer's, a density's) runs on all of
        ``X`` at once, in this process.
        """
        if is_classifier(self):
            return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))
        if is_regressor(self):
            return float(r2_score(y, self.predict(X), sample_weight=sample_weight))
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite=self._finite())
        kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        return float(self.estimator_.score(X, y, **kwargs))

    # ------------------------------------------------------------ how it runs

    def _fit(self, X: Any, y: Any, apply: str | None) -> np.ndarray | None:
        estimator = self._checked_estimator()
        self._check_params()
        strategy = self._resolve_strategy(estimator)
        X, y = self._validated_fit_data(X, y, reset=True)
        knobs = {key: getattr(self, key) for key, (_, used) in _KNOBS.items() if used == strategy}
        if strategy in ("partial_fit", "sample"):
            knobs["seed"] = self.seed
        stage = Estimator(clone(estimator), fit=strategy, apply=apply, **knobs)
        result = self._run(ArraySource(X, y), stage, output=apply is not None)
        self.estimator_ = result.models[stage.name]
        self.fit_strategy_ = strategy
        self._copy_fitted_attributes()
        return None if apply is None else np.asarray(result.output)

    def _apply(self, method: str, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite=self._finite())
        stage = Estimator(model=self.estimator_, apply=method, name=type(self.estimator_).__name__)
        return np.asarray(self._run(ArraySource(X), stage, output=True).output)

    def _run(self, source: ArraySource, stage: Estimator, *, output: bool) -> RunResult:
        run = Pipeline(
            source,
            [stage],
            chunks=self.chunk_rows,
            n_jobs=self.n_jobs,
            backend=self.backend,
            name=type(self).__name__,
        )
        try:
            return run.run(progress=False, output=output)
        except StageError as exc:
            original = _original(exc)
            if original is exc:
                raise  # with its cause: the worker's traceback
            raise original from None

    def _copy_fitted_attributes(self) -> None:
        if hasattr(self.estimator_, "classes_"):
            self.classes_ = self.estimator_.classes_

    # ------------------------------------------------------------ checks

    def _checked_estimator(self) -> Any:
        name = type(self).__name__
        if self.estimator is None:
            raise ValueError(
                f"{name}.estimator: give the scikit-learn estimator to wrap, "
                f"e.g. {name}(LogisticRegression()); got None"
            )
        if isinstance(self.estimator, type) or not (
            hasattr(self.estimator, "fit") and hasattr(self.estimator, "get_params")
        ):
            raise TypeError(
                f"{name}.estimator: expected a scikit-learn estimator instance "
                f"(e.g. LogisticRegression()), got {self.estimator!r}"
            )
        # A bad parameter raises scikit-learn's own InvalidParameterError, as fit would.
        check_params(self.estimator)
        return self.estimator

    def _check_params(self) -> None:
        """Check every parameter but ``estimator``; report all problems at once."""
        issues: list[SpecIssue] = []
        try:
            check_parallel_settings(self.n_jobs, self.backend, "")
        except SpecError as exc:
            issues.extend(exc.issues)
        if self.fit_strategy not in _STRATEGIES:
            hint = did_you_mean(str(self.fit_strategy), _STRATEGIES)
            issues.append(
                SpecIssue(
                    "fit_strategy",
                    f"expected one of {', '.join(_STRATEGIES)}, got {self.fit_strategy!r}{hint}",
                )
            )
        rows = self.chunk_rows
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            issues.append(
                SpecIssue("chunk_rows", f"expected a positive integer or None, got {rows!r}")
            )
        try:
            FitSchedule(
                strategy="partial_fit",
                epochs=self.epochs,
                shuffle_chunks=self.shuffle_chunks,
                seed=self.seed,
                sample_rows=self.sample_rows,
            )
        except SpecError as exc:
            issues.extend(exc.issues)
        if issues:
            raise _invalid(type(self).__name__, issues)

    def _resolve_strategy(self, estimator: Any) -> str:
        """``fit_strategy`` with ``"auto"`` resolved, checked against the estimator."""
        name = type(self).__name__
        kind = type(estimator).__name__
        strategy = self.fit_strategy
        if strategy == "auto":
            strategy = "merge" if has_merge(estimator, exact=True) else "full"
        if strategy == "merge" and not has_merge(estimator):
            try:
                merger_for(estimator)
            except TypeError as exc:
                # merger_for's own advice speaks of spec keys ("fit: full"); give ours.
                why = str(exc).split(". For ")[0]
                advice = "'full'" + (", 'partial_fit'" if hasattr(estimator, "partial_fit") else "")
                message = f"'merge' is not possible: {why}; use fit_strategy={advice} or 'sample'"
                raise _invalid(name, [SpecIssue("fit_strategy", message)]) from None
        if strategy == "partial_fit" and not hasattr(estimator, "partial_fit"):
            message = (
                f"'partial_fit' is not possible: {kind} has no partial_fit; use "
                "fit_strategy='full' (all rows at once) or 'sample'"
            )
            raise _invalid(name, [SpecIssue("fit_strategy", message)])
        for key, (default, used) in _KNOBS.items():
            value = getattr(self, key)
            if value != default and strategy != used:
                how = f"fit_strategy={self.fit_strategy!r}"
                if self.fit_strategy == "auto":
                    how += f", which is {strategy!r} for {kind}"
                message = f"{key}={value!r} is only used with fit_strategy={used!r} ({how})"
                raise _invalid(name, [SpecIssue(key, message)])
        return strategy

    def _finite(self) -> bool | str:
        """``ensure_all_finite`` for ``validate_data``: NaN only if the estimator allows it."""
        return "allow-nan" if get_tags(self).input_tags.allow_nan else True

    def _validated_fit_data(self, X: Any, y: Any, *, reset: bool) -> tuple[np.ndarray, Any]:
        """``X`` and ``y`` checked as scikit-learn checks them, as arrays chunkline can map."""
        tags = get_tags(self)
        finite = self._finite()
        supervised = tags.target_tags.required or is_classifier(self) or is_regressor(self)
        if y is None or not supervised:
            # validate_data raises "requires y to be passed" for a supervised estimator.
            X = validate_data(self, X, y=None, reset=reset, ensure_all_finite=finite)
            if y is not None:  # an unsupervised estimator: y is passed on as given
                y = native_labels(np.asarray(y))
                check_consistent_length(X, y)
        else:
            X, y = validate_data(
                self,
                X,
                y,
                reset=reset,
                ensure_all_finite=finite,
                multi_output=tags.target_tags.multi_output,
                y_numeric=is_regressor(self),
            )
            if is_classifier(self):
                # Here, not in a worker, so the message is scikit-learn's own.
                check_classification_targets(y)
            y = native_labels(np.asarray(y))
        return np.asarray(X), y
