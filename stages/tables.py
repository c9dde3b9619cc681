"""Ready-made stages over ``pyarrow.Table`` chunks, addressable by short name in specs.

Maps (``select``, ``drop``, ``rename``, ``cast``, ``fill_null``, ``derive``,
``to_array``, ``from_array``) return a chunk with the same rows; filters
(``where``, ``filter_rows``) return a NumPy boolean mask with one value per row.
All are row-wise, so their output does not depend on how rows were chunked,
and all accept a table with no rows: the engine probes stages on an empty table
of the source schema to learn their output schema before reading any data.

A column name that is not in the table, or a filter value whose type cannot be
compared with its column, raises :class:`pipeline.errors.SpecError` (a
``ValueError``) naming the column and listing the columns that exist, so the
mistake is reported as a spec error when the probe runs.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, DTypeLike

from pipeline.blocks import as_mask
from pipeline.errors import SpecError
from pipeline.registry import did_you_mean, import_object
from pipeline.schema import (
    ARROW_TYPE_ERRORS,
    check_columns,
    compatible,
    filter_mask,
    filter_type_mismatch,
    validate_filters,
)

__all__ = [
    "arrow_type",
    "cast",
    "check_columns",
    "derive",
    "drop",
    "fill_null",
    "filter_rows",
    "from_array",
    "rename",
    "select",
    "to_array",
    "where",
]


# --- column names -----------------------------------------------------------


def _names(value: Any, stage: str, param: str = "columns") -> list[str]:
    """The canonical form of a column list: a list of distinct strings (a str is one name)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{stage}: {param} must be a list of column names; got {value!r}")
    repeated = sorted(name for name, count in Counter(value).items() if count > 1)
    if repeated:
        raise SpecError(f"{stage}: {param} lists {', '.join(map(repr, repeated))} more than once")
    return list(value)


def _mapping(value: Any, stage: str, what: str, param: str = "columns") -> dict[str, Any]:
    """The canonical form of a per-column mapping: a dict keyed by column names."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise SpecError(
            f"{stage}: {param} must be a mapping of column name -> {what}; got {value!r}"
        )
    return dict(value)


# --- column maps ------------------------------------------------------------


def select(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """Keep only ``columns``, in the order given.

    >>> select(pa.table({"a": [1], "b": [2], "c": [3]}), ["c", "a"]).column_names
    ['c', 'a']
    """
    names = _names(columns, "select")
    if not names:
        # Selecting nothing is surely a slip, and a table with no columns has
        # nothing to write.
        raise SpecError("select: columns must name at least one column")
    check_columns(table, names, "select")
    return table.select(names)


def drop(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """Remove ``columns``.

    >>> drop(pa.table({"a": [1], "b": [2]}), ["a"]).column_names
    ['b']
    """
    names = _names(columns, "drop")
    check_columns(table, names, "drop")
    if names and len(names) == table.num_columns:
        raise SpecError("drop: cannot drop every column; keep at least one")
    return table.drop_columns(names)


def rename(table: pa.Table, columns: Mapping[str, str]) -> pa.Table:
    """Rename columns, ``{old: new}``; columns not mentioned keep their names.

    >>> rename(pa.table({"a": [1], "b": [2]}), {"a": "x"}).column_names
    ['x', 'b']
    """
    mapping = _mapping(columns, "rename", "new name")
    bad = {old: new for old, new in mapping.items() if not isinstance(new, str) or not new}
    if bad:
        raise SpecError(f"rename: new names must be non-empty strings; got {bad!r}")
    check_columns(table, mapping, "rename")
    new_names = [mapping.get(name, name) for name in table.column_names]
    clashes = sorted({n for n in new_names if new_names.count(n) > 1})
    if clashes:
        raise SpecError(
            f"rename: the result would have more than one column named "
            f"{', '.join(map(repr, clashes))}; columns: {', '.join(table.column_names)}"
        )
    return table.rename_columns(new_names)


# Parametrized type names as pyarrow prints them: "timestamp[ms, tz=UTC]",
# "decimal128(10, 2)", "dictionary<values=string, indices=int32, ordered=0>",
# "list<item: int64>". Plain names ("float32", "date32[day]") are pyarrow aliases.
_PARAMETRIZED = re.compile(r"(?P<name>\w+)\s*[\[(<](?P<body>.*)[\])>]", re.DOTALL)
_PARAMETRIZED_NAMES = (
    "timestamp",
    "dictionary",
    "list",
    "large_list",
    "decimal32",
    "decimal64",
    "decimal128",
    "decimal256",
)
_COMMON_TYPES = (
    *("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
    *("float16", "float32", "float64", "string", "large_string", "binary", "date32", "date64"),
    *(f"timestamp[{unit}]" for unit in ("s", "ms", "us", "ns")),
    *(f"duration[{unit}]" for unit in ("s", "ms", "us", "ns")),
)


def _split_top_level(body: str) -> list[str]:
    """Split at commas that are not inside nested brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(body):
        if char in "[(<":
            depth += 1
        elif char in "])>":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(body[start:i].strip())
            start = i + 1
    parts.append(body[start:].strip())
    return [p for p in parts if p]


