"""Table stages (``stages.tables``) against direct pyarrow, NumPy and plain-Python oracles.

Every stage is run on a table whose columns have several chunks (one of them
empty), on the same table combined into one chunk, and on an empty table of
the same schema, because the engine probes stages on an empty table before
reading data. Error messages are matched: they must name the column, and list
the available columns when one is missing.
"""

from __future__ import annotations

import datetime
import decimal
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import Filter, Map, SpecError, plan_chunks
from stages.tables import (
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

AVAILABLE = "available columns: id, amount, country, cat, ts, flag, price"
T0 = datetime.datetime(2024, 1, 1)


def make_table() -> pa.Table:
    """Seven columns of different types, with nulls, in batches of 4, 0, 3 and 5 rows."""
    ids = list(range(12))
    amounts = [1.5, None, -2.0, 0.0, 3.25, None, 7.0, -0.5, 2.0, 1.5, None, -9.0]
    countries = ["FR", "DE", None, "FR", "IT", "DE", None, "FR", "ES", "DE", "FR", "IT"]
    cats = ["x", "y", "x", None, "z", "x", "y", "y", None, "x", "z", "x"]
    stamps = [T0 + datetime.timedelta(hours=h) for h in range(12)]
    stamps[4] = None
    flags = [True, False, None, True, True, False, False, True, None, True, False, True]
    prices = [decimal.Decimal(f"{i}.25") for i in range(12)]
    columns = {
        "id": pa.array(ids, pa.int64()),
        "amount": pa.array(amounts, pa.float64()),
        "country": pa.array(countries, pa.string()),
        "cat": pa.array(cats).dictionary_encode(),
        "ts": pa.array(stamps, pa.timestamp("ms")),
        "flag": pa.array(flags, pa.bool_()),
        "price": pa.array(prices, pa.decimal128(6, 2)),
    }
    whole = pa.table(columns)
    empty = pa.RecordBatch.from_pylist([], schema=whole.schema)
    batches = [whole.slice(0, 4), empty, whole.slice(4, 3), whole.slice(7, 5)]
    return pa.Table.from_batches(
        [
            b
            for part in batches
            for b in (part.to_batches() if isinstance(part, pa.Table) else [part])
        ]
    )


@pytest.fixture(params=["chunked", "whole", "empty", "no-chunks"])
def table(request: pytest.FixtureRequest) -> pa.Table:
    """The same data in several chunks and in one chunk; empty, with one empty chunk or none."""
    t = make_table()
    if request.param == "whole":
        return t.combine_chunks()
    if request.param == "empty":
        return t.schema.empty_table()
    if request.param == "no-chunks":
        return pa.Table.from_batches([], t.schema)
    return t


def test_the_chunked_table_really_has_chunks():
    t = make_table()
    assert t.column("amount").num_chunks >= 3
    assert 0 in [len(chunk) for chunk in t.column("amount").chunks]
    assert pa.Table.from_batches([], t.schema).column("amount").num_chunks == 0


# --- check_columns ------------------------------------------------------------


def test_check_columns_accepts_known_columns_of_a_table_or_schema():
    t = make_table()
    check_columns(t, ["amount", "id"], "select")
    check_columns(t.schema, [], "select")
    check_columns(t.schema.empty_table(), ["ts"], "select")


def test_check_columns_names_the_missing_column_the_hint_and_the_choices():
    expected = f"select: unknown column 'amout' (did you mean 'amount'?); {AVAILABLE}"
    with pytest.raises(SpecError, match=f"^{re.escape(expected)}$"):
        check_columns(make_table().schema, ["id", "amout"], "select")


def test_check_columns_lists_every_missing_column_once():
    with pytest.raises(
        ValueError, match=r"unknown columns 'contry' \(did you mean 'country'\?\), 'zzz'; available"
    ):
        check_columns(make_table(), ["contry", "zzz", "contry"], "drop")


# --- select, drop, rename -----------------------------------------------------


def test_select_keeps_and_orders_columns(table):
    out = select(table, ["country", "id"])
    assert out.equals(table.select(["country", "id"]))
    assert out.num_rows == table.num_rows
    assert select(table, "id").column_names == ["id"]  # one name for a list of one


def test_select_errors(table):
    with pytest.raises(
        SpecError,
        match=re.escape(f"select: unknown column 'amout' (did you mean 'amount'?); {AVAILABLE}"),
    ):
        select(table, ["id", "amout"])
    with pytest.raises(SpecError, match="lists 'id' more than once"):
        select(table, ["id", "id"])
    with pytest.raises(SpecError, match="at least one column"):
        select(table, [])
    with pytest.raises(SpecError, match="must be a list of column names; got 3"):
        select(table, 3)  # type: ignore[arg-type]


def test_drop(table):
    assert drop(table, ["cat", "ts"]).equals(table.drop_columns(["cat", "ts"]))
    assert drop(table, []).equals(table)
    with pytest.raises(
        SpecError, match=re.escape(f"drop: unknown column 'tss' (did you mean 'ts'?); {AVAILABLE}")
    ):
        drop(table, ["tss"])
    with pytest.raises(SpecError, match="cannot drop every column"):
        drop(table, table.column_names)


def test_rename(table):
    out = rename(table, {"amount": "value", "id": "key"})
    assert out.column_names == ["key", "value", "country", "cat", "ts", "flag", "price"]
    assert out.columns == table.columns
    # Swapping two names is fine: the result has no duplicates.
    assert rename(table, {"id": "amount", "amount": "id"}).column_names[:2] == ["amount", "id"]


def test_rename_errors(table):
    with pytest.raises(
        SpecError,
        match=re.escape(f"rename: unknown column 'ammount' (did you mean 'amount'?); {AVAILABLE}"),
    ):
        rename(table, {"ammount": "value"})
    with pytest.raises(SpecError, match="more than one column named 'amount'"):
        rename(table, {"id": "amount"})
    with pytest.raises(SpecError, match="new names must be non-empty strings"):
        rename(table, {"id": ""})
    with pytest.raises(SpecError, match=r"columns must be a mapping of column name -> new name"):
        rename(table, ["id"])  # type: ignore[arg-type]


# --- cast -----------------------------------------------------------------------

TYPE_NAMES = [
    ("float32", pa.float32()),
    ("float64", pa.float64()),
    ("double", pa.float64()),
    ("int64", pa.int64()),
    ("string", pa.string()),
    ("large_string", pa.large_string()),
    ("date32", pa.date32()),
    ("timestamp[ms]", pa.timestamp("ms")),
    ("timestamp[us, tz=UTC]", pa.timestamp("us", tz="UTC")),
    ("decimal128(10, 2)", pa.decimal128(10, 2)),
    ("dictionary<values=string, indices=int32>", pa.dictionary(pa.int32(), pa.string())),
    (
        "dictionary<values=string, indices=int8, ordered=1>",
        pa.dictionary(pa.int8(), pa.string(), True),
    ),
    ("list<item: int64>", pa.list_(pa.int64())),
]


@pytest.mark.parametrize(("name", "expected"), TYPE_NAMES, ids=[n for n, _ in TYPE_NAMES])
def test_arrow_type_parses_the_names_pyarrow_prints(name, expected):
    assert arrow_type(name) == expected
    assert arrow_type(str(expected)) == expected  # round trip through the printed form
    assert arrow_type(expected) is expected


@pytest.mark.parametrize(
    ("column", "type_name"),
    [
        ("id", "float32"),
        ("id", "string"),
        ("amount", "float32"),
        ("country", "dictionary<values=string, indices=int32>"),
        ("cat", "string"),
        ("ts", "timestamp[s]"),
        ("ts", "date32"),
        ("flag", "int8"),
        ("price", "float64"),
    ],
)
def test_cast_matches_pyarrow(table, column, type_name):
    out = cast(table, {column: type_name}, safe=False)
    target = arrow_type(type_name)
    assert out.schema.field(column).type == target
    assert out.column(column).equals(pc.cast(table.column(column), target, safe=False))
    assert out.drop_columns([column]).equals(table.drop_columns([column]))
    assert out.column_names == table.column_names


def test_cast_several_columns_at_once(table):
    out = cast(table, {"id": "int32", "amount": "float32"})
    assert [out.schema.field(c).type for c in ("id", "amount")] == [pa.int32(), pa.float32()]


def test_cast_is_safe_by_default():
    t = make_table()
    with pytest.raises(
        ValueError,
        match=(
            r"cast: column 'amount' of type double cannot be cast to int64:"
            r" .*truncated.*; pass safe=False"
        ),
    ):
        cast(t, {"amount": "int64"})
    with pytest.raises(ValueError, match=r"column 'id' of type int64 cannot be cast to int8"):
        cast(pa.table({"id": [1, 300]}), {"id": "int8"})
    truncated = cast(t, {"amount": "int64"}, safe=False)
    assert truncated.column("amount").to_pylist()[:3] == [1, None, -2]


def test_cast_errors_known_from_types_alone_are_spec_errors(table):
    with pytest.raises(
        SpecError,
        match=r"cast: column 'amount': unknown Arrow type 'flaot32' \(did you mean 'float32'\?\)",
    ):
        cast(table, {"amount": "flaot32"})
    with pytest.raises(
        SpecError, match=r"column 'country' of type string cannot be cast to list<item: int64>"
    ):
        cast(table, {"country": "list<item: int64>"})  # refused even with no rows
    with pytest.raises(
        SpecError,
        match=re.escape(f"cast: unknown column 'amout' (did you mean 'amount'?); {AVAILABLE}"),
    ):
        cast(table, {"amout": "float32"})


# --- fill_null --------------------------------------------------------------------


def test_fill_null_matches_pyarrow(table):
    values = {
        "amount": 0.0,
        "country": "??",
        "ts": T0,
        "flag": False,
        "price": decimal.Decimal("0.5"),
    }
    out = fill_null(table, values)
    for name, value in values.items():
        expected = pc.fill_null(
            table.column(name), pa.scalar(value).cast(table.schema.field(name).type)
        )
        assert out.column(name).equals(expected), name
        assert out.column(name).null_count == 0
    assert out.schema == table.schema
    assert out.column("cat").equals(table.column("cat"))  # not mentioned, untouched


def test_fill_null_converts_exact_values_to_the_column_type(table):
    out = fill_null(table, {"amount": 0, "id": 7})  # an int fills a float column exactly
    assert out.schema == table.schema
    assert out.column("amount").null_count == 0


def test_fill_null_on_a_dictionary_column_adds_the_value():
    out = fill_null(make_table(), {"cat": "missing"})
    assert pa.types.is_dictionary(out.schema.field("cat").type)
    assert out.column("cat").to_pylist()[3] == "missing"
    assert out.column("cat").null_count == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"amount": "zero"},
            r"cannot fill column 'amount' of type double with 'zero' \(it is a string value\)",
        ),
        ({"id": 1.5}, r"cannot fill column 'id' of type int64 with 1.5 \(.*truncated"),
        (
            {"country": 0},
            r"cannot fill column 'country' of type string with 0 \(it is a int64 value\)",
        ),
        (
            {"amount": None},
            r"column 'amount' of type double with None \(None is not a fill value\)",
        ),
        (
            {"amont": 0},
            re.escape(f"fill_null: unknown column 'amont' (did you mean 'amount'?); {AVAILABLE}"),
        ),
        (["amount"], r"fill_null: values must be a mapping of column name -> fill value"),
    ],
)
def test_fill_null_errors(table, values, message):
    with pytest.raises(SpecError, match=message):
        fill_null(table, values)


