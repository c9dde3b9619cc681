"""Tables end to end: Parquet, CSV and Arrow IPC sources through chunkline, against pyarrow.

Oracle tests. Every dataset is built for real in ``tmp_path`` with pyarrow (one
file of several row groups, a list of files, a hive-partitioned folder with
``_SUCCESS`` and ``.crc`` files beside the data), run through chunkline with
filters and projections pushed down and table stages, and compared with the
same computation done by pyarrow on the whole table: the same rows, in the
same order, for n_jobs 1 and 2 and chunks smaller than, equal to and larger
than the row groups. Parquet sinks are read back (partitioned, compressed,
row-group size, single file, modes error/overwrite/append).
"""

from __future__ import annotations

import operator
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import stages.tables
from pipeline import Filter, Map, Pipeline, Reduce, TableSource
from pipeline.cli import main as cli_main
from pipeline.datasets import TableChunk

ROW_GROUP = 10
CATS = np.array(["alpha", "beta", "gamma", "delta", "eps"])

# Chunk sizes smaller than, equal to and larger than the row groups (35: runs
# of three row groups of 10, so one chunk of the 10-group file is groups 6-8).
CHUNK_ROWS = [4, ROW_GROUP, 35]
N_JOBS = [1, 2]


def make_table(n: int, start: int, seed: int) -> pa.Table:
    """``n`` rows: id (int64, from ``start``), a, b (float64), d (float64, nulls), cat."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + n), pa.int64()),
            "a": rng.normal(size=n),
            "b": rng.uniform(0, 10, size=n),
            "d": pa.array(rng.normal(scale=100, size=n), mask=rng.random(n) < 0.1),
            "cat": pa.array(CATS[rng.integers(0, len(CATS), size=n)]),
        }
    )


def add_e(table: pa.Table) -> dict[str, Any]:
    """The derived column of the tables issue: ``e = a * b + log1p(|d|)``."""
    return {"e": pc.add(pc.multiply(table["a"], table["b"]), pc.log1p(pc.abs(table["d"])))}


def add_twice(table: pa.Table) -> dict[str, Any]:
    return {"twice": pc.multiply(table["a"], 2.0)}


def rows_of(table: pa.Table) -> int:
    return table.num_rows


def pushdown(whole: pa.Table, filters: Any = None, columns: list[str] | None = None) -> pa.Table:
    """What a source with ``filters`` and ``columns`` reads, computed on the whole table."""
    if filters is not None:
        whole = whole.filter(pq.filters_to_expression(filters))
    return whole if columns is None else whole.select(columns)


# --- datasets ----------------------------------------------------------------


def write_single(folder: Path) -> tuple[str, pa.Table]:
    """One file of 95 rows in row groups of 10 (the last one of 5)."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = make_table(95, 0, seed=1)
    path = folder / "events.parquet"
    pq.write_table(whole, path, row_group_size=ROW_GROUP)
    return str(path), whole


def write_list(folder: Path) -> tuple[list[str], pa.Table]:
    """Three files of 35, 20 and 27 rows (row groups of 10), given as a list."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, tables, start = [], [], 0
    # Listed out of name order: the list's order is the row order.
    for name, n, seed in (("c.parquet", 35, 2), ("a.parquet", 20, 3), ("b.parquet", 27, 4)):
        table = make_table(n, start, seed)
        pq.write_table(table, folder / name, row_group_size=ROW_GROUP)
        paths.append(str(folder / name))
        tables.append(table)
        start += n
    return paths, pa.concat_tables(tables)


def write_hive(folder: Path) -> tuple[str, pa.Table]:
    """``day=1..3`` folders of two files each, plus the files Spark and Hadoop leave."""
    tables, start = [], 0
    for day in (1, 2, 3):
        sub = folder / f"day={day}"
        sub.mkdir(parents=True)
        for part, n in enumerate((25, 18)):
            table = make_table(n, start, seed=10 * day + part)
            pq.write_table(table, sub / f"part-{part}.parquet", row_group_size=ROW_GROUP)
            # Hadoop writes a checksum beside each file: not Parquet, must be skipped.
            (sub / f".part-{part}.parquet.crc").write_bytes(b"crc\x00\x01garbage")
            tables.append(table.append_column("day", pa.array([day] * n, pa.int32())))
            start += n
        (sub / "_SUCCESS").write_bytes(b"")
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "_committed_1234").write_text("not parquet\n")
    return str(folder), pa.concat_tables(tables)


LAYOUTS = {"file": write_single, "list": write_list, "hive": write_hive}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(source path(s), the whole table in row order) for each layout."""
    folder = tmp_path_factory.mktemp(request.param)
    return LAYOUTS[request.param](folder / "data")


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pa.Table]:
    return write_single(tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pa.Table]:
    return write_hive(tmp_path_factory.mktemp("hive") / "events")


# --- sources, pushdown, table stages: chunked == whole -----------------------

SOURCE_FILTERS = [[("a", ">", -0.8)], [("cat", "in", ["alpha", "gamma", "eps"]), ("b", "<", 7.5)]]
SOURCE_COLUMNS = ["id", "a", "b", "d", "cat"]

CHAIN = [
    Map("stages.tables:fill_null", params={"values": {"d": 0.0}}),
    Map("stages.tables:derive", params={"func": add_e}),
    Filter("stages.tables:where", params={"filters": [("e", ">", 1.0)]}),
    Map("stages.tables:cast", params={"columns": {"id": "int32", "b": "float32"}}),
    Map("stages.tables:rename", params={"columns": {"a": "alpha"}}),
    Map("stages.tables:drop", params={"columns": ["d"]}),
    Map("stages.tables:select", params={"columns": ["id", "cat", "alpha", "b", "e"]}),
]


