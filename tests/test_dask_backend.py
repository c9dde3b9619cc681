"""The same pipeline on a real ``dask.distributed`` cluster gives the n_jobs=1 result.

The cluster runs two worker processes on loopback; they read the source and
write the output files themselves, like loky workers (same machine, same files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import yaml

from pipeline import Filter, Map, Pipeline, Reduce, RunResult

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

STAGES = [
    Filter("finite_rows"),
    Map("clip", params={"min": -1.5, "max": 1.5}),
    Map(np.square),
    Reduce("moments"),
    Reduce("histogram", params={"bins": 5, "range": [0.0, 2.25]}),
    Map("rolling_mean", params={"window": 3}),
    Reduce("sum"),
]


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
        # Its workers may be on other hosts: rows are written by pwrite, not mappings.
        assert not plan.passes[0].parallel.on_this_machine
        result = run(source, tmp_path, "dask", backend="dask")

    assert np.array_equal(result.output, expected.output, equal_nan=True)
    assert np.array_equal(result.y, expected.y)
    assert_identical(result.reductions, expected.reductions)


def test_dask_applies_a_fitted_model_as_its_saved_file_gives_it(cluster, tmp_path):
    # As on the other backends (tests/test_estimators.py): a fitted
    # IncrementalPCA's strided components_ come back contiguous from its file,
    # and dask's workers, like the parent, apply the file's model.
    from sklearn.decomposition import IncrementalPCA

    from stages import Estimator

    rng = np.random.default_rng(1)
    X = rng.standard_normal((240, 5)) * np.arange(1, 6) + np.arange(5)
    stage = Estimator(IncrementalPCA(2), name="pca")
    sink = {"npy": str(tmp_path / "out.npy"), "models": str(tmp_path / "models")}
    with distributed.Client(cluster):
        Pipeline(X, [stage], sink=sink, chunks=40, backend="dask").run(progress=False)
    saved = joblib.load(tmp_path / "models" / "pca.joblib")
    sequential = Pipeline(X, [stage], chunks=40, backend="sequential").run(progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), saved.transform(X))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), sequential.output)


def test_dask_backend_from_the_callers_parallel_config(cluster, source, tmp_path):
    expected = run(source, tmp_path, "local", n_jobs=1)
    with distributed.Client(cluster), joblib.parallel_config(backend="dask"):
        result = run(source, tmp_path, "dask")

    assert np.array_equal(result.output, expected.output, equal_nan=True)
    assert np.array_equal(result.y, expected.y)
    assert_identical(result.reductions, expected.reductions)


def test_estimator_stages_on_the_dask_backend_fit_and_apply_as_with_one_job(
    cluster, source, tmp_path
):
    # Every fit strategy's worker side runs on the cluster: merge statistics,
    # rows written for partial_fit, and models applied from the workspace file.
    stages = [
        Filter("finite_rows"),
        {"sklearn": "sklearn.preprocessing.StandardScaler", "name": "scale"},
        {
            "sklearn": "sklearn.decomposition.IncrementalPCA",
            "params": {"n_components": 2},
            "name": "pca",
        },
        {"sklearn": "sklearn.naive_bayes.GaussianNB", "apply": "predict_proba", "name": "nb"},
    ]

    def fit(**parallel: Any) -> RunResult:
        source_y = {**source, "y": source["y"]}
        y = np.load(source["y"]) % 3
        np.save(tmp_path / "labels.npy", y)
        source_y["y"] = str(tmp_path / "labels.npy")
        return Pipeline(source_y, stages, chunks=32, workspace=tmp_path / "ws").run(
            progress=False, **parallel
        )

    expected = fit(n_jobs=1)
    with distributed.Client(cluster):
        result = fit(backend="dask")
    assert result.report.passes[0].parallel.endswith("on daskdistributed, 1 BLAS thread each")
    np.testing.assert_array_equal(result.output, expected.output)
    np.testing.assert_array_equal(
        result.models["pca"].components_, expected.models["pca"].components_
    )
    np.testing.assert_array_equal(result.models["nb"].theta_, expected.models["nb"].theta_)


def test_a_saved_forest_applied_on_dask_gives_the_one_job_result_every_time(
    cluster, source, tmp_path
):
    # The forest's n_jobs is None: inside a dask task, joblib would run its trees
    # on the cluster again and sum their probabilities in a varying order.
    from sklearn.ensemble import RandomForestClassifier

    X = np.nan_to_num(np.load(source["npy"]))
    np.save(tmp_path / "x.npy", X)
    y = (X[:, 0] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(X, y)
    joblib.dump(forest, tmp_path / "forest.joblib")
    stage = {"model": str(tmp_path / "forest.joblib"), "apply": "predict_proba", "name": "rf"}

    def apply(**parallel: Any) -> np.ndarray:
        pipe = Pipeline(str(tmp_path / "x.npy"), [stage], chunks=32, workspace=tmp_path / "ws")
        return pipe.run(progress=False, **parallel).output

    expected = apply(n_jobs=1)
    np.testing.assert_array_equal(expected, forest.predict_proba(X))
    with distributed.Client(cluster):
        for _ in range(3):
            np.testing.assert_array_equal(apply(backend="dask"), expected)


def test_the_command_line_runs_on_the_scheduler_it_is_given(
    cluster, source, tmp_path, monkeypatch, capsys
):
    from pipeline.cli import main

    # No scheduler known to dask either (DASK_SCHEDULER_ADDRESS is read on import).
    monkeypatch.setitem(dask.config.config, "scheduler-address", None)
    spec = tmp_path / "spec.yaml"
    out = tmp_path / "out.npy"
    spec.write_text(
        f"source: {{npy: {source['npy']}}}\n"
        "stages: [{filter: finite_rows}, {map: clip, params: {min: -1, max: 1}}]\n"
        f"sink: {{npy: {out}}}\nchunks: {{rows: 16}}\n"
    )
    # No cluster named: a spec error before any work, saying how to name one.
    assert main(["run", "--backend", "dask", "-q", str(spec)]) == 2
    assert "--scheduler ADDRESS" in capsys.readouterr().err
    assert not out.exists()
    expected = Pipeline.from_dict(yaml.safe_load(spec.read_text())).run(progress=False, n_jobs=1)
    out.unlink()
    assert main(["run", "--scheduler", cluster.scheduler_address, str(spec)]) == 0
    assert "on daskdistributed" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out), expected.output)
    # dask's own setting (DASK_SCHEDULER_ADDRESS, read when dask is imported).
    with dask.config.set({"scheduler-address": cluster.scheduler_address}):
        assert main(["explain", "--backend", "dask", str(spec)]) == 0
    assert "on daskdistributed" in capsys.readouterr().out
