"""Exact merges of scikit-learn fits: chunked and merged in order == ``fit`` on all rows.

Oracle tests cut X (and y) at Hypothesis-chosen split points (repeated points
give empty chunks, adjacent ones single-row chunks), run ``chunk`` on each
piece, ``combine`` the states left to right in chunk order as the executor does,
``finalize``, and compare every learned attribute and the estimator's outputs
with scikit-learn's own ``fit`` on the whole array. Then: associativity, state
size, the registry, and every error message.
"""

from __future__ import annotations

import itertools
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LinearRegression, SGDClassifier
from sklearn.naive_bayes import BernoulliNB, ComplementNB, GaussianNB, MultinomialNB
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted

from stages.sklearn_merge import (
    GaussianNBMerge,
    MaxAbsScalerMerge,
    Merger,
    MergeRegistry,
    MinMaxScalerMerge,
    StandardScalerMerge,
    has_merge,
    merger_for,
)

RTOL = 1e-10
N_FEATURES = 4

# Every parameter that changes what fit learns, on each estimator with a merge.
SCALERS = [
    StandardScaler(),
    StandardScaler(with_mean=False),
    StandardScaler(with_std=False),
    StandardScaler(with_mean=False, with_std=False),
    MinMaxScaler(),
    MinMaxScaler(feature_range=(-3.0, 2.0), clip=True),
    MaxAbsScaler(),
    MaxAbsScaler(clip=True),
]
GAUSSIAN = [GaussianNB(), GaussianNB(var_smoothing=1e-2)]
DISCRETE = [
    MultinomialNB(),
    MultinomialNB(alpha=0.3, fit_prior=False),
    MultinomialNB(alpha=[0.1, 0.5, 1.0, 2.0]),
    BernoulliNB(),
    BernoulliNB(binarize=1.5, alpha=0.5),
    BernoulliNB(binarize=None),  # data given as 0/1 already
    ComplementNB(),
    ComplementNB(norm=True, alpha=0.2),
]
ALL = SCALERS + GAUSSIAN + DISCRETE

FAST = settings(max_examples=25, deadline=None, derandomize=True)


def name_of(estimator: BaseEstimator) -> str:
    return repr(estimator).replace(" ", "")


# ---------------------------------------------------------------- data and folding


def bounds_of(n: int, points: list[int]) -> list[tuple[int, int]]:
    """Consecutive row ranges covering 0..n, cut at ``points`` (repeats give empty ones)."""
    cuts = [0, *sorted(points), n]
    return list(itertools.pairwise(cuts))