# --- where -----------------------------------------------------------------------


def python_where(table: pa.Table, filters: list) -> np.ndarray:
    """The DNF semantics in plain Python, row by row: a comparison with None is False,
    ``in`` is list membership (so it matches None only if listed), ``not in`` its negation."""
    ops = {
        "=": lambda a, b: a == b,
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }

    def holds(row: dict[str, Any], column: str, op: str, value: Any) -> bool:
        cell = row[column]
        if op == "in":
            return cell in value
        if op == "not in":
            return cell not in value
        return cell is not None and ops[op](cell, value)

    conjunctions = [filters] if isinstance(filters[0][0], str) else filters
    rows = table.to_pylist()
    return np.array(
        [any(all(holds(r, *term) for term in c) for c in conjunctions) for r in rows], dtype=bool
    )


FILTERS = {
    "gt": [("amount", ">", 0)],
    "eq-float-int": [("amount", "==", 2)],
    "single-equals": [("country", "=", "FR")],
    "ne-drops-nulls": [("country", "!=", "FR")],
    "le": [("id", "<=", 5)],
    "lt-float": [("id", "<", 4.5)],
    "ge-timestamp": [("ts", ">=", T0 + datetime.timedelta(hours=6))],
    "in": [("country", "in", ["FR", "DE"])],
    "in-tuple": [("id", "in", (1, 3, 99))],
    "in-empty": [("id", "in", [])],
    "in-matches-listed-null": [("country", "in", ["IT", None])],
    "not-in-keeps-nulls": [("country", "not in", ["FR", "DE"])],
    "dictionary-eq": [("cat", "==", "x")],
    "dictionary-in": [("cat", "in", ["y", "z"])],
    "bool": [("flag", "==", True)],
    "and": [("amount", ">", 0), ("country", "in", ["FR", "ES"])],
    "or": [[("amount", "<", 0)], [("country", "==", "IT")]],
    "or-of-ands": [[("amount", ">", 1), ("id", "<", 8)], [("cat", "==", "z"), ("id", ">=", 0)]],
    "yaml-lists": [["amount", ">", 0], ["id", "!=", 2]],
    "yaml-nested-lists": [[["amount", "<", 0]], [["country", "in", ["IT"]]]],
}


