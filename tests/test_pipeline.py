"""Oracle tests through ``Pipeline(...).run()``: chunked results equal plain NumPy.

Row-wise outputs must be bitwise identical to NumPy for every chunk size,
``n_jobs`` and backend; reductions must be exactly identical across ``n_jobs``
and backends for one chunk size (they fold in chunk order) and close to NumPy.
Everything runs on real files in ``tmp_path`` and real worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Filter, Map, Pipeline, Reduce, RunResult, SinkError, StageError
from pipeline.sinks import allocate_npy, to_jsonable, write_rows
from pipeline.sources import ArraySource, read_npy_ref, shared_mappings
from stages.arrays import rolling_mean

N = 100
CHUNK_ROWS = [1, 7, 64, N, N + 50]  # 7 and 64 do not divide N; N + 50 exceeds it

# One parametrization of parallel settings, shared by the tests that sweep them.
SEQUENTIAL = {"n_jobs": 1, "backend": "sequential"}
LOKY = {"n_jobs": 2, "backend": "loky"}
PARALLEL = [
    pytest.param(SEQUENTIAL, id="1-sequential"),
    pytest.param({"n_jobs": 1}, id="1-default"),
    pytest.param({"n_jobs": 2, "backend": "threading"}, id="2-threading"),
    pytest.param({"n_jobs": -1, "backend": "threading"}, id="-1-threading"),
    pytest.param(LOKY, id="2-loky"),
    pytest.param({"n_jobs": -1, "backend": "loky"}, id="-1-loky"),
]
FEW = [pytest.param(SEQUENTIAL, id="1-sequential"), pytest.param(LOKY, id="2-loky")]


# --- helpers ----------------------------------------------------------------------------


def run(source: Any, stages: list[Any], tmp_path: Path, **kwargs: Any) -> RunResult:
    """Run a pipeline with its workspace under tmp_path; check the workspace is left empty."""
    workspace = tmp_path / "ws"
    result = Pipeline(source, stages, workspace=workspace, **kwargs).run(progress=False)
    assert os.listdir(workspace) == []
    return result


def assert_bitwise(actual: np.ndarray | None, expected: np.ndarray) -> None:
    assert actual is not None
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected, equal_nan=expected.dtype.kind == "f")


def assert_identical(actual: Any, expected: Any) -> None:
    """Exactly equal reduction results (NaN equal to NaN), also in type and dtype."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_identical(actual[key], expected[key])
    else:
        assert type(actual) is type(expected)
        assert np.asarray(actual).dtype == np.asarray(expected).dtype
        np.testing.assert_array_equal(actual, expected)


def assert_close(actual: Any, expected: Any, rtol: float = 1e-10) -> None:
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_close(actual[key], expected[key], rtol)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12)


def numpy_reductions(a: np.ndarray) -> dict[str, Any]:
    """What the reductions of MIXED_STAGES must give, computed by NumPy on all rows."""
    nan = np.full(a.shape[1:], np.nan)
    edges = np.linspace(0.0, 2.25, 7)
    columns = a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=int))).T
    counts = [np.histogram(c, bins=edges)[0] for c in columns]
    return {
        "moments": {
            "count": a.shape[0],
            "mean": a.mean(axis=0) if len(a) else nan,
            "std": a.std(axis=0) if len(a) else nan,
            "min": a.min(axis=0) if len(a) else nan,
            "max": a.max(axis=0) if len(a) else nan,
        },
        "sum": a.sum(axis=0),
        "count": a.shape[0],
        "histogram": {
            "edges": edges,
            "counts": np.reshape(counts, (*a.shape[1:], 6)),
        },
    }


