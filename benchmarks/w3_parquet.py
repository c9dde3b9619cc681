"""Workload W3: filter and derive over a Parquet file, written as a Parquet dataset.

The input is one Parquet file of ``rows`` rows (20M by default): ``id``
int64, four standard normal float64 columns ``a b c d`` and a string ``cat``
with 50 values, in row groups of 1M rows (about 55 bytes per row decoded, so
1.1 GB at 20M rows). Every implementation keeps the rows with ``a > 0``,
appends ``e = a * b + log1p(|d|)`` (:func:`w3_derive`) and writes the result
as a Parquet dataset, a folder of one or more part files whose rows, read in
file-name order, are in input order. The implementations are what a user
would otherwise write, plus chunkline:

============== =========================================================
pyarrow-whole  ``pq.read_table``, filter, derive, ``pq.write_table``
pyarrow-stream one process, ``ParquetFile.iter_batches`` a row group at a
               time into one ``ParquetWriter`` (the baseline)
joblib         loky workers, a task per row group: each reads its row
               group, filters, derives and writes its own part file
dask           ``dd.read_parquet`` + filter + ``assign`` + ``to_parquet``
polars         ``scan_parquet().filter().with_columns().sink_parquet()``
chunkline-1, chunkline-2
               chunkline's Python API with ``n_jobs=1`` and ``n_jobs=2``
============== =========================================================

Each writes with its library's default options, as a user would: pyarrow and
dask snappy, with dictionary encoding tried on every column; polars zstd;
chunkline snappy, with dictionary encoding for string columns only.

Commands (from the repository root; all but ``steps`` are the ones every
workload shares, see :mod:`benchmarks.workload`)::

    python -m benchmarks.w3_parquet bench --rows 20000000 --repeat 3
    python -m benchmarks.w3_parquet make --rows 2000000 --out /tmp/w3
    python -m benchmarks.w3_parquet run --impl polars --data /tmp/w3
    python -m benchmarks.w3_parquet verify --data /tmp/w3
    python -m benchmarks.w3_parquet steps --data /tmp/w3
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import itertools
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from benchmarks.harness import MB
from benchmarks.workload import (
    ChunkOption,
    RowsRunner,
    Workload,
    check_chunkline,
    positive_int,
    sync_to_disk,
)

INPUT_NAME = "input.parquet"
BASELINE = "pyarrow-stream"
ROW_GROUP_ROWS = 1_000_000
N_CATEGORIES = 50
CATEGORIES = tuple(f"category_{i:02d}" for i in range(N_CATEGORIES))
FLOAT_COLUMNS = ("a", "b", "c", "d")
SCHEMA = pa.schema(
    [("id", pa.int64()), *((name, pa.float64()) for name in FLOAT_COLUMNS), ("cat", pa.string())]
)
OUTPUT_SCHEMA = SCHEMA.append(pa.field("e", pa.float64()))
#: Arrow bytes of one input row: id, four floats, and ``cat`` (an int32 offset
#: plus its characters; every category name has the same length).
DECODED_ROW_BYTES = 8 + 8 * len(FLOAT_COLUMNS) + 4 + len(CATEGORIES[0])
#: Tolerance on ``e`` when outputs are compared: libraries may differ in the
#: last bits of ``log1p``; every other column must be equal.
E_RTOL = E_ATOL = 1e-12
#: Scheduler of the ``dask`` implementation: of threads and processes
#: (2 workers either way), threads was the faster here (see README.md).
DASK_SCHEDULER = "threads"


# --------------------------------------------------------------------------
# The computation
# --------------------------------------------------------------------------


#: The filter as an expression (what chunkline's source passes to the scanner).
A_POSITIVE = pc.field("a") > 0


def w3_filter(table: pa.Table) -> pa.Table:
    """The rows with ``a > 0``, selected with a boolean mask."""
    return table.filter(pc.greater(table["a"], 0))


def w3_derive(table: pa.Table) -> pa.Table:
    """Append ``e = a * b + log1p(|d|)``, computed with pyarrow.compute.

    Module-level, so that it pickles by reference (chunkline, loky).

    Examples
    --------
    >>> t = pa.table({"a": [1.0], "b": [2.0], "d": [-1.0]})
    >>> round(w3_derive(t)["e"][0].as_py(), 6)
    2.693147
    """
    e = pc.add(pc.multiply(table["a"], table["b"]), pc.log1p(pc.abs(table["d"])))
    return table.append_column("e", e)


# --------------------------------------------------------------------------
# Input data
# --------------------------------------------------------------------------


def make_input(
    out_dir: Path, rows: int, *, seed: int = 0, row_group_rows: int = ROW_GROUP_ROWS
) -> Path:
    """Write ``out_dir/input.parquet``, one row group at a time.

    Only one row group is ever in memory (~55 MB at 1M rows). Written with
    pyarrow's default options (snappy, dictionary encoding tried on every
    column, so ``cat`` is stored as a dictionary), then fsynced so that the
    kernel is not still writing it back while implementations are timed.

    Parameters
    ----------
    out_dir : Path
        Existing or new directory.
    rows : int
        Number of rows.
    seed : int, default 0
        Seed of the generator; the same seed gives the same file.
    row_group_rows : int, default 1_000_000
        Rows per row group.

    Returns
    -------
    Path
        The input file.
    """
    if rows <= 0:
        raise ValueError(f"--rows must be a positive integer; got {rows}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / INPUT_NAME
    rng = np.random.default_rng(seed)
    categories = pa.array(CATEGORIES, pa.string())
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for start in range(0, rows, row_group_rows):
            n = min(row_group_rows, rows - start)
            columns = [pa.array(np.arange(start, start + n, dtype=np.int64))]
            columns += [pa.array(rng.standard_normal(n)) for _ in FLOAT_COLUMNS]
            columns.append(categories.take(pa.array(rng.integers(0, N_CATEGORIES, n))))
            writer.write_table(pa.Table.from_arrays(columns, schema=SCHEMA), row_group_size=n)
    sync_to_disk(path)
    return path


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` and writes the dataset folder
# ``out_dir`` (which does not exist yet). None of them fsyncs its output: the
# run deletes it right away, so flushing it to disk would only time the disk.
# --------------------------------------------------------------------------


def _row_group_runs(in_path: Path, chunk_rows: int | None) -> list[list[int]]:
    """Consecutive row groups, grouped to about ``chunk_rows`` rows (default: one each)."""
    metadata = pq.ParquetFile(in_path).metadata
    runs: list[list[int]] = []
    rows = 0
    for i in range(metadata.num_row_groups):
        n = metadata.row_group(i).num_rows
        if not runs or chunk_rows is None or rows + n > chunk_rows:
            runs.append([])
            rows = 0
        runs[-1].append(i)
        rows += n
    return runs


def run_pyarrow_whole(in_path: Path, out_dir: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """The whole table in memory: read, filter, derive, write one file."""
    table = w3_derive(w3_filter(pq.read_table(in_path)))
    out_dir.mkdir()
    pq.write_table(table, out_dir / "part-0.parquet")


def run_pyarrow_stream(
    in_path: Path, out_dir: Path, *, chunk_rows: int | None, n_jobs: int
) -> None:
    """Baseline: one process, batches of a row group each, one ``ParquetWriter``."""
    source = pq.ParquetFile(in_path)
    batch_size = chunk_rows or source.metadata.row_group(0).num_rows
    out_dir.mkdir()
    with pq.ParquetWriter(out_dir / "part-0.parquet", OUTPUT_SCHEMA) as writer:
        for batch in source.iter_batches(batch_size=batch_size):
            writer.write_table(w3_derive(w3_filter(pa.Table.from_batches([batch]))))


def _joblib_task(in_path: str, out_path: str, row_groups: list[int]) -> int:
    """One joblib task: read row groups, filter, derive, write a part file."""
    table = w3_derive(w3_filter(pq.ParquetFile(in_path).read_row_groups(row_groups)))
    pq.write_table(table, out_path)
    return table.num_rows


def run_joblib(in_path: Path, out_dir: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """Hand-written joblib over row groups; every task writes its own part file."""
    from joblib import Parallel, delayed

    out_dir.mkdir()
    Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(_joblib_task)(str(in_path), str(out_dir / f"part-{i:05d}.parquet"), groups)
        for i, groups in enumerate(_row_group_runs(in_path, chunk_rows))
    )


def run_dask(
    in_path: Path,
    out_dir: Path,
    *,
    chunk_rows: int | None,
    n_jobs: int,
    scheduler: str = DASK_SCHEDULER,
) -> None:
    """dask.dataframe: ``read_parquet``, filter, ``assign``, ``to_parquet``.

    Written the idiomatic way. ``chunk_rows`` is not used: dask chooses its
    partitions (its default ``blocksize`` groups row groups: 4 partitions of
    5M rows at 20M rows), and applies the filter after reading each one
    (dask 2026.8 does not push it into the Parquet reader).
    """
    import dask
    import dask.dataframe as dd

    df = dd.read_parquet(str(in_path))
    df = df[df.a > 0]
    df = df.assign(e=df.a * df.b + np.log1p(df.d.abs()))
    with dask.config.set(scheduler=scheduler, num_workers=n_jobs):
        df.to_parquet(str(out_dir), write_index=False)


def run_polars(in_path: Path, out_dir: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """polars' streaming engine: ``scan_parquet`` -> ``sink_parquet`` (its own threads)."""
    import polars as pl

    out_dir.mkdir()
    (
        pl.scan_parquet(in_path)
        .filter(pl.col("a") > 0)
        .with_columns(e=pl.col("a") * pl.col("b") + pl.col("d").abs().log1p())
        .sink_parquet(out_dir / "part-0.parquet")
    )