@pytest.mark.parametrize("filters", FILTERS.values(), ids=FILTERS.keys())
def test_where_matches_plain_python_and_a_pushed_down_filter(table, filters):
    mask = where(table, filters)
    assert isinstance(mask, np.ndarray)
    assert mask.dtype == np.bool_
    assert mask.shape == (table.num_rows,)
    np.testing.assert_array_equal(mask, python_where(table, filters))
    # The same rows as a Parquet source with these filters would give.
    assert table.filter(mask).equals(table.filter(pq.filters_to_expression(filters)))


def test_where_on_the_filters_of_the_issue():
    t = make_table()
    filters = [[("amount", ">", 0), ("country", "in", ["FR", "DE"])]]
    expected = pc.and_(pc.greater(t["amount"], 0), pc.is_in(t["country"], pa.array(["FR", "DE"])))
    np.testing.assert_array_equal(where(t, filters), pc.fill_null(expected, False).to_numpy())
    assert where(t, filters).sum() == 2


def test_where_keeps_row_order_over_many_chunks():
    rng = np.random.default_rng(7)
    values = rng.normal(size=5000)
    sizes = np.diff(np.unique(np.r_[0, rng.integers(0, 5000, 60), 5000]))
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    t = pa.Table.from_batches(
        [pa.record_batch({"a": values[s : s + n]}) for s, n in zip(starts, sizes, strict=True)]
    )
    assert t.column("a").num_chunks > 40
    np.testing.assert_array_equal(where(t, [("a", ">", 0.1)]), values > 0.1)


