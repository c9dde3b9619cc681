"""Bad inputs and failing stages through the Python API.

Each failure raises one error whose message names the file or the stage (and
for a stage, the chunk and its rows), and nothing is lost: an existing file at
a sink's final path keeps its bytes, no temporary file is left beside it, the
reductions JSON is not written and the run's workspace is removed.
"""

from __future__ import annotations

import os
import pickle
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import (
    ChunklineError,
    Filter,
    Map,
    Pipeline,
    Reduce,
    SinkError,
    SourceError,
    SpecError,
    StageError,
)

N_ROWS = 120
CHUNK = 10
FAIL_ROW = 50  # the stages below misbehave on the chunk holding this row: chunk 5, rows 50-60


def make_x() -> np.ndarray:
    # Column 0 holds 3 * row index, so a stage can tell which rows it was given.
    return np.arange(N_ROWS * 3, dtype=np.float64).reshape(N_ROWS, 3)


def _late(chunk: np.ndarray) -> bool:
    # Only one chunk misbehaves, so that parallel runs report a deterministic chunk.
    return bool((chunk[:, 0] == 3 * FAIL_ROW).any())


def explode_late(chunk: np.ndarray) -> np.ndarray:
    if _late(chunk):
        raise ValueError(f"kaboom at row {int(chunk[0, 0]) // 3}")
    return chunk * 2.0


def explode_always(chunk: np.ndarray) -> np.ndarray:
    raise ZeroDivisionError("the stage cannot work on any rows")


def drop_a_row_late(chunk: np.ndarray) -> np.ndarray:
    return chunk[:-1] if _late(chunk) else chunk


def drop_a_row(chunk: np.ndarray) -> np.ndarray:
    return chunk[:-1]


def int_mask(chunk: np.ndarray) -> np.ndarray:
    return (chunk[:, 0] > 10).astype(np.int64)


def int_mask_late(chunk: np.ndarray) -> np.ndarray:
    mask = chunk[:, 0] > 10
    return mask.astype(np.int64) if _late(chunk) else mask


def complex_late(chunk: np.ndarray) -> np.ndarray:
    return chunk.astype(np.complex128) if _late(chunk) else chunk


def narrower_late(chunk: np.ndarray) -> np.ndarray:
    return chunk[:, :2] if _late(chunk) else chunk


def count_rows(chunk: np.ndarray) -> int:
    return int(chunk.shape[0])


def combine_fails(left: int, right: int) -> int:
    if left + right > FAIL_ROW:
        raise ArithmeticError("cannot add these counts")
    return left + right


def add(left: int, right: int) -> int:
    return left + right


def finalize_fails(state: int) -> int:
    raise LookupError(f"no result for {state} rows")


def as_set(chunk: np.ndarray) -> set[int]:
    return {int(chunk.shape[0])}


def union(left: set[int], right: set[int]) -> set[int]:
    return left | right


@dataclass
class Project:
    """Files of one test: an input, sinks that already exist, a workspace root."""

    root: Path
    x: Path
    out: Path
    sink: Path
    sink_y: Path
    reductions: Path
    workspace: Path
    before: dict[Path, bytes]

    def pipeline(self, stages: list[Any], source: Any = None, **kwargs: Any) -> Pipeline:
        kwargs.setdefault("chunks", CHUNK)
        kwargs.setdefault("n_jobs", 1)
        return Pipeline(
            source=self.x if source is None else source,
            stages=stages,
            sink={"npy": self.sink, "reductions": self.reductions},
            workspace=self.workspace,
            **kwargs,
        )

    def assert_nothing_lost(self) -> None:
        for path, data in self.before.items():
            assert path.read_bytes() == data, f"{path} was changed by a failed run"
        names = sorted(os.listdir(self.out))
        assert names == sorted(p.name for p in self.before), f"left in the sink folder: {names}"
        assert not [n for n in names if n.endswith(".tmp")]
        assert not self.reductions.exists(), "reductions JSON written by a failed run"
        if self.workspace.exists():
            assert list(self.workspace.iterdir()) == [], "workspace not cleaned up"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    x = tmp_path / "x.npy"
    np.save(x, make_x())
    out = tmp_path / "out"
    out.mkdir()
    sink, sink_y = out / "result.npy", out / "result_y.npy"
    np.save(sink, np.full((4, 2), 7, dtype=np.int16))  # an earlier run's output
    np.save(sink_y, np.arange(4))
    before = {sink: sink.read_bytes(), sink_y: sink_y.read_bytes()}
    return Project(
        root=tmp_path,
        x=x,
        out=out,
        sink=sink,
        sink_y=sink_y,
        reductions=out / "stats.json",
        workspace=tmp_path / "ws",
        before=before,
    )