def chain_oracle(table: pa.Table) -> pa.Table:
    """CHAIN done by pyarrow on the whole table."""
    table = table.set_column(
        table.schema.get_field_index("d"), "d", pc.fill_null(table["d"], pa.scalar(0.0))
    )
    table = table.append_column("e", add_e(table)["e"])
    table = table.filter(pc.greater(table["e"], 1.0))
    table = table.set_column(0, "id", pc.cast(table["id"], pa.int32()))
    table = table.set_column(
        table.schema.get_field_index("b"), "b", pc.cast(table["b"], pa.float32())
    )
    table = table.rename_columns(["alpha" if n == "a" else n for n in table.column_names])
    table = table.drop_columns(["d"])
    return table.select(["id", "cat", "alpha", "b", "e"])


def assert_same_rows(got: pa.Table, expected: pa.Table) -> None:
    """Same schema and the same rows in the same order (chunk layout aside)."""
    assert got.schema.equals(expected.schema), f"{got.schema}\n!=\n{expected.schema}"
    assert got.num_rows == expected.num_rows
    if not got.equals(expected) and "id" in got.column_names:
        ids, want = got["id"].to_pylist(), expected["id"].to_pylist()
        first = next((i for i, (x, y) in enumerate(zip(ids, want, strict=True)) if x != y), None)
        assert first is None, (
            f"row {first}: id {ids[first]}, expected {want[first]} "
            f"({'the same rows in another order' if sorted(ids) == sorted(want) else 'other rows'}"
            f"); ids from there: {ids[first : first + 12]}"
        )
    assert got.equals(expected), "same ids in the same order, but other values"


@pytest.mark.parametrize("n_jobs", N_JOBS)
@pytest.mark.parametrize("chunk_rows", CHUNK_ROWS)
def test_table_stages_match_pyarrow_on_the_whole_table(
    dataset: tuple[Any, pa.Table], chunk_rows: int, n_jobs: int
) -> None:
    path, whole = dataset
    source = {"parquet": path, "columns": SOURCE_COLUMNS, "filters": SOURCE_FILTERS}
    result = Pipeline(source, CHAIN, chunks={"rows": chunk_rows}, n_jobs=n_jobs).run()
    expected = chain_oracle(pushdown(whole, SOURCE_FILTERS, SOURCE_COLUMNS))
    assert expected.num_rows > 20  # the test means something
    assert isinstance(result.output, pa.Table)
    assert_same_rows(result.output, expected)
    assert result.report.passes[0].rows_out == expected.num_rows


@pytest.mark.parametrize(
    "filters",
    [
        pytest.param([("a", ">", 0.0), ("cat", "!=", "beta")], id="flat-tuples"),
        pytest.param([[("a", ">", 0.0), ("cat", "!=", "beta")]], id="one-conjunction"),
        pytest.param([[("a", ">", 1.0)], [("cat", "in", ["delta"]), ("b", ">=", 5.0)]], id="or"),
        pytest.param([("cat", "not in", ["alpha", "beta"]), ("d", "<=", 50.0)], id="not-in"),
        pytest.param([["id", "in", [3, 5, 7, 8, 80, 81]]], id="lists-not-tuples"),
    ],
)
def test_filters_in_every_dnf_form(dataset: tuple[Any, pa.Table], filters: Any) -> None:
    path, whole = dataset
    result = Pipeline(
        {"parquet": path, "filters": filters},
        [Map("stages.tables:select", params={"columns": ["id", "a", "cat"]})],
        chunks={"rows": 7},
        n_jobs=1,
    ).run()
    expected = pushdown(whole, filters)
    assert_same_rows(result.output, expected.select(["id", "a", "cat"]))


@pytest.mark.parametrize("chunks", [{"rows": 25}, {"bytes": "1KB"}, {"memory": "64KB"}])
def test_projection_only_returns_what_pyarrow_reads(
    dataset: tuple[Any, pa.Table], chunks: dict[str, Any]
) -> None:
    path, whole = dataset
    # A map that changes nothing, so that the data is returned.
    result = Pipeline(
        {"parquet": path, "columns": ["cat", "id"]},
        [Map("stages.tables:rename", params={"columns": {}})],
        chunks=chunks,
        n_jobs=2,
    ).run()
    assert_same_rows(result.output, whole.select(["cat", "id"]))


def with_pandas(table: pa.Table) -> Any:
    """A map written with pandas: takes a table, returns a DataFrame."""
    frame = table.to_pandas()
    frame["ab"] = frame["a"] * frame["b"]
    return frame


def big_b(table: pa.Table, limit: float) -> pa.ChunkedArray:
    return pc.greater(table["b"], limit)


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_pandas_map_and_callable_filter(dataset: tuple[Any, pa.Table], n_jobs: int) -> None:
    path, whole = dataset
    result = Pipeline(
        {"parquet": path, "columns": ["id", "a", "b"]},
        [
            Filter("stages.tables:filter_rows", params={"func": big_b, "limit": 4.0}),
            Map(with_pandas),
        ],
        chunks={"rows": 4},
        n_jobs=n_jobs,
    ).run()
    expected = whole.select(["id", "a", "b"]).filter(pc.greater(whole["b"], 4.0))
    expected = expected.append_column("ab", pc.multiply(expected["a"], expected["b"]))
    assert_same_rows(result.output, expected)