def run_chunkline(
    in_path: Path, out_dir: Path, *, chunk_rows: int | None, n_jobs: int, workers: int
) -> None:
    """chunkline's Python API with ``workers`` jobs (``n_jobs`` is ignored).

    ``chunk_rows`` None leaves chunkline's default chunk size.
    """
    check_chunkline()
    from pipeline import Map, Pipeline

    Pipeline(
        source={"parquet": str(in_path), "filters": [("a", ">", 0)]},
        stages=[Map(w3_derive, name="derive")],
        sink={"parquet": str(out_dir), "mode": "overwrite"},
        n_jobs=workers,
        chunks=None if chunk_rows is None else {"rows": chunk_rows},
    ).run(progress=False)


IMPLEMENTATIONS: dict[str, RowsRunner] = {
    "pyarrow-whole": run_pyarrow_whole,
    "pyarrow-stream": run_pyarrow_stream,
    "joblib": run_joblib,
    "dask": run_dask,
    "polars": run_polars,
    "chunkline-1": functools.partial(run_chunkline, workers=1),
    "chunkline-2": functools.partial(run_chunkline, workers=2),
}


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def _natural_key(path: Path) -> list[Any]:
    """Sort ``part.10`` after ``part.9`` (dask numbers its parts without padding)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def dataset_files(folder: Path) -> list[Path]:
    """The Parquet files of a dataset folder, in row order (natural file-name order).

    Files whose names start with ``_`` or ``.`` (``_SUCCESS``) are skipped.
    """
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".parquet", ".parq", ".pq") and p.name[0] not in "_."
    ]
    return sorted(files, key=lambda p: _natural_key(p.relative_to(folder)))


def _tables(folder: Path) -> Iterator[pa.Table]:
    """Every row group of a dataset, in row order, with columns normalized.

    Columns are put in :data:`OUTPUT_SCHEMA`'s order and types, so that a
    string column read back as ``large_string`` or a dictionary compares
    equal to a plain ``string``.
    """
    for path in dataset_files(folder):
        source = pq.ParquetFile(path)
        names = source.schema_arrow.names
        if sorted(names) != sorted(OUTPUT_SCHEMA.names):
            raise ValueError(f"{path.name} has columns {names}, expected {OUTPUT_SCHEMA.names}")
        for i in range(source.num_row_groups):
            yield source.read_row_group(i).select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)


def _rebatched(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The same rows, as tables of exactly ``rows`` rows (the last may be shorter)."""
    pending: list[pa.Table] = []
    n = 0
    for table in tables:
        pending.append(table)
        n += table.num_rows
        while n >= rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, rows)
            pending, n = [whole.slice(rows)], n - rows
    if n:
        yield pa.concat_tables(pending)


