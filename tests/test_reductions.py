"""Oracle tests: every built-in reduction, folded over arbitrary chunks, equals NumPy.

An array is cut at Hypothesis-chosen split points (repeated points give empty
chunks); ``chunk`` is applied to each piece, the states are combined left to
right in chunk order, as the executor does, and ``finalize``'s result is
compared with NumPy on the whole array.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Reduction
from stages.reductions import Count, Histogram, Max, Mean, Min, Moments, Std, Sum, Variance

# Row shapes: () gives 1-D arrays, (2, 3) gives 3-D arrays.
TAILS = [(), (4,), (2, 3)]


def fold(reduction: Reduction, pieces: list[np.ndarray]) -> Any:
    """chunk -> combine in chunk order -> finalize, as the executor does."""
    state = reduction.chunk(pieces[0])
    for piece in pieces[1:]:
        state = reduction.combine(state, reduction.chunk(piece))
    return reduction.finalize(state)


def split(x: np.ndarray, points: list[int]) -> list[np.ndarray]:
    bounds = [0, *sorted(points), x.shape[0]]
    return [x[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def chunked_arrays(draw, dtype: str = "float64", min_rows: int = 0, max_rows: int = 60):
    """(whole array, list of consecutive pieces covering it, possibly empty ones)."""
    n = draw(st.integers(min_rows, max_rows))
    tail = draw(st.sampled_from(TAILS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype == "float64":
        scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
        offset = draw(st.sampled_from([0.0, -5.0, 1e4]))
        x = rng.normal(size=(n, *tail)) * scale + offset
    else:
        x = rng.integers(-1000, 1000, size=(n, *tail)).astype(dtype)
    points = draw(st.lists(st.integers(0, n), max_size=8))
    return x, split(x, points)


def as_columns(x: np.ndarray) -> np.ndarray:
    """One row per column of ``x`` (flattening trailing axes), also for zero rows."""
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=int))).T


def assert_nan_like(value: Any, tail: tuple[int, ...]) -> None:
    assert np.all(np.isnan(value))
    assert np.shape(value) == tail


FAST = settings(max_examples=60, deadline=None)


# --- each reduction against NumPy ---------------------------------------------------------


@FAST
@given(case=chunked_arrays())
def test_count(case):
    x, pieces = case
    result = fold(Count(), pieces)
    assert result == x.shape[0]
    assert isinstance(result, int)


@FAST
@given(case=chunked_arrays())
def test_sum(case):
    x, pieces = case
    np.testing.assert_allclose(fold(Sum(), pieces), x.sum(axis=0), rtol=1e-12, atol=1e-9)


@FAST
@given(case=chunked_arrays(dtype="int64"))
def test_sum_of_integers_is_exact(case):
    x, pieces = case
    result = fold(Sum(), pieces)
    np.testing.assert_array_equal(result, x.sum(axis=0))
    assert np.asarray(result).dtype == x.sum(axis=0).dtype


@FAST
@given(case=chunked_arrays(min_rows=1), dtype=st.sampled_from(["float64", "int32"]))
def test_min_and_max_are_exact(case, dtype):
    x, pieces = case
    x, pieces = x.astype(dtype), [p.astype(dtype) for p in pieces]
    np.testing.assert_array_equal(fold(Min(), pieces), x.min(axis=0))
    np.testing.assert_array_equal(fold(Max(), pieces), x.max(axis=0))
    assert np.asarray(fold(Min(), pieces)).dtype == np.dtype(dtype)


@FAST
@given(case=chunked_arrays(min_rows=1))
def test_mean(case):
    x, pieces = case
    np.testing.assert_allclose(fold(Mean(), pieces), x.mean(axis=0), rtol=1e-12, atol=1e-12)


@FAST
@given(case=chunked_arrays(min_rows=1), ddof=st.sampled_from([0, 1]))
def test_variance_and_std(case, ddof):
    x, pieces = case
    if x.shape[0] - ddof <= 0:  # NumPy warns and gives NaN; so do we (without warning)
        assert np.all(np.isnan(fold(Variance(ddof=ddof), pieces)))
        assert np.all(np.isnan(fold(Std(ddof=ddof), pieces)))
        return
    np.testing.assert_allclose(
        fold(Variance(ddof=ddof), pieces), x.var(axis=0, ddof=ddof), rtol=1e-7, atol=1e-12
    )
    np.testing.assert_allclose(
        fold(Std(ddof=ddof), pieces), x.std(axis=0, ddof=ddof), rtol=1e-7, atol=1e-12
    )


@FAST
@given(case=chunked_arrays(min_rows=1))
def test_moments(case):
    x, pieces = case
    result = fold(Moments(), pieces)
    assert set(result) == {"count", "mean", "std", "min", "max"}
    assert result["count"] == x.shape[0]
    np.testing.assert_allclose(result["mean"], x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result["std"], x.std(axis=0), rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(result["min"], x.min(axis=0))
    np.testing.assert_array_equal(result["max"], x.max(axis=0))


@FAST
@given(
    case=chunked_arrays(),
    bins=st.integers(1, 12),
    low=st.sampled_from([-3.0, -1.0, 0.0]),
    width=st.sampled_from([0.5, 2.0, 6.0]),
)
def test_histogram_with_a_bin_count_is_exact(case, bins, low, width):
    x, pieces = case
    value_range = (low, low + width)
    result = fold(Histogram(bins=bins, range=value_range), pieces)
    columns = as_columns(x)
    expected = np.stack([np.histogram(c, bins=bins, range=value_range)[0] for c in columns])
    np.testing.assert_array_equal(result["counts"], expected.reshape((*x.shape[1:], bins)))
    np.testing.assert_array_equal(result["edges"], np.histogram_bin_edges([], bins, value_range))


@FAST
@given(case=chunked_arrays())
def test_histogram_with_edges_is_exact(case):
    x, pieces = case
    edges = [-2.0, -0.5, 0.0, 0.1, 3.0]
    result = fold(Histogram(bins=edges), pieces)
    columns = as_columns(x)
    expected = np.stack([np.histogram(c, bins=edges)[0] for c in columns])
    np.testing.assert_array_equal(result["counts"], expected.reshape((*x.shape[1:], 4)))
    np.testing.assert_array_equal(result["edges"], edges)


def test_histogram_ignores_nan_and_values_outside_the_bins():
    h = Histogram(bins=2, range=(0, 2))
    x = np.array([np.nan, -1.0, 0.0, 1.0, 2.0, 2.5, np.inf])
    assert fold(h, split(x, [2, 2, 5]))["counts"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 4}, r"histogram needs range: \[low, high\]"),
        ({"bins": 4, "range": (0, 1, 2)}, r"histogram needs range"),
        ({"bins": 0, "range": (0, 1)}, r"bins must be a positive integer, got 0"),
        ({"bins": [0.0]}, r"bins given as edges must be increasing, with at least two"),
        ({"bins": [0.0, 1.0, 1.0]}, r"bins given as edges must be increasing"),
    ],
)
def test_histogram_rejects_bins_that_chunks_cannot_share(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Histogram(**kwargs)


# --- float32 input ------------------------------------------------------------------------


@FAST
@given(case=chunked_arrays(min_rows=1))
def test_float32_input(case):
    x, pieces = case
    x32, pieces32 = x.astype(np.float32), [p.astype(np.float32) for p in pieces]
    wide = x32.astype(np.float64)
    # Moments accumulate in float64 whatever the input dtype.
    np.testing.assert_allclose(fold(Mean(), pieces32), wide.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fold(Variance(), pieces32), wide.var(axis=0), rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(fold(Min(), pieces32), x32.min(axis=0))
    np.testing.assert_allclose(fold(Sum(), pieces32), x32.sum(axis=0), rtol=1e-5, atol=1e-2)


# --- numerical stability ------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    points=st.lists(st.integers(0, 2000), max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_variance_stays_accurate_with_a_huge_offset(points, seed):
    rng = np.random.default_rng(seed)
    x = 1e9 + rng.normal(size=(2000, 2))
    pieces = split(x, points)
    expected = x.var(axis=0)  # NumPy is two-pass: exact enough to be the oracle
    np.testing.assert_allclose(fold(Variance(), pieces), expected, rtol=1e-6)
    np.testing.assert_allclose(fold(Std(), pieces), np.sqrt(expected), rtol=1e-6)
    np.testing.assert_allclose(fold(Moments(), pieces)["std"], np.sqrt(expected), rtol=1e-6)


def test_variance_with_a_huge_offset_over_single_row_chunks(rng):
    x = 1e9 + rng.normal(size=(500, 3))
    pieces = split(x, list(range(1, 500)))
    expected = x.var(axis=0)
    np.testing.assert_allclose(fold(Variance(), pieces), expected, rtol=1e-6)
    # The data really is hard: the textbook sum-of-squares formula is far off.
    naive = (x**2).mean(axis=0) - x.mean(axis=0) ** 2
    assert np.max(np.abs(naive - expected) / expected) > 1e-2


def test_variance_of_chunks_with_very_different_means(rng):
    x = np.concatenate([rng.normal(size=100), 1e8 + rng.normal(size=100)])
    pieces = split(x, [100])
    np.testing.assert_allclose(fold(Variance(), pieces), x.var(), rtol=1e-9)


# --- empty input --------------------------------------------------------------------------


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("n_pieces", [1, 3])
def test_empty_input(tail, n_pieces):
    empty = np.empty((0, *tail))
    pieces = [empty] * n_pieces
    assert fold(Count(), pieces) == 0
    np.testing.assert_array_equal(fold(Sum(), pieces), np.zeros(tail))
    assert_nan_like(fold(Mean(), pieces), tail)
    assert_nan_like(fold(Variance(), pieces), tail)
    assert_nan_like(fold(Std(), pieces), tail)
    moments = fold(Moments(), pieces)
    assert moments["count"] == 0
    for key in ("mean", "std", "min", "max"):
        assert_nan_like(moments[key], tail)
    counts = fold(Histogram(bins=3, range=(0, 1)), pieces)["counts"]
    np.testing.assert_array_equal(counts, np.zeros((*tail, 3)))


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("reduction", [Min(), Max()], ids=["min", "max"])
def test_empty_input_gives_nan_min_and_max_per_column(tail, reduction):
    # Like Mean and Moments' min/max: one NaN per column, not a lone scalar NaN.
    assert_nan_like(fold(reduction, [np.empty((0, *tail))]), tail)


ALL = [Count(), Sum(), Min(), Max(), Mean(), Variance(), Std(), Moments(), Histogram(2, (0, 1))]


@pytest.mark.parametrize("reduction", ALL, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("tail", TAILS)
def test_empty_chunks_are_neutral(reduction, tail, rng):
    x = rng.uniform(size=(9, *tail))
    empty = x[:0]
    expected = fold(reduction, [x])
    for pieces in ([empty, x], [x, empty], [empty, x[:4], empty, empty, x[4:], empty]):
        assert_same(fold(reduction, pieces), expected)


def assert_same(actual: Any, expected: Any, rtol: float = 1e-12) -> None:
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key], rtol)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol)


@settings(max_examples=40, deadline=None)
@given(case=chunked_arrays(min_rows=3), cut=st.data())
def test_combine_is_associative(case, cut):
    x, _ = case
    a = cut.draw(st.integers(0, x.shape[0]))
    b = cut.draw(st.integers(a, x.shape[0]))
    for r in ALL[:-1]:
        left, middle, right = (r.chunk(p) for p in split(x, [a, b]))
        assert_same(
            r.finalize(r.combine(r.combine(left, middle), right)),
            r.finalize(r.combine(left, r.combine(middle, right))),
            rtol=1e-7,  # the merge of moments rounds differently with the grouping
        )


def test_nan_propagates_through_min_and_max_as_in_numpy():
    x = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, -1.0]])
    pieces = split(x, [1, 2])
    np.testing.assert_array_equal(fold(Min(), pieces), np.min(x, axis=0))
    np.testing.assert_array_equal(fold(Max(), pieces), np.max(x, axis=0))


def test_every_reduction_follows_the_protocol():
    for reduction in ALL:
        assert isinstance(reduction, Reduction)