@pytest.mark.parametrize(
    ("filters", "days"),
    [
        ([("day", "=", 2)], {2}),
        ([("day", "in", [1, 3]), ("a", ">", 0.0)], {1, 3}),
        ([[("day", ">=", 3)], [("day", "<", 2), ("cat", "==", "eps")]], {1, 3}),
    ],
)
@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_filters_on_partition_columns(
    hive: tuple[str, pa.Table], filters: Any, days: set[int], n_jobs: int
) -> None:
    path, whole = hive
    ref = TableSource(path=path, filters=filters).open()
    # Whole folders are pruned by their partition values: their files are never opened.
    assert {Path(f).parent.name for f in ref.files} == {f"day={d}" for d in days}
    result = Pipeline(
        {"parquet": path, "filters": filters, "columns": ["id", "a", "cat", "day"]},
        [Map("stages.tables:derive", params={"func": add_twice})],
        chunks={"rows": ROW_GROUP},
        n_jobs=n_jobs,
    ).run()
    expected = pushdown(whole, filters, ["id", "a", "cat", "day"])
    expected = expected.append_column("twice", pc.multiply(expected["a"], 2.0))
    assert_same_rows(result.output, expected)
    assert set(result.output["day"].to_pylist()) == days


def test_partition_column_read_but_not_projected(hive: tuple[str, pa.Table]) -> None:
    path, whole = hive
    result = Pipeline(
        {"parquet": path, "filters": [("day", "!=", 2)], "columns": ["id", "b"]},
        [Map("stages.tables:cast", params={"columns": {"b": "float32"}})],
        chunks={"rows": 25},
        n_jobs=1,
    ).run()
    expected = pushdown(whole, [("day", "!=", 2)], ["id", "b"])
    expected = expected.set_column(1, "b", pc.cast(expected["b"], pa.float32()))
    assert_same_rows(result.output, expected)


def test_skipped_files_and_partition_schema(hive: tuple[str, pa.Table]) -> None:
    path, whole = hive
    ref = TableSource(path=path).open()
    names = [Path(f).name for f in ref.files]
    assert names == ["part-0.parquet", "part-1.parquet"] * 3
    assert ref.schema.field("day").type == pa.int32()
    assert ref.n_rows == whole.num_rows
    assert ref.schema.names == whole.schema.names


# --- chunks aligned to row groups; pruning by statistics ---------------------


@pytest.mark.parametrize(("chunk_rows", "n_chunks"), [(4, 10), (10, 10), (25, 5), (1000, 1)])
def test_chunks_are_runs_of_whole_row_groups(
    single: tuple[str, pa.Table], chunk_rows: int, n_chunks: int
) -> None:
    path, _ = single
    pipeline = Pipeline(
        {"parquet": path},
        [Map("stages.tables:select", params={"columns": ["id"]})],
        chunks={"rows": chunk_rows},
    )
    assert pipeline.plan(n_jobs=1).passes[0].n_chunks == n_chunks
    ref = TableSource(path=path).open()
    chunks = ref.plan_chunks(chunk_rows)
    groups = [rg for chunk in chunks for piece in chunk.pieces for rg in piece.row_groups]
    assert groups == list(range(10))  # every row group once, in order


@pytest.mark.parametrize("groups", [(6, 7, 8), (7, 8, 9), (2, 8), (0, 1, 2, 3)])
def test_a_chunk_reads_its_row_groups_in_order(
    single: tuple[str, pa.Table], groups: tuple[int, ...]
) -> None:
    """A chunk of several row groups yields them in file order, whatever their ids."""
    path, whole = single
    ref = TableSource(path=path).open()
    chunk = TableChunk(index=0, pieces=tuple(p for p in ref.pieces if p.row_groups[0] in groups))
    got = pa.concat_tables(ref.blocks(chunk, chunk_rows=1000))
    expected = pa.concat_tables(
        whole.slice(g * ROW_GROUP, ROW_GROUP) for g in groups if g * ROW_GROUP < whole.num_rows
    )
    assert got["id"].to_pylist() == expected["id"].to_pylist()
    assert_same_rows(got, expected)


def write_sorted(path: Path, n_groups: int = 8) -> pa.Table:
    """A file whose row group k holds a in [10k, 10k + 10): statistics tell them apart."""
    table = pa.table(
        {"id": np.arange(n_groups * ROW_GROUP), "a": np.arange(n_groups * ROW_GROUP) * 1.0}
    )
    pq.write_table(table, path, row_group_size=ROW_GROUP, compression="none")
    return table


def corrupt_row_groups(path: Path, keep: set[int]) -> None:
    """Overwrite the data pages of every row group not in ``keep`` (the footer stays valid)."""
    metadata = pq.ParquetFile(path).metadata
    with open(path, "r+b") as f:
        for i in range(metadata.num_row_groups):
            if i in keep:
                continue
            for j in range(metadata.num_columns):
                column = metadata.row_group(i).column(j)
                start = column.dictionary_page_offset or column.data_page_offset
                f.seek(start)
                f.write(b"\xff" * column.total_compressed_size)


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_row_groups_excluded_by_statistics_are_never_read(tmp_path: Path, n_jobs: int) -> None:
    path = tmp_path / "sorted.parquet"
    table = write_sorted(path)
    filters = [("a", ">=", 30.0), ("a", "<", 40.0)]
    ref = TableSource(path=str(path), filters=filters).open()
    assert [p.row_groups for p in ref.pieces] == [(3,)]
    # Only row group 3 stays readable: a run that read any other would fail.
    corrupt_row_groups(path, keep={3})
    with pytest.raises(OSError):
        pq.read_table(path)
    pipeline = Pipeline(
        {"parquet": str(path), "filters": filters},
        [Map("stages.tables:select", params={"columns": ["a", "id"]})],
        chunks={"rows": 5},
        n_jobs=n_jobs,
    )
    assert pipeline.plan().passes[0].n_chunks == 1
    result = pipeline.run()
    assert_same_rows(result.output, pushdown(table, filters, ["a", "id"]))


def test_or_filters_prune_to_the_union_of_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "sorted.parquet"
    table = write_sorted(path)
    filters = [[("a", "<", 5.0)], [("a", "in", [55.0, 71.0])]]
    ref = TableSource(path=str(path), filters=filters).open()
    assert [p.row_groups for p in ref.pieces] == [(0,), (5,), (7,)]
    corrupt_row_groups(path, keep={0, 5, 7})
    result = Pipeline(
        {"parquet": str(path), "filters": filters},
        [Map("stages.tables:select", params={"columns": ["id"]})],
        chunks={"rows": 100},
        n_jobs=2,
    ).run()
    assert result.output["id"].to_pylist() == [0, 1, 2, 3, 4, 55, 71]
    assert_same_rows(result.output, pushdown(table, filters, ["id"]))