def compare_outputs(actual: Path, expected: Path, *, block_rows: int = 1_000_000) -> str | None:
    """Compare two output datasets block by block: same rows, in the same order.

    Every column must be equal except ``e``, which may differ by
    :data:`E_RTOL` / :data:`E_ATOL`. Memory stays at a few blocks.

    Returns
    -------
    str or None
        None if they agree, else what differs first.
    """
    if not dataset_files(actual):
        return "no Parquet files written"
    try:
        return _first_difference(actual, expected, block_rows)
    except (ValueError, pa.ArrowException) as exc:  # other columns, uncastable types
        return f"cannot compare: {exc}"


def _first_difference(actual: Path, expected: Path, block_rows: int) -> str | None:
    start = 0
    pairs = itertools.zip_longest(
        _rebatched(_tables(actual), block_rows), _rebatched(_tables(expected), block_rows)
    )
    for got, want in pairs:
        if got is None or want is None or got.num_rows != want.num_rows:
            rows_got = start + (0 if got is None else got.num_rows)
            rows_want = start + (0 if want is None else want.num_rows)
            return f"row count differs (reached {rows_got} rows, expected {rows_want})"
        for name in OUTPUT_SCHEMA.names:
            x, y = got[name], want[name]
            if name == "e":
                xs, ys = x.to_numpy(), y.to_numpy()
                bad = ~np.isclose(xs, ys, rtol=E_RTOL, atol=E_ATOL, equal_nan=True)
            else:
                if x.equals(y):
                    continue
                bad = ~pc.fill_null(pc.equal(x, y), False).to_numpy(zero_copy_only=False)
            if bad.any():
                return f"column {name!r} differs first at row {start + int(np.flatnonzero(bad)[0])}"
        start += got.num_rows
    return None