def make_x(rng: np.random.Generator, n: int = N, tail: tuple[int, ...] = (3,)) -> np.ndarray:
    x = rng.normal(size=(n, *tail)) * 1.2
    if n > 10:
        x[rng.choice(n, size=n // 10, replace=False)] = np.nan  # rows for finite_rows to drop
    return x


def at_most_2(a: np.ndarray) -> np.ndarray:
    return (a <= 2.0).all(axis=1)


# Maps and filters (ragged output: part files) with taps between them.
MIXED_STAGES = [
    Filter("finite_rows", name="finite"),
    Map("clip", name="clip", params={"min": -1.5, "max": 1.5}),
    Map(np.square, name="square"),
    Reduce("moments", name="moments"),
    Reduce("sum"),
    Reduce("count"),
    Reduce("histogram", params={"bins": 6, "range": [0.0, 2.25]}),
    Filter(at_most_2, name="small"),
]


def rows_all(mask: np.ndarray) -> np.ndarray:
    return mask.all(axis=tuple(range(1, mask.ndim)))


def mixed_numpy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    keep = rows_all(np.isfinite(x))
    a = np.square(np.clip(x[keep], -1.5, 1.5))
    small = rows_all(a <= 2.0)
    return a[small], y[keep][small], numpy_reductions(a)


# Row-preserving maps only (outputs preallocated and written in place).
MAP_STAGES = [
    Map("nan_to_num"),
    Map("abs"),
    Map("sqrt"),
    Map("standardize", params={"mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 0.0]}),
    Reduce("mean"),
    Reduce("variance", params={"ddof": 1}),
    Reduce("max"),
]


def maps_numpy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    a = np.sqrt(np.abs(np.nan_to_num(x)))
    a = (a - np.array([0.1, 0.2, 0.3])) / np.array([1.0, 2.0, 1.0])
    return a, y, {"mean": a.mean(axis=0), "variance": a.var(axis=0, ddof=1), "max": a.max(axis=0)}


STAGE_SETS: dict[str, tuple[list[Any], Callable[..., Any]]] = {
    "maps": (MAP_STAGES, maps_numpy),
    "filters": (MIXED_STAGES, mixed_numpy),
}


# --- maps, filters and reductions over chunk sizes x n_jobs x backends -------------------


@pytest.mark.parametrize("parallel", PARALLEL)
@pytest.mark.parametrize("chunk_rows", CHUNK_ROWS)
@pytest.mark.parametrize("kind", list(STAGE_SETS))
def test_chunked_equals_numpy_for_every_setting(kind, chunk_rows, parallel, rng, tmp_path):
    stages, oracle = STAGE_SETS[kind]
    x, y = make_x(rng), np.arange(N) * 10
    out, y_out, reductions = oracle(x, y)
    source = ArraySource(x, y)

    result = run(source, stages, tmp_path, chunks=chunk_rows, **parallel)

    assert_bitwise(result.output, out)
    assert_bitwise(result.y, y_out)
    assert_close(result.reductions, reductions)
    # Same chunks, any n_jobs and backend: reductions fold in chunk order, exactly.
    baseline = run(source, stages, tmp_path, chunks=chunk_rows, **SEQUENTIAL)
    assert_identical(result.reductions, baseline.reductions)
    assert list(result.reductions) == list(reductions)  # in stage order


# --- sources ----------------------------------------------------------------------------


def _sources(x: np.ndarray, y: np.ndarray, save_npy: Callable[..., str]) -> dict[str, Any]:
    xpath, ypath = save_npy("x", x), save_npy("y", y)
    fpath = save_npy("x-fortran", np.asfortranarray(x))
    raw = Path(xpath).with_name("x.raw")
    raw.write_bytes(b"header!" * 14 + b".." + x.tobytes())  # data at byte 100
    return {
        "array": ArraySource(x, y),
        "array-mapping": {"npy": x, "y": y},
        "npy-path": ArraySource(Path(xpath), ypath),
        "npy-mapping": {"npy": xpath, "y": ypath},
        "memmap": ArraySource(np.load(xpath, mmap_mode="r"), np.load(ypath, mmap_mode="r")),
        "memmap-fortran": ArraySource(np.load(fpath, mmap_mode="r"), ypath),
        "memmap-raw-offset": ArraySource(
            np.memmap(raw, dtype=x.dtype, mode="r", offset=100, shape=x.shape), y
        ),
    }


SOURCE_KINDS = [
    "array",
    "array-mapping",
    "npy-path",
    "npy-mapping",
    "memmap",
    "memmap-fortran",
    "memmap-raw-offset",
]


@pytest.mark.parametrize("parallel", FEW)
@pytest.mark.parametrize("kind", SOURCE_KINDS)
def test_every_source_kind_gives_the_numpy_result(kind, parallel, rng, tmp_path, save_npy):
    x, y = make_x(rng), np.arange(N) * 10
    out, y_out, reductions = mixed_numpy(x, y)
    source = _sources(x, y, save_npy)[kind]

    result = run(source, MIXED_STAGES, tmp_path, chunks=7, **parallel)

    assert_bitwise(result.output, out)
    assert_bitwise(result.y, y_out)
    assert_close(result.reductions, reductions)


@pytest.mark.parametrize(
    ("kind", "copied"),
    [("memmap", False), ("npy-path", False), ("array", True)],
)
def test_only_in_memory_arrays_are_copied_to_the_workspace(kind, copied, rng, tmp_path, save_npy):
    x = make_x(rng)
    source = _sources(x, np.arange(N), save_npy)[kind]
    workspace = tmp_path / "ws"
    seen: list[tuple[str | None, list[str]]] = []

    def spy(chunk: np.ndarray) -> np.ndarray:
        # Workers read np.memmap slices of the file the run reads from; sequential runs
        # this in the test's process, while the workspace exists.
        if isinstance(chunk, np.memmap):
            seen.append((chunk.filename, sorted(p.name for p in workspace.glob("*/*"))))
        return chunk * 2

    result = run(source, [Map(spy, name="spy")], tmp_path, chunks=16, **SEQUENTIAL)

    assert_bitwise(result.output, x * 2)
    assert len(seen) >= 7  # at least one per chunk
    files = {filename for filename, _ in seen}
    listings = {tuple(listing) for _, listing in seen}
    if copied:
        (filename,) = files
        assert Path(filename).parent.parent == workspace
        assert all("input-x.npy" in listing for listing in listings)
    else:
        assert files == {os.path.abspath(tmp_path / "x.npy")}
        assert all("input-x.npy" not in listing for listing in listings)


@pytest.mark.parametrize("chunk_rows", [1, 7])
def test_builtin_filters_after_a_filter_that_empties_a_chunk(chunk_rows, tmp_path):
    # Rows 0-6 all hold a NaN: finite_rows empties the first chunk(s), and the
    # filters after it must accept a chunk with zero rows.
    x = np.arange(42.0).reshape(14, 3)
    x[:7, 1] = np.nan
    stages = [
        Filter("finite_rows"),
        Filter("range_rows", params={"max": 35.0}),
        Filter("finite_rows", name="again"),
    ]
    result = run(x, stages, tmp_path, chunks=chunk_rows, **SEQUENTIAL)
    assert_bitwise(result.output, x[7:12])


def test_y_travels_with_x_through_filters(tmp_path, save_npy):
    x = np.arange(60.0).reshape(20, 3)
    y = np.arange(20) * 7
    stages = [
        Filter(lambda a: a[:, 0] % 2 == 0, name="even"),
        Map(np.negative),
        Filter("range_rows", params={"max": -12.0, "columns": 0}),
    ]
    for source in ({"npy": x, "y": y}, {"npy": save_npy("x", x), "y": save_npy("y", y)}):
        result = run(source, stages, tmp_path, chunks=3, **SEQUENTIAL)
        keep = (x[:, 0] % 2 == 0) & (-x[:, 0] <= -12)
        assert_bitwise(result.output, -x[keep])
        assert_bitwise(result.y, y[keep])
        # Each output row is still with its y.
        assert np.array_equal(-result.output[:, 0] / 3 * 7, result.y)


# --- overlap ----------------------------------------------------------------------------

OVERLAP_CASES = {
    "alone": ([Map("rolling_mean", params={"window": 5})], lambda x: rolling_mean(x, 5)),
    "after-a-map": (
        [Map("abs"), Map("rolling_mean", params={"window": 5})],
        lambda x: rolling_mean(np.abs(x), 5),
    ),
    "then-a-filter": (
        [Map("rolling_mean", params={"window": 5}), Filter("range_rows", params={"min": 0.0})],
        lambda x: rolling_mean(x, 5)[(rolling_mean(x, 5) >= 0).all(axis=1)],
    ),
    # The window runs over the rows the filter kept, as it does without chunks.
    "after-a-filter": (
        [Filter("range_rows", params={"min": -1.5}), Map("rolling_mean", params={"window": 5})],
        lambda x: rolling_mean(x[(x >= -1.5).all(axis=1)], 5),
    ),
    # A reduce stage is a tap that passes chunks on unchanged, so it may stand
    # anywhere, also before a windowed map.
    "after-a-tap": (
        [Reduce("count"), Map("rolling_mean", params={"window": 5})],
        lambda x: rolling_mean(x, 5),
    ),
}


@pytest.mark.parametrize("case", list(OVERLAP_CASES))
@pytest.mark.parametrize("chunk_rows", [1, 3, *CHUNK_ROWS[1:]])
def test_overlap_rolling_mean_equals_unchunked(case, chunk_rows, rng, tmp_path):
    stages, oracle = OVERLAP_CASES[case]
    x = rng.normal(size=(N, 3))
    result = run(x, stages, tmp_path, chunks={"rows": chunk_rows, "overlap": 2}, **SEQUENTIAL)
    assert_bitwise(result.output, oracle(x))


@pytest.mark.parametrize("parallel", PARALLEL[2:])
def test_overlap_rolling_mean_in_parallel(parallel, rng, tmp_path, save_npy):
    x = rng.normal(size=(N, 3))
    stages, oracle = OVERLAP_CASES["then-a-filter"]
    result = run(save_npy("x", x), stages, tmp_path, chunks={"rows": 7, "overlap": 2}, **parallel)
    assert_bitwise(result.output, oracle(x))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),  # zero rows: see test_stage_conformance (rolling_mean)
    chunk_rows=st.integers(1, 45),
    half=st.integers(0, 3),
    extra=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_overlap_property(n, chunk_rows, half, extra, seed, tmp_path_factory):
    # Any overlap >= window // 2 gives the unchunked result, bitwise.
    tmp_path = tmp_path_factory.mktemp("overlap")
    x = np.random.default_rng(seed).normal(size=(n, 2))
    window = 2 * half + 1
    result = run(
        x,
        [Map("rolling_mean", params={"window": window})],
        tmp_path,
        chunks={"rows": chunk_rows, "overlap": half + extra},
        **SEQUENTIAL,
    )
    assert_bitwise(result.output, rolling_mean(x, window))


# --- shapes and dtypes ------------------------------------------------------------------


@pytest.mark.parametrize("parallel", FEW)
@pytest.mark.parametrize("n_rows", [0, 1])
@pytest.mark.parametrize("to_file", [False, True], ids=["memory", "npy-sink"])
def test_empty_and_single_row_sources(n_rows, to_file, parallel, rng, tmp_path):
    x, y = make_x(rng, n=n_rows), np.arange(n_rows)
    out, y_out, reductions = mixed_numpy(x, y)
    sink = {"npy": str(tmp_path / "out.npy"), "y": str(tmp_path / "y.npy")} if to_file else None

    result = run(ArraySource(x, y), MIXED_STAGES, tmp_path, chunks=4, sink=sink, **parallel)

    assert_bitwise(result.output, out)
    assert_bitwise(result.y, y_out)
    assert_close(result.reductions, reductions)
    assert result.reductions["count"] == n_rows
    if to_file:
        assert_bitwise(np.load(tmp_path / "out.npy"), out)


@pytest.mark.parametrize("parallel", FEW)
def test_empty_source_through_maps_filters_and_taps(parallel, tmp_path):
    # The same engine paths as above, with stages that do not reshape rows.
    x, y = np.empty((0, 3)), np.empty(0, dtype=np.int64)
    stages = [
        Map(np.square),
        Filter(lambda a: a[:, 0] > 0, name="positive"),
        Reduce("mean"),
        Reduce("moments"),
        Reduce("count"),
    ]
    result = run(ArraySource(x, y), stages, tmp_path, chunks=4, **parallel)
    assert_bitwise(result.output, x)
    assert_bitwise(result.y, y)
    assert result.reductions["count"] == 0
    assert_bitwise(result.reductions["mean"], np.full(3, np.nan))
    assert result.reductions["moments"]["count"] == 0
    assert_bitwise(result.reductions["moments"]["min"], np.full(3, np.nan))


def test_empty_source_of_taps_only_writes_nothing(tmp_path):
    stages = [Reduce("mean"), Reduce("min"), Reduce("max"), Reduce("count")]
    result = run(np.empty((0, 3)), stages, tmp_path, chunks=4, **SEQUENTIAL)
    assert result.output is None
    assert result.reductions["count"] == 0
    for name in ("mean", "min", "max"):
        assert np.isnan(result.reductions[name]).all()


@pytest.mark.parametrize("parallel", FEW)
@pytest.mark.parametrize("chunk_rows", [3, 40])
def test_three_dimensional_source(chunk_rows, parallel, rng, tmp_path, save_npy):
    x = rng.normal(size=(40, 2, 3))
    x[5, 1, 2] = np.nan
    stages = [Filter("finite_rows"), Map(np.square), Reduce("moments"), Reduce("sum")]
    a = np.square(x[np.isfinite(x).all(axis=(1, 2))])

    result = run(save_npy("x3", x), stages, tmp_path, chunks=chunk_rows, **parallel)

    assert_bitwise(result.output, a)
    moments = result.reductions["moments"]
    assert moments["count"] == len(a)
    assert moments["mean"].shape == (2, 3)
    assert_close(moments["mean"], a.mean(axis=0))
    assert_close(moments["std"], a.std(axis=0))
    assert_bitwise(moments["min"], a.min(axis=0))
    assert_close(result.reductions["sum"], a.sum(axis=0))


@pytest.mark.parametrize("parallel", FEW)
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])
def test_integer_dtypes(dtype, parallel, rng, tmp_path):
    x = rng.integers(0 if dtype == "uint8" else -100, 100, size=(N, 3)).astype(dtype)
    stages = [
        Filter("range_rows", params={"min": 0, "max": 80}),
        Map(np.bitwise_not, name="invert"),
        Reduce("sum"),
        Reduce("min"),
        Reduce("max"),
        Reduce("count"),
        Reduce("mean"),
        Reduce("histogram", params={"bins": [-300.0, -100.0, -50.0, 0.0, 300.0]}),
    ]
    a = np.bitwise_not(x[((x >= 0) & (x <= 80)).all(axis=1)])

    result = run(x, stages, tmp_path, chunks=7, **parallel)

    assert_bitwise(result.output, a)
    reductions = result.reductions
    assert_bitwise(np.asarray(reductions["sum"]), a.sum(axis=0))
    assert_bitwise(reductions["min"], a.min(axis=0))
    assert_bitwise(reductions["max"], a.max(axis=0))
    assert reductions["count"] == len(a)
    assert_close(reductions["mean"], a.mean(axis=0))
    edges = [-300.0, -100.0, -50.0, 0.0, 300.0]
    expected = np.stack([np.histogram(c, bins=edges)[0] for c in a.T])
    np.testing.assert_array_equal(reductions["histogram"]["counts"], expected)


@pytest.mark.parametrize("parallel", FEW)
def test_float32(parallel, rng, tmp_path):
    x = make_x(rng).astype(np.float32)
    stages = [Filter("finite_rows"), Map("abs"), Map("sqrt"), Reduce("sum"), Reduce("moments")]
    a = np.sqrt(np.abs(x[np.isfinite(x).all(axis=1)]))

    result = run(x, stages, tmp_path, chunks=7, **parallel)

    assert_bitwise(result.output, a)
    assert result.reductions["sum"].dtype == np.float32
    np.testing.assert_allclose(result.reductions["sum"], a.sum(axis=0), rtol=1e-5)
    assert_close(result.reductions["moments"]["mean"], a.astype(np.float64).mean(axis=0))
    assert_bitwise(result.reductions["moments"]["max"], a.max(axis=0))


def test_map_changing_dtype_and_row_shape(rng, tmp_path):
    x = rng.integers(-5, 5, size=(30, 4)).astype(np.int16)
    stages = [Map("astype", params={"dtype": "float32"}), Map(np.cumsum, params={"axis": 1})]
    stages.append(Map(lambda a: a.reshape(len(a), 2, 2), name="to_2x2"))
    result = run(x, stages, tmp_path, chunks=4, **SEQUENTIAL)
    assert_bitwise(result.output, np.cumsum(x.astype(np.float32), axis=1).reshape(30, 2, 2))


# --- passes and parallel settings -------------------------------------------------------


def test_stage_with_its_own_n_jobs_makes_a_second_pass(rng, tmp_path):
    x, y = make_x(rng), np.arange(N)
    pipe = Pipeline(
        {"npy": x, "y": y},
        [
            Filter("finite_rows"),
            Map("abs"),
            Map("sqrt", n_jobs=1),
            Reduce("moments", n_jobs=1),
        ],
        chunks=7,
        n_jobs=2,
        backend="loky",
        workspace=tmp_path / "ws",
    )
    plan = pipe.plan()
    assert len(plan.passes) == 2
    assert [s.name for s in plan.passes[0].stages] == ["finite_rows", "abs"]
    assert [s.name for s in plan.passes[1].stages] == ["sqrt", "moments"]
    assert plan.passes[0].parallel.n_workers == 2
    assert plan.passes[1].parallel.n_workers == 1

    result = pipe.run(progress=False)

    keep = np.isfinite(x).all(axis=1)
    a = np.sqrt(np.abs(x[keep]))
    assert_bitwise(result.output, a)
    assert_bitwise(result.y, y[keep])
    assert_close(result.reductions["moments"]["mean"], a.mean(axis=0))
    assert result.reductions["moments"]["count"] == keep.sum()
    assert len(result.report.passes) == 2
    assert os.listdir(tmp_path / "ws") == []


def test_the_memory_estimate_counts_no_more_rows_or_workers_than_there_are(tmp_path):
    # 1,000 rows of 16 bytes: one chunk, however large the chunk size asked for.
    x = np.zeros((1000, 2))
    small, large = (
        Pipeline(x, [Map("abs")], chunks={"bytes": size}, n_jobs=2, workspace=tmp_path / "ws")
        .plan()
        .passes[0]
        for size in ("16KB", "64MB")
    )
    assert small.n_chunks == large.n_chunks == 1
    assert small.peak_bytes == large.peak_bytes
    assert large.peak_bytes < 100 * 2**20  # one worker's base, plus 16 kB of rows


def test_caller_parallel_config_is_respected(rng, tmp_path):
    x = make_x(rng)
    pipe = Pipeline(x, [Map("abs"), Reduce("max")], chunks=7, workspace=tmp_path / "ws")
    with joblib.parallel_config(backend="threading", n_jobs=2):
        plan = pipe.plan()
        result = pipe.run(progress=False)
    assert plan.passes[0].parallel.backend_name == "threading"
    assert plan.passes[0].parallel.n_workers == 2
    assert_bitwise(result.output, np.abs(x))
    # Outside the context: chunkline's default, loky.
    assert pipe.plan().passes[0].parallel.backend_name == "loky"


def test_pipeline_settings_win_over_the_caller_config(rng, tmp_path):
    pipe = Pipeline(make_x(rng), [Map("abs")], backend="sequential", workspace=tmp_path / "ws")
    with joblib.parallel_config(backend="threading", n_jobs=2):
        first = pipe.plan().passes[0].parallel
    assert first.backend_name == "sequential"
    assert first.n_workers == 1


def test_run_settings_override_the_pipeline_but_not_the_stage(rng, tmp_path):
    pipe = Pipeline(
        make_x(rng),
        [Map("abs"), Map("sqrt", backend="sequential")],
        n_jobs=2,
        backend="loky",
        workspace=tmp_path / "ws",
    )
    plan = pipe.plan(backend="threading")
    assert [p.parallel.backend_name for p in plan.passes] == ["threading", "sequential"]


# --- sinks, workspace, spec round trip --------------------------------------------------


def test_no_sink_returns_an_in_memory_array(rng, tmp_path):
    x = make_x(rng)
    result = run(x, [Map("nan_to_num")], tmp_path, chunks=7, **LOKY)
    assert type(result.output) is np.ndarray  # not a memmap of a deleted workspace file
    assert result.output.flags.writeable
    assert_bitwise(result.output, np.nan_to_num(x))


def fails_on_its_second_chunk(x: np.ndarray) -> np.ndarray:
    if x[0, 0] >= 2:
        raise ValueError("boom")
    return -x


def test_outputs_are_written_through_symbolic_links(tmp_path):
    # Jobs often write through a link ("today -> 2026-12-02"): the file it
    # points to is replaced, and the link stays a link.
    real = tmp_path / "real"
    real.mkdir()
    for name in ("x.npy", "stats.json"):
        (real / name).write_bytes(b"old")
        (tmp_path / name).symlink_to(real / name)
    x = np.arange(8.0).reshape(4, 2)
    sink = {"npy": str(tmp_path / "x.npy"), "reductions": str(tmp_path / "stats.json")}
    run(x, [Map(np.negative), Reduce("max", name="m")], tmp_path, chunks=2, sink=sink)
    assert (tmp_path / "x.npy").is_symlink() and (tmp_path / "stats.json").is_symlink()
    assert_bitwise(np.load(real / "x.npy"), -x)
    assert json.loads((real / "stats.json").read_text())["m"] == [-0.0, -1.0]
    assert sorted(os.listdir(real)) == ["stats.json", "x.npy"]


def test_two_outputs_that_lead_to_one_file_are_refused(tmp_path):
    (tmp_path / "real.npy").write_bytes(b"old")
    for name in ("a.npy", "b.npy"):
        (tmp_path / name).symlink_to(tmp_path / "real.npy")
    x, y = np.zeros((4, 2)), np.arange(4.0)
    sink = {"npy": str(tmp_path / "a.npy"), "y": str(tmp_path / "b.npy")}
    with pytest.raises(SinkError, match=r"lead to the same file or folder through symbolic"):
        run(ArraySource(x, y), [Map(np.negative)], tmp_path, sink=sink)
    assert (tmp_path / "real.npy").read_bytes() == b"old"


def test_a_dangling_link_is_written_through(tmp_path):
    # The folder the link leads to is made, as for any new output.
    (tmp_path / "stats.json").symlink_to(tmp_path / "missing" / "stats.json")
    sink = {"reductions": str(tmp_path / "stats.json")}
    run(np.ones((4, 2)), [Reduce("max", name="m")], tmp_path, sink=sink)
    assert json.loads((tmp_path / "missing" / "stats.json").read_text())["m"] == [1.0, 1.0]


def test_an_npy_sink_may_rewrite_its_own_source(tmp_path):
    path = tmp_path / "x.npy"
    x = np.arange(8.0).reshape(4, 2)
    np.save(path, x)
    with pytest.raises(StageError, match="boom"):
        run(str(path), [Map(fails_on_its_second_chunk)], tmp_path, chunks=1, sink=str(path))
    assert_bitwise(np.load(path), x)  # a failed run leaves the source as it was
    run(str(path), [Map(np.negative)], tmp_path, chunks=1, sink=str(path), **LOKY)
    assert_bitwise(np.load(path), -x)


@pytest.mark.parametrize("kind", ["maps", "filters"])
def test_npy_sink_returns_a_memmap_of_the_final_file(kind, rng, tmp_path):
    stages, oracle = STAGE_SETS[kind]
    x, y = make_x(rng), np.arange(N)
    out, y_out, _ = oracle(x, y)
    out_dir = tmp_path / "out" / "nested"  # created by the run
    sink = {"npy": out_dir / "x.npy", "y": out_dir / "y.npy"}

    result = run(ArraySource(x, y), stages, tmp_path, chunks=7, sink=sink, **LOKY)

    assert isinstance(result.output, np.memmap)
    assert os.path.samefile(result.output.filename, out_dir / "x.npy")
    assert isinstance(result.y, np.memmap)
    assert os.path.samefile(result.y.filename, out_dir / "y.npy")
    assert_bitwise(np.asarray(result.output), out)
    assert_bitwise(np.load(out_dir / "x.npy"), out)
    assert_bitwise(np.load(out_dir / "y.npy"), y_out)
    assert sorted(os.listdir(out_dir)) == ["x.npy", "y.npy"]  # no temporary files left


@pytest.mark.parametrize("how", ["mapping", "sparse", "other-hosts"])
def test_rows_written_in_any_order_land_in_place(how, rng, tmp_path, monkeypatch):
    # Rows of a file whose space allocate_npy reserved go through a mapping;
    # into a sparse file (a filesystem that cannot reserve), or from workers
    # that may not share this machine's page cache (dask), by pwrite. Both
    # cast to the file's dtype as NumPy assignment does.
    x = rng.normal(size=(2000, 3, 2)).astype(np.float32)
    path = str(tmp_path / "rows.npy")
    target = allocate_npy(path, np.dtype(np.float64), x.shape)
    assert target.reserved == hasattr(os, "posix_fallocate")
    if how == "sparse":
        os.truncate(path, target.offset)  # drop the reserved blocks, then grow sparse
        os.truncate(path, target.offset + x.nbytes * 2)
        target = dataclasses.replace(target, reserved=False)
    pwrites: list[int] = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda *a: pwrites.append(1) or real_pwrite(*a))
    for start, stop in [(1200, 2000), (0, 7), (7, 1200), (12, 12)]:
        write_rows(target, start, x[start:stop], shared_page_cache=how != "other-hosts")
    assert_bitwise(np.load(path), x.astype(np.float64))
    assert bool(pwrites) == (how != "mapping" or not target.reserved)


