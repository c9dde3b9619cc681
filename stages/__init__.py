"""chunkline's built-in stages: NumPy maps and filters, mergeable reductions.

The engine finds these by short name through the ``chunkline.*`` entry points
declared in ``pyproject.toml``; they can also be used directly from Python.
"""

from __future__ import annotations

from .arrays import (
    absolute,
    astype,
    clip,
    finite_rows,
    log1p,
    nan_to_num,
    range_rows,
    rolling_mean,
    sqrt,
    standardize,
)
from .reductions import Count, Histogram, Max, Mean, Min, Moments, Std, Sum, Variance

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
    "absolute",
    "astype",
    "clip",
    "finite_rows",
    "log1p",
    "nan_to_num",
    "range_rows",
    "rolling_mean",
    "sqrt",
    "standardize",
]
