"""What flows between stages: a NumPy array or a ``pyarrow.Table`` of rows.

The executor and the planner handle both through the few functions here, so
that neither needs to know which one a stage produced. Stage results are
normalized at this edge too: a pandas DataFrame or an Arrow record batch
becomes a table, anything else array-like becomes an array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

__all__ = [
    "ArrayMeta",
    "Data",
    "Meta",
    "TableMeta",
    "as_mask",
    "as_rows",
    "meta_of",
    "num_rows",
    "slice_rows",
    "take",
]

#: A block of rows: an array (rows along axis 0) or a table.
Data: TypeAlias = "np.ndarray | pa.Table"


@dataclass(frozen=True)
class ArrayMeta:
    """What one row of an array looks like: dtype and trailing shape."""

    dtype: str
    tail: tuple[int, ...]

    @property
    def row_nbytes(self) -> int:
        """Bytes in one row."""
        return int(np.prod(self.tail, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """e.g. ``float64 (n, 8)``."""
        return f"{np.dtype(self.dtype).name} {('n', *self.tail)}".replace("'n'", "n")

    def empty(self) -> np.ndarray:
        """An array of this kind with no rows."""
        return np.empty((0, *self.tail), dtype=self.dtype)


@dataclass(frozen=True)
class TableMeta:
    """What the rows of a table look like: its Arrow schema."""

    schema: pa.Schema

    @property
    def row_nbytes(self) -> int:
        """Estimated bytes in one row (variable-width values counted as 16)."""
        total = 0
        for field in self.schema:
            try:
                total += max(1, field.type.bit_width // 8)
            except ValueError:  # strings, lists: no fixed width
                total += 16
        return max(1, total)

    def describe(self) -> str:
        """e.g. ``table (id: int64, a: double)``."""
        return "table (" + ", ".join(f"{f.name}: {f.type}" for f in self.schema) + ")"

    def empty(self) -> pa.Table:
        """A table of this schema with no rows."""
        return self.schema.empty_table()


Meta: TypeAlias = "ArrayMeta | TableMeta"


def meta_of(data: Data) -> Meta:
    """The meta of a block of rows."""
    if isinstance(data, pa.Table):
        return TableMeta(data.schema)
    return ArrayMeta(data.dtype.str, tuple(data.shape[1:]))


def num_rows(data: Data) -> int:
    """Rows in a block."""
    return data.num_rows if isinstance(data, pa.Table) else int(data.shape[0])


def slice_rows(data: Data, start: int, stop: int) -> Data:
    """Rows ``[start, stop)`` of a block (zero-copy for arrays and tables)."""
    if isinstance(data, pa.Table):
        return data.slice(start, max(0, stop - start))
    return data[start:stop]


def take(data: Data, mask: np.ndarray) -> Data:
    """The rows of a block where ``mask`` is True."""
    if isinstance(data, pa.Table):
        return data.filter(pa.array(mask, type=pa.bool_()))
    return data[mask]


def as_mask(value: Any) -> np.ndarray:
    """A filter's result as a NumPy array, with missing values counted as False.

    Arrow boolean arrays (nulls are unknown: the row is dropped, as in a
    pushed-down filter) and pandas nullable booleans (NA likewise) are
    accepted; other values are only converted, and checked by the caller.

    >>> as_mask(pa.array([True, None, False])).tolist()
    [True, False, False]
    """
    if isinstance(value, (pa.Array, pa.ChunkedArray)):
        if value.type == pa.bool_():
            value = value.fill_null(False)
        return np.asarray(value.to_numpy(zero_copy_only=False))
    if str(getattr(value, "dtype", "")) == "boolean":  # pandas' nullable booleans
        return np.asarray(value.to_numpy(dtype=bool, na_value=False))
    if isinstance(value, (list, tuple)) and not value:
        return np.zeros(0, dtype=bool)  # NumPy would make an empty list float64
    return np.asarray(value)


def as_rows(value: Any) -> Data:
    """A stage's result as an array or a table (DataFrames and batches become tables)."""
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if type(value).__name__ == "DataFrame" and hasattr(value, "to_numpy"):
        return pa.Table.from_pandas(value, preserve_index=False)
    return np.asarray(value)