def make_data(
    estimator: BaseEstimator, n: int, seed: int, *, nan: bool = False, text_labels: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """X (and y for classifiers) suited to ``estimator``.

    Continuous data has row blocks at very different levels, so that chunk
    means differ by orders of magnitude; count data is Poisson.
    """
    rng = np.random.default_rng(seed)
    labels: np.ndarray = np.array(["eggs", "ham", "spam"]) if text_labels else np.array([3, 7, 11])
    y = labels[rng.integers(0, 3, size=n)]
    if isinstance(estimator, (MultinomialNB, ComplementNB, BernoulliNB)):
        X = rng.poisson(1.5, size=(n, N_FEATURES)).astype(np.float64)
        if isinstance(estimator, BernoulliNB) and estimator.binarize is None:
            X = (X > 1).astype(np.float64)
        X += (y == labels[0])[:, None] * np.arange(N_FEATURES)  # classes differ
        return X, y
    levels = np.array([0.0, 50.0, -1e3, 1e4])
    block = np.cumsum(rng.random(n) < 0.25) % len(levels)
    X = rng.normal(size=(n, N_FEATURES)) * rng.uniform(0.5, 3, N_FEATURES) + levels[block, None]
    if isinstance(estimator, GaussianNB):
        X[:, 0] += (y == labels[1]) * 5.0
        return X, y
    if nan:
        X[rng.random(X.shape) < 0.2] = np.nan
        if n > 2:
            X[: n // 2, 1] = np.nan  # a column with no values in the first chunks
    return X, None


def fold(
    estimator: BaseEstimator,
    X: np.ndarray,
    y: np.ndarray | None,
    bounds: list[tuple[int, int]],
    merger: Merger | None = None,
) -> BaseEstimator:
    """chunk -> combine in chunk order -> finalize, as the executor does."""
    merger = merger or merger_for(estimator)
    states = [merger.chunk(estimator, X[a:b], None if y is None else y[a:b]) for a, b in bounds]
    state = states[0]
    for right in states[1:]:
        state = merger.combine(state, right)
    return merger.finalize(estimator, state)


def reference_fit(estimator: BaseEstimator, X: np.ndarray, y: np.ndarray | None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return clone(estimator).fit(X, y)


def learned(estimator: BaseEstimator) -> dict[str, Any]:
    return {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}


def assert_close(got: Any, want: Any, what: str, rtol: float = RTOL) -> None:
    """Equal to ``rtol``, relative to each array's own magnitude near zero (NaNs equal)."""
    if want is None:
        assert got is None, what
        return
    want_arr, got_arr = np.asarray(want), np.asarray(got)
    assert got_arr.shape == want_arr.shape, what
    if want_arr.dtype.kind in "biu":
        np.testing.assert_array_equal(got_arr, want_arr, err_msg=what)
        return
    finite = np.abs(want_arr[np.isfinite(want_arr)])
    atol = rtol * (finite.max() if finite.size else 1.0)
    np.testing.assert_allclose(got_arr, want_arr, rtol=rtol, atol=atol, err_msg=what)


def assert_same_fit(
    merged: Any, reference: Any, X: np.ndarray, rtol: float = RTOL, types: bool = True
) -> None:
    """Same learned attributes (names, types, values) and the same outputs on X."""
    check_is_fitted(merged)
    got, want = learned(merged), learned(reference)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if name == "classes_":
            np.testing.assert_array_equal(got[name], value)
            continue
        if types:
            assert type(got[name]) is type(value), name
            assert np.asarray(got[name]).dtype == np.asarray(value).dtype, name
        assert_close(got[name], value, name, rtol)
    assert merged.get_params() == reference.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if hasattr(reference, "transform"):
            assert_close(merged.transform(X), reference.transform(X), "transform", rtol)
        else:
            np.testing.assert_array_equal(merged.predict(X), reference.predict(X))
            proba = reference.predict_proba(X)
            assert_close(merged.predict_proba(X), proba, "predict_proba", rtol)


@st.composite
def chunked(draw: Any, min_rows: int = 1, max_rows: int = 40) -> tuple[int, int, list]:
    """(rows, seed, chunk bounds): up to 9 chunks, some empty or a single row."""
    n = draw(st.integers(min_rows, max_rows))
    points = draw(st.lists(st.integers(0, n), max_size=8))
    return n, draw(st.integers(0, 2**32 - 1)), bounds_of(n, points)


# ---------------------------------------------------------------- oracle


@pytest.mark.parametrize("estimator", SCALERS, ids=name_of)
@FAST
@given(case=chunked(), nan=st.booleans())
def test_scaler_merge_equals_fit(estimator, case, nan):
    n, seed, bounds = case
    X, _ = make_data(estimator, n, seed, nan=nan)
    assert_same_fit(fold(estimator, X, None, bounds), reference_fit(estimator, X, None), X)


@pytest.mark.parametrize("estimator", GAUSSIAN + DISCRETE, ids=name_of)
@FAST
@given(case=chunked(), text_labels=st.booleans())
def test_classifier_merge_equals_fit(estimator, case, text_labels):
    n, seed, bounds = case
    X, y = make_data(estimator, n, seed, text_labels=text_labels)
    assert_same_fit(fold(estimator, X, y, bounds), reference_fit(estimator, X, y), X)


@pytest.mark.parametrize("estimator", ALL, ids=name_of)
def test_every_row_its_own_chunk(estimator):
    X, y = make_data(estimator, 30, seed=1, nan=True)
    bounds = [(i, i + 1) for i in range(30)]
    assert_same_fit(fold(estimator, X, y, bounds), reference_fit(estimator, X, y), X)


@pytest.mark.parametrize("estimator", [StandardScaler(), GaussianNB()], ids=name_of)
def test_variance_of_chunks_with_very_different_means(estimator, rng):
    # Four chunks around 0, 1e6, -1e6 and 1e3 with unit spread inside each: a merge
    # of sums of squares would lose the within-chunk variance to cancellation.
    levels = [0.0, 1e6, -1e6, 1e3]
    X = np.concatenate([level + rng.normal(size=(50, 3)) for level in levels])
    y = np.tile([0, 1], 100)
    bounds = [(i, i + 50) for i in range(0, 200, 50)]
    merged = fold(estimator, X, y, bounds)
    assert_same_fit(merged, reference_fit(estimator, X, y), X)


@pytest.mark.parametrize("estimator", [StandardScaler(), MinMaxScaler(), MaxAbsScaler()])
def test_constant_and_near_constant_columns_get_scale_one(estimator):
    x = np.linspace(0, 1, 12)
    X = np.column_stack([np.full(12, 7.0), 1e6 + 1e-9 * x, x])
    merged = fold(estimator, X, None, [(0, 5), (5, 6), (6, 12)])
    reference = reference_fit(estimator, X, None)
    np.testing.assert_array_equal(merged.scale_[:2], reference.scale_[:2])
    assert_close(merged.transform(X), reference.transform(X), "transform")


def test_standard_scaler_counts_values_per_column_when_there_are_nans():
    X = np.arange(24.0).reshape(8, 3)
    X[:3, 1] = np.nan  # only in the first chunk
    X[:, 2] = np.nan  # no values at all
    merged = fold(StandardScaler(), X, None, [(0, 3), (3, 8)])
    np.testing.assert_array_equal(merged.n_samples_seen_, [8, 5, 0])
    assert_same_fit(merged, reference_fit(StandardScaler(), X, None), X)


@pytest.mark.parametrize("estimator", [MinMaxScaler(), MaxAbsScaler()], ids=name_of)
def test_a_column_all_nan_in_the_first_chunk_does_not_hide_later_values(estimator):
    # The scalers' own partial_fit merges bounds with np.minimum/np.maximum, which
    # would keep NaN here; fit on all rows ignores the NaNs, and so must the merge.
    X = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, -4.0], [5.0, 6.0]])
    merged = fold(estimator, X, None, [(0, 2), (2, 4)])
    assert not np.isnan(merged.scale_).any()
    assert_same_fit(merged, reference_fit(estimator, X, None), X)