# ---------------------------------------------------------------- the exception tree


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (SpecError, ValueError),
        (SourceError, OSError),
        (StageError, RuntimeError),
        (SinkError, OSError),
    ],
)
def test_errors_subclass_chunkline_error_and_a_builtin(error: type, builtin: type) -> None:
    assert issubclass(error, ChunklineError)
    assert issubclass(error, builtin)
    assert issubclass(ChunklineError, Exception)


def test_errors_pickle_with_their_details() -> None:
    stage_error = StageError("clip", 3, (30, 40), "ValueError: bad")
    again = pickle.loads(pickle.dumps(stage_error))
    assert (again.stage, again.chunk, again.rows) == ("clip", 3, (30, 40))
    assert again.reason == "ValueError: bad"
    assert str(again) == "stage 'clip' failed on chunk 3 (rows 30-40): ValueError: bad"
    source_error = pickle.loads(pickle.dumps(SourceError("source.npy file not found: a.npy")))
    assert isinstance(source_error, SourceError)
    assert str(source_error) == "source.npy file not found: a.npy"
    assert str(pickle.loads(pickle.dumps(SinkError("cannot write")))) == "cannot write"


# ---------------------------------------------------------------- bad input files


def write_truncated_data(path: Path) -> None:
    np.save(path, make_x())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_truncated_header(path: Path) -> None:
    np.save(path, make_x())
    path.write_bytes(path.read_bytes()[:30])


def write_random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(2000))


def write_text(path: Path) -> None:
    path.write_text("a,b,c\n1,2,3\n")


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_object_array(path: Path) -> None:
    np.save(path, np.array([{"a": 1}, None, "text"], dtype=object), allow_pickle=True)


def write_scalar(path: Path) -> None:
    np.save(path, np.float64(3.0))


BAD_FILES: list[tuple[str, Callable[[Path], None], str]] = [
    ("truncated-data", write_truncated_data, r"is truncated: its header promises 2880 bytes"),
    ("truncated-header", write_truncated_header, r"has an unreadable \.npy header"),
    ("random-bytes", write_random_bytes, r"is not a NumPy \.npy file"),
    ("csv-text", write_text, r"is not a NumPy \.npy file"),
    ("empty-file", write_empty, r"is not a NumPy \.npy file"),
    ("object-dtype", write_object_array, r"holds Python objects \(dtype object\), which cannot"),
    ("0-d", write_scalar, r"is a 0-d array; chunkline needs at least one axis"),
]


@pytest.mark.parametrize(
    ("write_bad", "match"), [pytest.param(w, m, id=i) for i, w, m in BAD_FILES]
)
def test_bad_input_file(project: Project, write_bad: Callable[[Path], None], match: str) -> None:
    bad = project.root / "bad.npy"
    write_bad(bad)
    p = project.pipeline([Map(np.negative, name="neg")], source=bad)
    # One clear sentence that starts with the field and the file, names the file once.
    with pytest.raises(SourceError, match=rf"^source\.npy {re.escape(str(bad))} {match}"):
        p.run()
    with pytest.raises(SourceError) as info:
        p.run()
    assert str(info.value).count(str(bad)) == 1, str(info.value)
    project.assert_nothing_lost()


def test_bad_input_file_is_reported_by_plan_and_explain(project: Project) -> None:
    bad = project.root / "bad.npy"
    write_truncated_data(bad)
    p = project.pipeline([Map(np.negative, name="neg")], source=bad)
    with pytest.raises(SourceError, match=rf"^source\.npy {re.escape(str(bad))} is truncated"):
        p.plan()
    with pytest.raises(SourceError, match=rf"^source\.npy {re.escape(str(bad))} is truncated"):
        p.explain()
    project.assert_nothing_lost()


def test_missing_input_file(project: Project) -> None:
    missing = project.root / "missing.npy"
    p = project.pipeline([Map(np.negative, name="neg")], source=missing)
    expected = rf"^source\.npy file not found: {re.escape(str(missing))}"
    with pytest.raises(SourceError, match=expected):
        p.run()
    project.assert_nothing_lost()


def test_input_is_a_directory(project: Project) -> None:
    folder = project.root / "folder.npy"
    folder.mkdir()
    p = project.pipeline([Map(np.negative, name="neg")], source=folder)
    with pytest.raises(SourceError, match=rf"^source\.npy {re.escape(str(folder))} is not a file$"):
        p.run()
    project.assert_nothing_lost()


