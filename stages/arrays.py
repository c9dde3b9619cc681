"""Ready-made NumPy stages, addressable by short name in specs.

Maps take a chunk (an array whose axis 0 is rows) and return one with the same
rows; filters return a boolean mask over the rows. All are row-wise, so their
output does not depend on how the rows were chunked; ``rolling_mean`` looks at
neighbouring rows and needs ``chunks.overlap`` of at least ``window // 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = [
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


def nan_to_num(
    x: np.ndarray, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None
) -> np.ndarray:
    """Replace NaN and infinities (see ``numpy.nan_to_num``).

    >>> nan_to_num(np.array([np.nan, 1.0]), nan=-1.0)
    array([-1.,  1.])
    """
    return np.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)


def clip(x: np.ndarray, min: float | None = None, max: float | None = None) -> np.ndarray:
    """Limit values to ``[min, max]``; either bound may be omitted.

    >>> clip(np.array([-2.0, 0.5, 3.0]), min=0, max=1)
    array([0. , 0.5, 1. ])
    """
    if min is None and max is None:
        raise ValueError("clip needs at least one of min or max")
    return np.clip(x, min, max)


def log1p(x: np.ndarray) -> np.ndarray:
    """``log(1 + x)``, accurate for small ``x``."""
    return np.log1p(x)


def absolute(x: np.ndarray) -> np.ndarray:
    """Absolute value."""
    return np.abs(x)


def sqrt(x: np.ndarray) -> np.ndarray:
    """Square root."""
    return np.sqrt(x)


def astype(x: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    """Cast to ``dtype`` (refusing casts that change the kind unsafely, e.g. NaN to int).

    >>> astype(np.array([1.5, 2.0]), "float32").dtype
    dtype('float32')
    """
    return x.astype(dtype, casting="same_kind" if np.dtype(dtype).kind == "f" else "unsafe")


def standardize(x: np.ndarray, mean: ArrayLike, std: ArrayLike) -> np.ndarray:
    """``(x - mean) / std`` with given per-column statistics.

    Columns with ``std == 0`` are only centred, as scikit-learn's scaler does.

    >>> standardize(np.array([[1.0, 5.0]]), mean=[0.0, 5.0], std=[2.0, 0.0])
    array([[0.5, 0. ]])
    """
    scale = np.asarray(std, dtype=np.float64)
    scale = np.where(scale == 0, 1.0, scale)
    return (x - np.asarray(mean, dtype=np.float64)) / scale


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` rows (odd), shrinking at the ends.

    Each output row sums its own window, so chunks with ``overlap >= window // 2``
    give exactly the same values as the whole array.

    >>> rolling_mean(np.array([1.0, 2.0, 3.0, 4.0]), window=3)
    array([1.5, 2. , 3. , 3.5])
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of rows, got {window}")
    half = window // 2
    n = x.shape[0]
    if n == 0:
        return np.empty(x.shape, dtype=np.float64)
    pad = [(half, half)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x.astype(np.float64, copy=False), pad)
    sums = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0).sum(axis=-1)
    index = np.arange(n)
    counts = np.minimum(index + half, n - 1) - np.maximum(index - half, 0) + 1
    return sums / counts.reshape((n,) + (1,) * (x.ndim - 1))


def _rows_all(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask.all(axis=tuple(range(1, mask.ndim))))


def finite_rows(x: np.ndarray) -> np.ndarray:
    """Keep rows whose values are all finite (no NaN or infinity).

    >>> finite_rows(np.array([[1.0, 2.0], [np.nan, 0.0]]))
    array([ True, False])
    """
    return _rows_all(np.isfinite(x))


def range_rows(
    x: np.ndarray,
    min: float | None = None,
    max: float | None = None,
    columns: Sequence[int] | int | None = None,
) -> np.ndarray:
    """Keep rows whose values (in ``columns``, default all) lie in ``[min, max]``.

    >>> range_rows(np.array([[0.5, 9.0], [2.0, 1.0]]), max=1.0, columns=0)
    array([ True, False])
    """
    if min is None and max is None:
        raise ValueError("range_rows needs at least one of min or max")
    values: Any = x if columns is None or x.ndim == 1 else x[:, columns]
    mask = np.ones(values.shape, dtype=bool)
    if min is not None:
        mask &= values >= min
    if max is not None:
        mask &= values <= max
    return _rows_all(np.asarray(mask))