@pytest.mark.parametrize(
    "estimator", [StandardScaler(), MinMaxScaler(), MaxAbsScaler(), GaussianNB()], ids=name_of
)
def test_float32_data_keeps_float32_attributes(estimator, rng):
    X = (rng.normal(size=(40, 3)) * 3 + 10).astype(np.float32)
    y = np.repeat([0, 1], 20)
    merged = fold(estimator, X, y, [(0, 7), (7, 8), (8, 40)])
    # Merged in float64 where fit accumulates in float32: equal to float32 precision.
    assert_same_fit(merged, reference_fit(estimator, X, y), X, rtol=1e-5)


def test_integer_data(rng):
    X = rng.integers(0, 9, size=(30, 3))
    y = np.repeat([0, 1, 2], 10)
    for estimator in (StandardScaler(), MinMaxScaler(), GaussianNB(), MultinomialNB()):
        merged = fold(estimator, X, y, [(0, 11), (11, 30)])
        assert_same_fit(merged, reference_fit(estimator, X, y), X)


@pytest.mark.parametrize("estimator", GAUSSIAN + DISCRETE, ids=name_of)
def test_classes_missing_from_some_chunks_and_a_single_class(estimator):
    X, _ = make_data(estimator, 12, seed=3)
    y = np.array(["b"] * 4 + ["a"] * 4 + ["c"] * 4)  # each chunk sees one class
    bounds = [(0, 4), (4, 4), (4, 8), (8, 12)]
    assert_same_fit(fold(estimator, X, y, bounds), reference_fit(estimator, X, y), X)
    one = np.full(12, "a")  # fit's degenerate one-class case
    assert_same_fit(fold(estimator, X, one, bounds), reference_fit(estimator, X, one), X)