def test_missing_y_file(project: Project) -> None:
    missing = project.root / "y_missing.npy"
    p = project.pipeline([Map(np.negative, name="neg")], source={"npy": project.x, "y": missing})
    with pytest.raises(SourceError, match=rf"^source\.y file not found: {re.escape(str(missing))}"):
        p.run()
    project.assert_nothing_lost()


def test_y_with_a_different_number_of_rows(project: Project) -> None:
    y = project.root / "y.npy"
    np.save(y, np.zeros(N_ROWS - 1))
    p = project.pipeline([Map(np.negative, name="neg")], source={"npy": project.x, "y": y})
    with pytest.raises(
        SourceError,
        match=rf"^source\.y has {N_ROWS - 1} rows but source\.npy has {N_ROWS}; "
        "they must be aligned row for row$",
    ):
        p.run()
    project.assert_nothing_lost()


def test_in_memory_y_with_a_different_number_of_rows(project: Project) -> None:
    p = project.pipeline(
        [Map(np.negative, name="neg")], source={"npy": make_x(), "y": np.zeros(N_ROWS + 1)}
    )
    with pytest.raises(SourceError, match=rf"^source\.y has {N_ROWS + 1} rows but source\.npy"):
        p.run()
    project.assert_nothing_lost()


def test_in_memory_object_array_is_refused() -> None:
    with pytest.raises(SourceError, match=r"^source\.npy: arrays of Python objects cannot be"):
        Pipeline(np.array([None, {}], dtype=object))


def test_source_that_is_neither_path_nor_array() -> None:
    with pytest.raises(SpecError, match=r"^source\.y: expected a file path, got \[1, 2, 3\]$"):
        Pipeline({"npy": make_x(), "y": [1, 2, 3]})


# ---------------------------------------------------------------- failing stages


PARALLEL = [
    pytest.param(1, None, id="n_jobs=1"),
    pytest.param(2, "loky", id="loky-2"),
    pytest.param(2, "threading", id="threading-2"),
]


@pytest.mark.parametrize(("n_jobs", "backend"), PARALLEL)
def test_stage_raising_in_a_worker(project: Project, n_jobs: int, backend: str | None) -> None:
    p = project.pipeline(
        [Map(np.positive, name="pos"), Map(explode_late, name="explode"), Reduce("sum")],
        n_jobs=n_jobs,
        backend=backend,
    )
    with pytest.raises(
        StageError,
        match=r"^stage 'explode' failed on chunk 5 \(rows 50-60\): ValueError: kaboom at row 50$",
    ) as info:
        p.run()
    exc = info.value
    assert (exc.stage, exc.chunk, exc.rows) == ("explode", 5, (50, 60))
    # The original exception and its traceback are chained. With n_jobs=1 it is the
    # exception object itself; through joblib's parallel backends, joblib chains the
    # worker's formatted traceback (text) instead.
    cause = exc.__cause__
    assert cause is not None
    if n_jobs == 1:
        assert isinstance(cause, ValueError)
        text = "".join(traceback.format_exception(cause))
    else:
        text = str(cause)
    assert "kaboom at row 50" in text
    assert "explode_late" in text, "the original traceback (the failing function) is lost"
    project.assert_nothing_lost()


@pytest.mark.parametrize(("n_jobs", "backend"), PARALLEL)
def test_stage_raising_in_a_filtered_pass(
    project: Project, n_jobs: int, backend: str | None
) -> None:
    # A filter makes the pass write part files in the workspace instead of rows in
    # place; with y, both x and y are filtered and both sinks must survive.
    p = Pipeline(
        source={"npy": project.x, "y": project.x},
        stages=[Filter(lambda a: a[:, 0] % 2 == 0, name="even"), Map(explode_late, name="explode")],
        sink={"npy": project.sink, "y": project.sink_y, "reductions": project.reductions},
        chunks=CHUNK,
        n_jobs=n_jobs,
        backend=backend,
        workspace=project.workspace,
    )
    with pytest.raises(StageError, match=r"^stage 'explode' failed on chunk 5 \(rows 50-60\)"):
        p.run()
    project.assert_nothing_lost()


def test_stage_raising_in_a_later_pass(project: Project) -> None:
    # Different n_jobs split the stages into two passes; the first pass's output is
    # an intermediate file in the workspace, which must be removed too.
    p = project.pipeline(
        [
            Map(np.negative, name="neg", n_jobs=1),
            Map(np.negative, name="neg2"),
            Map(explode_late, name="explode", n_jobs=2, backend="threading"),
        ],
    )
    assert len(p.plan().passes) == 2
    with pytest.raises(StageError, match=r"^stage 'explode' failed on chunk 5 \(rows 50-60\)"):
        p.run()
    project.assert_nothing_lost()


