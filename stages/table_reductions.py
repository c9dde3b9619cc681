"""Mergeable reductions over ``pyarrow.Table`` chunks: a dataset profile and group-by.

Both follow :class:`pipeline.Reduction` like the array reductions: a small
state per chunk, combined in chunk order, then finalized. Means and standard
deviations merge with the same pairwise update (Chan et al.) as ``moments``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import SpecError
from pipeline.registry import did_you_mean
from pipeline.schema import check_columns

from .reductions import Histogram, MomentState, _merge_moments, _moments_of

__all__ = ["GroupBy", "Profile"]

#: Aggregations ``group_by`` knows, each exactly mergeable across chunks.
AGGREGATIONS = ("count", "sum", "mean", "std", "var", "min", "max")


def _is_numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column's non-null values as float64."""
    return np.asarray(column.drop_null().to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass(frozen=True)
class ColumnState:
    """Rows, nulls, and for numeric columns their moments; for others min/max."""

    rows: int
    nulls: int
    moments: MomentState | None = None
    low: Any = None
    high: Any = None
    histogram: np.ndarray | None = None


@dataclass(frozen=True)
class Profile:
    """Per-column count, nulls, min and max; mean and std for numeric columns.

    Parameters
    ----------
    columns
        Columns to profile (default: all).
    histograms
        Optional fixed-bin histograms: ``{column: {"bins": 10, "range": [0, 1]}}``.

    >>> p = Profile()
    >>> t = pa.table({"a": [1.0, None, 3.0], "s": ["x", "y", None]})
    >>> out = p.finalize(p.combine(p.chunk(t.slice(0, 1)), p.chunk(t.slice(1))))
    >>> out["a"]["count"], out["a"]["nulls"], out["a"]["mean"], out["s"]["max"]
    (2, 1, 2.0, 'y')
    """

    columns: Sequence[str] | None = None
    histograms: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, options in self.histograms.items():
            try:
                Histogram(**options)
            except (TypeError, ValueError) as exc:
                raise SpecError.at(f"histograms.{name}", str(exc)) from None

    def chunk(self, table: pa.Table) -> dict[str, ColumnState]:
        names = list(self.columns) if self.columns is not None else table.column_names
        check_columns(table, [*names, *self.histograms], "profile")
        states = {}
        for name in names:
            column = table.column(name)
            nulls = column.null_count
            if _is_numeric(column.type):
                values = _numbers(column)
                hist = None
                if name in self.histograms:
                    hist = Histogram(**self.histograms[name]).chunk(values)
                states[name] = ColumnState(len(column), nulls, _moments_of(values), histogram=hist)
            else:
                low = high = None
                if len(column) > nulls:
                    extremes = pc.min_max(column)
                    low, high = extremes["min"].as_py(), extremes["max"].as_py()
                states[name] = ColumnState(len(column), nulls, low=low, high=high)
        return states

    def combine(
        self, left: dict[str, ColumnState], right: dict[str, ColumnState]
    ) -> dict[str, ColumnState]:
        merged = {}
        for name, a in left.items():
            b = right[name]
            if a.moments is not None and b.moments is not None:
                hist = None if a.histogram is None else a.histogram + b.histogram
                moments = _merge_moments(a.moments, b.moments)
                merged[name] = ColumnState(
                    a.rows + b.rows, a.nulls + b.nulls, moments, histogram=hist
                )
            else:
                lows = [v for v in (a.low, b.low) if v is not None]
                highs = [v for v in (a.high, b.high) if v is not None]
                merged[name] = ColumnState(
                    a.rows + b.rows,
                    a.nulls + b.nulls,
                    low=min(lows) if lows else None,
                    high=max(highs) if highs else None,
                )
        return merged

    def finalize(self, state: dict[str, ColumnState]) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for name, s in state.items():
            column: dict[str, Any] = {"count": s.rows - s.nulls, "nulls": s.nulls}
            if s.moments is not None:
                m = s.moments
                empty = m.n == 0
                column["mean"] = float("nan") if empty else float(m.mean)
                column["std"] = float("nan") if empty else float(np.sqrt(m.m2 / m.n))
                column["min"] = float("nan") if m.min is None else float(m.min)
                column["max"] = float("nan") if m.max is None else float(m.max)
                if s.histogram is not None:
                    edges = Histogram(**self.histograms[name]).edges
                    column["histogram"] = {"edges": edges, "counts": s.histogram}
            else:
                column["min"], column["max"] = s.low, s.high
            result[name] = column
        return result


#: Per group and column: non-null count, sum, mean, M2, min, max.
_Stats = tuple[int, float, float, float, float, float]


def _merge_stats(a: _Stats, b: _Stats) -> _Stats:
    n = a[0] + b[0]
    if a[0] == 0 or b[0] == 0:
        return b if a[0] == 0 else a
    delta = b[2] - a[2]
    mean = a[2] + delta * b[0] / n
    m2 = a[3] + b[3] + delta * delta * a[0] * b[0] / n
    return (n, a[1] + b[1], mean, m2, min(a[4], b[4]), max(a[5], b[5]))


@dataclass(frozen=True)
class GroupBy:
    """Aggregations per group, merged across chunks: ``{column: [sum, mean, count]}``.

    Parameters
    ----------
    group_by
        Key columns.
    aggregate
        For each numeric column, the aggregations to compute, among
        ``count`` (non-null values), ``sum``, ``mean``, ``std``, ``var``
        (population, ddof 0), ``min`` and ``max``.

    The result is a ``pyarrow.Table`` with one row per group, sorted by the
    keys, and a column ``{column}_{aggregation}`` for each aggregation.

    >>> g = GroupBy(group_by=["k"], aggregate={"v": ["sum", "mean"]})
    >>> t = pa.table({"k": ["a", "b", "a"], "v": [1.0, 2.0, 3.0]})
    >>> g.finalize(g.combine(g.chunk(t.slice(0, 2)), g.chunk(t.slice(2)))).to_pylist()
    [{'k': 'a', 'v_sum': 4.0, 'v_mean': 2.0}, {'k': 'b', 'v_sum': 2.0, 'v_mean': 2.0}]
    """

    group_by: Sequence[str]
    aggregate: Mapping[str, Sequence[str]]

    def __post_init__(self) -> None:
        if isinstance(self.group_by, str) or not self.group_by:
            raise SpecError.at("group_by", f"expected a list of key columns, got {self.group_by!r}")
        if not isinstance(self.aggregate, Mapping) or not self.aggregate:
            raise SpecError.at(
                "aggregate", f"expected {{column: [aggregations]}}, got {self.aggregate!r}"
            )
        for column, names in self.aggregate.items():
            for name in [names] if isinstance(names, str) else names:
                if name not in AGGREGATIONS:
                    hint = did_you_mean(name, AGGREGATIONS)
                    raise SpecError.at(
                        f"aggregate.{column}",
                        f"unknown aggregation {name!r}{hint}; expected one of "
                        f"{', '.join(AGGREGATIONS)}",
                    )

    def chunk(self, table: pa.Table) -> dict[tuple[Any, ...], dict[str, _Stats]]:
        keys = list(self.group_by)
        check_columns(table, [*keys, *self.aggregate], "group_by")
        for column in self.aggregate:
            if not _is_numeric(table.schema.field(column).type):
                raise SpecError.at(
                    f"aggregate.{column}",
                    f"column {column!r} is {table.schema.field(column).type}; "
                    "aggregations need a numeric column",
                )
        specs = []
        for column in self.aggregate:
            specs += [
                (column, "count"),
                (column, "sum"),
                (column, "mean"),
                (column, "variance", pc.VarianceOptions(ddof=0)),
                (column, "min"),
                (column, "max"),
            ]
        grouped = table.group_by(keys, use_threads=False).aggregate(specs)
        state: dict[tuple[Any, ...], dict[str, _Stats]] = {}
        for row in grouped.to_pylist():
            stats = {}
            for column in self.aggregate:
                n = row[f"{column}_count"]
                if n == 0:
                    stats[column] = (0, 0.0, 0.0, 0.0, np.inf, -np.inf)
                    continue
                stats[column] = (
                    n,
                    float(row[f"{column}_sum"]),
                    float(row[f"{column}_mean"]),
                    float(row[f"{column}_variance"]) * n,
                    float(row[f"{column}_min"]),
                    float(row[f"{column}_max"]),
                )
            state[tuple(row[k] for k in keys)] = stats
        return state

    def combine(
        self,
        left: dict[tuple[Any, ...], dict[str, _Stats]],
        right: dict[tuple[Any, ...], dict[str, _Stats]],
    ) -> dict[tuple[Any, ...], dict[str, _Stats]]:
        merged = dict(left)
        for key, stats in right.items():
            if key in merged:
                merged[key] = {c: _merge_stats(merged[key][c], s) for c, s in stats.items()}
            else:
                merged[key] = stats
        return merged

    def finalize(self, state: dict[tuple[Any, ...], dict[str, _Stats]]) -> pa.Table:
        # Groups in key order (nulls first), so the result does not depend on chunking.
        ordered = sorted(state, key=lambda key: [(v is not None, v) for v in key])
        columns: dict[str, list[Any]] = {
            k: [key[i] for key in ordered] for i, k in enumerate(self.group_by)
        }
        for column, names in self.aggregate.items():
            for name in [names] if isinstance(names, str) else names:
                values = []
                for key in ordered:
                    n, total, mean, m2, low, high = state[key][column]
                    empty = n == 0
                    values.append(
                        {
                            "count": n,
                            "sum": total,
                            "mean": None if empty else mean,
                            "var": None if empty else m2 / n,
                            "std": None if empty else float(np.sqrt(m2 / n)),
                            "min": None if empty else low,
                            "max": None if empty else high,
                        }[name]
                    )
                columns[f"{column}_{name}"] = values
        return pa.table(columns)