# --- other formats -----------------------------------------------------------


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_csv_folder_source(tmp_path: Path, n_jobs: int) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    tables = []
    for i, n in enumerate((23, 9, 31)):
        table = make_table(n, 100 * i, seed=i).drop_columns(["d"])
        pacsv.write_csv(table, folder / f"part-{i}.csv")
        tables.append(table)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-0.csv.crc").write_bytes(b"\x00\x01")
    whole = pa.concat_tables(tables)
    filters = [("a", ">", -0.5), ("cat", "in", ["alpha", "beta", "gamma"])]
    result = Pipeline(
        {"csv": str(folder), "filters": filters, "columns": ["id", "a", "b", "cat"]},
        [Map("stages.tables:derive", params={"func": add_twice})],
        chunks={"rows": 7},
        n_jobs=n_jobs,
    ).run()
    expected = pushdown(whole, filters, ["id", "a", "b", "cat"])
    expected = expected.append_column("twice", pc.multiply(expected["a"], 2.0))
    assert_same_rows(result.output, expected)


@pytest.mark.parametrize("key", ["ipc", "feather"])
@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_arrow_ipc_files_source(tmp_path: Path, key: str, n_jobs: int) -> None:
    paths, tables = [], []
    for i, n in enumerate((40, 17)):
        table = make_table(n, 1000 * i, seed=20 + i)
        path = tmp_path / f"part-{i}.arrow"
        feather.write_feather(table, path, chunksize=ROW_GROUP, compression="uncompressed")
        paths.append(str(path))
        tables.append(table)
    whole = pa.concat_tables(tables)
    filters = [[("d", ">", 0.0)], [("cat", "==", "delta")]]
    result = Pipeline(
        {key: paths, "filters": filters, "columns": ["id", "d", "cat"]},
        [Map("stages.tables:fill_null", params={"values": {"d": -1.0}})],
        chunks={"rows": 6},
        n_jobs=n_jobs,
    ).run()
    expected = pushdown(whole, filters, ["id", "d", "cat"])
    assert expected["d"].null_count > 0  # kept by the "delta" branch of the filter
    expected = expected.set_column(1, "d", pc.fill_null(expected["d"], -1.0))
    assert_same_rows(result.output, expected)


def test_bare_arrow_path_is_an_ipc_source(tmp_path: Path) -> None:
    table = make_table(12, 0, seed=5)
    feather.write_feather(table, tmp_path / "t.arrow")
    result = Pipeline(
        str(tmp_path / "t.arrow"),
        [Map("stages.tables:select", params={"columns": ["cat"]})],
        n_jobs=1,
    ).run()
    assert_same_rows(result.output, table.select(["cat"]))


# --- tables <-> arrays -------------------------------------------------------


