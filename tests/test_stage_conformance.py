"""One conformance check run over every built-in stage registered in the entry points.

Each registered stage must: load; be usable by its short name in a spec; be
row-wise (chunked and concatenated == applied to the whole array; with
overlap for windowed maps); accept a chunk with zero rows (a filter may empty
one); and, for reductions, give the whole array's result when chunk states
are merged in chunk order.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import Pipeline, Reduction, plan_chunks, registry


def doubled_b(table: pa.Table) -> dict[str, Any]:
    """A derive function for the conformance run: one new column."""
    return {"b2": pc.multiply(table["b"], 2)}


def positive_a(table: pa.Table) -> Any:
    """A filter_rows function for the conformance run."""
    return pc.greater(table["a"], 3.0)


#: Parameters each built-in stage needs, and the overlap a windowed one needs.
#: A newly registered stage that needs parameters must be added here.
PARAMS: dict[str, dict[str, Any]] = {
    "clip": {"min": 1.0, "max": 4.0},
    "astype": {"dtype": "float32"},
    "standardize": {"mean": [1.0, 2.0, 3.0], "std": [2.0, 0.0, 0.5]},
    "rolling_mean": {"window": 5},
    "nan_to_num": {"nan": -1.0, "posinf": 99.0},
    "range_rows": {"min": 1.0, "max": 4.5},
    "histogram": {"bins": 6, "range": [0.0, 6.0]},
    "variance": {"ddof": 1},
    "std": {"ddof": 1},
    "select": {"columns": ["k", "a"]},
    "drop": {"columns": ["n"]},
    "rename": {"columns": {"a": "alpha"}},
    "cast": {"columns": {"n": "float64", "a": "float32"}},
    "fill_null": {"values": {"b": 0.0}},
    "derive": {"func": doubled_b},
    "to_array": {"columns": ["a", "b"]},
    "from_array": {"names": ["x0", "x1", "x2"]},
    "where": {"filters": [("a", ">", 2.0), ("k", "in", ["p", "q"])]},
    "filter_rows": {"func": positive_a},
    "profile": {"histograms": {"a": {"bins": 4, "range": [0.0, 6.0]}}},
    "group_by": {"group_by": ["k"], "aggregate": {"a": ["count", "sum", "mean", "min", "max"]}},
}
OVERLAP = {"rolling_mean": 2}

#: Reductions whose results must be exactly equal however the rows are chunked.
EXACT = {"count", "min", "max", "histogram"}

#: Stages that take a pyarrow.Table (the others take an array).
TABLE_INPUT = {
    "select", "drop", "rename", "cast", "fill_null", "derive", "to_array",
    "where", "filter_rows", "profile", "group_by",
}  # fmt: skip

STAGES = [
    pytest.param(kind, name, id=f"{kind}:{name}")
    for kind in ("map", "filter", "reduce")
    for name in sorted(registry.available(kind))
]
CHUNK_ROWS = [1, 7, 40, 64]


def make_data(kind: str, name: str = "") -> Any:
    rng = np.random.default_rng(3)
    if name in TABLE_INPUT:
        return pa.table(
            {
                "a": rng.uniform(0.5, 5.5, size=40),
                "b": pa.array(rng.normal(size=40), mask=np.arange(40) % 9 == 4),
                "k": rng.choice(["p", "q", "r"], size=40),
                "n": np.arange(40, dtype=np.int64),
            }
        )
    x = rng.uniform(0.5, 5.5, size=(40, 3))
    if kind != "reduce":  # something for cleaning stages to do
        x[3, 1] = np.nan
        x[10, 0] = np.inf
        x[11, 2] = np.inf
    return x


def build(kind: str, name: str) -> Any:
    """The object behind a stage: a function (map, filter) or a reduction instance."""
    obj = registry.available(kind)[name].load()
    return obj(**PARAMS.get(name, {})) if kind == "reduce" else obj


def rows_of(data: Any, start: int, stop: int) -> Any:
    return data.slice(start, stop - start) if isinstance(data, pa.Table) else data[start:stop]


def keep(data: Any, mask: np.ndarray) -> Any:
    return data.filter(pa.array(mask)) if isinstance(data, pa.Table) else data[mask]


def concat(pieces: list[Any]) -> Any:
    if isinstance(pieces[0], pa.Table):
        return pa.concat_tables(pieces)
    return np.concatenate(pieces)


def apply(kind: str, name: str, x: Any) -> Any:
    """The stage applied to all of ``x`` at once: output rows, kept rows, or the result."""
    obj = build(kind, name)
    if kind == "map":
        return obj(x, **PARAMS.get(name, {}))
    if kind == "filter":
        return keep(x, obj(x, **PARAMS.get(name, {})))
    return obj.finalize(obj.chunk(x))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], str)


def assert_same(actual: Any, expected: Any, exact: bool) -> None:
    if isinstance(expected, pa.Table):
        assert actual.num_rows == expected.num_rows
        for column in expected.column_names:
            assert_same(actual[column].to_pylist(), expected[column].to_pylist(), exact)
    elif expected is None or isinstance(expected, str) or _strings(expected):
        assert actual == expected
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key], exact)
    elif exact:
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-12)


def assert_bitwise(actual: Any, expected: Any) -> None:
    if isinstance(expected, pa.Table):
        assert actual.schema.equals(expected.schema)
        for column in expected.column_names:  # as arrays: NaN equals NaN here
            assert_bitwise(
                actual[column].to_numpy(zero_copy_only=False),
                expected[column].to_numpy(zero_copy_only=False),
            )
        return
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected, equal_nan=actual.dtype.kind in "fc")


@pytest.mark.parametrize(("kind", "name"), STAGES)
def test_loads(kind, name):
    obj = registry.available(kind)[name].load()
    assert registry.resolve(kind, name) is obj
    if kind == "reduce":
        assert inspect.isclass(obj)
        assert isinstance(build(kind, name), Reduction)
    else:
        assert callable(obj)
        assert obj.__doc__, "built-in stages are documented"


@pytest.mark.parametrize(("kind", "name"), STAGES)
@pytest.mark.parametrize("n_rows", [40, 1, 0])
def test_usable_by_short_name_in_a_spec(kind, name, n_rows, tmp_path):
    x = rows_of(make_data(kind, name), 0, n_rows)
    if isinstance(x, pa.Table):
        pq.write_table(x, tmp_path / "x.parquet", row_group_size=7)
        source: dict[str, Any] = {"parquet": str(tmp_path / "x.parquet")}
    else:
        np.save(tmp_path / "x.npy", x)
        source = {"npy": str(tmp_path / "x.npy")}
    stage: dict[str, Any] = {kind: name, "name": "stage"}
    if name in PARAMS:
        stage["params"] = PARAMS[name]
    spec = {
        "source": source,
        "stages": [stage],
        "chunks": {"rows": 7, "overlap": OVERLAP.get(name, 0)},
        "parallel": {"n_jobs": 1, "backend": "sequential"},
        "workspace": str(tmp_path / "ws"),
    }

    result = Pipeline.from_dict(spec).run(progress=False)

    expected = apply(kind, name, x)
    if kind == "reduce":
        assert result.output is None  # a tap changes nothing
        assert_same(result.reductions["stage"], expected, exact=name in EXACT)
    else:
        assert_bitwise(result.output, expected)


@pytest.mark.parametrize(("kind", "name"), STAGES)
@pytest.mark.parametrize("chunk_rows", CHUNK_ROWS)
def test_row_wise(kind, name, chunk_rows):
    x = make_data(kind, name)
    obj, params = build(kind, name), PARAMS.get(name, {})
    chunks = plan_chunks(len(x), chunk_rows, OVERLAP.get(name, 0))
    if kind == "reduce":
        states = [obj.chunk(rows_of(x, c.start, c.stop)) for c in chunks]
        state = states[0]
        for right in states[1:]:  # merged in chunk order
            state = obj.combine(state, right)
        assert_same(obj.finalize(state), apply(kind, name, x), exact=name in EXACT)
        return
    pieces = []
    for c in chunks:
        data = rows_of(x, c.read_start, c.read_stop)
        before, after = c.halo
        if kind == "map":
            out = obj(data, **params)
            pieces.append(rows_of(out, before, len(out) - after))
        else:
            pieces.append(keep(data, obj(data, **params)))
    assert_bitwise(concat(pieces), apply(kind, name, x))


@pytest.mark.parametrize(("kind", "name"), STAGES)
@pytest.mark.parametrize("tail", [(3,), ()], ids=["2-D", "1-D"])
def test_zero_row_chunk(kind, name, tail):
    if (name in {"standardize", "from_array"} or name in TABLE_INPUT) and tail == ():
        pytest.skip("parameters are per column of a 2-D array or a table")
    x = make_data(kind, name)
    x = x[:, 0] if tail == () else x
    empty = rows_of(x, 0, 0)
    obj, params = build(kind, name), PARAMS.get(name, {})
    if kind == "map":
        out, full = obj(empty, **params), obj(x, **params)
        if isinstance(full, pa.Table):
            assert out.num_rows == 0
            assert out.schema.equals(full.schema)
        else:
            assert out.shape == (0, *full.shape[1:])
            assert out.dtype == full.dtype
    elif kind == "filter":
        mask = obj(empty, **params)
        assert mask.shape == (0,)
        assert mask.dtype == np.bool_
    else:
        state, neutral = obj.chunk(x), obj.chunk(empty)
        expected = obj.finalize(state)
        assert_same(obj.finalize(obj.combine(neutral, state)), expected, exact=True)
        assert_same(obj.finalize(obj.combine(state, neutral)), expected, exact=True)
        obj.finalize(neutral)  # an empty result is valid (NaN or zero counts)


def test_every_stage_kind_has_built_ins():
    assert {"clip", "nan_to_num", "astype", "rolling_mean"} <= set(registry.available("map"))
    assert {"finite_rows", "range_rows"} <= set(registry.available("filter"))
    assert set(registry.available("reduce")) >= {
        "count", "sum", "min", "max", "mean", "variance", "std", "moments", "histogram"
    }  # fmt: skip


def test_params_table_only_names_registered_stages():
    registered = {name for kind in ("map", "filter", "reduce") for name in registry.available(kind)}
    assert set(PARAMS) <= registered
    assert set(OVERLAP) <= registered


def test_conformance_data_is_not_trivial():
    # The checks above would prove little if no chunk boundary fell inside a window
    # or the cleaning stages had nothing to clean.
    x = make_data("map")
    assert not np.isfinite(x).all()
    assert len(plan_chunks(len(x), 7, 2)) > 1