def _parse_type(text: str) -> pa.DataType:
    match = _PARAMETRIZED.fullmatch(text.strip())
    if match is None or match["name"] not in _PARAMETRIZED_NAMES:
        return pa.type_for_alias(text.strip())
    name = match["name"]
    args = _split_top_level(match["body"])
    keywords = {
        key.strip(): value.strip() for key, value in (a.split("=", 1) for a in args if "=" in a)
    }
    if name == "timestamp":
        return pa.timestamp(args[0], tz=keywords.get("tz"))
    if name.startswith("decimal"):
        precision, scale = (int(a) for a in args)
        return getattr(pa, name)(precision, scale)
    if name == "dictionary":
        ordered = keywords.get("ordered", "0").lower() in ("1", "true")
        return pa.dictionary(
            _parse_type(keywords["indices"]), _parse_type(keywords["values"]), ordered
        )
    # list<item: int64> or list<int64>
    item = args[0].split(":", 1)[-1].strip()
    return (pa.list_ if name == "list" else pa.large_list)(_parse_type(item))


def arrow_type(value: str | pa.DataType) -> pa.DataType:
    """An Arrow type from its name as pyarrow prints it (or the type itself).

    Accepts pyarrow's aliases (``"float32"``, ``"int64"``, ``"string"``,
    ``"date32"``, ``"timestamp[ms]"``) and the parametrized forms
    ``"timestamp[ms, tz=UTC]"``, ``"decimal128(10, 2)"``,
    ``"dictionary<values=string, indices=int32>"`` and ``"list<item: int64>"``.
    Note that, as in Arrow, ``"float"`` is float32 and ``"double"`` float64.

    >>> arrow_type("dictionary<values=string, indices=int32>")
    DictionaryType(dictionary<values=string, indices=int32, ordered=0>)
    >>> arrow_type("timestamp[ms, tz=UTC]")
    TimestampType(timestamp[ms, tz=UTC])
    """
    if isinstance(value, pa.DataType):
        return value
    if not isinstance(value, str):
        raise SpecError(f"expected an Arrow type name such as 'float64'; got {value!r}")
    try:
        return _parse_type(value)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        hint = did_you_mean(value, _COMMON_TYPES)
        raise SpecError(
            f"unknown Arrow type {value!r}{hint}; use names such as int64, float64, string, "
            "timestamp[ms], decimal128(10, 2) or dictionary<values=string, indices=int32>"
        ) from None


def cast(table: pa.Table, columns: Mapping[str, str | pa.DataType], safe: bool = True) -> pa.Table:
    """Convert columns to other Arrow types, ``{column: type name}``.

    With ``safe=True`` (the default) a value that would overflow, be truncated
    or fail to parse raises instead of changing silently.

    >>> t = cast(pa.table({"a": [1, 2], "b": ["x", "y"]}), {"a": "float32"})
    >>> t.schema.field("a").type
    DataType(float)
    """
    mapping = _mapping(columns, "cast", "Arrow type name")
    check_columns(table, mapping, "cast")
    targets = {}
    for name, type_name in mapping.items():
        try:
            targets[name] = arrow_type(type_name)
        except SpecError as exc:
            raise SpecError(f"cast: column {name!r}: {exc}") from None
    for name, target in targets.items():
        index = table.schema.get_field_index(name)
        column = table.column(index)
        try:
            converted = pc.cast(column, target, safe=safe)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            # Refused from the types alone (also on an empty table): a spec error.
            raise SpecError(
                f"cast: column {name!r} of type {column.type} cannot be cast to {target}: {exc}"
            ) from exc
        except pa.ArrowInvalid as exc:
            # Refused because of a value in this chunk.
            fix = "; pass safe=False if truncation or overflow is acceptable" if safe else ""
            raise ValueError(
                f"cast: column {name!r} of type {column.type} cannot be cast to {target}: "
                f"{exc}{fix}"
            ) from exc
        table = table.set_column(index, table.field(index).with_type(target), converted)
    return table