def test_stage_failing_on_the_first_rows_fails_before_any_output(tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, make_x())
    sink = tmp_path / "fresh" / "out.npy"
    p = Pipeline(
        x,
        [Map(np.negative, name="neg"), Map(explode_always, name="always")],
        sink={"npy": sink, "reductions": tmp_path / "fresh" / "r.json"},
        chunks=CHUNK,
        n_jobs=2,
        workspace=tmp_path / "ws",
    )
    with pytest.raises(
        StageError,
        match=r"^stage 'always' failed: ZeroDivisionError: the stage cannot work on any rows "
        r"\(while checking the stage on the first 16 rows of float64 \(n, 3\) data\)$",
    ) as info:
        p.run()
    assert info.value.chunk is None and info.value.stage == "always"
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert not sink.exists()
    assert not sink.parent.exists() or list(sink.parent.iterdir()) == []
    assert list((tmp_path / "ws").iterdir()) == []


def test_stage_failing_on_the_first_rows_is_reported_by_plan(project: Project) -> None:
    p = project.pipeline([Map(explode_always, name="always")])
    with pytest.raises(StageError, match=r"^stage 'always' failed: ZeroDivisionError"):
        p.plan()
    project.assert_nothing_lost()


@pytest.mark.parametrize(
    ("stage", "match"),
    [
        pytest.param(
            Map(drop_a_row, name="short"),
            r"^stage 'short' failed: ValueError: returned 15 rows for 16 input rows; a map "
            r"must return one row per input row \(use a filter to drop rows\)",
            id="map-rows-on-first-rows",
        ),
        pytest.param(
            Map(drop_a_row_late, name="short"),
            r"^stage 'short' failed on chunk 5 \(rows 50-60\): ValueError: returned 9 rows for "
            r"10 input rows; a map must return one row per input row",
            id="map-rows-later",
        ),
        pytest.param(
            Map(lambda a: float(a.sum()), name="scalar"),
            r"^stage 'scalar' failed: ValueError: returned a scalar for 16 input rows",
            id="map-returns-scalar",
        ),
        pytest.param(
            Filter(int_mask, name="intmask"),
            r"^stage 'intmask' failed: ValueError: returned int64 values of shape \(16,\); a "
            r"filter must return a 1-D boolean mask with one value per row",
            id="filter-int-mask-on-first-rows",
        ),
        pytest.param(
            Filter(int_mask_late, name="intmask"),
            r"^stage 'intmask' failed on chunk 5 \(rows 50-60\): ValueError: returned int64 "
            r"values of shape \(10,\); a filter must return a 1-D boolean mask",
            id="filter-int-mask-later",
        ),
        pytest.param(
            Filter(lambda a: a > 10, name="mask2d"),
            r"^stage 'mask2d' failed: ValueError: returned bool values of shape \(16, 3\); a "
            r"filter must return a 1-D boolean mask",
            id="filter-2d-mask",
        ),
        pytest.param(
            Filter(lambda a: a[:-1, 0] > 10, name="shortmask"),
            r"^stage 'shortmask' failed: ValueError: returned 15 rows for 16 input rows; a "
            r"filter must return a boolean mask with one value per row",
            id="filter-short-mask",
        ),
        pytest.param(
            Map(complex_late, name="cplx"),
            r"^stage 'cplx' failed on chunk 5 \(rows 50-60\): ValueError: returned complex128 "
            r"values, but float64 on the first rows of the data; cast explicitly",
            id="dtype-changes-later",
        ),
        pytest.param(
            Map(narrower_late, name="narrow"),
            r"^stage 'narrow' failed on chunk 5 \(rows 50-60\): ValueError: returned rows of "
            r"shape \(2,\), but rows of shape \(3,\) on the first rows of the data",
            id="shape-changes-later",
        ),
        pytest.param(
            Map("standardize", name="scale", params={"mean": [0.0] * 4, "std": [1.0] * 4}),
            r"^stage 'scale' failed: ValueError: operands could not be broadcast.*\(while "
            r"checking the stage on the first 16 rows of float64 \(n, 3\) data\)$",
            id="shape-does-not-fit-the-stage",
        ),
        pytest.param(
            Map("clip", name="clip"),
            r"^stage 'clip' failed: ValueError: clip needs at least one of min or max",
            id="built-in-stage-without-params",
        ),
        pytest.param(
            Reduce(chunk=explode_late, combine=add, name="badreduce"),
            r"^stage 'badreduce' failed on chunk 5 \(rows 50-60\): ValueError: kaboom at row 50$",
            id="reduce-chunk-raises-later",
        ),
    ],
)
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_stage_output_that_does_not_fit(
    project: Project, stage: Any, match: str, n_jobs: int
) -> None:
    p = project.pipeline([Map(np.positive, name="pos"), stage], n_jobs=n_jobs, backend="threading")
    with pytest.raises(StageError, match=match):
        p.run()
    project.assert_nothing_lost()