def test_an_empty_first_chunk_does_not_change_the_labels_dtype():
    X, y = make_data(GaussianNB(), 10, seed=4, text_labels=True)
    X = np.concatenate([np.empty((0, N_FEATURES)), X])
    merged = fold(GaussianNB(), X, y, [(0, 0), (0, 10)])
    assert merged.classes_.dtype.kind == "U"
    assert merged.predict(X[:1]).dtype.kind == "U"


def test_gaussian_nb_priors_are_respected():
    X, y = make_data(GaussianNB(), 30, seed=5)
    estimator = GaussianNB(priors=[0.2, 0.3, 0.5])
    merged = fold(estimator, X, y, [(0, 10), (10, 30)])
    np.testing.assert_array_equal(merged.class_prior_, [0.2, 0.3, 0.5])
    assert_same_fit(merged, reference_fit(estimator, X, y), X)


@pytest.mark.parametrize("estimator", [MultinomialNB, BernoulliNB, ComplementNB])
def test_discrete_nb_class_prior_is_respected(estimator):
    model = estimator(class_prior=[0.5, 0.25, 0.25])
    X, y = make_data(model, 30, seed=6)
    merged = fold(model, X, y, [(0, 10), (10, 30)])
    assert_same_fit(merged, reference_fit(model, X, y), X)


# ---------------------------------------------------------------- merge properties


@pytest.mark.parametrize("estimator", ALL, ids=name_of)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(data=st.data())
def test_combine_is_associative(estimator, data):
    n = data.draw(st.integers(3, 30))
    first, second = sorted(data.draw(st.lists(st.integers(1, n - 1), min_size=2, max_size=2)))
    X, y = make_data(estimator, n, data.draw(st.integers(0, 2**32 - 1)), nan=True)
    merger = merger_for(estimator)
    a, b, c = (
        merger.chunk(estimator, X[lo:hi], None if y is None else y[lo:hi])
        for lo, hi in [(0, first), (first, second), (second, n)]
    )
    left = merger.finalize(estimator, merger.combine(merger.combine(a, b), c))
    right = merger.finalize(estimator, merger.combine(a, merger.combine(b, c)))
    assert_same_fit(left, right, X)


@pytest.mark.parametrize("estimator", ALL, ids=name_of)
def test_state_is_small_and_does_not_grow_with_rows(estimator):
    merger = merger_for(estimator)
    sizes = []
    for rows in (20, 20_000):
        X, y = make_data(estimator, rows, seed=7)
        state = merger.chunk(estimator, X, y)
        sizes.append(len(pickle.dumps(state)))
        reloaded = merger.finalize(estimator, pickle.loads(pickle.dumps(state)))
        assert_same_fit(reloaded, merger.finalize(estimator, state), X[:5])
    small, large = sizes
    assert large <= small + 32  # an integer count may take a few more bytes
    assert large < 5_000


def test_finalize_returns_a_fitted_clone_and_leaves_the_estimator_alone():
    estimator = MinMaxScaler(feature_range=(-1.0, 1.0))
    X, _ = make_data(estimator, 10, seed=8)
    merged = fold(estimator, X, None, [(0, 10)])
    assert merged is not estimator
    assert merged.get_params() == estimator.get_params()
    assert learned(estimator) == {}


def test_a_merged_model_continues_with_partial_fit_like_a_fitted_one():
    estimator = MultinomialNB()
    X, y = make_data(estimator, 40, seed=9)
    merger = merger_for(estimator)
    state = merger.combine(
        merger.chunk(estimator, X[:10], y[:10]), merger.chunk(estimator, X[10:30], y[10:30])
    )
    before = state.feature_count.copy()
    merged = merger.finalize(estimator, state)
    merged.partial_fit(X[30:], y[30:])
    np.testing.assert_array_equal(state.feature_count, before)  # the state is not shared
    assert_same_fit(merged, reference_fit(estimator, X, y), X)