def _fill_value(value: Any, target: pa.DataType) -> pa.Scalar:
    """``value`` as a scalar of type ``target``, refusing anything but an exact fit."""
    if value is None:
        raise ValueError("None is not a fill value")
    scalar = value if isinstance(value, pa.Scalar) else pa.scalar(value)
    if not compatible(target, scalar.type):
        raise TypeError(f"it is a {scalar.type} value")
    return scalar.cast(target, safe=True)


def fill_null(table: pa.Table, values: Mapping[str, Any]) -> pa.Table:
    """Replace nulls column by column, ``{column: fill value}``.

    The fill value must fit the column's type exactly (no truncation, no
    parsing of strings as numbers), so a typo does not change data silently.

    >>> fill_null(pa.table({"a": [1, None], "s": [None, "x"]}), {"a": 0, "s": "?"}).to_pydict()
    {'a': [1, 0], 's': ['?', 'x']}
    """
    mapping = _mapping(values, "fill_null", "fill value", "values")
    check_columns(table, mapping, "fill_null")
    for name, value in mapping.items():
        index = table.schema.get_field_index(name)
        column = table.column(index)
        # A dictionary column is filled with a value of its value type.
        target = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        try:
            scalar = _fill_value(value, target)
        except (*ARROW_TYPE_ERRORS, TypeError, ValueError, OverflowError) as exc:
            raise SpecError(
                f"fill_null: cannot fill column {name!r} of type {column.type} "
                f"with {value!r} ({exc})"
            ) from None
        table = table.set_column(index, table.field(index), pc.fill_null(column, scalar))
    return table


def _resolve(func: Callable[..., Any] | str, stage: str) -> Callable[..., Any]:
    """A callable from itself or from an import string (as spec files give it)."""
    if isinstance(func, str):
        try:
            func = import_object(func)
        except SpecError as exc:
            raise SpecError(f"{stage}: func: {exc}") from None
    if not callable(func):
        raise SpecError(f"{stage}: func must be a callable or an import string; got {func!r}")
    return func


def _as_column(values: Any, name: str, num_rows: int) -> pa.Array | pa.ChunkedArray:
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        if isinstance(values, np.ndarray) and values.ndim != 1:
            raise ValueError(
                f"derive: column {name!r} must be one-dimensional; got shape {values.shape}"
            )
        try:
            values = pa.array(values)
        except (*ARROW_TYPE_ERRORS, TypeError) as exc:
            raise ValueError(
                f"derive: column {name!r} is not array-like ({type(values).__name__}): {exc}"
            ) from exc
    if len(values) != num_rows:
        raise ValueError(
            f"derive: column {name!r} has {len(values)} value(s) but the table has "
            f"{num_rows} rows; derived columns must have one value per row"
        )
    return values


def _is_dataframe(value: Any) -> bool:
    # Looking in sys.modules keeps pandas optional: if it is not imported, no
    # DataFrame can exist.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def derive(table: pa.Table, func: Callable[..., Any] | str, **kwargs: Any) -> pa.Table:
    """Add the columns ``func(table, **kwargs)`` computes.

    ``func`` returns a mapping of column name -> values (Arrow arrays, NumPy
    arrays, lists), a ``pyarrow.Table`` or a pandas DataFrame, with one value
    per row. New names are appended in order; a name that already exists
    replaces that column in place.

    >>> t = pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    >>> derive(t, lambda t: {"c": pc.multiply(t["a"], t["b"])}).to_pydict()
    {'a': [1.0, 2.0], 'b': [3.0, 4.0], 'c': [3.0, 8.0]}
    """
    result = _resolve(func, "derive")(table, **kwargs)
    if _is_dataframe(result):
        result = pa.Table.from_pandas(result, preserve_index=False)
    if isinstance(result, (pa.Table, pa.RecordBatch)):
        new = dict(zip(result.column_names, result.columns, strict=True))
    elif isinstance(result, Mapping):
        new = dict(result)
    else:
        raise TypeError(
            "derive: func must return a mapping of column name -> values, a pyarrow.Table "
            f"or a pandas DataFrame; got {type(result).__name__}"
        )
    for name, values in new.items():
        if not isinstance(name, str):
            raise TypeError(f"derive: column names must be strings; got {name!r}")
        column = _as_column(values, name, table.num_rows)
        index = table.schema.get_field_index(name)
        if index >= 0:
            table = table.set_column(index, name, column)
        else:
            table = table.append_column(name, column)
    return table