def nulls_as_nan(table: pa.Table, columns: list[str]) -> np.ndarray:
    return np.column_stack(
        [table[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in columns]
    )


@pytest.mark.parametrize("n_jobs", N_JOBS)
@pytest.mark.parametrize("chunk_rows", CHUNK_ROWS)
def test_to_array_into_an_npy_sink(
    dataset: tuple[Any, pa.Table], tmp_path: Path, chunk_rows: int, n_jobs: int
) -> None:
    path, whole = dataset
    filters = [("b", ">", 2.0)]
    out = tmp_path / "x.npy"
    result = Pipeline(
        {"parquet": path, "filters": filters},
        [Map("stages.tables:to_array", params={"columns": ["a", "d", "b"]}), Map(np.abs)],
        sink=str(out),
        chunks={"rows": chunk_rows},
        n_jobs=n_jobs,
    ).run()
    expected = np.abs(nulls_as_nan(pushdown(whole, filters), ["a", "d", "b"]))
    got = np.load(out)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # NaN where d was null, in row order
    np.testing.assert_array_equal(np.asarray(result.output), expected)


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_from_array_npy_source_into_a_parquet_sink(tmp_path: Path, n_jobs: int) -> None:
    x = np.random.default_rng(3).normal(size=(53, 3))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    Pipeline(
        {"npy": str(tmp_path / "x.npy")},
        [Map("stages.tables:from_array", params={"names": ["u", "v", "w"]})],
        sink={"parquet": str(out)},
        chunks={"rows": 10},
        n_jobs=n_jobs,
    ).run()
    got = ds.dataset(out, format="parquet").to_table()
    assert_same_rows(got, pa.table({"u": x[:, 0], "v": x[:, 1], "w": x[:, 2]}))


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_table_to_array_and_back_in_one_pass(
    single: tuple[str, pa.Table], tmp_path: Path, n_jobs: int
) -> None:
    path, whole = single
    out = tmp_path / "back"
    Pipeline(
        {"parquet": path, "columns": ["a", "b"]},
        [
            Map(stages.tables.to_array, params={"columns": ["b", "a"]}),
            Map(np.square),
            Map(stages.tables.from_array, params={"names": ["b2", "a2"]}),
        ],
        sink={"parquet": str(out), "mode": "error"},
        chunks={"rows": 25},
        n_jobs=n_jobs,
    ).run()
    got = ds.dataset(out, format="parquet").to_table()
    expected = pa.table(
        {"b2": np.square(whole["b"].to_numpy()), "a2": np.square(whole["a"].to_numpy())}
    )
    assert_same_rows(got, expected)


# --- more than one pass over a table ------------------------------------------


def test_two_passes_keep_the_row_order(dataset: tuple[Any, pa.Table]) -> None:
    path, whole = dataset
    pipeline = Pipeline(
        {"parquet": path, "columns": SOURCE_COLUMNS, "filters": SOURCE_FILTERS},
        [
            Map("stages.tables:derive", params={"func": add_e}, n_jobs=1),
            Filter("stages.tables:where", params={"filters": [("e", ">", 0.0)]}, n_jobs=2),
            Map("stages.tables:select", params={"columns": ["id", "e"]}, n_jobs=2),
        ],
        chunks={"rows": 4},
    )
    assert len(pipeline.plan().passes) == 2
    expected = pushdown(whole, SOURCE_FILTERS, SOURCE_COLUMNS)
    expected = expected.append_column("e", add_e(expected)["e"])
    expected = expected.filter(pc.greater(expected["e"], 0.0)).select(["id", "e"])
    assert_same_rows(pipeline.run().output, expected)


# --- reductions over tables --------------------------------------------------


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_custom_reductions_over_tables(
    dataset: tuple[Any, pa.Table], tmp_path: Path, n_jobs: int
) -> None:
    path, whole = dataset
    result = Pipeline(
        {"parquet": path, "filters": SOURCE_FILTERS},
        [
            Reduce(chunk=rows_of, combine=operator.add, name="rows_read"),
            Filter("stages.tables:where", params={"filters": [("cat", "!=", "eps")]}),
            Reduce(chunk=lambda t: t.num_rows, combine=operator.add, name="rows_kept"),
            Reduce(
                chunk=lambda t: sorted(set(t["cat"].to_pylist())),
                combine=lambda x, y: sorted(set(x) | set(y)),
                name="cats",
            ),
            Reduce(
                chunk=lambda t: t["id"].to_pylist(),
                combine=operator.add,
                finalize=tuple,
                name="ids",
            ),
        ],
        sink={"parquet": str(tmp_path / "out")},
        chunks={"rows": 4},
        n_jobs=n_jobs,
    ).run()
    read = pushdown(whole, SOURCE_FILTERS)
    kept = read.filter(pc.not_equal(read["cat"], "eps"))
    assert result.reductions["rows_read"] == read.num_rows
    assert result.reductions["rows_kept"] == kept.num_rows
    assert result.reductions["cats"] == sorted(set(kept["cat"].to_pylist()))
    # combine runs in chunk order: the ids come back in row order.
    assert result.reductions["ids"] == tuple(kept["id"].to_pylist())
    assert_same_rows(ds.dataset(tmp_path / "out", format="parquet").to_table(), kept)


def test_reductions_only_over_a_parquet_source(single: tuple[str, pa.Table]) -> None:
    path, whole = single
    result = Pipeline(
        {"parquet": path, "columns": ["b"]},
        [Reduce(chunk=lambda t: pc.sum(t["b"]).as_py() or 0.0, combine=operator.add, name="s")],
        chunks={"rows": 10},
        n_jobs=2,
    ).run()
    assert result.output is None
    assert result.reductions["s"] == pytest.approx(pc.sum(whole["b"]).as_py(), rel=1e-12)


# --- Parquet sinks -------------------------------------------------------------


def read_back(folder: Path) -> pa.Table:
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table()


def part_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet"))


def no_leftovers(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if ".chunkline-" in p.name] == []


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_partitioned_parquet_sink(
    single: tuple[str, pa.Table], tmp_path: Path, n_jobs: int
) -> None:
    path, whole = single
    out = tmp_path / "out" / "events"
    Pipeline(
        {"parquet": path, "columns": ["id", "a", "cat"], "filters": [("a", ">", -1.0)]},
        [Map("stages.tables:derive", params={"func": add_twice})],
        sink={"parquet": str(out), "partition_by": ["cat"], "mode": "overwrite"},
        chunks={"rows": 25},
        n_jobs=n_jobs,
    ).run()
    expected = pushdown(whole, [("a", ">", -1.0)], ["id", "a", "cat"])
    expected = expected.append_column("twice", pc.multiply(expected["a"], 2.0))
    assert (out / "_SUCCESS").is_file()
    present = sorted(set(expected["cat"].to_pylist()))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"cat={c}" for c in present]
    # Only the data, the folders and _SUCCESS: no marker of the run's staging folder.
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["_SUCCESS"]
    for part in part_files(out):
        # Partition values live in folder names, not in the files.
        assert pq.read_schema(part).names == ["id", "a", "twice"]
    got = read_back(out)
    got = got.select(["id", "a", "cat", "twice"]).cast(expected.schema)
    order = pc.sort_indices(got["id"])
    assert_same_rows(got.take(order), expected)
    for cat in present:
        # Inside a partition, the files' names sort in row order.
        ids = pa.concat_tables(pq.read_table(p) for p in part_files(out / f"cat={cat}"))["id"]
        assert ids.to_pylist() == sorted(ids.to_pylist())
    no_leftovers(out.parent)


def test_sink_partitioned_by_a_source_partition_column(
    hive: tuple[str, pa.Table], tmp_path: Path
) -> None:
    path, whole = hive
    out = tmp_path / "by_day"
    Pipeline(
        {"parquet": path, "columns": ["id", "cat", "day"]},
        [Map("stages.tables:select", params={"columns": ["day", "id"]})],
        sink={"parquet": str(out), "partition_by": ["day"]},
        chunks={"rows": 10},
        n_jobs=2,
    ).run()
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "day=1", "day=2", "day=3"]
    got = read_back(out).select(["day", "id"])
    expected = whole.select(["day", "id"])
    assert got["id"].to_pylist() == expected["id"].to_pylist()  # day folders sort in row order
    assert got["day"].to_pylist() == expected["day"].to_pylist()