def test_dtype_widening_on_a_later_chunk_is_cast_safely(tmp_path: Path) -> None:
    # Not an error: float32 on the first rows and float64 later is refused only
    # when the cast is unsafe; here int32 -> float64 is safe.
    def widen_late(chunk: np.ndarray) -> np.ndarray:
        return chunk.astype(np.int32) if _late(chunk) else chunk

    result = Pipeline(make_x(), [Map(widen_late, name="w")], chunks=CHUNK, n_jobs=1).run()
    assert result.output.dtype == np.float64
    np.testing.assert_array_equal(result.output, make_x())


# ---------------------------------------------------------------- reductions in the parent


def test_reduction_combine_failing_names_the_stage(project: Project) -> None:
    p = project.pipeline(
        [Map(np.negative, name="neg"), Reduce(chunk=count_rows, combine=combine_fails, name="n")]
    )
    with pytest.raises(StageError, match=r"^stage 'n' failed.*ArithmeticError: cannot add these"):
        p.run()
    project.assert_nothing_lost()


def test_reduction_finalize_failing_names_the_stage(project: Project) -> None:
    p = project.pipeline(
        [
            Map(np.negative, name="neg"),
            Reduce(chunk=count_rows, combine=add, finalize=finalize_fails, name="n"),
        ]
    )
    with pytest.raises(StageError, match=r"^stage 'n' failed.*LookupError: no result for 120 rows"):
        p.run()
    project.assert_nothing_lost()


def test_reduction_result_that_is_not_json_names_the_file(project: Project) -> None:
    stages = [Map(np.negative, name="neg"), Reduce(chunk=as_set, combine=union, name="s")]
    p = project.pipeline(stages)
    with pytest.raises(ChunklineError, match=r"stats\.json.*'s'|'s'.*stats\.json"):
        p.run()
    project.assert_nothing_lost()


# ---------------------------------------------------------------- sinks that cannot be written


def test_sink_path_that_is_a_directory(tmp_path: Path) -> None:
    sink = tmp_path / "out" / "result.npy"
    sink.mkdir(parents=True)
    p = Pipeline(
        make_x(), [Map(np.negative, name="neg")], sink=sink, n_jobs=1, workspace=tmp_path / "ws"
    )
    with pytest.raises(SinkError, match=re.escape(str(sink))):
        p.run()
    assert sink.is_dir() and list(sink.iterdir()) == []
    assert os.listdir(sink.parent) == ["result.npy"]
    assert list((tmp_path / "ws").iterdir()) == []


def test_sink_folder_that_is_a_file(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    sink = blocked / "result.npy"
    p = Pipeline(
        make_x(), [Map(np.negative, name="neg")], sink=sink, n_jobs=1, workspace=tmp_path / "ws"
    )
    with pytest.raises(SinkError, match=re.escape(str(blocked))):
        p.run()
    assert blocked.read_text() == "not a folder"
    assert list((tmp_path / "ws").iterdir()) == []


def _wider(chunk: np.ndarray) -> np.ndarray:
    """Each row becomes 10**10 zeros: 80 GB per row, and no memory (a broadcast view)."""
    return np.broadcast_to(np.float64(0.0), (len(chunk), 10**10))


def test_output_larger_than_the_disk_fails_before_any_work(project: Project) -> None:
    # The output's disk space is reserved when it is allocated: a full disk is
    # reported by name before any chunk runs, not as a failing write halfway.
    p = project.pipeline([Map(_wider, name="wider")])
    with pytest.raises(SinkError, match=r"cannot make .*result\.npy.* \(.*GiB\) on disk"):
        p.run()
    project.assert_nothing_lost()


# ---------------------------------------------------------------- success leaves no litter


def test_successful_run_replaces_the_sink_and_cleans_up(project: Project) -> None:
    p = project.pipeline([Map(np.negative, name="neg"), Reduce("count")], n_jobs=2)
    result = p.run()
    np.testing.assert_array_equal(np.load(project.sink), -make_x())
    assert result.reductions == {"count": N_ROWS}
    assert project.reductions.exists()
    assert sorted(os.listdir(project.out)) == ["result.npy", "result_y.npy", "stats.json"]
    assert list(project.workspace.iterdir()) == []