# --- conversions between tables and arrays ----------------------------------


def _is_numeric(type_: pa.DataType) -> bool:
    types = pa.types
    return bool(
        types.is_integer(type_)
        or types.is_floating(type_)
        or types.is_boolean(type_)
        or types.is_decimal(type_)
        or types.is_null(type_)
    )


def to_array(
    table: pa.Table,
    columns: Sequence[str] | None = None,
    dtype: DTypeLike = "float64",
    *,
    field: str | None = None,
) -> np.ndarray:
    """A 2-D C-contiguous array, rows x ``columns`` (default: all), for NumPy stages.

    Numeric and boolean columns are converted; nulls become NaN with a float
    ``dtype``. Integer and boolean dtypes refuse nulls and values that do not
    fit. ``field``: the spec field that listed ``columns`` (such as an
    estimator's ``features``), for the messages; default: this stage's.

    >>> to_array(pa.table({"a": [1, None], "b": [0.5, 1.5]}))
    array([[1. , 0.5],
           [nan, 1.5]])
    """
    who = field or "to_array"
    names = table.column_names if columns is None else _names(columns, who)
    check_columns(table, names, who)
    try:
        target = np.dtype(dtype)
    except TypeError:
        target = np.dtype(object)
    if target.kind not in "biuf":
        raise SpecError(
            f"to_array: dtype must be a numeric NumPy dtype such as 'float64' or 'int32'; "
            f"got {dtype!r}"
        )
    wrong = [
        f"{name!r} ({table.schema.field(name).type})"
        for name in names
        if not _is_numeric(table.schema.field(name).type)
    ]
    if wrong:
        choose = (
            f"list numeric columns in {field}"
            if field
            else "choose numeric columns with columns=[...]"
        )
        raise SpecError(
            f"{who}: not numeric: column{'s' if len(wrong) > 1 else ''} {', '.join(wrong)}; "
            f"{choose}, or cast or encode them first"
        )
    out = np.empty((table.num_rows, len(names)), dtype=target)
    for j, name in enumerate(names):
        column = table.column(name)
        if target.kind != "f" and column.null_count:
            raise ValueError(
                f"to_array: column {name!r} has {column.null_count} null(s), which dtype "
                f"{target} cannot hold; use a float dtype (nulls become NaN) or fill_null first"
            )
        start = 0
        # Chunk by chunk, straight into the output: no concatenated copy.
        for chunk in column.chunks:
            stop = start + len(chunk)
            out[start:stop, j] = _chunk_to_numpy(chunk, target, name)
            start = stop
    return out


def _chunk_to_numpy(chunk: pa.Array, target: np.dtype, name: str) -> np.ndarray:
    if target.kind == "f":
        # Float arrays convert with nulls as NaN (zero-copy without nulls);
        # NumPy's assignment then rounds to the target precision, as astype does.
        if not pa.types.is_floating(chunk.type):
            chunk = pc.cast(chunk, pa.float64(), safe=False)
        return chunk.to_numpy(zero_copy_only=False)
    try:
        return pc.cast(chunk, pa.from_numpy_dtype(target), safe=True).to_numpy(zero_copy_only=False)
    except ARROW_TYPE_ERRORS as exc:
        raise ValueError(
            f"to_array: column {name!r} of type {chunk.type} does not fit dtype {target}: {exc}"
        ) from exc


def from_array(x: ArrayLike, names: Sequence[str]) -> pa.Table:
    """A table with one named column per column of ``x`` (a 1-D array is one column).

    NaN stays NaN (it does not become null).

    >>> from_array(np.array([[1.0, 2.0], [3.0, 4.0]]), ["a", "b"]).to_pydict()
    {'a': [1.0, 3.0], 'b': [2.0, 4.0]}
    """
    array = np.asarray(x)
    column_names = _names(names, "from_array", "names")
    if array.ndim not in (1, 2):
        raise ValueError(f"from_array: expected a 1-D or 2-D array; got shape {array.shape}")
    width = 1 if array.ndim == 1 else array.shape[1]
    if width == 0:
        raise ValueError(f"from_array: the array has no columns (shape {array.shape})")
    if len(column_names) != width:
        raise ValueError(
            f"from_array: got {len(column_names)} name(s) for an array of shape {array.shape} "
            f"with {width} column(s); give one name per column"
        )
    if array.ndim == 1:
        return pa.Table.from_arrays([pa.array(array)], names=column_names)
    # Columns of a C-ordered array are strided; copy each to a contiguous buffer.
    arrays = [pa.array(np.ascontiguousarray(array[:, j])) for j in range(width)]
    return pa.Table.from_arrays(arrays, names=column_names)