def test_where_accepts_a_pyarrow_expression(table):
    expression = (pc.field("amount") > 0) | pc.field("country").is_null()
    expected = pc.fill_null(
        pc.or_(pc.greater(table["amount"], 0), pc.is_null(table["country"])), False
    )
    np.testing.assert_array_equal(where(table, expression), expected.to_numpy(zero_copy_only=False))


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (
            [("amout", ">", 0)],
            re.escape(
                f"where: filters: unknown column 'amout' (did you mean 'amount'?); {AVAILABLE}"
            ),
        ),
        (
            [[("id", ">", 0)], [("contry", "==", "FR"), ("zz", "==", 1)]],
            r"unknown columns 'contry' \(did you mean 'country'\?\), 'zz'; available columns: id,",
        ),
        (
            [("country", ">", 0)],
            (
                r"filter \('country', '>', 0\): column 'country' has type string, which"
                r" cannot be compared with 0 \(int64\)"
            ),
        ),
        (
            [("amount", "==", "1.5")],
            r"column 'amount' has type double, which cannot be compared with '1.5' \(string\)",
        ),
        (
            [("id", "in", ["1", "2"])],
            r"column 'id' has type int64, which cannot be compared with \['1', '2'\] \(string\)",
        ),
        (
            [("cat", "in", [1])],
            (
                r"column 'cat' has type dictionary<values=string, indices=int32,"
                r" ordered=0>, which cannot be compared with \[1\]"
            ),
        ),
        (
            [("flag", "==", 1)],
            r"column 'flag' has type bool, which cannot be compared with 1 \(int64\)",
        ),
        (
            [("ts", ">", "2024-01-01")],
            (
                r"column 'ts' has type timestamp\[ms\], which cannot be compared with"
                r" '2024-01-01' \(string\)"
            ),
        ),
        (
            [("ts", ">", datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))],
            (
                r"column 'ts' has type timestamp\[ms\], which cannot be compared with"
                r" datetime.datetime\(2024, 1, 1, 0, 0, tzinfo=datetime.timezone.utc\)"
                r" \(timestamp\[us, tz=UTC\]\)"
            ),
        ),
        (
            [("id", "in", [1, "x"])],
            r"column 'id' has type int64, which cannot be compared with \[1, 'x'\]",
        ),
        (
            [("id", ">", 2**70)],
            r"column 'id' has type int64, which cannot be compared with 1180591620717411303424",
        ),
        (
            [("amount", "==", None)],
            r"comparison with None is never true .* write \('amount', 'in', \[None\]\)",
        ),
        (
            [("amount", "=>", 0)],
            (
                r"unknown operator '=>' in filter \('amount', '=>', 0\) \(did you mean"
                r" '>'\?\); expected one of =, ==, !=, <, <=, >, >=, in, not in"
            ),
        ),
        (
            [("amount", "in", 1.5)],
            (
                r"'in' needs a list of values in filter \('amount', 'in', 1.5\); write"
                r" \('amount', 'in', \[1.5\]\)"
            ),
        ),
        ([("country", "not in", "FR")], r"'not in' needs a list of values"),
        (
            [],
            (
                r"filters: expected a list of \(column, op, value\) tuples, or a list"
                r" of such lists .*; got \[\]"
            ),
        ),
        ([("amount", ">")], r"filters: expected a list of \(column, op, value\) tuples"),
        ([("amount", ">", 0), [("id", "<", 3)]], r"filters: expected a list of"),
        ("amount > 0", r"filters: expected a list of"),
    ],
)
def test_where_errors(table, filters, message):
    with pytest.raises(SpecError, match=message):
        where(table, filters)