def test_reads_share_one_mapping_per_file_while_a_run_lasts(rng, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, make_x(rng))
    ref = read_npy_ref(path)
    assert ref.read(0, 5).base is not ref.read(5, 10).base  # a mapping per read
    with shared_mappings():
        first = ref.read(0, 5)
        with shared_mappings():  # a second run in the same process
            assert ref.read(5, 10).base is first.base
        assert ref.read(10, 15).base is first.base  # until the last run leaves
    assert ref.read(0, 5).base is not first.base
    assert_bitwise(np.asarray(first), np.load(path)[:5])


def test_reductions_sink_writes_the_results_as_json(rng, tmp_path):
    x, y = make_x(rng), np.arange(N)
    path = tmp_path / "stats.json"
    stages = [*MIXED_STAGES, Reduce("min", name="final_min")]

    result = run(ArraySource(x, y), stages, tmp_path, chunks=7, sink={"reductions": path}, **LOKY)

    written = json.loads(path.read_text())
    assert written == to_jsonable(result.reductions)
    assert list(written) == ["moments", "sum", "count", "histogram", "final_min"]
    _, _, expected = mixed_numpy(x, y)
    assert written["count"] == expected["count"]
    np.testing.assert_allclose(written["moments"]["mean"], expected["moments"]["mean"])
    assert written["histogram"]["counts"] == expected["histogram"]["counts"].tolist()
    assert sorted(os.listdir(tmp_path)) == ["stats.json", "ws"]


