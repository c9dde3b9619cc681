"""The same pipeline on a real ``dask.distributed`` cluster gives the n_jobs=1 result.

The cluster runs two worker processes on loopback; they read the source and
write the output files themselves, like loky workers (same machine, same files).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from pipeline import Filter, Map, Pipeline, Reduce, RunResult

distributed = pytest.importorskip("distributed")

STAGES = [
    Filter("finite_rows"),
    Map("clip", params={"min": -1.5, "max": 1.5}),
    Map(np.square),
    Reduce("moments"),
    Reduce("histogram", params={"bins": 5, "range": [0.0, 2.25]}),
    Map("rolling_mean", params={"window": 3}),
    Reduce("sum"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=str(tmp_path_factory.mktemp("dask")),  # not /tmp/dask-scratch-space
    ) as cluster:
        yield cluster
    assert cluster.status.name == "closed"


@pytest.fixture
def source(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    x[rng.choice(200, size=15, replace=False), 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(200))
    return {"npy": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy")}


def run(source: dict[str, str], tmp_path: Path, name: str, **parallel: Any) -> RunResult:
    sink = {"npy": str(tmp_path / f"{name}.npy"), "y": str(tmp_path / f"{name}-y.npy")}
    pipe = Pipeline(
        source, STAGES, sink=sink, chunks={"rows": 16, "overlap": 1}, workspace=tmp_path / "ws"
    )
    result = pipe.run(progress=False, **parallel)
    assert os.listdir(tmp_path / "ws") == []
    return result


def assert_identical(actual: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_identical(actual[key], expected[key])
    else:
        np.testing.assert_array_equal(actual, expected)


def test_dask_backend_gives_the_n_jobs_1_result(cluster, source, tmp_path):
    expected = run(source, tmp_path, "local", n_jobs=1)
    with distributed.Client(cluster):
        plan = Pipeline(source, STAGES, backend="dask").plan()
        assert plan.passes[0].parallel.backend_name == "daskdistributed"
        result = run(source, tmp_path, "dask", backend="dask")

    assert np.array_equal(result.output, expected.output, equal_nan=True)
    assert np.array_equal(result.y, expected.y)
    assert_identical(result.reductions, expected.reductions)


def test_dask_backend_from_the_callers_parallel_config(cluster, source, tmp_path):
    expected = run(source, tmp_path, "local", n_jobs=1)
    with distributed.Client(cluster), joblib.parallel_config(backend="dask"):
        result = run(source, tmp_path, "dask")

    assert np.array_equal(result.output, expected.output, equal_nan=True)
    assert np.array_equal(result.y, expected.y)
    assert_identical(result.reductions, expected.reductions)
