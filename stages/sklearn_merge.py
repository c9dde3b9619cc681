"""Exact merges of scikit-learn fits: per-chunk sufficient statistics, combined in order.

Some estimators are fitted from statistics that add up over rows: counts, sums,
means and variances, minima and maxima. For those, fitting every chunk on its
own (in parallel), merging the partial states in chunk order and building the
estimator from the merged state gives the same fitted estimator as ``fit`` on
all the rows, to floating-point rounding. This is ``fit: merge``.

A :class:`Merger` has the shape of :class:`pipeline.Reduction`, with the
estimator passed in:

``chunk(estimator, X, y=None)``
    the statistics of one chunk: a small picklable value that never keeps rows,
    so its size does not grow with the chunk;
``combine(left, right)``
    merges two states (``left`` holds the earlier rows); associative;
``finalize(estimator, state)``
    a fitted clone of the unfitted ``estimator``, with exactly the learned
    attributes scikit-learn's own ``fit`` sets, computed under the
    estimator's parameters.

Chunks are dense arrays (as chunkline hands them to stages); a chunk may have
zero rows. ``sample_weight`` is not supported. Means and variances merge with
the pairwise update of Chan, Golub and LeVeque, which stays exact when the
chunks' means differ greatly.

The built-in merges cover StandardScaler, MinMaxScaler, MaxAbsScaler,
GaussianNB, MultinomialNB, BernoulliNB and ComplementNB;
:func:`register_merge` adds more, :func:`merger_for` finds one.

>>> import numpy as np
>>> from sklearn.preprocessing import StandardScaler
>>> X = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [7.0, 70.0]])
>>> unfitted = StandardScaler()
>>> merger = merger_for(unfitted)
>>> states = [merger.chunk(unfitted, part) for part in (X[:1], X[1:3], X[3:])]
>>> state = merger.combine(merger.combine(states[0], states[1]), states[2])
>>> scaler = merger.finalize(unfitted, state)
>>> scaler.mean_.tolist(), np.allclose(scaler.scale_, StandardScaler().fit(X).scale_)
([4.0, 40.0], True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.naive_bayes import BernoulliNB, ComplementNB, GaussianNB, MultinomialNB
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler, binarize
from sklearn.utils import check_X_y
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_non_negative

from pipeline.errors import DataError

from .learning import (
    ColumnMoments,
    ColumnMomentsOf,
    ColumnRange,
    ColumnRangeOf,
    check_same_features,
    column_moments,
    column_range,
    float_rows,
    merge_column_moments,
    merge_ranges,
)
from .reductions import MomentState, _merge_moments, _moments_of

__all__ = [
    "BernoulliNBMerge",
    "ComplementNBMerge",
    "GaussianNBMerge",
    "MaxAbsScalerMerge",
    "MergeRegistry",
    "Merger",
    "MinMaxScalerMerge",
    "MultinomialNBMerge",
    "StandardScalerMerge",
    "check_params",
    "has_merge",
    "merger_for",
    "register_merge",
]


@runtime_checkable
class Merger(Protocol):
    """An exact merge of an estimator's fit: ``chunk`` per chunk, ``combine``, ``finalize``.

    ``combine`` must be associative; chunkline folds states left to right in
    chunk order, so the fitted estimator does not depend on ``n_jobs``.
    ``chunk`` must accept a chunk with zero rows.
    """

    def chunk(self, estimator: BaseEstimator, X: Any, y: Any = None) -> Any:
        """Sufficient statistics of one chunk (small; no rows kept)."""

    def combine(self, left: Any, right: Any) -> Any:
        """Merge two states (``left`` holds the earlier rows)."""

    def finalize(self, estimator: BaseEstimator, state: Any) -> BaseEstimator:
        """A fitted clone of ``estimator`` built from the merged state."""


# ---------------------------------------------------------------- shared checks


def _require_y(estimator: BaseEstimator, y: Any) -> None:
    if y is None:
        raise ValueError(
            f"{type(estimator).__name__} is supervised: chunk(estimator, X, y) needs the "
            "chunk's targets y, got y=None"
        )


def _require_rows(estimator: BaseEstimator, n_rows: int) -> None:
    if n_rows == 0:
        raise DataError(
            f"cannot fit {type(estimator).__name__}: every chunk was empty (0 rows in total)"
        )


def _check_state(merger: object, state: object, expected: type) -> None:
    if not isinstance(state, expected):
        raise TypeError(
            f"{type(merger).__name__} expects a {expected.__name__} made by its own chunk(), "
            f"got {type(state).__name__}"
        )


def _fitted_clone(merger: _EstimatorMerge, estimator: BaseEstimator, n_features: int) -> Any:
    """An unfitted copy of ``estimator`` with validated parameters and ``n_features_in_``."""
    if not isinstance(estimator, merger.estimator_class):
        raise TypeError(
            f"{type(merger).__name__} merges {merger.estimator_class.__name__} fits, "
            f"got {type(estimator).__name__}"
        )
    fitted = clone(estimator)
    check_params(fitted)  # a merge is a fit: it checks the parameters as fit does
    fitted.n_features_in_ = n_features
    return fitted


def check_params(estimator: BaseEstimator) -> None:
    """Check ``estimator``'s parameter values as its ``fit`` would, before any data.

    scikit-learn's own estimators declare their parameters' constraints and
    check them with the private ``_validate_params`` at the start of ``fit``
    (scikit-learn >= 1.2), raising ``InvalidParameterError`` (a ``ValueError``).
    Estimators that declare none (most third-party ones) are not checked.

    >>> from sklearn.decomposition import PCA
    >>> check_params(PCA(n_components=-1))
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'n_components' parameter of PCA ...
    """
    if getattr(estimator, "_parameter_constraints", None) is not None:
        estimator._validate_params()


def _labelled_chunk(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """X and y as the naive Bayes classifiers validate them (finite X, 1-D class labels)."""
    X, y = check_X_y(X, y, ensure_min_samples=0)
    if len(y):
        check_classification_targets(y)
    return X, y


def _union_classes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sorted union of class labels, as ``numpy.unique`` orders them for ``classes_``."""
    if left.size == 0 or right.size == 0:  # an empty chunk's labels must not change the dtype
        return right if left.size == 0 else left
    if _is_text(left) != _is_text(right):
        raise DataError(
            "Mix of label input types (string and number) across chunks: "
            f"{left.tolist()[:5]} and {right.tolist()[:5]}"
        )
    return np.union1d(left, right)


