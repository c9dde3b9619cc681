"""Built-in mergeable reductions, computed per column along axis 0.

Each reduction follows :class:`pipeline.Reduction`: ``chunk`` computes a
small partial state, ``combine`` merges two states (earlier rows on the left)
and ``finalize`` produces the result. States of empty chunks are valid and
neutral, because a filter may leave a chunk with no rows.

Variance uses the pairwise update of Chan, Golub and LeVeque (1979), which
stays accurate when chunk means differ greatly, unlike sums of squares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Count",
    "Histogram",
    "Max",
    "Mean",
    "Min",
    "Moments",
    "Std",
    "Sum",
    "Variance",
]


def _column_result(values: np.ndarray) -> Any:
    """Scalars for 1-D data, arrays over the trailing axes otherwise."""
    return values[()] if values.ndim == 0 else values


@dataclass(frozen=True)
class Count:
    """Number of rows.

    >>> c = Count()
    >>> c.finalize(c.combine(c.chunk(np.ones((3, 2))), c.chunk(np.ones((0, 2)))))
    3
    """

    def chunk(self, data: np.ndarray) -> int:
        return int(data.shape[0])

    def combine(self, left: int, right: int) -> int:
        return left + right

    def finalize(self, state: int) -> int:
        return state


@dataclass(frozen=True)
class Sum:
    """Per-column sum (accumulated as NumPy does for the dtype)."""

    def chunk(self, data: np.ndarray) -> np.ndarray:
        return np.asarray(data.sum(axis=0))

    def combine(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left + right

    def finalize(self, state: np.ndarray) -> Any:
        return _column_result(state)


class ExtremeState(NamedTuple):
    """Rows seen and the running extreme per column (NaN until a row is seen)."""

    n: int
    value: np.ndarray


@dataclass(frozen=True)
class _Extreme:
    """Shared logic of Min and Max; an empty chunk's state keeps the row shape."""

    def _pick(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _of(self, data: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def chunk(self, data: np.ndarray) -> ExtremeState:
        if data.shape[0] == 0:
            return ExtremeState(0, np.full(data.shape[1:], np.nan))
        return ExtremeState(int(data.shape[0]), np.asarray(self._of(data)))

    def combine(self, left: ExtremeState, right: ExtremeState) -> ExtremeState:
        if left.n == 0 or right.n == 0:
            return right if left.n == 0 else left
        return ExtremeState(left.n + right.n, self._pick(left.value, right.value))

    def finalize(self, state: ExtremeState) -> Any:
        """The extreme per column; NaN where no row was seen."""
        return _column_result(state.value)


@dataclass(frozen=True)
class Min(_Extreme):
    """Per-column minimum (NaN propagates, as in ``numpy.min``)."""

    def _of(self, data: np.ndarray) -> np.ndarray:
        return data.min(axis=0)

    def _pick(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.minimum(left, right)


@dataclass(frozen=True)
class Max(_Extreme):
    """Per-column maximum (NaN propagates, as in ``numpy.max``)."""

    def _of(self, data: np.ndarray) -> np.ndarray:
        return data.max(axis=0)

    def _pick(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return np.maximum(left, right)


class MomentState(NamedTuple):
    """Count, mean and sum of squared deviations (M2), plus min and max."""

    n: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray | None
    max: np.ndarray | None


def _moments_of(data: np.ndarray) -> MomentState:
    n = int(data.shape[0])
    if n == 0:
        zeros = np.zeros(data.shape[1:])
        return MomentState(0, zeros, zeros, None, None)
    mean = data.mean(axis=0, dtype=np.float64)
    deviations = data - mean
    m2 = np.einsum("i...,i...->...", deviations, deviations)
    return MomentState(n, np.asarray(mean), np.asarray(m2), data.min(axis=0), data.max(axis=0))


def _merge_moments(a: MomentState, b: MomentState) -> MomentState:
    if a.n == 0 or b.n == 0:
        return b if a.n == 0 else a
    n = a.n + b.n
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.n / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.n * b.n / n)
    return MomentState(
        n,
        mean,
        m2,
        np.minimum(a.min, b.min),  # type: ignore[arg-type]
        np.maximum(a.max, b.max),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class _MomentReduction:
    """chunk/combine shared by Mean, Variance, Std and Moments."""

    def chunk(self, data: np.ndarray) -> MomentState:
        return _moments_of(data)

    def combine(self, left: MomentState, right: MomentState) -> MomentState:
        return _merge_moments(left, right)


def _variance(state: MomentState, ddof: int) -> np.ndarray:
    dof = state.n - ddof
    if dof <= 0:
        return np.full(np.shape(state.m2), np.nan)
    return state.m2 / dof


@dataclass(frozen=True)
class Mean(_MomentReduction):
    """Per-column mean (float64); NaN when no row was seen."""

    def finalize(self, state: MomentState) -> Any:
        mean = state.mean if state.n else np.full(np.shape(state.mean), np.nan)
        return _column_result(np.asarray(mean))


@dataclass(frozen=True)
class Variance(_MomentReduction):
    """Per-column variance with ``ddof`` delta degrees of freedom (default 0)."""

    ddof: int = 0

    def finalize(self, state: MomentState) -> Any:
        return _column_result(_variance(state, self.ddof))


@dataclass(frozen=True)
class Std(_MomentReduction):
    """Per-column standard deviation with ``ddof`` (default 0, as ``numpy.std``)."""

    ddof: int = 0

    def finalize(self, state: MomentState) -> Any:
        return _column_result(np.sqrt(_variance(state, self.ddof)))


@dataclass(frozen=True)
class Moments(_MomentReduction):
    """Per-column count, mean, std, min and max in one pass.

    >>> m = Moments()
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])
    >>> out = m.finalize(m.combine(m.chunk(x[:1]), m.chunk(x[1:])))
    >>> out["count"], out["mean"].tolist(), out["max"].tolist()
    (3, [3.0, 30.0], [5.0, 50.0])
    """

    ddof: int = 0

    def finalize(self, state: MomentState) -> dict[str, Any]:
        def extreme(value: np.ndarray | None) -> Any:
            if value is None:
                return _column_result(np.full(np.shape(state.mean), np.nan))
            return _column_result(np.asarray(value))

        mean = state.mean if state.n else np.full(np.shape(state.mean), np.nan)
        return {
            "count": state.n,
            "mean": _column_result(np.asarray(mean)),
            "std": _column_result(np.sqrt(_variance(state, self.ddof))),
            "min": extreme(state.min),
            "max": extreme(state.max),
        }


@dataclass(frozen=True)
class Histogram:
    """Per-column counts over fixed bins.

    Parameters
    ----------
    bins
        Number of equal-width bins over ``range``, or the bin edges.
    range
        ``(low, high)`` for integer ``bins``. Bins must be fixed in advance so
        that the counts of different chunks can be added.

    Values outside the bins, and NaNs, are not counted (as ``numpy.histogram``).

    >>> h = Histogram(bins=2, range=(0, 2))
    >>> h.finalize(h.chunk(np.array([0.5, 1.5, 1.7])))["counts"].tolist()
    [1, 2]
    """

    bins: int | tuple[float, ...] | list[float] = 10
    range: tuple[float, float] | list[float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bins, int):
            if self.bins <= 0:
                raise ValueError(f"bins must be a positive integer, got {self.bins}")
            if self.range is None or len(self.range) != 2:
                raise ValueError(
                    "histogram needs range: [low, high] with an integer number of bins, "
                    "so that every chunk uses the same bins"
                )
        elif len(self.bins) < 2 or np.any(np.diff(np.asarray(self.bins, dtype=float)) <= 0):
            raise ValueError("bins given as edges must be increasing, with at least two")

    @property
    def edges(self) -> np.ndarray:
        """The bin edges."""
        if isinstance(self.bins, int):
            low, high = self.range  # type: ignore[misc]
            return np.linspace(float(low), float(high), self.bins + 1)
        return np.asarray(self.bins, dtype=float)

    def chunk(self, data: np.ndarray) -> np.ndarray:
        edges = self.edges
        columns = data.reshape(data.shape[0], int(np.prod(data.shape[1:], dtype=np.int64)))
        counts = np.stack([np.histogram(col, bins=edges)[0] for col in columns.T])
        return counts.reshape((*data.shape[1:], len(edges) - 1))

    def combine(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return left + right

    def finalize(self, state: np.ndarray) -> dict[str, Any]:
        return {"edges": self.edges, "counts": state}
