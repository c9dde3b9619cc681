"""chunkline's built-in stages: NumPy maps and filters, table stages, reductions.

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
from .table_reductions import GroupBy, Profile
from .tables import (
    arrow_type,
    cast,
    check_columns,
    derive,
    drop,
    fill_null,
    filter_rows,
    from_array,
    rename,
    select,
    to_array,
    where,
)

__all__ = [
    "Count",
    "GroupBy",
    "Histogram",
    "Max",
    "Mean",
    "Min",
    "Moments",
    "Profile",
    "Std",
    "Sum",
    "Variance",
    "absolute",
    "arrow_type",
    "astype",
    "cast",
    "check_columns",
    "clip",
    "derive",
    "drop",
    "fill_null",
    "filter_rows",
    "finite_rows",
    "from_array",
    "log1p",
    "nan_to_num",
    "range_rows",
    "rename",
    "rolling_mean",
    "select",
    "sqrt",
    "standardize",
    "to_array",
    "where",
]