def _is_text(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "US" or (labels.dtype.kind == "O" and isinstance(labels[0], str))


def _nonzero_scale(scale: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """``scale`` with 1.0 where a feature is (near) constant, as scikit-learn does.

    Mirrors the private ``sklearn.preprocessing._data._handle_zeros_in_scale``, so
    that transforming a constant feature does not divide by zero.
    """
    scale = np.array(scale, copy=True)
    scale[constant] = 1.0
    return scale


@dataclass(frozen=True)
class _EstimatorMerge:
    """What every built-in merger knows: the estimator class it fits."""

    estimator_class: ClassVar[type]


# ---------------------------------------------------------------- StandardScaler


@dataclass(frozen=True)
class StandardScalerMerge(_EstimatorMerge):
    """StandardScaler: per-column counts, means and variances (NaNs skipped per column).

    Sets ``mean_``, ``var_``, ``scale_``, ``n_samples_seen_`` and
    ``n_features_in_`` as ``fit`` does for ``with_mean`` and ``with_std``;
    ``n_samples_seen_`` is one number, or one per column when NaNs make the
    columns' counts differ.
    """

    estimator_class: ClassVar[type] = StandardScaler

    def chunk_reduction(self) -> ColumnMomentsOf:
        """The per-chunk statistic as a NumPy-only reduction, for worker processes."""
        return ColumnMomentsOf()

    def chunk(self, estimator: BaseEstimator, X: Any, y: Any = None) -> ColumnMoments:
        return column_moments(float_rows(X))

    def combine(self, left: ColumnMoments, right: ColumnMoments) -> ColumnMoments:
        return merge_column_moments(left, right)

    def finalize(self, estimator: BaseEstimator, state: ColumnMoments) -> StandardScaler:
        _check_state(self, state, ColumnMoments)
        scaler = _fitted_clone(self, estimator, state.mean.shape[0])
        _require_rows(estimator, state.n_rows)
        count = state.count
        if not scaler.with_mean and not scaler.with_std:
            scaler.mean_ = scaler.var_ = scaler.scale_ = None
        else:
            # scikit-learn passes the counts through its float mean/variance update.
            count = count.astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.where(count > 0, state.mean, np.nan)
                var = state.m2 / count
            scaler.mean_ = mean
            scaler.var_ = var if scaler.with_std else None
            if scaler.with_std:
                # Near-constant features get scale 1, detected on the variance with the
                # error bound of the two-pass algorithm (sklearn's _is_constant_feature).
                eps = np.finfo(np.float64).eps
                constant = var <= count * eps * var + (count * mean * eps) ** 2
                scaler.scale_ = _nonzero_scale(np.sqrt(var), constant)
            else:
                scaler.scale_ = None
        # One number when every column saw every row, as fit reports it.
        scaler.n_samples_seen_ = count[0] if count.min() == count.max() else count
        return scaler


# ---------------------------------------------------------------- MinMaxScaler, MaxAbsScaler


@dataclass(frozen=True)
class _RangeMerge(_EstimatorMerge):
    def chunk_reduction(self) -> ColumnRangeOf:
        """The per-chunk statistic as a NumPy-only reduction, for worker processes."""
        return ColumnRangeOf()

    def chunk(self, estimator: BaseEstimator, X: Any, y: Any = None) -> ColumnRange:
        return column_range(float_rows(X))

    def combine(self, left: ColumnRange, right: ColumnRange) -> ColumnRange:
        return merge_ranges(left, right)


@dataclass(frozen=True)
class MinMaxScalerMerge(_RangeMerge):
    """MinMaxScaler: per-column min and max ignoring NaNs, in the data's float dtype.

    Sets ``data_min_``, ``data_max_``, ``data_range_``, ``scale_``, ``min_``,
    ``n_samples_seen_`` and ``n_features_in_`` under ``feature_range``
    (``clip`` only acts in ``transform``).
    """

    estimator_class: ClassVar[type] = MinMaxScaler

    def finalize(self, estimator: BaseEstimator, state: ColumnRange) -> MinMaxScaler:
        _check_state(self, state, ColumnRange)
        scaler = _fitted_clone(self, estimator, state.minimum.shape[0])
        low, high = scaler.feature_range
        if low >= high:
            raise ValueError(
                "Minimum of desired feature range must be smaller than maximum. "
                f"Got {scaler.feature_range}."
            )
        _require_rows(estimator, state.n_rows)
        dtype = state.minimum.dtype
        low, high = np.asarray(low, dtype=dtype), np.asarray(high, dtype=dtype)
        data_range = state.maximum - state.minimum
        constant = data_range < 10 * np.finfo(dtype).eps
        scaler.n_samples_seen_ = state.n_rows
        scaler.scale_ = (high - low) / _nonzero_scale(data_range, constant)
        scaler.min_ = low - state.minimum * scaler.scale_
        scaler.data_min_ = state.minimum.copy()
        scaler.data_max_ = state.maximum.copy()
        scaler.data_range_ = data_range
        return scaler


@dataclass(frozen=True)
class MaxAbsScalerMerge(_RangeMerge):
    """MaxAbsScaler: the largest absolute value per column, ``max(|min|, |max|)``.

    Sets ``max_abs_``, ``scale_``, ``n_samples_seen_`` and ``n_features_in_``.
    """

    estimator_class: ClassVar[type] = MaxAbsScaler

    def finalize(self, estimator: BaseEstimator, state: ColumnRange) -> MaxAbsScaler:
        _check_state(self, state, ColumnRange)
        scaler = _fitted_clone(self, estimator, state.minimum.shape[0])
        _require_rows(estimator, state.n_rows)
        max_abs = np.maximum(np.abs(state.minimum), np.abs(state.maximum))
        constant = max_abs < 10 * np.finfo(max_abs.dtype).eps
        scaler.n_samples_seen_ = state.n_rows
        scaler.max_abs_ = max_abs
        scaler.scale_ = _nonzero_scale(max_abs, constant)
        return scaler


# ---------------------------------------------------------------- GaussianNB


@dataclass(frozen=True, eq=False)
class ClassMoments:
    """Sorted class labels, the moments of X within each class, and of all of X.

    The moments of all of X are kept because GaussianNB's ``epsilon_`` is
    ``var_smoothing`` times the largest variance of X over every class.
    ``dtype`` is the float dtype of the fitted attributes (float32 stays float32).
    """

    classes: np.ndarray
    per_class: tuple[MomentState, ...]
    overall: MomentState
    dtype: np.dtype


def _aligned(
    classes: np.ndarray, own: np.ndarray, states: tuple[MomentState, ...], empty: MomentState
) -> list[MomentState]:
    """``states`` (for labels ``own``) placed at their labels' positions in ``classes``."""
    out = [empty] * len(classes)
    for position, state in zip(np.searchsorted(classes, own), states, strict=True):
        out[position] = state
    return out


@dataclass(frozen=True)
class GaussianNBMerge(_EstimatorMerge):
    """GaussianNB: class counts and per-class means and variances (Chan's merge).

    Sets ``classes_``, ``class_count_``, ``class_prior_`` (from ``priors`` when
    given, checked as ``fit`` checks them), ``theta_``, ``var_``, ``epsilon_``
    and ``n_features_in_``.
    """

    estimator_class: ClassVar[type] = GaussianNB

    def chunk(self, estimator: BaseEstimator, X: Any, y: Any = None) -> ClassMoments:
        _require_y(estimator, y)
        X, y = _labelled_chunk(X, y)
        classes, inverse = np.unique(y, return_inverse=True)
        per_class = tuple(_moments_of(X[inverse == i]) for i in range(len(classes)))
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)
        return ClassMoments(classes, per_class, _moments_of(X), dtype)

    def combine(self, left: ClassMoments, right: ClassMoments) -> ClassMoments:
        n_features = left.overall.mean.shape[0]
        check_same_features(n_features, right.overall.mean.shape[0])
        classes = _union_classes(left.classes, right.classes)
        empty = MomentState(0, np.zeros(n_features), np.zeros(n_features), None, None)
        per_class = tuple(
            _merge_moments(a, b)
            for a, b in zip(
                _aligned(classes, left.classes, left.per_class, empty),
                _aligned(classes, right.classes, right.per_class, empty),
                strict=True,
            )
        )
        overall = _merge_moments(left.overall, right.overall)
        return ClassMoments(classes, per_class, overall, np.promote_types(left.dtype, right.dtype))

    def finalize(self, estimator: BaseEstimator, state: ClassMoments) -> GaussianNB:
        _check_state(self, state, ClassMoments)
        model = _fitted_clone(self, estimator, state.overall.mean.shape[0])
        _require_rows(estimator, state.overall.n)
        dtype = state.dtype
        class_count = np.array([s.n for s in state.per_class], dtype=np.float64)
        theta = np.stack([s.mean for s in state.per_class])
        var = np.stack([s.m2 / s.n for s in state.per_class])
        epsilon = model.var_smoothing * np.max(state.overall.m2 / state.overall.n)
        if model.priors is not None:
            # The checks and messages of GaussianNB.fit.
            priors = np.asarray(model.priors, dtype=dtype)
            if priors.shape[0] != len(state.classes):
                raise ValueError("Number of priors must match number of classes.")
            if not np.isclose(priors.sum(), 1.0):
                raise ValueError("The sum of the priors should be 1.")
            if np.any(priors < 0):
                raise ValueError("Priors must be non-negative.")
            model.class_prior_ = priors
        else:
            model.class_prior_ = (class_count / class_count.sum()).astype(dtype)
        model.classes_ = state.classes.copy()
        model.class_count_ = class_count.astype(dtype)
        model.theta_ = theta.astype(dtype)
        model.epsilon_ = dtype.type(epsilon)
        model.var_ = (var + epsilon).astype(dtype)
        return model


# ---------------------------------------------------------------- discrete naive Bayes


@dataclass(frozen=True, eq=False)
class ClassCounts:
    """Sorted class labels, rows per class and per-class feature sums (float64)."""

    classes: np.ndarray
    class_count: np.ndarray
    feature_count: np.ndarray


def _scattered(classes: np.ndarray, own: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (one row per label in ``own``) at their labels' rows in ``classes``."""
    out = np.zeros((len(classes), *values.shape[1:]))
    out[np.searchsorted(classes, own)] = values
    return out


@dataclass(frozen=True)
class _DiscreteNBMerge(_EstimatorMerge):
    """Counts shared by MultinomialNB, BernoulliNB and ComplementNB.

    ``finalize`` sets the counts ``fit`` accumulates (``classes_``,
    ``class_count_``, ``feature_count_``) and lets the estimator derive the rest
    (``feature_log_prob_``, ``class_log_prior_``) under its own ``alpha``,
    ``force_alpha``, ``fit_prior``, ``class_prior`` and ``norm``.
    """

    def _counted(self, estimator: BaseEstimator, X: np.ndarray) -> np.ndarray:
        """X as the estimator counts it."""
        raise NotImplementedError

    def chunk(self, estimator: BaseEstimator, X: Any, y: Any = None) -> ClassCounts:
        _require_y(estimator, y)
        X, y = _labelled_chunk(X, y)
        X = self._counted(estimator, X)
        classes, inverse = np.unique(y, return_inverse=True)
        # One-hot labels times X, as fit counts (label_binarize, then Y.T @ X).
        onehot = np.zeros((X.shape[0], len(classes)))
        onehot[np.arange(X.shape[0]), inverse] = 1.0
        return ClassCounts(classes, onehot.sum(axis=0), onehot.T @ X)

    def combine(self, left: ClassCounts, right: ClassCounts) -> ClassCounts:
        check_same_features(left.feature_count.shape[1], right.feature_count.shape[1])
        classes = _union_classes(left.classes, right.classes)
        return ClassCounts(
            classes,
            _scattered(classes, left.classes, left.class_count)
            + _scattered(classes, right.classes, right.class_count),
            _scattered(classes, left.classes, left.feature_count)
            + _scattered(classes, right.classes, right.feature_count),
        )

    def finalize(self, estimator: BaseEstimator, state: ClassCounts) -> Any:
        _check_state(self, state, ClassCounts)
        model = _fitted_clone(self, estimator, state.feature_count.shape[1])
        _require_rows(estimator, int(state.class_count.sum()))
        model.classes_ = state.classes.copy()
        # Copies: partial_fit on the merged model adds to these arrays in place.
        model.class_count_ = state.class_count.copy()
        model.feature_count_ = state.feature_count.copy()
        self._set_derived_counts(model)
        # The smoothing and priors are the estimator's own code, so alpha, force_alpha,
        # fit_prior, class_prior and norm mean exactly what they mean in fit. These are
        # private methods of scikit-learn's _BaseDiscreteNB (the steps fit and
        # partial_fit run after counting); fail clearly if a version renames them.
        steps = ("_check_alpha", "_update_feature_log_prob", "_update_class_log_prior")
        missing = [name for name in steps if not hasattr(model, name)]
        if missing:
            raise RuntimeError(
                f"this scikit-learn has no {type(model).__name__}.{missing[0]}, which the "
                "exact merge of naive Bayes counts relies on; use fit: partial_fit instead"
            )
        model._update_feature_log_prob(model._check_alpha())
        model._update_class_log_prior(class_prior=model.class_prior)
        return model

    def _set_derived_counts(self, model: Any) -> None:
        """Counts that fit derives from the others (none but ComplementNB's)."""


@dataclass(frozen=True)
class MultinomialNBMerge(_DiscreteNBMerge):
    """MultinomialNB: class counts and per-class feature sums (X must be non-negative)."""

    estimator_class: ClassVar[type] = MultinomialNB

    def _counted(self, estimator: BaseEstimator, X: np.ndarray) -> np.ndarray:
        if X.size:  # check_non_negative takes a minimum, which an empty chunk lacks
            check_non_negative(X, f"{type(estimator).__name__} (input X)")
        return X


@dataclass(frozen=True)
class ComplementNBMerge(MultinomialNBMerge):
    """ComplementNB: as MultinomialNB, plus ``feature_all_`` (feature sums over classes)."""

    estimator_class: ClassVar[type] = ComplementNB

    def _set_derived_counts(self, model: Any) -> None:
        model.feature_all_ = model.feature_count_.sum(axis=0)


@dataclass(frozen=True)
class BernoulliNBMerge(_DiscreteNBMerge):
    """BernoulliNB: counts of X binarized at the estimator's ``binarize`` threshold."""

    estimator_class: ClassVar[type] = BernoulliNB

    def _counted(self, estimator: BaseEstimator, X: np.ndarray) -> np.ndarray:
        threshold = estimator.binarize
        if threshold is None or X.shape[0] == 0:  # binarize rejects an empty chunk
            return X
        return binarize(X, threshold=threshold)


# ---------------------------------------------------------------- registry


class MergeRegistry:
    """Estimator classes and their exact merges.

    Lookup is by the estimator's exact class first, then by its base classes in
    method resolution order, so a subclass of StandardScaler uses
    StandardScaler's merge unless one is registered for it.

    >>> from sklearn.preprocessing import StandardScaler
    >>> registry = MergeRegistry({StandardScaler: StandardScalerMerge()})
    >>> registry.names()
    ['StandardScaler']
    >>> registry.has_merge(StandardScaler())
    True
    """

    def __init__(self, merges: Mapping[type, Merger] | None = None) -> None:
        self._merges: dict[type, Merger] = {}
        for estimator_class, merger in (merges or {}).items():
            self.register(estimator_class, merger)

    def register(self, estimator_class: type, merger: Merger) -> None:
        """Use ``merger`` for ``estimator_class`` (replacing any earlier merge for it)."""
        if not isinstance(estimator_class, type):
            raise TypeError(
                "register_merge needs an estimator class, got "
                f"{estimator_class!r}; pass type(estimator) for an instance"
            )
        if isinstance(merger, type):
            raise TypeError(f"register_merge needs a merger instance, got the class {merger!r}")
        missing = [name for name in ("chunk", "combine", "finalize") if not hasattr(merger, name)]
        if missing:
            raise TypeError(
                f"{merger!r} is not a merger: it lacks {', '.join(missing)} "
                "(a merger has chunk(estimator, X, y), combine(left, right) and "
                "finalize(estimator, state))"
            )
        self._merges[estimator_class] = merger

    def names(self) -> list[str]:
        """Sorted names of the estimator classes that have a merge."""
        return sorted(cls.__name__ for cls in self._merges)

    def _find(self, estimator: Any) -> Merger | None:
        cls = estimator if isinstance(estimator, type) else type(estimator)
        for base in cls.__mro__:
            if base in self._merges:
                return self._merges[base]
        return None

    def has_merge(self, estimator: Any, *, exact: bool = False) -> bool:
        """Whether ``estimator`` (an instance or a class) has an exact merge.

        ``exact``: registered for its very class, not inherited from a base
        class (a subclass may fit differently: only use its base's merge when
        asked to).
        """
        cls = estimator if isinstance(estimator, type) else type(estimator)
        return cls in self._merges if exact else self._find(estimator) is not None

    def merger_for(self, estimator: Any) -> Merger:
        """The merge for ``estimator`` (an instance or a class).

        Raises
        ------
        TypeError
            Naming the estimator, the estimators that have a merge, and the fit
            strategies that work instead.
        """
        merger = self._find(estimator)
        if merger is not None:
            return merger
        cls = estimator if isinstance(estimator, type) else type(estimator)
        if hasattr(cls, "partial_fit"):
            instead = f"use fit: partial_fit ({cls.__name__} has partial_fit) or fit: full"
        else:
            instead = "use fit: full or fit: sample"
        raise TypeError(
            f"{cls.__name__} has no exact merge; estimators with one: "
            f"{', '.join(self.names()) or 'none'}. For {cls.__name__}, {instead}"
        )


_BUILT_IN = MergeRegistry(
    {
        StandardScaler: StandardScalerMerge(),
        MinMaxScaler: MinMaxScalerMerge(),
        MaxAbsScaler: MaxAbsScalerMerge(),
        GaussianNB: GaussianNBMerge(),
        MultinomialNB: MultinomialNBMerge(),
        BernoulliNB: BernoulliNBMerge(),
        ComplementNB: ComplementNBMerge(),
    }
)


def register_merge(estimator_class: type, merger: Merger) -> None:
    """Register an exact merge for ``estimator_class`` (and its subclasses).

    The merge must make fitting chunks and combining them in order equal to
    ``fit`` on all rows; registering one for a class replaces the earlier one.

    It registers into the built-in registry, which :func:`merger_for` and
    :func:`has_merge` consult; :meth:`MergeRegistry.register` does the same on a
    registry of your own, as here:

    >>> from sklearn.preprocessing import StandardScaler
    >>> class MyScaler(StandardScaler):
    ...     def fit(self, X, y=None):  # not what StandardScaler's merge computes
    ...         return super().fit(X * 2, y)
    >>> registry = MergeRegistry({StandardScaler: StandardScalerMerge()})
    >>> registry.register(MyScaler, MinMaxScalerMerge())
    >>> registry.merger_for(MyScaler())
    MinMaxScalerMerge()
    """
    _BUILT_IN.register(estimator_class, merger)


def merger_for(estimator: Any) -> Merger:
    """The exact merge for ``estimator`` (an instance or a class).

    >>> from sklearn.naive_bayes import GaussianNB
    >>> merger_for(GaussianNB())
    GaussianNBMerge()
    >>> from sklearn.linear_model import LinearRegression
    >>> merger_for(LinearRegression())
    Traceback (most recent call last):
    ...
    TypeError: LinearRegression has no exact merge; estimators with one: BernoulliNB, ...
    """
    return _BUILT_IN.merger_for(estimator)


def has_merge(estimator: Any, *, exact: bool = False) -> bool:
    """Whether ``estimator`` (an instance or a class) has an exact merge (see MergeRegistry).

    >>> from sklearn.preprocessing import MinMaxScaler, RobustScaler
    >>> has_merge(MinMaxScaler()), has_merge(RobustScaler)
    (True, False)
    """
    return _BUILT_IN.has_merge(estimator, exact=exact)
