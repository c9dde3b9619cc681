"""Broken table inputs and bad Parquet sink settings, built for real.

Error tests. Every broken input is made on disk (a Parquet file cut in half, a
text file among the data, files whose schemas disagree, a corrupted data
page) and every mistake is made in a spec. Each test checks the message with
``pytest.raises(..., match=...)``, that the sink target is untouched (the
previous dataset's files and bytes unchanged, no ``.chunkline-*`` staging
folder left beside it) and the CLI's exit code: 2 for a spec error (nothing
ran), 1 for bad data or a failed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import (
    Map,
    Pipeline,
    Reduce,
    SinkError,
    SourceError,
    SpecError,
    StageError,
    TableSource,
)
from pipeline.cli import main as cli_main
from pipeline.parquet import ParquetTarget

EXIT_FAILED, EXIT_USAGE = 1, 2
AVAILABLE = "available columns: id, amount, cat"
SELECT = {"name": "select", "map": "stages.tables:select", "params": {"columns": ["id", "amount"]}}


def make_table(n: int, start: int) -> pa.Table:
    rng = np.random.default_rng(start)
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + n), pa.int64()),
            "amount": rng.normal(size=n),
            "cat": pa.array(np.array(["x", "y", "z"])[np.arange(n) % 3]),
        }
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A good dataset folder: a.parquet (ids 0-29) and b.parquet (ids 30-59), row groups of 10."""
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(make_table(30, 0), folder / "a.parquet", row_group_size=10)
    pq.write_table(make_table(30, 30), folder / "b.parquet", row_group_size=10)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by relative path, with its bytes."""
    if folder.is_file():
        return {".": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A previous run's Parquet output, which a failed run must leave exactly as it is."""
    folder = tmp_path / "out"
    (folder / "cat=x").mkdir(parents=True)
    pq.write_table(pa.table({"id": [100, 101]}), folder / "cat=x" / "part-00000-0000.parquet")
    pq.write_table(pa.table({"id": [102]}), folder / "part-00001-0000.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


class Untouched:
    """Remembers a target's files; ``check()`` asserts nothing changed and nothing was left."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.before = snapshot(folder) if folder.exists() else None

    def check(self) -> None:
        after = snapshot(self.folder) if self.folder.exists() else None
        assert after == self.before, "the sink target changed"
        beside = [p.name for p in self.folder.parent.iterdir() if ".chunkline-" in p.name]
        assert beside == [], f"staging files left beside the target: {beside}"


def overwrite_sink(target: Path) -> dict[str, Any]:
    return {"parquet": str(target), "mode": "overwrite"}


def write_spec(folder: Path, source: Any, sink: Any, stages: Any = (SELECT,), **more: Any) -> Path:
    spec = {
        "name": "broken",
        "source": source,
        "chunks": {"rows": 10},
        "stages": list(stages),
        "sink": sink,
        **more,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_cli(spec: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``chunkline run -q SPEC`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = cli_main(["run", "-q", str(spec)])
    return code, capsys.readouterr().err


def run_cli_process(spec: Path, cwd: Path, *more: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline.cli run -q SPEC [more]`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "-q", str(spec), *more],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run_pipeline(source: Any, target: Path, stages: Any = (SELECT,), **kwargs: Any) -> Any:
    return Pipeline(
        source, list(stages), sink=overwrite_sink(target), chunks={"rows": 10}, **kwargs
    ).run()


# --- unreadable input files: SourceError, exit 1 --------------------------------


@pytest.mark.parametrize("name", ["a.parquet", "b.parquet"])  # first or last in name order
def test_truncated_parquet_file(
    data: Path, target: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cut_in_half(data / name)
    untouched = Untouched(target)
    pattern = rf"{re.escape(str(data / name))}.*magic bytes not found"
    with pytest.raises(SourceError, match=pattern):
        run_pipeline({"parquet": str(data)}, target, n_jobs=1)
    # As one file of a list, and as the only file.
    with pytest.raises(SourceError, match=pattern):
        run_pipeline({"parquet": [str(data / "a.parquet"), str(data / "b.parquet")]}, target)
    with pytest.raises(SourceError, match=pattern):
        run_pipeline({"parquet": str(data / name)}, target)
    untouched.check()
    code, err = run_cli(
        write_spec(tmp_path, {"parquet": str(data)}, overwrite_sink(target)), capsys
    )
    assert code == EXIT_FAILED
    assert str(data / name) in err
    untouched.check()


def test_truncated_parquet_file_through_the_cli_process(
    data: Path, target: Path, tmp_path: Path
) -> None:
    cut_in_half(data / "b.parquet")
    untouched = Untouched(target)
    spec = write_spec(tmp_path, {"parquet": "data/", "columns": ["id"]}, {"parquet": "out"})
    proc = run_cli_process(spec, tmp_path)
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert "b.parquet" in proc.stderr and "Traceback" not in proc.stderr
    untouched.check()


@pytest.mark.parametrize("name", ["notes.txt", "zz-readme.md", "c.parquet"])
def test_non_parquet_file_in_the_dataset_folder(
    data: Path, target: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (data / name).write_text("id,amount\n1,2.0\nthis is not parquet\n")
    untouched = Untouched(target)
    with pytest.raises(SourceError, match=rf"{re.escape(str(data / name))}.*(magic bytes|footer)"):
        run_pipeline({"parquet": str(data)}, target, n_jobs=2)
    untouched.check()
    code, err = run_cli(
        write_spec(tmp_path, {"parquet": str(data)}, overwrite_sink(target)), capsys
    )
    assert code == EXIT_FAILED and name in err
    untouched.check()


def test_hidden_and_underscore_files_are_not_data(data: Path, target: Path) -> None:
    # The same junk under a name that starts with "." or "_" is skipped.
    (data / ".notes.txt").write_text("not parquet\n")
    (data / "_SUCCESS").write_text("")
    (data / "_metadata.txt").write_text("not parquet either\n")
    result = run_pipeline({"parquet": str(data)}, target, n_jobs=1)
    assert result.output.to_table().num_rows == 60


def corrupt_row_group(path: Path, row_group: int) -> None:
    """Overwrite one row group's data pages; the footer (schema, statistics) stays valid."""
    metadata = pq.ParquetFile(path).metadata
    with open(path, "r+b") as f:
        for j in range(metadata.num_columns):
            column = metadata.row_group(row_group).column(j)
            f.seek(column.dictionary_page_offset or column.data_page_offset)
            f.write(b"\xff" * column.total_compressed_size)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_corrupt_row_group_found_while_reading(
    data: Path, target: Path, tmp_path: Path, n_jobs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the worker that reads it finds a corrupt page: the run fails naming file and group."""
    corrupt_row_group(data / "b.parquet", 1)
    untouched = Untouched(target)
    # The footer is fine: opening the source does not notice.
    TableSource(path=str(data)).open()
    with pytest.raises(
        SourceError, match=rf"{re.escape(str(data / 'b.parquet'))}.*row group.* 1\b"
    ):
        run_pipeline({"parquet": str(data)}, target, n_jobs=n_jobs)
    untouched.check()
    code, err = run_cli(
        write_spec(tmp_path, {"parquet": str(data)}, overwrite_sink(target)), capsys
    )
    assert code == EXIT_FAILED
    assert "b.parquet" in err
    untouched.check()


# --- schemas that disagree ------------------------------------------------------


def test_files_whose_schemas_disagree(
    tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(
        pa.table({"id": pa.array([1, 2], pa.int64()), "x": pa.array([1, 2], pa.int32())}),
        folder / "a.parquet",
    )
    pq.write_table(
        pa.table({"id": pa.array([3], pa.int64()), "x": pa.array([2**40], pa.int64())}),
        folder / "b.parquet",
    )
    untouched = Untouched(target)
    a, b = (re.escape(str(folder / n)) for n in ("a.parquet", "b.parquet"))
    with pytest.raises(
        SourceError, match=rf"field 'x' is int32 in {a} but int64 in {b}; set schema: unify"
    ):
        run_pipeline({"parquet": str(folder)}, target)
    untouched.check()
    code, err = run_cli(
        write_spec(tmp_path, {"parquet": str(folder)}, overwrite_sink(target)), capsys
    )
    assert code == EXIT_FAILED and "'x' is int32" in err
    untouched.check()
    # Compatible types are promoted on request.
    result = Pipeline(
        {"parquet": str(folder), "schema": "unify"},
        [Map("stages.tables:select", params={"columns": ["x", "id"]})],
        chunks=1,
        n_jobs=2,
    ).run()
    assert result.output.schema.field("x").type == pa.int64()
    assert result.output.to_pydict() == {"x": [1, 2, 2**40], "id": [1, 2, 3]}


def test_file_with_an_extra_field(tmp_path: Path, target: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": [3], "note": ["n"]}), folder / "b.parquet")
    untouched = Untouched(target)
    b = re.escape(str(folder / "b.parquet"))
    with pytest.raises(SourceError, match=rf"{b} has field 'note: string', .*a\.parquet has no"):
        run_pipeline({"parquet": str(folder)}, target, stages=[])
    untouched.check()
    result = Pipeline(
        {"parquet": str(folder), "schema": "unify"},
        [Map("stages.tables:select", params={"columns": ["id", "note"]})],
        n_jobs=1,
    ).run()
    assert result.output.to_pydict() == {"id": [1, 2, 3], "note": [None, None, "n"]}


def test_incompatible_types_cannot_be_unified(tmp_path: Path, target: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(pa.table({"x": pa.array([1], pa.int64())}), folder / "a.parquet")
    pq.write_table(pa.table({"x": pa.array(["one"])}), folder / "b.parquet")
    untouched = Untouched(target)
    # The message names the field and both files, as without unify.
    a, b = (re.escape(str(folder / n)) for n in ("a.parquet", "b.parquet"))
    with pytest.raises(
        SourceError, match=rf"cannot unify the files' schemas: (?=.*\bx\b)(?=.*{a})(?=.*{b})"
    ):
        run_pipeline({"parquet": str(folder), "schema": "unify"}, target, stages=[])
    untouched.check()


def test_hive_folders_whose_schemas_disagree(tmp_path: Path) -> None:
    folder = tmp_path / "events"
    for day, type_ in ((1, pa.int32()), (2, pa.int64())):
        (folder / f"day={day}").mkdir(parents=True)
        table = pa.table({"x": pa.array([day, 10 * day], type_)})
        pq.write_table(table, folder / f"day={day}" / "part-0.parquet")
    with pytest.raises(SourceError, match=r"'x' is int32 in .*day=1.* but int64 in .*day=2"):
        TableSource(path=str(folder)).open()
    result = Pipeline(
        {"parquet": str(folder), "schema": "unify", "filters": [("day", "=", 2)]},
        [Map("stages.tables:select", params={"columns": ["day", "x"]})],
        n_jobs=1,
    ).run()
    assert result.output.schema.field("x").type == pa.int64()
    assert result.output.to_pydict() == {"day": [2, 2], "x": [2, 20]}


# --- names that do not match the data: SpecError, exit 2 ---------------------------


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        (
            {"columns": ["id", "amout"]},
            r"source\.columns: unknown column 'amout' \(did you mean 'amount'\?\); " + AVAILABLE,
        ),
        (
            {"columns": ["id", "total", "kat"]},
            r"source\.columns: unknown columns 'total', 'kat' \(did you mean 'cat'\?\); "
            + AVAILABLE,
        ),
        (
            {"filters": [("amount", ">", 0), ("ammount", "<", 5)]},
            r"source\.filters: unknown column 'ammount' \(did you mean 'amount'\?\); " + AVAILABLE,
        ),
        (
            {"filters": [[("id", ">", 3)], [("kat", "in", ["x"])]]},
            r"source\.filters: unknown column 'kat' \(did you mean 'cat'\?\)",
        ),
        (
            {"filters": [("cat", ">", 3)]},
            r"source\.filters: filter \('cat', '>', 3\): column 'cat' has type string, "
            r"which cannot be compared with 3",
        ),
        (
            {"filters": [("amount", "==", "10")]},
            r"source\.filters: filter \('amount', '==', '10'\): column 'amount' has type double",
        ),
        (
            {"filters": [("id", "in", ["1", "2"])]},
            r"source\.filters: filter \('id', 'in', \['1', '2'\]\): column 'id' has type int64",
        ),
        (
            {"filters": [("amount", "between", [0, 1])]},
            r"source\.filters: unknown operator 'between'",
        ),
    ],
    ids=[
        "unknown-column",
        "unknown-columns",
        "filter-unknown-field",
        "or-filter-unknown-field",
        "string-vs-number",
        "number-vs-string",
        "in-list-type",
        "unknown-operator",
    ],
)
def test_spec_names_that_do_not_match_the_data(
    data: Path,
    target: Path,
    tmp_path: Path,
    source: dict[str, Any],
    pattern: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    untouched = Untouched(target)
    source = {"parquet": str(data), **source}
    with pytest.raises(SpecError, match=pattern):
        run_pipeline(source, target, n_jobs=2)
    with pytest.raises(SpecError, match=pattern):
        Pipeline(source, [Map("stages.tables:select", params={"columns": ["id"]})]).plan()
    untouched.check()
    # YAML has no tuples: write the filters as lists.
    spec = write_spec(tmp_path, _lists(source), overwrite_sink(target))
    code, err = run_cli(spec, capsys)
    assert code == EXIT_USAGE, err
    assert re.search(pattern, err), err
    assert cli_main(["validate", str(spec)]) == EXIT_USAGE
    untouched.check()


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def test_unknown_column_through_the_cli_process(data: Path, target: Path, tmp_path: Path) -> None:
    untouched = Untouched(target)
    spec = write_spec(
        tmp_path,
        {"parquet": "data", "columns": ["id", "amout"], "filters": [["amount", ">", 0]]},
        {"parquet": "out", "mode": "overwrite"},
    )
    proc = run_cli_process(spec, tmp_path)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "source.columns: unknown column 'amout' (did you mean 'amount'?)" in proc.stderr
    assert AVAILABLE in proc.stderr
    untouched.check()


@pytest.mark.parametrize(
    ("stage", "pattern"),
    [
        (
            {"name": "pick", "map": "stages.tables:select", "params": {"columns": ["nope"]}},
            r"stage 'pick'.*select: unknown column 'nope'; " + AVAILABLE,
        ),
        (
            {
                "name": "keep",
                "filter": "stages.tables:where",
                "params": {"filters": [["cat", ">", 1]]},
            },
            r"stage 'keep'.*filter \('cat', '>', 1\): column 'cat' has type string",
        ),
        (
            {
                "name": "types",
                "map": "stages.tables:cast",
                "params": {"columns": {"cat": "flaot64"}},
            },
            r"stage 'types'.*cast: column 'cat': unknown Arrow type 'flaot64' "
            r"\(did you mean 'float64'\?\)",
        ),
    ],
    ids=["select", "where", "cast"],
)
def test_stage_names_that_do_not_match_the_data(
    data: Path,
    target: Path,
    tmp_path: Path,
    stage: dict[str, Any],
    pattern: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by the probe on an empty table: before any row is read or written."""
    untouched = Untouched(target)
    with pytest.raises(SpecError, match=pattern):
        run_pipeline({"parquet": str(data)}, target, stages=[stage], n_jobs=2)
    untouched.check()
    spec = write_spec(tmp_path, {"parquet": str(data)}, overwrite_sink(target), stages=[stage])
    code, err = run_cli(spec, capsys)
    assert code == EXIT_USAGE, err
    assert re.search(pattern, err), err
    untouched.check()


# --- sources that are not there ---------------------------------------------------


def test_missing_source_path(
    tmp_path: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    untouched = Untouched(target)
    missing = tmp_path / "nowhere" / "events"
    with pytest.raises(SourceError, match=rf"source file not found: {re.escape(str(missing))}"):
        run_pipeline({"parquet": str(missing)}, target)
    pq.write_table(make_table(3, 0), tmp_path / "a.parquet")
    with pytest.raises(SourceError, match=r"source file not found: .*b\.parquet"):
        run_pipeline(
            {"parquet": [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]}, target
        )
    code, err = run_cli(
        write_spec(tmp_path, {"parquet": str(missing)}, overwrite_sink(target)), capsys
    )
    assert code == EXIT_FAILED and "source file not found" in err
    untouched.check()


@pytest.mark.parametrize("junk", [[], ["_SUCCESS", ".part-0.parquet.crc", "_common_metadata"]])
def test_folder_without_data_files(
    tmp_path: Path, target: Path, junk: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "empty"
    (folder / "day=1").mkdir(parents=True)
    for name in junk:
        (folder / "day=1" / name).write_bytes(b"\x00junk")
    untouched = Untouched(target)
    with pytest.raises(SourceError, match=rf"no parquet files found in {re.escape(str(folder))}"):
        run_pipeline({"parquet": str(folder)}, target)
    code, err = run_cli(
        write_spec(tmp_path, {"parquet": str(folder)}, overwrite_sink(target)), capsys
    )
    assert code == EXIT_FAILED and "no parquet files found" in err
    untouched.check()


# --- a stage that fails on some row group: StageError, exit 1 ---------------------


def explode_on(table: pa.Table, bad_id: int) -> pa.Table:
    """Fails on the chunk holding ``bad_id`` (and only when it has rows)."""
    if bad_id in table["id"].to_pylist():
        raise ValueError(f"cannot handle id {bad_id}")
    return table


STAGE_ERROR = (
    r"stage 'explode' failed on chunk 4 \({b} row group 1\): "
    r"ValueError: cannot handle id 45"
)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_stage_fails_on_one_row_group(
    data: Path, target: Path, tmp_path: Path, n_jobs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    untouched = Untouched(target)
    stage = Map(explode_on, params={"bad_id": 45}, name="explode")
    pattern = STAGE_ERROR.format(b=re.escape(str(data / "b.parquet")))
    with pytest.raises(StageError, match=pattern) as info:
        run_pipeline({"parquet": str(data)}, target, stages=[stage], n_jobs=n_jobs)
    assert info.value.stage == "explode" and info.value.chunk == 4
    untouched.check()
    # Other chunks' parts were written before the failure; none reached the target.
    with pytest.raises(StageError, match=pattern):
        Pipeline(
            {"parquet": str(data)},
            [stage],
            sink={"parquet": str(target), "mode": "overwrite", "partition_by": ["cat"]},
            chunks={"rows": 10},
            n_jobs=n_jobs,
        ).run()
    untouched.check()


def slow_unless_failing(table: pa.Table, bad_id: int) -> pa.Table:
    """Fails at once on the chunk holding ``bad_id``; other chunks take a while."""
    if bad_id in table["id"].to_pylist():
        raise ValueError(f"cannot handle id {bad_id}")
    time.sleep(0.5)
    return table


@pytest.mark.parametrize("backend", ["threading", "loky", "dask"])
def test_a_failure_leaves_no_late_write_behind(
    data: Path, target: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    # Chunk 0 is still sleeping on the other worker when chunk 1 fails. Its
    # partitioned write would recreate the staging folder after the run had
    # removed it, had the run not waited for the thread (threading), had joblib
    # not killed the worker process (loky), or had the late task not found the
    # run aborted and removed what it wrote (dask, whose tasks cannot be stopped).
    untouched = Untouched(target)
    stage = Map(slow_unless_failing, params={"bad_id": 15}, name="slow")
    pipe = Pipeline(
        {"parquet": str(data)},
        [stage],
        sink={"parquet": str(target), "mode": "overwrite", "partition_by": ["cat"]},
        chunks={"rows": 10},
        n_jobs=2,
        backend=backend,
    )
    with contextlib.ExitStack() as stack:
        if backend == "dask":
            distributed = pytest.importorskip("distributed")
            stack.enter_context(distributed.Client(request.getfixturevalue("cluster")))
        with pytest.raises(StageError, match=r"stage 'slow' failed on chunk 1 "):
            pipe.run(progress=False)
        time.sleep(1.0)  # longer than the slow chunk: a write it made late would show now
    untouched.check()


def claims_the_target(table: pa.Table, target: str) -> pa.Table:
    """Another job creating the run's target while the run works (mode: error)."""
    if 45 in table["id"].to_pylist():  # a chunk of the run, not the plan's sample
        os.makedirs(target, exist_ok=True)
        Path(target, "important.txt").write_text("theirs")
    return table


def test_a_target_that_appears_during_the_run_is_not_replaced(data: Path, tmp_path: Path) -> None:
    target = tmp_path / "fresh"
    stats = tmp_path / "stats.json"
    with pytest.raises(SinkError, match=r"fresh already exists; set mode: overwrite or append"):
        Pipeline(
            {"parquet": str(data)},
            [Map(claims_the_target, params={"target": str(target)}), Reduce("count")],
            sink={"parquet": str(target), "reductions": str(stats)},
            chunks={"rows": 10},
        ).run(progress=False)
    assert (target / "important.txt").read_text() == "theirs"
    # Nothing of the failed run: no statistics beside the data it did not write.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "fresh"]


@pytest.mark.parametrize("mode", ["overwrite", "append"])
def test_a_dataset_is_written_through_a_symbolic_link(
    data: Path, target: Path, tmp_path: Path, mode: str
) -> None:
    link = tmp_path / "latest"
    link.symlink_to(target)
    Pipeline(
        {"parquet": str(data), "columns": ["id", "cat"]},
        [],
        sink={"parquet": str(link), "mode": mode, "partition_by": ["cat"]},
    ).run(progress=False)
    assert link.is_symlink()
    ids = sorted(pq.read_table(target, columns=["id"])["id"].to_pylist())
    assert ids == [*range(60)] + ([100, 101, 102] if mode == "append" else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "latest", "out"]


def test_a_target_that_holds_the_source_is_refused(data: Path, tmp_path: Path) -> None:
    # Overwriting "latest" would delete its old contents, the source among them.
    latest = tmp_path / "latest"
    latest.mkdir()
    shutil.move(data, latest / "input")
    untouched = Untouched(latest)
    with pytest.raises(SpecError, match=r"^sink\.parquet: the source .*input is inside .*latest"):
        Pipeline(
            {"parquet": str(latest / "input")},
            [],
            sink={"parquet": str(latest), "mode": "overwrite"},
        ).run(progress=False)
    untouched.check()


def test_appending_other_columns_is_refused_before_any_work(data: Path, target: Path) -> None:
    untouched = Untouched(target)
    pipe = Pipeline({"parquet": str(data)}, [], sink={"parquet": str(target), "mode": "append"})
    with pytest.raises(
        SinkError,
        match=r"cannot append to .*out: the new rows' columns \(id: int64, amount: double, "
        r"cat: string\) differ from those of .*\(id: int64\); .*use mode: overwrite",
    ):
        pipe.plan()  # as explain and validate do
    untouched.check()


def test_files_readers_skip_do_not_decide_the_appended_columns(data: Path, target: Path) -> None:
    # Another writer's leftovers: names under _ or . are not the dataset's.
    (target / "_temporary").mkdir()
    pq.write_table(pa.table({"other": [1.0]}), target / "_temporary" / "part-0.parquet")
    pq.write_table(pa.table({"other": [1.0]}), target / ".cat=x.parquet")
    Pipeline(
        {"parquet": str(data), "columns": ["id", "cat"]},
        [],
        sink={"parquet": str(target), "mode": "append", "partition_by": ["cat"]},
    ).run(progress=False)
    ids = pq.read_table(target, columns=["id"])["id"].to_pylist()
    assert sorted(ids) == [*range(60), 100, 101, 102]


def test_appending_columns_of_other_types_leaves_the_dataset_as_it_was(
    data: Path, target: Path
) -> None:
    # The same column names: only the parts written tell the types for sure.
    untouched = Untouched(target)
    with pytest.raises(
        SinkError,
        match=r"cannot append to .*out: the new rows' columns \(id: string\) differ from "
        r"those of .*\(id: int64\); .*use mode: overwrite",
    ):
        Pipeline(
            {"parquet": str(data), "columns": ["id", "cat"]},
            [Map("stages.tables:cast", params={"columns": {"id": "string"}})],
            sink={"parquet": str(target), "mode": "append", "partition_by": ["cat"]},
        ).run(progress=False)
    untouched.check()


class InterruptedRename:
    """``os.replace`` whose ``n``-th call is followed by Ctrl-C.

    As with a real signal: Python raises KeyboardInterrupt once the rename
    has returned, so the rename is done.
    """

    def __init__(self, n: int) -> None:
        self.calls, self.n, self.replace = 0, n, os.replace

    def __call__(self, src: Any, dst: Any) -> None:
        self.replace(src, dst)
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize(("mode", "n"), [("append", 13), ("overwrite", 1), ("overwrite", 2)])
def test_ctrl_c_while_committing_leaves_the_target_as_it_was(
    data: Path, target: Path, monkeypatch: pytest.MonkeyPatch, mode: str, n: int
) -> None:
    # append: after a new partition's folder was made and parts moved into it;
    # overwrite: once the old contents were moved aside (1), and once the new
    # ones were moved in (2).
    pipe = Pipeline(
        {"parquet": str(data)},
        [],
        sink={"parquet": str(target), "mode": mode, "partition_by": ["cat"]},
        chunks={"rows": 10},
    )
    if mode == "append":  # a dataset of the same columns, without partition "cat=z"
        shutil.rmtree(target)
        Pipeline({"parquet": str(data), "filters": [("cat", "!=", "z")]}, [], sink=pipe.sink).run(
            progress=False
        )
    untouched = Untouched(target)
    monkeypatch.setattr("pipeline.parquet.os.replace", InterruptedRename(n))
    with pytest.raises(KeyboardInterrupt):
        pipe.run(progress=False)
    untouched.check()


def test_a_real_ctrl_c_while_publishing_waits_until_every_output_is_in_place(
    data: Path, target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGINT arrives as the new dataset is renamed over the old one; the
    # statistics' file moves after it. Both move, then the stop is raised.
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    replace = os.replace

    def interrupted(src: Any, dst: Any) -> None:
        if str(dst) == str(target):
            os.kill(os.getpid(), signal.SIGINT)
        replace(src, dst)

    monkeypatch.setattr("pipeline.parquet.os.replace", interrupted)
    stats = tmp_path / "stats.json"
    pipe = Pipeline(
        {"parquet": str(data)},
        [Reduce("count")],
        sink={"parquet": str(target), "mode": "overwrite", "reductions": str(stats)},
        chunks={"rows": 10},
    )
    with pytest.raises(KeyboardInterrupt) as info:
        pipe.run(progress=False)
    assert info.value.committed is True
    assert pq.read_table(target).num_rows == 60
    assert json.loads(stats.read_text())["count"] == 60
    assert [p.name for p in tmp_path.iterdir() if ".chunkline-" in p.name] == []
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers


def test_a_ctrl_c_while_old_contents_are_deleted_waits_for_the_deletion(
    data: Path, target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stopped halfway through the deletion, the old dataset would stay beside
    # the new one (found by a stress test sending signals at random times).
    rmtree = shutil.rmtree

    def interrupted(path: Any, ignore_errors: bool = False) -> None:
        if str(path).endswith(".old"):
            os.kill(os.getpid(), signal.SIGINT)
        rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr("pipeline.parquet.shutil.rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt) as info:
        Pipeline({"parquet": str(data)}, [], sink=overwrite_sink(target)).run(progress=False)
    assert info.value.committed is True
    assert pq.read_table(target).num_rows == 60
    assert [p.name for p in tmp_path.iterdir() if ".chunkline-" in p.name] == []


def test_a_target_created_while_committing_an_append_is_left_alone(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "appended"
    prepare = ParquetTarget.prepare

    def then_someone_writes(self: ParquetTarget, schema: pa.Schema) -> None:
        prepare(self, schema)
        target.mkdir()
        pq.write_table(pa.table({"theirs": [1]}), target / "theirs.parquet")

    monkeypatch.setattr(ParquetTarget, "prepare", then_someone_writes)
    with pytest.raises(SinkError, match=r"appended was created or removed by someone else"):
        Pipeline({"parquet": str(data)}, [], sink={"parquet": str(target), "mode": "append"}).run(
            progress=False
        )
    assert sorted(p.name for p in target.iterdir()) == ["theirs.parquet"]
    assert [p.name for p in tmp_path.iterdir() if ".chunkline-" in p.name] == []


def test_a_chunk_may_write_more_than_1024_partitions(tmp_path: Path) -> None:
    days = pa.table({"day": np.arange(1100), "value": np.ones(1100)})
    pq.write_table(days, tmp_path / "days.parquet")
    out = tmp_path / "by_day"
    Pipeline(
        {"parquet": str(tmp_path / "days.parquet")},
        [],
        sink={"parquet": str(out), "partition_by": ["day"]},
    ).run(progress=False)
    assert len([p for p in out.iterdir() if p.is_dir()]) == 1100
    assert sorted(int(v) for v in pq.read_table(out).column("day").to_pylist()) == list(range(1100))


def test_a_sink_inside_its_source_folder_is_refused(data: Path) -> None:
    # Each run would read what the runs before it wrote: rows would multiply.
    with pytest.raises(SpecError, match=r"^sink\.parquet: .*clean is inside the source folder "):
        Pipeline({"parquet": str(data)}, [], sink={"parquet": str(data / "clean")})
    with pytest.raises(SpecError, match=r"^sink\.parquet: .*data is the source folder "):
        Pipeline({"parquet": str(data)}, [], sink={"parquet": str(data), "mode": "append"})
    Pipeline({"parquet": str(data)}, [], sink={"parquet": str(data), "mode": "overwrite"})


def test_single_file_needs_a_file_path(data: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"single_file writes one file: give a file path, not "):
        Pipeline(
            {"parquet": str(data)}, [], sink={"parquet": f"{tmp_path}/sf/", "single_file": True}
        )


def test_validate_refuses_a_target_the_run_would_refuse(
    data: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, {"parquet": str(data)}, {"parquet": str(target)}, stages=())
    assert cli_main(["validate", str(spec)]) == 1
    assert "already exists; set mode: overwrite or append" in capsys.readouterr().err


def note_large(table: pa.Table) -> pa.Table:
    """A new text column, all null in some chunks: pyarrow types those ``null``."""
    notes = ["large" if a > 1.0 else None for a in table["amount"].to_pylist()]
    return table.append_column("note", pa.array(notes))


@pytest.mark.parametrize("partition_by", [[], ["cat"]])
def test_chunks_whose_column_types_differ_make_one_readable_dataset(
    data: Path, tmp_path: Path, partition_by: list[str]
) -> None:
    out = tmp_path / "notes"
    Pipeline(
        {"parquet": str(data)},
        [Map(note_large)],
        sink={"parquet": str(out), "partition_by": partition_by},
        chunks={"rows": 5},
    ).run(progress=False)
    types = {pq.read_schema(p).field("note").type for p in out.rglob("*.parquet")}
    assert types == {pa.string()}
    back = ds.dataset(out, partitioning="hive" if partition_by else None).to_table()
    expected = note_large(pq.read_table(data)).column("note").to_pylist()
    assert sorted(back.column("note").to_pylist(), key=str) == sorted(expected, key=str)


def text_in_one_chunk(table: pa.Table) -> pa.Table:
    """A new column of numbers, but text in one chunk (the probe, with no rows, sees null)."""
    ids = table["id"].to_pylist()
    return table.append_column("note", pa.array(["x" if 45 in ids else 1 for _ in ids]))


def test_chunks_whose_column_types_conflict_are_refused(data: Path, target: Path) -> None:
    untouched = Untouched(target)
    with pytest.raises(
        SinkError,
        match=r"the chunks' outputs for .*out disagree on a column's type \(.*int64 vs "
        r"string\); cast it in a stage",
    ):
        Pipeline(
            {"parquet": str(data)},
            [Map(text_in_one_chunk)],
            sink={"parquet": str(target), "mode": "overwrite"},
            chunks={"rows": 10},
        ).run(progress=False)
    untouched.check()


def test_old_contents_that_cannot_be_deleted_are_named(
    data: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As when the old dataset's files are read-only: the new one is in place.
    rmtree = shutil.rmtree

    def keep_old(path: Any, ignore_errors: bool = False) -> None:
        if not str(path).endswith(".old"):
            rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr("pipeline.parquet.shutil.rmtree", keep_old)
    with pytest.warns(UserWarning, match=r"old contents of .*out were moved to .*\.old, which "):
        Pipeline({"parquet": str(data)}, [], sink=overwrite_sink(target)).run(progress=False)
    assert pq.read_table(target).num_rows == 60


def test_stage_failure_leaves_an_appended_dataset_as_it_was(data: Path, target: Path) -> None:
    untouched = Untouched(target)
    with pytest.raises(StageError, match=r"stage 'explode' failed on chunk 4"):
        Pipeline(
            {"parquet": str(data), "columns": ["id", "cat"]},  # the target's columns
            [Map(explode_on, params={"bad_id": 45}, name="explode")],
            sink={"parquet": str(target), "mode": "append", "partition_by": ["cat"]},
            chunks={"rows": 10},
            n_jobs=2,
        ).run()
    untouched.check()


def test_stage_failure_leaves_a_single_file_as_it_was(data: Path, tmp_path: Path) -> None:
    merged = tmp_path / "merged.parquet"
    pq.write_table(pa.table({"id": [7, 8, 9]}), merged)
    untouched = Untouched(merged)
    with pytest.raises(StageError, match=r"stage 'explode' failed on chunk 4"):
        Pipeline(
            {"parquet": str(data)},
            [Map(explode_on, params={"bad_id": 45}, name="explode")],
            sink={"parquet": str(merged), "mode": "overwrite", "single_file": True},
            chunks={"rows": 10},
            n_jobs=2,
        ).run()
    untouched.check()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "merged.parquet"]


def test_stage_error_on_a_chunk_spanning_two_files(data: Path, target: Path) -> None:
    """Chunks of 20 rows: chunk 1 is a.parquet's row group 2 and b.parquet's row group 0."""
    untouched = Untouched(target)
    a, b = (re.escape(str(data / name)) for name in ("a.parquet", "b.parquet"))
    with pytest.raises(
        StageError,
        match=rf"stage 'explode' failed on chunk 1 \({a} row groups? 2\b.* {b} row groups? 0\b",
    ):
        Pipeline(
            {"parquet": str(data)},
            [Map(explode_on, params={"bad_id": 32}, name="explode")],
            sink=overwrite_sink(target),
            chunks={"rows": 20},
            n_jobs=1,
        ).run()
    untouched.check()


STAGE_MODULE = """
def explode_on(table, bad_id):
    if bad_id in table["id"].to_pylist():
        raise ValueError(f"cannot handle id {bad_id}")
    return table
"""


def test_stage_failure_through_the_cli_process(data: Path, target: Path, tmp_path: Path) -> None:
    (tmp_path / "flaky_stages.py").write_text(STAGE_MODULE)
    untouched = Untouched(target)
    stage = {"name": "explode", "map": "flaky_stages:explode_on", "params": {"bad_id": 45}}
    spec = write_spec(
        tmp_path,
        {"parquet": "data"},
        {"parquet": "out", "mode": "overwrite"},
        stages=[stage],
        parallel={"n_jobs": 2},
    )
    proc = run_cli_process(spec, tmp_path, "--report", "report.json")
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert re.search(STAGE_ERROR.format(b=r"data/b\.parquet"), proc.stderr), proc.stderr
    # The report says how the run ended, for a scheduler to read.
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and report["exit_code"] == EXIT_FAILED
    assert (report["stage"], report["chunk"]) == ("explode", 4)
    assert re.search(STAGE_ERROR.format(b=r"data/b\.parquet"), report["error"])
    # The original traceback is shown too, down to the user's function.
    traceback = proc.stderr.split("caused by:", 1)[-1]
    assert "Traceback" in traceback and "in explode_on" in traceback
    assert "ValueError: cannot handle id 45" in traceback
    untouched.check()


# --- the sink: modes and options ----------------------------------------------------


def touch_marker(table: pa.Table, marker: str) -> pa.Table:
    """Leaves a file behind as soon as it sees a row: proof that data was processed."""
    if table.num_rows:
        Path(marker).touch()
    return table


def test_mode_error_on_a_non_empty_target(
    data: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    untouched = Untouched(target)
    marker = tmp_path / "processed"
    stages = [Map(touch_marker, params={"marker": str(marker)})]
    for sink in ({"parquet": str(target)}, {"parquet": str(target), "mode": "error"}):
        with pytest.raises(
            SinkError,
            match=rf"sink\.parquet: {re.escape(str(target))} already exists; "
            "set mode: overwrite or append",
        ):
            Pipeline({"parquet": str(data)}, stages, sink=sink, n_jobs=1).run()
    assert not marker.exists(), "data was processed before the target was checked"
    untouched.check()
    spec = write_spec(tmp_path, {"parquet": str(data)}, {"parquet": str(target)})
    code, err = run_cli(spec, capsys)
    assert code == EXIT_FAILED and "already exists" in err
    untouched.check()


def test_mode_error_on_an_existing_single_file(data: Path, tmp_path: Path) -> None:
    merged = tmp_path / "merged.parquet"
    pq.write_table(pa.table({"id": [7]}), merged)
    untouched = Untouched(merged)
    with pytest.raises(SinkError, match=r"merged\.parquet already exists; set mode: overwrite"):
        Pipeline(
            {"parquet": str(data)}, [SELECT], sink={"parquet": str(merged), "single_file": True}
        ).run()
    untouched.check()


def test_sink_path_of_the_wrong_kind(data: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "out.parquet"
    a_file.write_bytes(b"old")
    with pytest.raises(SinkError, match=r"is a file; a Parquet dataset is a folder"):
        run_pipeline({"parquet": str(data)}, a_file)
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    (folder / "keep").write_text("x")
    with pytest.raises(SinkError, match=r"is a folder; single_file needs a file path"):
        Pipeline(
            {"parquet": str(data)},
            [],
            sink={"parquet": str(folder), "single_file": True, "mode": "overwrite"},
        ).run()
    assert a_file.read_bytes() == b"old" and (folder / "keep").read_text() == "x"


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (
            {"mode": "sometimes"},
            r"sink\.mode: expected one of error, overwrite, append, got 'sometimes'",
        ),
        ({"compression": "nope"}, r"sink\.compression: .*nope"),
        ({"compression": "bz2"}, r"sink\.compression: .*bz2"),
        (
            {"single_file": True, "partition_by": ["cat"]},
            r"sink\.single_file: cannot be combined with partition_by",
        ),
        ({"single_file": True, "mode": "append"}, r"sink\.single_file: .*mode: append"),
        ({"row_group_size": 0}, r"sink\.row_group_size: expected a positive integer, got 0"),
        ({"row_group_size": "big"}, r"sink\.row_group_size: expected a positive integer"),
        ({"partition_by": "cat"}, r"sink\.partition_by: expected a list of column names"),
        ({"compresion": "gzip"}, r"sink\.compresion: unknown key \(did you mean 'compression'\?\)"),
    ],
    ids=[
        "mode",
        "compression",
        "compression-not-for-parquet",
        "single-file-partitioned",
        "single-file-append",
        "row-group-size",
        "row-group-size-type",
        "partition-by-str",
        "misspelt-key",
    ],
)
def test_bad_sink_options(
    data: Path,
    target: Path,
    tmp_path: Path,
    options: dict[str, Any],
    pattern: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    untouched = Untouched(target)
    sink = {"parquet": str(target), "mode": "overwrite", **options}
    with pytest.raises(SpecError, match=pattern):
        Pipeline({"parquet": str(data)}, [SELECT], sink=sink, n_jobs=1).run()
    untouched.check()
    code, err = run_cli(write_spec(tmp_path, {"parquet": str(data)}, sink), capsys)
    assert code == EXIT_USAGE, err
    assert re.search(pattern, err), err
    untouched.check()


def test_options_without_a_parquet_sink(data: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"sink\.partition_by: only applies to a parquet sink"):
        Pipeline(
            {"parquet": str(data)},
            [],
            sink={"npy": str(tmp_path / "x.npy"), "partition_by": ["cat"]},
        )


def test_partition_by_a_column_the_output_does_not_have(
    data: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Known from the output schema (the probe): a spec error before any data is written."""
    untouched = Untouched(target)
    sink = {"parquet": str(target), "mode": "overwrite", "partition_by": ["cat"]}
    pattern = r"sink\.partition_by: unknown column 'cat'.*available columns: id, amount"
    with pytest.raises(SpecError, match=pattern):
        Pipeline({"parquet": str(data)}, [SELECT], sink=sink, n_jobs=1).run()
    untouched.check()
    code, err = run_cli(write_spec(tmp_path, {"parquet": str(data)}, sink), capsys)
    assert code == EXIT_USAGE, err
    untouched.check()


def test_table_output_into_an_npy_sink(data: Path, tmp_path: Path) -> None:
    with pytest.raises(
        SpecError,
        match=r"sink\.npy: the pipeline's output is a table \(id: int64, amount: double\)",
    ):
        Pipeline({"parquet": str(data)}, [SELECT], sink=str(tmp_path / "x.npy")).run()
    assert list(tmp_path.iterdir()) == [data]