def test_where_compares_decimals_with_integers():
    # pyarrow's compute functions rescale the integer, where an expression
    # filter would fail on precision.
    table = make_table()
    expected = [p is not None and p > 1 for p in table["price"].to_pylist()]
    assert where(table, [("price", ">", 1)]).tolist() == expected


def test_where_expression_errors_list_the_columns():
    with pytest.raises(
        SpecError, match=r"where: cannot evaluate \(zz > 0\): .*zz.*; available columns: id, amount"
    ):
        where(make_table(), pc.field("zz") > 0)
    with pytest.raises(SpecError, match=r"where: the filter gives double values, not booleans"):
        where(make_table(), pc.field("amount"))


# --- filter_rows ----------------------------------------------------------------


def positive_amount(table: pa.Table, above: float = 0.0) -> pa.ChunkedArray:
    """A mask with nulls (where amount is null): they count as False."""
    return pc.greater(table["amount"], above)


def test_filter_rows_with_an_arrow_mask_treats_nulls_as_false(table):
    mask = filter_rows(table, positive_amount, above=1.0)
    expected = [a is not None and a > 1.0 for a in table.column("amount").to_pylist()]
    np.testing.assert_array_equal(mask, np.array(expected, dtype=bool))
    assert mask.dtype == np.bool_ and mask.shape == (table.num_rows,)


def test_filter_rows_resolves_an_import_string():
    t = make_table()
    np.testing.assert_array_equal(
        filter_rows(t, f"{__name__}:positive_amount"), filter_rows(t, positive_amount)
    )


