"""chunkline's built-in stages: NumPy maps and filters, table stages, reductions.

The engine finds these by short name through the ``chunkline.*`` entry points
declared in ``pyproject.toml``; they can also be used directly from Python.
"""

from __future__ import annotations

import importlib
from typing import Any

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
from .learning import (
    Affine,
    ColumnMoments,
    ColumnMomentsOf,
    ColumnRange,
    ColumnRangeOf,
    EstimatorApply,
    FeatureRows,
    LabelSet,
    ModelApply,
    as_float_rows,
    check_finite,
    check_same_features,
    column_moments,
    column_range,
    default_output_names,
    float_rows,
    load_model,
    merge_column_moments,
    merge_ranges,
    native_labels,
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
    "APPLY_METHODS",
    "Affine",
    "BernoulliNBMerge",
    "ChunkedEstimator",
    "ColumnMoments",
    "ColumnMomentsOf",
    "ColumnRange",
    "ColumnRangeOf",
    "ComplementNBMerge",
    "Count",
    "Estimator",
    "EstimatorApply",
    "FeatureRows",
    "GaussianNBMerge",
    "GroupBy",
    "Histogram",
    "LabelSet",
    "MODEL_CHUNK_BYTES",
    "Max",
    "MaxAbsScalerMerge",
    "Mean",
    "MergeChunks",
    "MergeRegistry",
    "Merger",
    "Min",
    "MinMaxScalerMerge",
    "ModelApply",
    "Moments",
    "MultinomialNBMerge",
    "Profile",
    "Split",
    "StandardScalerMerge",
    "Std",
    "Sum",
    "TrainMany",
    "Variance",
    "absolute",
    "arrow_type",
    "as_float_rows",
    "astype",
    "cast",
    "check_columns",
    "check_finite",
    "check_params",
    "check_same_features",
    "choose_split",
    "clip",
    "column_moments",
    "column_range",
    "default_output_names",
    "derive",
    "drop",
    "fill_null",
    "filter_rows",
    "finite_rows",
    "float_rows",
    "from_array",
    "has_merge",
    "load_model",
    "log1p",
    "make_estimator",
    "merge_column_moments",
    "merge_ranges",
    "merger_for",
    "n_jobs_is_deprecated",
    "nan_to_num",
    "native_labels",
    "parallelizes_itself",
    "range_rows",
    "register_merge",
    "rename",
    "rolling_mean",
    "select",
    "sqrt",
    "standardize",
    "to_array",
    "where",
]

# scikit-learn takes ~0.8 s to import; load it only when its merges and
# estimators are used, not in every worker that needs a NumPy or table stage.
_LAZY = (
    {
        name: ".estimators"
        for name in (
            "APPLY_METHODS",
            "Estimator",
            "MODEL_CHUNK_BYTES",
            "MergeChunks",
            "make_estimator",
            "n_jobs_is_deprecated",
            "parallelizes_itself",
        )
    }
    | {name: ".train_many" for name in ("Split", "TrainMany", "choose_split")}
    | {"ChunkedEstimator": ".chunked"}
    | dict.fromkeys(
        [
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
        ],
        ".sklearn_merge",
    )
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