@pytest.mark.parametrize("estimator", [StandardScaler(), GaussianNB()], ids=name_of)
def test_same_result_from_parallel_workers(estimator):
    X, y = make_data(estimator, 400, seed=10)
    merger = merger_for(estimator)
    bounds = [(i, i + 57) for i in range(0, 400, 57)]
    states = Parallel(n_jobs=2)(
        delayed(merger.chunk)(estimator, X[a:b], y if y is None else y[a:b]) for a, b in bounds
    )
    state = states[0]
    for right in states[1:]:
        state = merger.combine(state, right)
    parallel = merger.finalize(estimator, state)
    sequential = fold(estimator, X, y, bounds)
    assert_same_fit(parallel, sequential, X, rtol=0)


# ---------------------------------------------------------------- registry


def test_every_built_in_merger_follows_the_protocol():
    for estimator in ALL:
        assert isinstance(merger_for(estimator), Merger)
        assert has_merge(estimator) and has_merge(type(estimator))


def test_subclasses_use_their_base_class_merge_unless_registered():
    class MyScaler(StandardScaler):
        pass

    registry = MergeRegistry({StandardScaler: StandardScalerMerge()})
    assert registry.merger_for(MyScaler()) == StandardScalerMerge()
    registry.register(MyScaler, MinMaxScalerMerge())
    assert registry.merger_for(MyScaler) == MinMaxScalerMerge()
    assert registry.merger_for(StandardScaler()) == StandardScalerMerge()
    assert registry.names() == ["MyScaler", "StandardScaler"]


def test_a_registered_merge_is_used_by_the_fold():
    class Doubled(MaxAbsScaler):
        pass

    registry = MergeRegistry()
    registry.register(Doubled, MaxAbsScalerMerge())
    X, _ = make_data(MaxAbsScaler(), 20, seed=11)
    merged = fold(Doubled(), X, None, [(0, 3), (3, 20)], registry.merger_for(Doubled()))
    assert isinstance(merged, Doubled)
    assert_same_fit(merged, reference_fit(Doubled(), X, None), X)


# ---------------------------------------------------------------- errors


def test_an_estimator_without_merge_names_the_ones_with_one():
    known = "BernoulliNB, ComplementNB, GaussianNB, MaxAbsScaler, MinMaxScaler, MultinomialNB, "
    message = (
        rf"^LinearRegression has no exact merge; estimators with one: {known}StandardScaler\. "
        r"For LinearRegression, use fit: full or fit: sample$"
    )
    with pytest.raises(TypeError, match=message):
        merger_for(LinearRegression())
    with pytest.raises(TypeError, match=r"SGDClassifier has partial_fit\) or fit: full"):
        merger_for(SGDClassifier)
    assert not has_merge(RobustScaler())
    with pytest.raises(TypeError, match="estimators with one: none"):
        MergeRegistry().merger_for(StandardScaler())


@pytest.mark.parametrize("estimator", ALL, ids=name_of)
def test_chunks_with_different_feature_counts(estimator):
    X, y = make_data(estimator, 10, seed=12)
    merger = merger_for(estimator)
    first = merger.chunk(estimator, X[:5], None if y is None else y[:5])
    other = merger.chunk(estimator, X[5:, :3], None if y is None else y[5:])
    message = "a chunk has 3 features, but the chunks before it have 4; every chunk must"
    with pytest.raises(ValueError, match=message):
        merger.combine(first, other)


@pytest.mark.parametrize("estimator", GAUSSIAN + DISCRETE, ids=name_of)
def test_supervised_merge_without_y(estimator):
    name = type(estimator).__name__
    message = rf"{name} is supervised: chunk\(estimator, X, y\) needs the chunk's targets y"
    with pytest.raises(ValueError, match=message):
        merger_for(estimator).chunk(estimator, np.ones((3, 2)))