@pytest.mark.parametrize(
    "func",
    [
        lambda t: t["id"].to_numpy() % 2 == 0,
        lambda t: [i % 2 == 0 for i in t["id"].to_pylist()],
        lambda t: pd.Series(t["id"].to_numpy() % 2 == 0),
        lambda t: pd.array([i % 2 == 0 for i in t["id"].to_pylist()], dtype="boolean"),
    ],
    ids=["numpy", "list", "pandas", "pandas-nullable"],
)
def test_filter_rows_accepts_numpy_lists_and_pandas(table, func):
    mask = filter_rows(table, func)
    np.testing.assert_array_equal(mask, table["id"].to_numpy() % 2 == 0)
    assert mask.dtype == np.bool_


def test_filter_rows_pandas_na_counts_as_false():
    t = pa.table({"a": [1, 2, 3]})
    mask = filter_rows(t, lambda t: pd.array([True, None, False], dtype="boolean"))
    np.testing.assert_array_equal(mask, [True, False, False])


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (
            lambda t: t["id"].to_numpy(),
            r"boolean mask with one value per row \(12\); got ndarray of dtype int64",
        ),
        (
            lambda t: np.ones(3, dtype=bool),
            r"one value per row \(12\); got ndarray of dtype bool and shape \(3,\)",
        ),
        (lambda t: t["id"], r"filter_rows: func returned int64 values, not booleans"),
    ],
)
def test_filter_rows_errors(func, message):
    with pytest.raises(TypeError, match=message):
        filter_rows(make_table(), func)


def test_filter_rows_bad_func():
    with pytest.raises(SpecError, match=r"filter_rows: func: cannot import 'nosuchmodule_xyz:f'"):
        filter_rows(make_table(), "nosuchmodule_xyz:f")
    with pytest.raises(SpecError, match=r"func must be a callable or an import string; got 3"):
        filter_rows(make_table(), 3)  # type: ignore[arg-type]


# --- derive -----------------------------------------------------------------------


def margin(table: pa.Table, rate: float) -> dict[str, Any]:
    amount = table["amount"]
    return {
        "net": pc.multiply(amount, 1 - rate),  # an Arrow ChunkedArray
        "big": np.abs(pc.fill_null(amount, 0.0).to_numpy()) > 2,  # a NumPy array
        "id": pc.add(table["id"], 100),  # replaces a column in place
    }


def test_derive_appends_and_replaces_columns(table):
    out = derive(table, margin, rate=0.2)
    assert out.column_names == [*table.column_names, "net", "big"]
    assert out.num_rows == table.num_rows
    assert out.column("net").to_pylist() == [
        None if a is None else a * (1 - 0.2) for a in table.column("amount").to_pylist()
    ]
    assert out.column("id").to_pylist() == [i + 100 for i in table.column("id").to_pylist()]
    assert out.schema.field("big").type == pa.bool_()
    assert out.drop_columns(["id", "net", "big"]).equals(table.drop_columns(["id"]))


def test_derive_on_chunks_equals_derive_on_the_whole_table():
    t = make_table()
    whole = derive(t.combine_chunks(), margin, rate=0.1)
    pieces = [
        derive(t.slice(c.start, c.stop - c.start), margin, rate=0.1)
        for c in plan_chunks(t.num_rows, 5)
    ]
    assert pa.concat_tables(pieces).combine_chunks().equals(whole)


@pytest.mark.parametrize(
    "func",
    [
        lambda t: pa.table({"double": pc.multiply(t["id"], 2)}),
        lambda t: pd.DataFrame({"double": t["id"].to_numpy() * 2}),
        lambda t: {"double": [2 * i for i in t["id"].to_pylist()]},
    ],
    ids=["table", "dataframe", "list"],
)
def test_derive_accepts_tables_dataframes_and_lists(func):
    out = derive(make_table(), func)
    assert out.column("double").to_pylist() == [2 * i for i in range(12)]


def test_derive_resolves_an_import_string():
    out = derive(make_table(), f"{__name__}:margin", rate=0.5)
    assert "net" in out.column_names