def test_reductions_json_of_an_empty_source_uses_null_for_nan(tmp_path):
    path = tmp_path / "stats.json"
    run(np.empty((0, 2)), [Reduce("moments")], tmp_path, sink={"reductions": path}, **SEQUENTIAL)
    written = json.loads(path.read_text())
    assert written == {
        "moments": {"count": 0, "mean": [None, None], "std": [None, None],
                    "min": [None, None], "max": [None, None]}
    }  # fmt: skip


def test_workspace_is_empty_after_runs_that_use_it(rng, tmp_path):
    workspace = tmp_path / "ws"
    x, y = make_x(rng), np.arange(N)
    pipe = Pipeline(
        {"npy": x, "y": y},  # spilled into the workspace
        [Filter("finite_rows"), Map("abs", n_jobs=1), Reduce("sum")],  # parts, 2 passes
        chunks=7,
        n_jobs=2,
        workspace=workspace,
    )
    pipe.plan()
    assert os.listdir(workspace) == []
    pipe.run(progress=False)
    assert os.listdir(workspace) == []


def test_to_dict_from_dict_round_trip(tmp_path, save_npy, rng):
    x = make_x(rng)
    pipe = Pipeline(
        source={"npy": save_npy("x", x), "y": save_npy("y", np.arange(N))},
        stages=[
            {"filter": "finite_rows"},
            {"map": "clip", "params": {"min": -1, "max": 1}, "n_jobs": 1},
            {"map": "numpy.square", "name": "sq"},
            {"map": "numpy:log1p", "backend": "threading"},
            {"reduce": "histogram", "params": {"bins": 4, "range": [0, 1]}},
            {"reduce": "std", "params": {"ddof": 1}, "name": "spread"},
        ],
        sink={
            "npy": str(tmp_path / "out.npy"),
            "y": str(tmp_path / "y.npy"),
            "reductions": str(tmp_path / "r.json"),
        },
        chunks={"bytes": "1KiB", "overlap": 1},
        n_jobs=2,
        backend="loky",
        name="round-trip",
        workspace=tmp_path / "ws",
    )
    spec = pipe.to_dict()
    again = Pipeline.from_dict(spec)
    assert again == pipe
    assert again.to_dict() == spec
    assert again.stages == pipe.stages
    assert again.chunks == pipe.chunks
    # The spec survives being written as YAML and read back.
    assert Pipeline.from_dict(yaml.safe_load(yaml.safe_dump(spec))) == pipe
    assert pipe != Pipeline.from_dict({**spec, "chunks": {"rows": 5}})