# --------------------------------------------------------------------------
# Where a chunkline worker's time goes: the steps of one row group
# --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StepVariant:
    """One way of processing a row group with the pyarrow calls chunkline uses.

    ``batch_rows``/``block_rows`` None mean the whole row group: one scanner
    batch and one written file. ``filter_after`` applies ``a > 0`` after
    reading instead of in the scanner: ``"mask"`` with ``table.filter(mask)``
    (:func:`w3_filter`), ``"expression"`` with ``table.filter(expression)``.
    """

    label: str
    batch_rows: int | None = None
    block_rows: int | None = None
    filter_after: str | None = None
    pre_buffer: bool = True
    dictionary_cat: bool = False
    compression: str = "snappy"
    dictionary_all: bool = False


def step_variants(chunk_rows: int) -> list[StepVariant]:
    """chunkline's worker today (``chunk_rows`` from its plan), then one change at a time."""
    today = StepVariant(
        label=f"chunkline today: scanner filter, batches and parts of {chunk_rows:,} rows",
        batch_rows=chunk_rows,
        block_rows=chunk_rows,
    )
    group = replace(today, batch_rows=None, block_rows=None)
    best = replace(group, filter_after="mask", dictionary_cat=True)
    return [
        today,
        replace(today, label="today + use_dictionary=True (pyarrow default)", dictionary_all=True),
        replace(today, label="today + pre_buffer=False", pre_buffer=False),
        replace(today, label="today + filter after reading (mask)", filter_after="mask"),
        replace(today, label="today + cat read as dictionary", dictionary_cat=True),
        replace(today, label="chunks of 250,000 rows", batch_rows=250_000, block_rows=250_000),
        replace(group, label="chunk = row group (one batch, one part)"),
        replace(group, label="row group + filter after (expression)", filter_after="expression"),
        replace(group, label="row group + filter after (mask)", filter_after="mask"),
        replace(best, label="row group + filter after (mask) + cat as dictionary"),
        replace(best, label="... + lz4", compression="lz4"),
        replace(best, label="... + zstd (polars' default)", compression="zstd"),
        replace(best, label="... + no compression", compression="none"),
    ]