# --- filters ----------------------------------------------------------------


def where(table: pa.Table, filters: Any) -> np.ndarray:
    """Keep the rows matching DNF ``filters``, the form pyarrow and pandas accept.

    ``[("a", ">", 0), ("b", "in", ["x", "y"])]`` keeps rows matching every
    tuple; a list of such lists keeps rows matching any of them. Operators:
    ``=``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``.
    The mask is computed by :func:`pipeline.schema.filter_mask`, exactly as for
    a Parquet source's ``filters``, so moving a filter between the source and
    this stage never changes the result: a comparison with a
    null is unknown and drops the row, while ``not in`` keeps nulls and ``in``
    matches them only if the list holds ``None``. A ``pyarrow.compute``
    expression is accepted too.

    >>> t = pa.table({"a": [1, -2, None], "c": ["x", "y", "x"]})
    >>> where(t, [("a", ">", 0), ("c", "in", ["x"])])
    array([ True, False, False])
    >>> where(t, [[("a", "<", 0)], [("c", "==", "x")]])
    array([ True,  True,  True])
    """
    if isinstance(filters, pc.Expression):
        return _expression_mask(table, filters)
    conjunctions = validate_filters(table.schema, filters, "where: filters")
    try:
        return _to_numpy_mask(filter_mask(table, conjunctions))
    except ARROW_TYPE_ERRORS as exc:
        # Name the tuple Arrow refused: evaluate each one on its own.
        for term in (term for conjunction in conjunctions for term in conjunction):
            try:
                filter_mask(table, [[term]])
            except ARROW_TYPE_ERRORS as term_exc:
                column_type = table.schema.field(term[0]).type
                raise filter_type_mismatch(term, column_type, str(term_exc)) from exc
        raise SpecError(f"where: cannot evaluate filters {filters!r}: {exc}") from exc


def _to_numpy_mask(mask: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _expression_mask(table: pa.Table, expression: pc.Expression) -> np.ndarray:
    """The rows an expression keeps, as a mask: filter row numbers, then mark them."""
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    try:
        kept = table.append_column("__row__", rows).filter(expression)["__row__"]
    except ARROW_TYPE_ERRORS as exc:
        reason = str(exc).splitlines()[0]
        if "must evaluate to bool" in reason:  # e.g. "... but amount evaluates to double"
            raise SpecError(
                f"where: the filter gives {reason.rsplit(' ', 1)[-1]} values, not booleans"
            ) from exc
        raise SpecError(
            f"where: cannot evaluate {expression}: {reason}; "
            f"available columns: {', '.join(table.column_names)}"
        ) from exc
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[kept.to_numpy()] = True
    return mask


def _as_mask(result: Any, num_rows: int) -> np.ndarray:
    if isinstance(result, (pa.Array, pa.ChunkedArray)) and result.type != pa.bool_():
        raise TypeError(f"filter_rows: func returned {result.type} values, not booleans")
    mask = as_mask(result)
    if mask.dtype != np.bool_ or mask.shape != (num_rows,):
        raise TypeError(
            f"filter_rows: func must return a boolean mask with one value per row "
            f"({num_rows}); got {type(result).__name__} of dtype {mask.dtype} "
            f"and shape {mask.shape}"
        )
    return mask


def filter_rows(table: pa.Table, func: Callable[..., Any] | str, **kwargs: Any) -> np.ndarray:
    """Keep the rows where ``func(table, **kwargs)`` is True.

    ``func`` returns a boolean Arrow array (nulls count as False), a NumPy
    boolean array or a pandas boolean Series, with one value per row.

    >>> filter_rows(pa.table({"a": [1, 5, 3]}), lambda t, limit: pc.less(t["a"], limit), limit=4)
    array([ True, False,  True])
    """
    return _as_mask(_resolve(func, "filter_rows")(table, **kwargs), table.num_rows)