def test_to_dict_refuses_stages_built_from_python_objects(tmp_path, save_npy):
    pipe = Pipeline(save_npy("x", np.ones((3, 2))), [Map(np.sqrt)])
    with pytest.raises(TypeError, match="stage 'sqrt' was built from a Python object"):
        pipe.to_dict()


def test_ctrl_c_while_outputs_move_into_place_waits_until_all_have(tmp_path, monkeypatch):
    # A real SIGINT, sent as the first output is renamed into place: it is
    # held back until every output has moved, then raised, saying so.
    X = np.arange(60.0).reshape(30, 2)
    y = np.arange(30)
    finals = [tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "stats.json"]
    for path in finals:
        path.write_text("old")
    replace = os.replace

    def interrupted(src: Any, dst: Any) -> None:
        if str(dst) in map(str, finals):
            os.kill(os.getpid(), signal.SIGINT)
        replace(src, dst)

    monkeypatch.setattr("pipeline.execute.os.replace", interrupted)
    pipe = Pipeline(
        ArraySource(X, y),
        [Reduce("sum")],
        sink={"npy": str(finals[0]), "y": str(finals[1]), "reductions": str(finals[2])},
        chunks=10,
        n_jobs=1,
    )
    with pytest.raises(KeyboardInterrupt) as info:
        pipe.run(progress=False)
    assert info.value.committed is True
    np.testing.assert_array_equal(np.load(finals[0]), X)
    np.testing.assert_array_equal(np.load(finals[1]), y)
    assert json.loads(finals[2].read_text())["sum"] == X.sum(axis=0).tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json", "x.npy", "y.npy"]


def test_ctrl_c_while_the_workspace_is_removed_finishes_the_removal(tmp_path, monkeypatch):
    # The outputs are in place by then: the stop is raised once the workspace
    # is gone, and says the outputs were written.
    rmtree = shutil.rmtree

    def interrupted(path: Any, ignore_errors: bool = False) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr("pipeline.workspace.shutil.rmtree", interrupted)
    X = np.arange(20.0).reshape(10, 2)
    out = tmp_path / "out.npy"
    pipe = Pipeline(ArraySource(X), [Map(np.square)], sink=str(out), workspace=tmp_path / "ws")
    with pytest.raises(KeyboardInterrupt) as info:
        pipe.run(progress=False, n_jobs=1)
    assert info.value.committed is True
    np.testing.assert_array_equal(np.load(out), X**2)
    assert list((tmp_path / "ws").iterdir()) == []