def _step_times(
    path: Path, row_group: int, v: StepVariant, folder: Path, clock: Callable[[], float]
) -> tuple[float, float, float, float]:
    """Seconds of read, filter, derive and write of one row group (one thread)."""
    dictionary_columns = ["cat"] if v.dictionary_cat else None
    file_format = ds.ParquetFileFormat(
        read_options=ds.ParquetReadOptions(dictionary_columns=dictionary_columns),
        default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=v.pre_buffer),
    )
    started = clock()
    fragment = file_format.make_fragment(
        str(path), filesystem=pafs.LocalFileSystem(), row_groups=[row_group]
    )
    scanner = ds.Scanner.from_fragment(
        fragment,
        schema=fragment.physical_schema,
        filter=None if v.filter_after else A_POSITIVE,
        batch_size=v.batch_rows or ROW_GROUP_ROWS,
        use_threads=False,
    )
    # As TableRef.blocks: batches gathered into tables of at least block_rows.
    tables: list[pa.Table] = []
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in scanner.to_batches():
        pending.append(batch)
        rows += batch.num_rows
        if rows >= (v.block_rows or ROW_GROUP_ROWS):
            tables.append(pa.Table.from_batches(pending))
            pending, rows = [], 0
    if pending:
        tables.append(pa.Table.from_batches(pending))
    read = clock()
    if v.filter_after == "mask":
        tables = [w3_filter(t) for t in tables]
    elif v.filter_after == "expression":
        tables = [t.filter(A_POSITIVE) for t in tables]
    filtered = clock()
    tables = [w3_derive(t) for t in tables]
    derived = clock()
    for i, table in enumerate(tables):
        pq.write_table(
            table,
            folder / f"part-{i:04d}.parquet",
            compression=None if v.compression == "none" else v.compression,
            # chunkline's ParquetOptions.write_options: string columns only.
            use_dictionary=True if v.dictionary_all else ["cat"],
        )
    written = clock()
    return read - started, filtered - read, derived - filtered, written - derived


def _polars_step_times(
    path: Path, compression: str, folder: Path, clock: Callable[[], float]
) -> tuple[float, float, float, float]:
    """The same steps with polars on a file of one row group (filter inside the reader)."""
    import polars as pl

    started = clock()
    df = pl.scan_parquet(path).filter(pl.col("a") > 0).collect()
    read = clock()
    df = df.with_columns(e=pl.col("a") * pl.col("b") + pl.col("d").abs().log1p())
    derived = clock()
    df.write_parquet(folder / "part-0000.parquet", compression=compression)
    written = clock()
    return read - started, 0.0, derived - read, written - derived