@pytest.mark.parametrize("estimator", ALL, ids=name_of)
def test_only_empty_chunks(estimator):
    merger = merger_for(estimator)
    y = None if isinstance(estimator, (MinMaxScaler, MaxAbsScaler, StandardScaler)) else []
    state = merger.chunk(estimator, np.empty((0, N_FEATURES)), y)
    state = merger.combine(state, state)
    name = type(estimator).__name__
    with pytest.raises(ValueError, match=f"cannot fit {name}: every chunk was empty"):
        merger.finalize(estimator, state)


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (GaussianNB(priors=[0.5, 0.5]), "Number of priors must match number of classes."),
        (GaussianNB(priors=[0.5, 0.2, 0.2]), "The sum of the priors should be 1."),
        (GaussianNB(priors=[1.2, -0.1, -0.1]), "Priors must be non-negative."),
        (MultinomialNB(class_prior=[1.0]), "Number of priors must match number of classes."),
        (MinMaxScaler(feature_range=(2, 1)), r"feature range must be smaller .* Got \(2, 1\)"),
        (StandardScaler(with_mean="yes"), "The 'with_mean' parameter of StandardScaler must be"),
        (GaussianNB(var_smoothing=-1.0), "The 'var_smoothing' parameter of GaussianNB must be"),
    ],
    ids=lambda v: name_of(v) if isinstance(v, BaseEstimator) else "",
)
def test_bad_parameters_fail_as_in_fit(estimator, message):
    X, y = make_data(estimator, 9, seed=13)
    y = np.arange(9) % 3  # three classes
    with pytest.raises(ValueError, match=message):
        reference_fit(estimator, X, y)
    with pytest.raises(ValueError, match=message):
        fold(estimator, X, y, [(0, 4), (4, 9)])


@pytest.mark.parametrize(
    ("estimator", "X", "y", "error", "message"),
    [
        (
            MultinomialNB(),
            [[1.0, -1.0]],
            [0],
            ValueError,
            r"Negative values in data passed to MultinomialNB \(input X\)",
        ),
        (
            ComplementNB(),
            [[-1.0, 1.0]],
            [0],
            ValueError,
            r"Negative values in data passed to ComplementNB \(input X\)",
        ),
        (GaussianNB(), [[1.0], [2.0]], [0.5, 1.5], ValueError, "Unknown label type"),
        (GaussianNB(), [[np.nan]], [0], ValueError, "Input X contains NaN"),
        (StandardScaler(), [[np.inf]], None, ValueError, "Input X contains infinity"),
        (MinMaxScaler(), [1.0, 2.0], None, ValueError, "Expected 2D array, got 1D array"),
        (GaussianNB(), [[1.0], [2.0]], [0], ValueError, "inconsistent numbers of samples"),
    ],
)
def test_bad_chunks_fail_with_scikit_learns_message(estimator, X, y, error, message):
    with pytest.raises(error, match=message):
        merger_for(estimator).chunk(estimator, np.asarray(X), y)


def test_labels_mixing_strings_and_numbers_across_chunks():
    merger = merger_for(GaussianNB())
    left = merger.chunk(GaussianNB(), np.ones((2, 1)), np.array([1, 2]))
    right = merger.chunk(GaussianNB(), np.ones((1, 1)), np.array(["a"]))
    with pytest.raises(ValueError, match=r"Mix of label input types \(string and number\)"):
        merger.combine(left, right)


def test_finalize_checks_the_estimator_and_the_state():
    state = MinMaxScalerMerge().chunk(MinMaxScaler(), np.ones((2, 2)))
    with pytest.raises(TypeError, match="StandardScalerMerge expects a ColumnMoments made by"):
        StandardScalerMerge().finalize(StandardScaler(), state)
    with pytest.raises(TypeError, match="MinMaxScalerMerge merges MinMaxScaler fits, got"):
        MinMaxScalerMerge().finalize(StandardScaler(), state)
    nb_state = GaussianNBMerge().chunk(GaussianNB(), np.ones((2, 2)), [0, 1])
    with pytest.raises(TypeError, match="GaussianNBMerge merges GaussianNB fits, got Multi"):
        GaussianNBMerge().finalize(MultinomialNB(), nb_state)


@pytest.mark.parametrize(
    ("estimator_class", "merger", "message"),
    [
        (StandardScaler(), StandardScalerMerge(), "needs an estimator class, got StandardScaler()"),
        (StandardScaler, StandardScalerMerge, "needs a merger instance, got the class"),
        (StandardScaler, object(), "is not a merger: it lacks chunk, combine, finalize"),
    ],
)
def test_register_rejects_what_is_not_a_class_and_a_merger(estimator_class, merger, message):
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MergeRegistry().register(estimator_class, merger)