@pytest.mark.parametrize(
    ("compression", "stored"),
    [("snappy", "SNAPPY"), ("gzip", "GZIP"), ("zstd", "ZSTD"), ("none", "UNCOMPRESSED")],
)
def test_parquet_sink_compression(
    single: tuple[str, pa.Table], tmp_path: Path, compression: str, stored: str
) -> None:
    path, whole = single
    out = tmp_path / "out"
    Pipeline(
        {"parquet": path},
        [Map("stages.tables:select", params={"columns": ["id", "a", "cat"]})],
        sink={"parquet": str(out), "compression": compression},
        chunks={"rows": 50},
        n_jobs=1,
    ).run()
    parts = part_files(out)
    assert len(parts) == 2
    for part in parts:
        metadata = pq.ParquetFile(part).metadata
        for i in range(metadata.num_row_groups):
            for j in range(metadata.num_columns):
                assert metadata.row_group(i).column(j).compression == stored
    assert_same_rows(read_back(out), whole.select(["id", "a", "cat"]))


@pytest.mark.parametrize("partition_by", [[], ["cat"]])
def test_parquet_sink_row_group_size(
    single: tuple[str, pa.Table], tmp_path: Path, partition_by: list[str]
) -> None:
    path, whole = single
    out = tmp_path / "out"
    Pipeline(
        {"parquet": path, "columns": ["id", "cat"]},
        [Map("stages.tables:cast", params={"columns": {"id": "int32"}})],
        sink={"parquet": str(out), "row_group_size": 4, "partition_by": partition_by},
        chunks={"rows": 25},
        n_jobs=2,
    ).run()
    sizes = [
        pq.ParquetFile(part).metadata.row_group(i).num_rows
        for part in part_files(out)
        for i in range(pq.ParquetFile(part).metadata.num_row_groups)
    ]
    assert max(sizes) == 4 and sum(sizes) == whole.num_rows
    if not partition_by:
        # Chunks of 20 rows (two row groups of 10) are written as 4 + 4 + 4 + 4 + 4.
        first = pq.ParquetFile(part_files(out)[0]).metadata
        assert [first.row_group(i).num_rows for i in range(first.num_row_groups)] == [4] * 5
        expected = whole.select(["id", "cat"])
        expected = expected.set_column(0, "id", pc.cast(expected["id"], pa.int32()))
        assert_same_rows(read_back(out), expected)


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_single_file_sink(single: tuple[str, pa.Table], tmp_path: Path, n_jobs: int) -> None:
    path, whole = single
    out = tmp_path / "merged.parquet"
    filters = [("a", ">", -1.5)]
    Pipeline(
        {"parquet": path, "filters": filters},
        [Map("stages.tables:fill_null", params={"values": {"d": 0.0}})],
        sink={"parquet": str(out), "single_file": True, "row_group_size": 6},
        chunks={"rows": 10},
        n_jobs=n_jobs,
    ).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.parquet"]
    expected = pushdown(whole, filters)
    expected = expected.set_column(3, "d", pc.fill_null(expected["d"], 0.0))
    file = pq.ParquetFile(out)
    # Every chunk's row groups, copied one by one: ceil(rows / 6) per chunk of <= 10 rows.
    chunk_rows = [
        pc.sum(pc.greater(whole.slice(i, ROW_GROUP)["a"], -1.5)).as_py()
        for i in range(0, whole.num_rows, ROW_GROUP)
    ]
    assert file.metadata.num_row_groups == sum(-(-n // 6) for n in chunk_rows)
    assert file.metadata.num_rows == expected.num_rows
    assert_same_rows(pq.read_table(out), expected)


def test_single_file_sink_mode_overwrite_replaces_the_file(
    single: tuple[str, pa.Table], tmp_path: Path
) -> None:
    path, whole = single
    out = tmp_path / "merged.parquet"
    pq.write_table(pa.table({"old": [1, 2, 3]}), out)
    Pipeline(
        {"parquet": path, "columns": ["id", "cat"]},
        [Map("stages.tables:select", params={"columns": ["cat"]})],
        sink={"parquet": str(out), "single_file": True, "mode": "overwrite"},
        chunks={"rows": 30},
        n_jobs=2,
    ).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.parquet"]
    assert_same_rows(pq.read_table(out), whole.select(["cat"]))


def test_single_file_sink_with_a_derived_column(
    single: tuple[str, pa.Table], tmp_path: Path
) -> None:
    path, whole = single
    out = tmp_path / "merged.parquet"
    Pipeline(
        {"parquet": path, "columns": ["id", "a", "b", "d"]},
        [Map("stages.tables:derive", params={"func": add_e})],
        sink={"parquet": str(out), "single_file": True},
        chunks={"rows": 25},
        n_jobs=1,
    ).run()
    expected = whole.select(["id", "a", "b", "d"])
    expected = expected.append_column("e", add_e(expected)["e"])
    assert_same_rows(pq.read_table(out), expected)


def python_list_column(table: pa.Table) -> dict[str, list[Any]]:
    """A derive that returns plain Python lists (an empty list on the empty probe table)."""
    return {"a10": [None if v is None else v * 10 for v in table["a"].to_pylist()]}


@pytest.mark.parametrize("single_file", [False, True])
def test_derived_list_column_into_a_parquet_sink(
    single: tuple[str, pa.Table], tmp_path: Path, single_file: bool
) -> None:
    # On the empty probe table the derived column is of type null; the data's
    # type (double) must win, in part files and in the merged single file alike.
    path, whole = single
    out = tmp_path / ("merged.parquet" if single_file else "out")
    Pipeline(
        {"parquet": path, "columns": ["id", "a"]},
        [Map("stages.tables:derive", params={"func": python_list_column})],
        sink={"parquet": str(out), "single_file": single_file},
        chunks={"rows": 25},
        n_jobs=1,
    ).run()
    expected = whole.select(["id", "a"])
    expected = expected.append_column("a10", pc.multiply(expected["a"], 10))
    got = pq.read_table(out) if single_file else read_back(out)
    assert_same_rows(got, expected)


def old_dataset(folder: Path) -> dict[str, bytes]:
    """A previous run's output: two parts, a partition folder and a marker."""
    (folder / "cat=zzz").mkdir(parents=True)
    pq.write_table(pa.table({"id": [-1, -2]}), folder / "part-00000-0000.parquet")
    pq.write_table(pa.table({"id": [-3]}), folder / "cat=zzz" / "old.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_mode_error_writes_into_a_new_or_empty_target(
    single: tuple[str, pa.Table], tmp_path: Path
) -> None:
    path, whole = single
    for out in (tmp_path / "new" / "deep" / "target", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        Pipeline(
            {"parquet": path, "columns": ["id"]},
            [Map("stages.tables:select", params={"columns": ["id"]})],
            sink={"parquet": str(out), "mode": "error"},
            chunks={"rows": 50},
            n_jobs=1,
        ).run()
        assert (out / "_SUCCESS").is_file()
        assert_same_rows(read_back(out), whole.select(["id"]))


@pytest.mark.parametrize("n_jobs", N_JOBS)
def test_mode_overwrite_replaces_old_contents(
    single: tuple[str, pa.Table], tmp_path: Path, n_jobs: int
) -> None:
    path, whole = single
    out = tmp_path / "out"
    old_dataset(out)
    result = Pipeline(
        {"parquet": path, "columns": ["id", "cat"], "filters": [("id", "<", 42)]},
        [Map("stages.tables:select", params={"columns": ["id"]})],
        sink={"parquet": str(out), "mode": "overwrite"},
        chunks={"rows": 10},
        n_jobs=n_jobs,
    ).run()
    names = sorted(snapshot(out))
    assert "cat=zzz/old.parquet" not in names
    assert names == ["_SUCCESS", *(f"part-{i:05d}-0000.parquet" for i in range(5))]
    expected = whole.filter(pc.less(whole["id"], 42)).select(["id"])
    assert_same_rows(read_back(out), expected)
    assert_same_rows(result.output.to_table(), expected)
    no_leftovers(tmp_path)


@pytest.mark.parametrize("partition_by", [[], ["cat"]])
def test_mode_append_keeps_old_parts_and_adds_new_ones(
    single: tuple[str, pa.Table], tmp_path: Path, partition_by: list[str]
) -> None:
    path, _ = single
    out = tmp_path / "out"

    def run(filters: Any) -> None:
        Pipeline(
            {"parquet": path, "columns": ["id", "cat"], "filters": filters},
            [Map("stages.tables:cast", params={"columns": {"id": "int64"}})],
            sink={"parquet": str(out), "mode": "append", "partition_by": partition_by},
            chunks={"rows": 20},
            n_jobs=2,
        ).run()

    run([("id", "<", 30)])
    first = snapshot(out)
    run([("id", ">=", 60)])
    second = snapshot(out)
    # Every old file is still there, byte for byte; the new ones are added.
    assert {k: second[k] for k in first} == first
    new = [k for k in second if k not in first and not k.endswith("_SUCCESS")]
    assert len(new) >= 2
    assert "_SUCCESS" in second
    got = read_back(out)
    assert sorted(got["id"].to_pylist()) == [*range(30), *range(60, 95)]
    no_leftovers(tmp_path)


def test_parquet_sink_run_returns_the_written_dataset(
    single: tuple[str, pa.Table], tmp_path: Path
) -> None:
    path, whole = single
    result = Pipeline(
        {"parquet": path},
        [Map("stages.tables:select", params={"columns": ["cat", "b"]})],
        sink=str(tmp_path / "out.parquet"),
        n_jobs=1,
    ).run()
    assert isinstance(result.output, ds.Dataset)
    assert_same_rows(result.output.to_table(), whole.select(["cat", "b"]))


def test_no_rows_pass_the_filters(single: tuple[str, pa.Table], tmp_path: Path) -> None:
    path, whole = single
    source = {"parquet": path, "filters": [("a", ">", 1e9)]}
    select = Map("stages.tables:select", params={"columns": ["id", "cat"]})
    in_memory = Pipeline(source, [select], n_jobs=1).run().output
    assert_same_rows(in_memory, whole.select(["id", "cat"]).slice(0, 0))
    out = tmp_path / "empty.parquet"
    Pipeline(source, [select], sink={"parquet": str(out), "single_file": True}, n_jobs=1).run()
    assert_same_rows(pq.read_table(out), whole.select(["id", "cat"]).slice(0, 0))
    # A dataset folder keeps its columns too, in one empty part (the
    # partition column lives in folder names, of which there are none).
    for partition_by, columns in (([], ["id", "cat"]), (["cat"], ["id"])):
        folder = tmp_path / f"empty-{len(partition_by)}"
        sink = {"parquet": str(folder), "partition_by": partition_by}
        Pipeline(source, [select], sink=sink, n_jobs=1).run()
        assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "part-00000-0000.parquet"]
        assert_same_rows(pq.read_table(folder), whole.select(columns).slice(0, 0))


# --- explain -------------------------------------------------------------------


def test_explain_shows_the_schema_before_and_after_each_stage(
    hive: tuple[str, pa.Table], tmp_path: Path
) -> None:
    path, _ = hive
    pipeline = Pipeline(
        {"parquet": path, "columns": ["id", "a", "b", "d", "cat", "day"]},
        [
            Map("stages.tables:derive", params={"func": add_e}, name="derive"),
            Map("stages.tables:cast", params={"columns": {"day": "int64"}}, name="cast"),
            Map("stages.tables:select", params={"columns": ["id", "e", "day"]}, name="select"),
        ],
        sink={"parquet": str(tmp_path / "out"), "partition_by": ["day"]},
    )
    text = pipeline.explain(n_jobs=1)
    columns = "id: int64, a: double, b: double, d: double, cat: string"
    assert f"rows: table ({columns}, day: int32)" in text
    assert f"derive           map     -> table ({columns}, day: int32, e: double)" in text
    assert f"cast             map     -> table ({columns}, day: int64, e: double)" in text
    assert "select           map     -> table (id: int64, e: double, day: int64)" in text
    assert "partitioned by day" in text
    assert not (tmp_path / "out").exists()


# --- spec files and the CLI ---------------------------------------------------

ETL_MODULE = """
import pyarrow.compute as pc


def derive(table):
    e = pc.add(pc.multiply(table["a"], table["b"]), pc.log1p(pc.abs(table["d"])))
    return table.append_column("e", e)


def count_rows(table):
    return table.num_rows
"""


def write_etl_spec(
    folder: Path, source: str, sink: str, n_jobs: int = 2, module: str = "etl_funcs"
) -> Path:
    """The tables issue's spec, with its ``derive`` in a module beside the spec file."""
    (folder / f"{module}.py").write_text(ETL_MODULE)
    spec = folder / "spec.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            name: events-etl
            source:
              parquet: {source}
              columns: [id, a, b, d, cat]
              filters: [["a", ">", 0]]
            chunks: {{rows: 25}}
            parallel: {{n_jobs: {n_jobs}}}
            stages:
              - name: derive
                map: {module}:derive
              - name: positive_e
                filter: stages.tables:where
                params: {{filters: [["e", ">", 2.0]]}}
              - name: count
                reduce: {{chunk: "{module}:count_rows", combine: "operator:add"}}
            sink: {{parquet: {sink}, partition_by: [cat], mode: overwrite, compression: zstd}}
            """
        )
    )
    return spec


def etl_oracle(whole: pa.Table) -> pa.Table:
    table = pushdown(whole, [("a", ">", 0)], ["id", "a", "b", "d", "cat"])
    table = table.append_column("e", add_e(table)["e"])
    return table.filter(pc.greater(table["e"], 2.0))


def test_spec_file_runs_through_the_cli(hive: tuple[str, pa.Table], tmp_path: Path) -> None:
    path, whole = hive
    (tmp_path / "data").symlink_to(path)
    spec = write_etl_spec(tmp_path, "data/", "out/events/")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(spec), "--report", "report.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out" / "events"
    assert (out / "_SUCCESS").is_file()
    assert (tmp_path / "report.json").is_file()
    expected = etl_oracle(whole)
    got = read_back(out).select(expected.column_names)
    got = got.take(pc.sort_indices(got["id"])).cast(expected.schema)
    assert_same_rows(got, expected)
    compressions = {
        pq.ParquetFile(p).metadata.row_group(0).column(0).compression for p in part_files(out)
    }
    assert compressions == {"ZSTD"}
    assert f'"count": {expected.num_rows}' in proc.stdout


def test_spec_file_and_python_api_agree(
    hive: tuple[str, pa.Table], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, whole = hive
    monkeypatch.chdir(tmp_path)
    spec = write_etl_spec(tmp_path, path, "from_spec", n_jobs=1)
    assert cli_main(["run", "--quiet", str(spec)]) == 0
    from_spec = read_back(tmp_path / "from_spec")
    pipeline = Pipeline.from_file(spec)
    assert pipeline.source.to_dict() == {
        "parquet": path,
        "columns": ["id", "a", "b", "d", "cat"],
        "filters": [["a", ">", 0]],
    }
    by_api = pipeline.with_settings(
        sink={"parquet": str(tmp_path / "from_api"), "partition_by": ["cat"]}
    ).run(n_jobs=1)
    assert by_api.reductions["count"] == etl_oracle(whole).num_rows
    from_api = read_back(tmp_path / "from_api")
    assert_same_rows(from_api, from_spec)


def test_spec_module_found_by_workers_started_before_the_spec_was_loaded(
    hive: tuple[str, pa.Table], tmp_path: Path
) -> None:
    """``Pipeline.from_file`` puts the spec's folder on ``sys.path`` "for the workers too".

    In a long-lived process (a notebook, a scheduler, this test session) the
    loky workers may already run from an earlier pipeline; they must still
    find ``module:derive`` beside the spec.
    """
    path, whole = hive
    warm_up = Pipeline(np.ones((8, 2)), [Map(np.sqrt)], chunks=4, n_jobs=2)
    warm_up.run()  # the worker processes now exist, with the old sys.path
    module = f"spec_helpers_{tmp_path.name}"  # a name no worker has imported yet
    spec = write_etl_spec(tmp_path, path, str(tmp_path / "out"), n_jobs=2, module=module)
    result = Pipeline.from_file(spec).run()
    assert result.reductions["count"] == etl_oracle(whole).num_rows


def test_cli_explain_of_a_table_spec(
    hive: tuple[str, pa.Table], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = hive
    spec = write_etl_spec(tmp_path, path, str(tmp_path / "out"))
    assert cli_main(["explain", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "rows: table (id: int64, a: double, b: double, d: double, cat: string)" in text
    derived = "table (id: int64, a: double, b: double, d: double, cat: string, e: double)"
    assert f"derive           map     -> {derived}" in text
    assert "positive_e       filter  ->" in text
    assert not (tmp_path / "out").exists()


def test_a_filter_may_return_an_arrow_mask_with_nulls(tmp_path: Path) -> None:
    # A null comparison is unknown: the row is dropped, as a pushed-down filter drops it.
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"a": [1.0, None, -2.0, 3.0]}), path, row_group_size=2)
    for n_jobs in (1, 2):
        result = Pipeline(
            str(path), [Filter(lambda t: pc.greater(t["a"], 0), name="positive")], n_jobs=n_jobs
        ).run(progress=False)
        assert result.output.to_pydict() == {"a": [1.0, 3.0]}