def profile_steps(data: Path, *, rounds: int = 9, groups: int = 5) -> str:
    """Time the steps of one row group per variant, interleaved; a markdown table.

    Everything runs in this process on one thread (``use_threads=False``, as
    in chunkline's workers) and is timed in CPU time, which other load on a
    shared machine disturbs less than wall time. Each round takes the next of
    the first ``groups`` row groups. One line runs chunkline's own
    ``pipeline.worker.run_chunk`` on one row-group chunk, as a check that the
    first variant is what the engine does; the last lines time polars on a
    copy of one row group (``POLARS_MAX_THREADS=1`` unless polars is already
    imported or the variable set), when polars is installed.
    """
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    try:
        import polars  # noqa: F401
    except ImportError:
        polars_codecs: tuple[str, ...] = ()
    else:
        polars_codecs = ("snappy", "zstd")
    from pipeline import Map, ParquetOptions, Pipeline
    from pipeline.worker import PassTask, run_chunk

    in_path = data / INPUT_NAME
    n_groups = min(groups, pq.ParquetFile(in_path).num_row_groups)
    pipeline = Pipeline(
        source={"parquet": str(in_path), "filters": [("a", ">", 0)]},
        stages=[Map(w3_derive, name="derive")],
        n_jobs=1,
    )
    plan = pipeline.plan().passes[0]
    source = pipeline.source.open()
    chunks = source.plan_chunks(plan.chunk_rows)
    variants = step_variants(plan.chunk_rows)
    times: dict[str, list[tuple[float, ...]]] = {v.label: [] for v in variants}
    engine: list[float] = []
    polars_times: dict[str, list[tuple[float, ...]]] = {c: [] for c in polars_codecs}
    folder = Path(tempfile.mkdtemp(prefix="w3-steps-", dir=data))
    one_group = folder.with_name(folder.name + "-one-group.parquet")
    try:
        if polars_codecs:
            # Written as make_input writes (pyarrow's defaults), one row group.
            first = pq.ParquetFile(in_path).read_row_group(0)
            pq.write_table(first, one_group, row_group_size=first.num_rows)
        for r in range(rounds):
            group = r % n_groups
            for v in variants:
                times[v.label].append(_step_times(in_path, group, v, folder, time.process_time))
                _empty(folder)
            task = PassTask(
                source=source,
                chunk_rows=plan.chunk_rows,
                stages=plan.stages,
                output_meta=plan.output_meta,
                writes="parquet",
                x_target=str(folder),
                parquet=ParquetOptions(),
            )
            started = time.process_time()
            run_chunk(task, chunks[group])
            engine.append(time.process_time() - started)
            _empty(folder)
            if polars_codecs:
                # Untimed: the first polars call of a round read ~1.5x slower
                # (after the pyarrow steps), which is not polars' steady state.
                _polars_step_times(one_group, polars_codecs[0], folder, time.process_time)
                _empty(folder)
            for codec in polars_codecs:
                polars_times[codec].append(
                    _polars_step_times(one_group, codec, folder, time.process_time)
                )
                _empty(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        one_group.unlink(missing_ok=True)

    lines = [
        f"CPU ms per row group ({ROW_GROUP_ROWS:,} rows in, about half kept), median of "
        f"{rounds} interleaved rounds over {n_groups} row groups, one thread:",
        "",
        "| variant | read | filter | derive | write | total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, runs in times.items():
        med = [statistics.median(run[i] for run in runs) * 1000 for i in range(4)]
        total = statistics.median(sum(run) for run in runs) * 1000
        lines.append(f"| {label} | " + " | ".join(f"{m:.0f}" for m in [*med, total]) + " |")
    lines.append(
        f"| pipeline.worker.run_chunk (the engine, today) | | | | | "
        f"{statistics.median(engine) * 1000:.0f} |"
    )
    for codec, runs in polars_times.items():
        med = [statistics.median(run[i] for run in runs) * 1000 for i in range(4)]
        total = statistics.median(sum(run) for run in runs) * 1000
        lines.append(
            f"| polars, {codec} (filter inside the reader: read = read + filter) | "
            + " | ".join(f"{m:.0f}" for m in [*med, total])
            + " |"
        )
    return "\n".join(lines) + "\n"


def _empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


# --------------------------------------------------------------------------
# The workload, for the shared command line (benchmarks.workload)
# --------------------------------------------------------------------------


def describe_input(rows: int) -> str:
    """``20,000,000 rows (1100 MB decoded)``: what ``bench`` makes, for its report."""
    return f"{rows:,} rows ({rows * DECODED_ROW_BYTES / MB:.0f} MB decoded)"


def _describe_made(path: Path, rows: int) -> str:
    return (
        f"wrote {path} ({path.stat().st_size / MB:.0f} MB on disk, "
        f"{rows * DECODED_ROW_BYTES / MB:.0f} MB decoded)"
    )


def _disk_needed(rows: int, check: bool) -> int:
    """Input + one output at a time (+ the baseline's kept output with --check).

    On disk (snappy, random floats): ~48 bytes per input row, ~30 per input
    row for an output (half the rows, one more column).
    """
    return rows * (48 + 30 * (2 if check else 1))


def _notes(args: argparse.Namespace, in_path: Path) -> list[str]:
    """Versions and how the implementations were configured, under the report's table."""
    chunking = (
        f"batches/tasks of {args.chunk_rows:,} rows for every implementation but dask "
        "and polars (chunkline: chunks={'rows': N})"
        if args.chunk_rows
        else "a row group per batch or task (chunkline: its default chunk size)"
    )
    return [
        f"Versions: {_versions('pyarrow', 'polars', 'dask', 'pandas')}.",
        "",
        f"Workload: W3 Parquet, input {in_path.stat().st_size / MB:.0f} MB on disk, "
        f"row groups of {ROW_GROUP_ROWS:,} rows; {chunking}; n_jobs {args.n_jobs} for "
        f"joblib and dask ({DASK_SCHEDULER} scheduler), chunkline-K: n_jobs K; polars: "
        "its own thread pool.",
    ]


def _versions(*dists: str) -> str:
    """``pyarrow 26.0.1, polars 2.1.0, ...``: what the runs import besides NumPy and joblib."""
    found = []
    for dist in dists:
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} not installed")
    return ", ".join(found)


def _cmd_steps(args: argparse.Namespace) -> int:
    if not (args.data / INPUT_NAME).exists():
        print(
            f"error: {args.data / INPUT_NAME} does not exist; create it with `make`.",
            file=sys.stderr,
        )
        return 2
    print(profile_steps(args.data, rounds=args.rounds))
    return 0


def _add_steps_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``steps``: W3's own subcommand, next to the shared ones."""
    p = sub.add_parser(
        "steps", help="time read / filter / derive / write of single row groups (CPU time)"
    )
    p.add_argument("--data", type=Path, required=True, help=f"directory holding {INPUT_NAME}")
    p.add_argument("--rounds", type=positive_int, default=9, help="interleaved rounds (default 9)")
    p.set_defaults(func=_cmd_steps)


WORKLOAD = Workload(
    module="benchmarks.w3_parquet",
    description=__doc__.split("\n")[0],
    key="w3",
    title="W3 Parquet",
    task="filter a > 0, derive e, write a dataset",
    implementations=IMPLEMENTATIONS,
    baseline=BASELINE,
    input_name=INPUT_NAME,
    output_name="out-{name}/",
    make_input=make_input,
    describe_input=describe_input,
    describe_made=_describe_made,
    disk_needed=_disk_needed,
    compare_outputs=compare_outputs,
    compared=f"same rows in the same order; every column equal, e within rtol/atol {E_RTOL:g}",
    chunk_option=ChunkOption(
        flag="--chunk-rows",
        type=positive_int,
        help="rows per batch or task (default: a row group; chunkline: its own default)",
    ),
    n_jobs_help="workers of joblib and dask (default 2)",
    rows_default=20_000_000,
    rows_help="input rows (default 20M = 1.1 GB)",
    notes=_notes,
    add_commands=_add_steps_command,
)


if __name__ == "__main__":
    # Through the importable module, so that functions pickle by reference
    # (see benchmarks.workload).
    from benchmarks import w3_parquet

    sys.exit(w3_parquet.WORKLOAD.main())