@pytest.mark.parametrize(
    ("func", "error", "message"),
    [
        (
            lambda t: {"x": [1, 2]},
            ValueError,
            r"derive: column 'x' has 2 value\(s\) but the table has 12 rows",
        ),
        (
            lambda t: {"x": np.ones((12, 2))},
            ValueError,
            r"column 'x' must be one-dimensional; got shape \(12, 2\)",
        ),
        (lambda t: {"x": 5}, ValueError, r"derive: column 'x' is not array-like \(int\)"),
        (
            lambda t: [1, 2],
            TypeError,
            (
                r"func must return a mapping of column name -> values, a pyarrow.Table"
                r" or a pandas DataFrame; got list"
            ),
        ),
        (lambda t: {1: t["id"]}, TypeError, r"column names must be strings; got 1"),
    ],
)
def test_derive_errors(func, error, message):
    with pytest.raises(error, match=message):
        derive(make_table(), func)


# --- to_array and from_array ------------------------------------------------------


def numpy_oracle(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Column by column through Python floats, with None as NaN."""
    rows = [
        [np.nan if v is None else float(v) for v in table.column(c).to_pylist()] for c in columns
    ]
    return np.array(rows, dtype=np.float64).reshape(len(columns), table.num_rows).T


def test_to_array_converts_numeric_columns_with_nulls_as_nan(table):
    columns = ["id", "amount", "flag", "price"]
    x = to_array(table, columns)
    assert x.shape == (table.num_rows, 4)
    assert x.dtype == np.float64
    assert x.flags.c_contiguous
    np.testing.assert_array_equal(x, numpy_oracle(table, columns))


def test_to_array_defaults_to_all_columns_and_float64():
    t = select(make_table(), ["id", "amount"])
    np.testing.assert_array_equal(to_array(t), numpy_oracle(t, ["id", "amount"]))


def test_to_array_float32(table):
    x = to_array(table, ["amount", "id"], dtype="float32")
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, numpy_oracle(table, ["amount", "id"]).astype(np.float32))


def test_to_array_integer_dtype_without_nulls(table):
    x = to_array(table, ["id"], dtype="int32")
    assert x.dtype == np.int32 and x.shape == (table.num_rows, 1)
    np.testing.assert_array_equal(
        x[:, 0], np.asarray(table.column("id").to_pylist(), dtype=np.int32)
    )


@pytest.mark.parametrize(
    ("columns", "dtype", "error", "message"),
    [
        (
            ["id", "country", "cat"],
            "float64",
            SpecError,
            (
                r"to_array: not numeric: columns 'country' \(string\), 'cat'"
                r" \(dictionary<values=string, indices=int32, ordered=0>\); choose"
                r" numeric columns"
            ),
        ),
        (["ts"], "float64", SpecError, r"not numeric: column 'ts' \(timestamp\[ms\]\)"),
        (
            ["amount"],
            "int64",
            ValueError,
            (
                r"to_array: column 'amount' has 3 null\(s\), which dtype int64 cannot"
                r" hold; use a float dtype \(nulls become NaN\) or fill_null first"
            ),
        ),
        (
            ["id", "amonut"],
            "float64",
            SpecError,
            re.escape(f"to_array: unknown column 'amonut' (did you mean 'amount'?); {AVAILABLE}"),
        ),
        (
            ["id"],
            "str",
            SpecError,
            r"dtype must be a numeric NumPy dtype such as 'float64' or 'int32'; got 'str'",
        ),
        (["id"], "nonsense", SpecError, r"dtype must be a numeric NumPy dtype"),
    ],
)
def test_to_array_errors(columns, dtype, error, message):
    with pytest.raises(error, match=message):
        to_array(make_table(), columns, dtype=dtype)


def test_to_array_refuses_values_that_do_not_fit_an_integer_dtype():
    with pytest.raises(
        ValueError, match=r"to_array: column 'id' of type int64 does not fit dtype int8"
    ):
        to_array(pa.table({"id": [1, 300]}), dtype="int8")
    with pytest.raises(
        ValueError, match=r"column 'a' of type double does not fit dtype int64: .*truncated"
    ):
        to_array(pa.table({"a": [1.5]}), dtype="int64")


def test_to_array_empty_table_keeps_the_column_count():
    empty = make_table().schema.empty_table()
    assert to_array(empty, ["id", "amount"]).shape == (0, 2)


def test_from_array_2d_and_1d():
    x = np.arange(12.0).reshape(4, 3)
    t = from_array(x, ["a", "b", "c"])
    assert t.column_names == ["a", "b", "c"]
    assert t.equals(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}))
    assert from_array(np.asfortranarray(x), ["a", "b", "c"]).equals(t)
    assert from_array(np.array([1, 2]), ["y"]).equals(pa.table({"y": [1, 2]}))
    assert from_array(np.array([1, 2]), "y").equals(pa.table({"y": [1, 2]}))
    assert from_array(np.empty((0, 2)), ["a", "b"]).num_rows == 0


def test_from_array_keeps_nan_and_round_trips_through_to_array():
    x = np.array([[1.0, np.nan], [3.0, 4.0]])
    t = from_array(x, ["a", "b"])
    assert t.column("b").null_count == 0
    np.testing.assert_array_equal(to_array(t), x)


@pytest.mark.parametrize(
    ("x", "names", "message"),
    [
        (
            np.ones((5, 2)),
            ["a", "b", "c"],
            (
                r"from_array: got 3 name\(s\) for an array of shape \(5, 2\) with 2"
                r" column\(s\); give one name per column"
            ),
        ),
        (
            np.ones(5),
            ["a", "b"],
            r"got 2 name\(s\) for an array of shape \(5,\) with 1 column\(s\)",
        ),
        (
            np.ones((2, 2, 2)),
            ["a", "b"],
            r"from_array: expected a 1-D or 2-D array; got shape \(2, 2, 2\)",
        ),
        (np.ones((5, 2)), ["a", "a"], r"from_array: names lists 'a' more than once"),
        (np.ones((5, 0)), [], r"from_array: the array has no columns \(shape \(5, 0\)\)"),
    ],
)
def test_from_array_errors(x, names, message):
    with pytest.raises(ValueError, match=message):
        from_array(x, names)


# --- as engine stages: row-wise, and usable on an empty probe table ----------------

#: name -> (kind, function, params), as the entry points register them.
TABLE_STAGES: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "select": ("map", select, {"columns": ["amount", "id"]}),
    "drop": ("map", drop, {"columns": ["cat"]}),
    "rename": ("map", rename, {"columns": {"id": "key"}}),
    "cast": ("map", cast, {"columns": {"amount": "float32", "country": "large_string"}}),
    "fill_null": ("map", fill_null, {"values": {"amount": -1.0, "country": "?"}}),
    "derive": ("map", derive, {"func": f"{__name__}:margin", "rate": 0.25}),
    "to_array": ("map", to_array, {"columns": ["id", "amount", "flag"]}),
    "where": ("filter", where, {"filters": [[("amount", ">", 0)], [("country", "==", "DE")]]}),
    "filter_rows": ("filter", filter_rows, {"func": positive_amount}),
}


@pytest.mark.parametrize("name", TABLE_STAGES)
@pytest.mark.parametrize("chunk_rows", [1, 5, 12])
def test_stage_is_row_wise(name, chunk_rows):
    kind, func, params = TABLE_STAGES[name]
    stage = (Map if kind == "map" else Filter)(func, name=name, params=params)
    t = make_table()
    whole = stage.call(t.combine_chunks())
    pieces = [
        stage.call(t.slice(c.start, c.stop - c.start)) for c in plan_chunks(t.num_rows, chunk_rows)
    ]
    if isinstance(whole, pa.Table):
        assert pa.concat_tables(pieces).combine_chunks().equals(whole.combine_chunks())
    else:
        np.testing.assert_array_equal(np.concatenate(pieces), whole)


@pytest.mark.parametrize("name", TABLE_STAGES)
def test_stage_probes_on_an_empty_table(name):
    kind, func, params = TABLE_STAGES[name]
    full = func(make_table(), **params)
    out = func(make_table().schema.empty_table(), **params)
    if kind == "filter":
        assert out.shape == (0,) and out.dtype == np.bool_
    elif isinstance(full, pa.Table):
        assert out.num_rows == 0 and out.schema == full.schema  # the probe tells the schema
    else:
        assert out.shape == (0, *full.shape[1:]) and out.dtype == full.dtype


def test_from_array_as_a_map_after_to_array():
    x = to_array(make_table(), ["id", "amount"])
    back = Map(from_array, params={"names": ["id", "amount"]}).call(x)
    assert back.column_names == ["id", "amount"]
    np.testing.assert_array_equal(to_array(back), x)
