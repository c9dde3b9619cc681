"""Oracle tests of scikit-learn stages: chunked fits and applies against plain scikit-learn.

Each fit strategy is compared with what a user would write by hand:
``merge`` with ``fit`` on all rows (to floating-point rounding, since the
statistics merge in another order), ``partial_fit`` with a loop over the same
chunks in the same order (bit for bit), ``full`` with ``fit`` on all rows (bit
for bit), ``sample`` with ``fit`` on the sampled rows. Applies are compared
with the fitted model's own method on all rows, bit for bit. Results must not
depend on ``n_jobs`` or the backend. Everything runs on real files, real
worker processes and real scikit-learn estimators.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import IncrementalPCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier, SGDRegressor
from sklearn.naive_bayes import GaussianNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

from pipeline import ArraySource, Filter, Map, Pipeline, Reduce, RunResult
from stages import Estimator, learning
from stages.estimators import _lowered

N, D = 240, 5
CHUNKS = [40, 70, N + 10]  # 40 divides N; 70 does not; N + 10 is one chunk
SEQUENTIAL = {"n_jobs": 1, "backend": "sequential"}
THREADS = {"n_jobs": 2, "backend": "threading"}
LOKY = {"n_jobs": 2, "backend": "loky"}
SETTINGS = [
    pytest.param(SEQUENTIAL, id="sequential"),
    pytest.param(THREADS, id="threads"),
    pytest.param(LOKY, id="loky"),
]


def make_xy(
    rng: np.random.Generator, n: int = N, classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((n, D)) * np.arange(1, D + 1) + np.arange(D)
    y = (X[:, 0] + X[:, 1] > 1).astype(np.int64) + (X[:, 2] > 2) * (classes > 2)
    return X, y


def run(source: Any, stages: list[Any], tmp_path: Path, **kwargs: Any) -> RunResult:
    """Run with the workspace under tmp_path, and check it is left empty."""
    workspace = tmp_path / "ws"
    result = Pipeline(source, stages, workspace=workspace, **kwargs).run(progress=False)
    assert os.listdir(workspace) == []
    return result


def assert_same_params(actual: Any, expected: Any, names: list[str]) -> None:
    for name in names:
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=name)


# ---------------------------------------------------------------- merge


MERGED = [
    (StandardScaler(), ["mean_", "var_", "scale_"]),
    (MinMaxScaler(feature_range=(-1, 2)), ["data_min_", "data_max_", "scale_", "min_"]),
    (MaxAbsScaler(), ["max_abs_", "scale_"]),
    (GaussianNB(), ["theta_", "var_", "class_prior_"]),
]


@pytest.mark.parametrize(("estimator", "learned"), MERGED, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("chunk_rows", CHUNKS)
@pytest.mark.parametrize("parallel", SETTINGS)
def test_merge_equals_fit_on_all_rows(rng, tmp_path, estimator, learned, chunk_rows, parallel):
    X, y = make_xy(rng)
    result = run(
        ArraySource(X, y),
        [Estimator(estimator, fit="merge", name="m")],
        tmp_path,
        chunks=chunk_rows,
        **parallel,
    )
    model = result.models["m"]
    expected = estimator.fit(X, y)
    for name in learned:
        np.testing.assert_allclose(getattr(model, name), getattr(expected, name), rtol=1e-12)
    # The output is the merged model applied to every row, bit for bit.
    method = "predict" if isinstance(estimator, GaussianNB) else "transform"
    np.testing.assert_array_equal(result.output, getattr(model, method)(X))


@pytest.mark.parametrize("chunk_rows", CHUNKS)
def test_merge_result_is_the_same_for_every_n_jobs_and_backend(rng, tmp_path, chunk_rows):
    X, y = make_xy(rng)
    models = [
        run(
            ArraySource(X, y),
            [Estimator(GaussianNB(), name="nb")],
            tmp_path,
            chunks=chunk_rows,
            **parallel,
        ).models["nb"]
        for parallel in (SEQUENTIAL, THREADS, LOKY)
    ]
    for model in models[1:]:
        assert_same_params(model, models[0], ["theta_", "var_", "class_count_"])


def test_merge_of_counts_multinomial_nb(rng, tmp_path):
    X = rng.poisson(3.0, (N, D)).astype(np.float64)
    y = rng.integers(0, 4, N)
    result = run(ArraySource(X, y), [Estimator(MultinomialNB(), name="nb")], tmp_path, chunks=70)
    expected = MultinomialNB().fit(X, y)
    np.testing.assert_allclose(result.models["nb"].feature_log_prob_, expected.feature_log_prob_)
    np.testing.assert_array_equal(result.output, expected.predict(X))


# ---------------------------------------------------------------- the scalers' NumPy kernels


@pytest.mark.parametrize(
    "scaler",
    [
        StandardScaler(),
        StandardScaler(with_mean=False),
        StandardScaler(with_std=False),
        MinMaxScaler(),
        MinMaxScaler(feature_range=(-3, 1), clip=True),
        MaxAbsScaler(),
        MaxAbsScaler(clip=True),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_numpy_kernel_is_bitwise_scikit_learns_transform(rng, scaler, dtype):
    X = (rng.standard_normal((50, D)) * 100).astype(dtype)
    model = scaler.fit(X[:30])
    kernel = _lowered(model, "transform")
    assert kernel is not None
    got, expected = kernel(X), model.transform(X)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_numpy_kernel_rejects_what_the_scaler_rejects(rng):
    model = StandardScaler().fit(rng.standard_normal((10, 3)))
    kernel = _lowered(model, "transform")
    assert kernel is not None
    with pytest.raises(ValueError, match="X has 2 features, but StandardScaler is expecting 3"):
        kernel(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="Input X contains infinity in column 1"):
        kernel(np.array([[0.0, np.inf, 0.0]]))
    assert np.isnan(kernel(np.array([[np.nan, 0.0, 0.0]]))[0, 0])  # NaN passes, as in sklearn


def test_models_without_a_kernel_are_called_as_they_are():
    assert _lowered(StandardScaler().fit(np.ones((3, 2))), "inverse_transform") is None
    assert _lowered(GaussianNB().fit(np.ones((2, 2)), [0, 1]), "predict") is None


# ---------------------------------------------------------------- partial_fit


def partial_fit_loop(estimator: Any, X: np.ndarray, y: Any, chunk_rows: int, **first: Any) -> Any:
    for start in range(0, len(X), chunk_rows):
        part = slice(start, start + chunk_rows)
        estimator.partial_fit(X[part], None if y is None else y[part], **first)
        first = {}
    return estimator


@pytest.mark.parametrize("chunk_rows", CHUNKS)
@pytest.mark.parametrize("parallel", SETTINGS)
def test_partial_fit_equals_a_loop_over_the_same_chunks(rng, tmp_path, chunk_rows, parallel):
    X, y = make_xy(rng)
    stage = Estimator(SGDClassifier(random_state=0), classes=[0, 1, 2], name="sgd")
    result = run(ArraySource(X, y), [stage], tmp_path, chunks=chunk_rows, **parallel)
    expected = partial_fit_loop(SGDClassifier(random_state=0), X, y, chunk_rows, classes=[0, 1, 2])
    assert_same_params(result.models["sgd"], expected, ["coef_", "intercept_"])
    np.testing.assert_array_equal(result.output, expected.predict(X))


def test_partial_fit_discovers_the_classes_in_a_first_pass(rng, tmp_path):
    X, y = make_xy(rng)
    result = run(
        ArraySource(X, y),
        [Estimator(SGDClassifier(random_state=0), name="sgd")],
        tmp_path,
        chunks=70,
        **LOKY,
    )
    expected = partial_fit_loop(SGDClassifier(random_state=0), X, y, 70, classes=np.unique(y))
    assert result.models["sgd"].classes_.tolist() == [0, 1, 2]
    assert_same_params(result.models["sgd"], expected, ["coef_", "intercept_"])


@pytest.mark.parametrize("shuffle", [False, True])
def test_partial_fit_epochs_and_shuffled_chunks(rng, tmp_path, shuffle):
    X, y = make_xy(rng)
    stage = Estimator(
        SGDRegressor(random_state=0),
        epochs=3,
        shuffle_chunks=shuffle,
        seed=7 if shuffle else 0,
        name="sgd",
    )
    result = run(ArraySource(X, y.astype(float)), [stage], tmp_path, chunks=70, **THREADS)
    expected = SGDRegressor(random_state=0)
    starts = np.arange(0, N, 70)
    orders = np.random.default_rng(7)
    for _ in range(3):
        order = orders.permutation(len(starts)) if shuffle else range(len(starts))
        for k in order:
            expected.partial_fit(X[starts[k] : starts[k] + 70], y[starts[k] : starts[k] + 70])
    assert_same_params(result.models["sgd"], expected, ["coef_", "intercept_"])
    assert result.report.fits[0].epochs == 3
    explained = Pipeline(ArraySource(X, y.astype(float)), [stage], chunks=70).explain()
    how = (
        "chunk by chunk, 3 epochs, each in an order shuffled from seed 7"
        if shuffle
        else "chunk by chunk in chunk order, 3 epochs"
    )
    assert "SGDRegressor by partial_fit (" in explained and how in explained, explained


def pca_over_kept_rows(X: np.ndarray, keep: np.ndarray, chunk: int) -> IncrementalPCA:
    """The reference: IncrementalPCA(2).partial_fit on each chunk's kept rows, in order."""
    expected = IncrementalPCA(2)
    for start in range(0, len(X), chunk):
        part = X[start : start + chunk][keep[start : start + chunk]]
        if len(part):  # a chunk the filter emptied is skipped
            expected.partial_fit(part)
    return expected


def test_partial_fit_after_a_filter_sees_the_kept_rows_in_order(rng, tmp_path):
    X, y = make_xy(rng)
    X[::7, 1] = np.nan
    keep = np.isfinite(X).all(axis=1)
    stages = [Filter("finite_rows", name="finite"), Estimator(IncrementalPCA(2), name="pca")]
    result = run(ArraySource(X, y), stages, tmp_path, chunks=40, **LOKY)
    # A chunk's kept rows go to partial_fit as one batch, in chunk order.
    expected = pca_over_kept_rows(X, keep, 40)
    assert_same_params(result.models["pca"], expected, ["components_", "mean_"])
    np.testing.assert_array_equal(result.output, result.models["pca"].transform(X[keep]))
    np.testing.assert_array_equal(result.y, y[keep])


def _refuse_to_reopen() -> None:
    raise RuntimeError("this handle cannot be reopened")


class _Handle:
    """Like a native resource: pickled, it cannot be made again."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _refuse_to_reopen, ()


class WithHandle(TransformerMixin, BaseEstimator):
    def fit(self, X: Any, y: Any = None) -> WithHandle:
        self.handle_ = _Handle()
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(X) * 2.0


@pytest.mark.parametrize("parallel", [SEQUENTIAL, THREADS], ids=["sequential", "threads"])
def test_a_model_that_cannot_be_loaded_back_is_applied_in_memory(rng, tmp_path, parallel):
    X, _ = make_xy(rng)
    result = run(X, [Estimator(WithHandle(), fit="full", name="h")], tmp_path, **parallel)
    np.testing.assert_array_equal(result.output, X * 2.0)


def test_every_backend_applies_the_model_the_saved_file_holds(tmp_path):
    # A fitted IncrementalPCA's components_ is a strided view; pickled, it comes
    # back contiguous, and its matrix products differ in the last bits (on these
    # rows: the seed is chosen so that they do). Worker processes load the model
    # from a file, so every backend applies the file's model, and a later run
    # applying the saved model gives the same output.
    X, _ = make_xy(np.random.default_rng(1))
    stage = Estimator(IncrementalPCA(2), name="pca")
    outputs = []
    for i, parallel in enumerate([SEQUENTIAL, THREADS, LOKY]):
        models = tmp_path / f"models-{i}"
        sink = {"npy": str(tmp_path / f"out-{i}.npy"), "models": str(models)}
        result = run(X, [stage], tmp_path, sink=sink, chunks=40, **parallel)
        saved = joblib.load(models / "pca.joblib")
        np.testing.assert_array_equal(result.models["pca"].components_, saved.components_)
        outputs.append(np.load(tmp_path / f"out-{i}.npy"))
        np.testing.assert_array_equal(outputs[-1], saved.transform(X))
    again = run(X, [Estimator(model=str(models / "pca.joblib"), name="pca")], tmp_path)
    for output in (*outputs[1:], again.output):
        np.testing.assert_array_equal(output, outputs[0])


def test_partial_fit_of_an_unsupervised_estimator(rng, tmp_path):
    X, _ = make_xy(rng)
    model = MiniBatchKMeans(n_clusters=3, random_state=0, n_init=1)
    result = run(X, [Estimator(model, name="km")], tmp_path, chunks=70, **SEQUENTIAL)
    expected = partial_fit_loop(
        MiniBatchKMeans(n_clusters=3, random_state=0, n_init=1), X, None, 70
    )
    assert_same_params(result.models["km"], expected, ["cluster_centers_"])
    np.testing.assert_array_equal(result.output, expected.predict(X))  # a clusterer predicts


# ---------------------------------------------------------------- full and sample


@pytest.mark.parametrize("parallel", SETTINGS)
def test_full_fit_equals_fit_on_all_rows(rng, tmp_path, parallel):
    X, y = make_xy(rng)
    stage = Estimator(LogisticRegression(max_iter=500), apply="predict_proba", name="lr")
    result = run(ArraySource(X, y), [stage], tmp_path, chunks=70, **parallel)
    expected = LogisticRegression(max_iter=500).fit(X, y)
    assert_same_params(result.models["lr"], expected, ["coef_", "intercept_"])
    np.testing.assert_array_equal(result.output, expected.predict_proba(X))


def test_full_fit_of_rows_changed_upstream_reads_them_back_from_the_workspace(rng, tmp_path):
    X, y = make_xy(rng)
    stages = [Map(np.tanh, name="tanh"), Estimator(KNeighborsClassifier(3), fit="full", name="knn")]
    pipe = Pipeline(ArraySource(X, y), stages, chunks=70, n_jobs=2)
    assert "the rows pass 1 wrote for 'knn' (not recomputed)" in pipe.explain()
    result = run(ArraySource(X, y), stages, tmp_path, chunks=70, **LOKY)
    expected = KNeighborsClassifier(3).fit(np.tanh(X), y)
    np.testing.assert_array_equal(result.output, expected.predict(np.tanh(X)))
    assert [p.stages for p in result.report.passes][1][0].name == "knn"  # tanh not re-run


def test_full_fit_runs_the_estimators_own_parallelism_on_the_pipeline_backend(rng, tmp_path):
    X, y = make_xy(rng)
    stage = Estimator(RandomForestClassifier(n_estimators=8, random_state=0), fit="full", name="rf")
    result = run(ArraySource(X, y), [stage], tmp_path, chunks=70, **THREADS)
    expected = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y)
    np.testing.assert_array_equal(result.output, expected.predict(X))
    explained = Pipeline(ArraySource(X, y), [stage], chunks=70, n_jobs=2).explain()
    assert "pass 2 of 2: 2 workers on threading" in explained  # the apply's default
    assert "(one job inside each chunk's task: the chunks run in parallel)" in explained


@pytest.mark.parametrize("parallel", [SEQUENTIAL, LOKY], ids=["sequential", "loky"])
def test_sample_fit_uses_a_reproducible_uniform_sample(rng, tmp_path, parallel):
    X, y = make_xy(rng, n=2000)
    stage = Estimator(LogisticRegression(), fit="sample", sample_rows=150, seed=3, name="lr")
    first = run(ArraySource(X, y), [stage], tmp_path, chunks=300, **parallel)
    again = run(ArraySource(X, y), [stage], tmp_path, chunks=300, **SEQUENTIAL)
    assert_same_params(first.models["lr"], again.models["lr"], ["coef_", "intercept_"])
    # Refit on the rows the sample must have drawn: distinct, in row order.
    keys = np.concatenate(
        [np.random.default_rng([3, k, 0]).random(min(300, 2000 - 300 * k)) for k in range(7)]
    )
    drawn = np.sort(np.argsort(keys)[:150])
    expected = LogisticRegression().fit(X[drawn], y[drawn])
    assert_same_params(first.models["lr"], expected, ["coef_", "intercept_"])


def test_sample_of_more_rows_than_there_are_fits_them_all(rng, tmp_path):
    X, y = make_xy(rng)
    stage = Estimator(LogisticRegression(), fit="sample", sample_rows=10**6, name="lr")
    result = run(ArraySource(X, y), [stage], tmp_path, chunks=70, **THREADS)
    assert_same_params(result.models["lr"], LogisticRegression().fit(X, y), ["coef_"])


# ---------------------------------------------------------------- chains and plans


def test_a_chain_of_fits_applies_each_model_to_the_next_ones_input(rng, tmp_path):
    X, y = make_xy(rng)
    stages = [
        Estimator("sklearn.preprocessing.StandardScaler", name="scale"),
        Estimator("sklearn.decomposition.IncrementalPCA", params={"n_components": 3}, name="pca"),
        Reduce("moments", name="stats"),
        Estimator(
            "sklearn.linear_model.SGDClassifier",
            params={"loss": "log_loss", "random_state": 0},
            apply="predict_proba",
            name="clf",
        ),
    ]
    result = run(ArraySource(X, y), stages, tmp_path, chunks=70, **LOKY)
    scale, pca, clf = (result.models[k] for k in ("scale", "pca", "clf"))
    # The same models applied in memory give the same output, bit for bit.
    scaled = scale.transform(X)
    np.testing.assert_array_equal(result.output, clf.predict_proba(pca.transform(scaled)))
    # Each fit saw the previous model's output, chunk by chunk in order.
    expected_pca = partial_fit_loop(IncrementalPCA(3), scaled, None, 70)
    assert_same_params(pca, expected_pca, ["components_"])
    expected_clf = partial_fit_loop(
        SGDClassifier(loss="log_loss", random_state=0),
        pca.transform(scaled),
        y,
        70,
        classes=[0, 1, 2],
    )
    assert_same_params(clf, expected_clf, ["coef_"])
    # The tap saw every row once: the PCA's output.
    np.testing.assert_allclose(
        result.reductions["stats"]["mean"], pca.transform(scaled).mean(0), atol=1e-12
    )


def test_a_chain_fits_the_same_models_whether_or_not_its_output_is_kept(rng, tmp_path):
    # Without a data output the last apply pass is left out; the last fit pass
    # must still hand its own training rows (the PCA's output) to the classifier.
    X, y = make_xy(rng)
    stages = [
        Estimator(StandardScaler(), name="scale"),
        Estimator(IncrementalPCA(2), name="pca"),
        Estimator(SGDClassifier(random_state=0), name="clf"),
    ]
    kept = run(ArraySource(X, y), stages, tmp_path, chunks=70, **LOKY)
    models = tmp_path / "models"
    dropped = run(
        ArraySource(X, y), stages, tmp_path, chunks=70, sink={"models": str(models)}, **LOKY
    )
    assert len(dropped.report.passes) == len(kept.report.passes) - 1
    assert dropped.models["clf"].n_features_in_ == 2
    assert_same_params(dropped.models["clf"], kept.models["clf"], ["coef_", "intercept_"])
    plan = Pipeline(ArraySource(X, y), stages, sink={"models": str(models)}).plan()
    assert [p.reads_output for p in plan.passes] == [False, False, True]


def test_explain_says_which_stages_fit_and_which_apply(rng, tmp_path, save_npy):
    X, _ = make_xy(rng)
    stages = [
        Map(np.abs, name="abs"),
        Estimator("sklearn.preprocessing.StandardScaler", name="scale"),
        Estimator("sklearn.decomposition.IncrementalPCA", params={"n_components": 2}, name="pca"),
    ]
    text = Pipeline(save_npy("x", X), stages, sink=str(tmp_path / "o.npy"), n_jobs=2).explain()
    assert "pass 1 of 3" in text and "pass 3 of 3" in text
    assert "scale            fit" in text and "scale            apply" in text
    assert "then fit 'scale': StandardScaler by merge (auto: it has an exact merge)" in text
    assert "recomputes 'abs' (the rows the fit saw were not written)" in text
    assert "then fit 'pca': IncrementalPCA by partial_fit" in text
    assert "the rows pass 2 wrote for 'pca' (not recomputed)" in text
    assert "known once 'pca' is fitted" in text


def test_a_fit_whose_output_nobody_reads_is_not_applied(rng, tmp_path):
    X, y = make_xy(rng)
    models = tmp_path / "models"
    result = run(
        ArraySource(X, y),
        [Estimator(GaussianNB(), name="nb")],
        tmp_path,
        sink={"models": str(models)},
        chunks=70,
        **THREADS,
    )
    assert result.output is None and len(result.report.passes) == 1
    assert sorted(os.listdir(models)) == ["nb.joblib", "nb.json", "nb.skops"]


# A first IncrementalPCA batch of one row divides by zero rows minus one.
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 120),
    chunk_rows=st.integers(1, 130),
    n_jobs=st.sampled_from([1, 2]),
)
def test_property_merge_and_partial_fit_do_not_depend_on_n_jobs(
    tmp_path_factory, n, chunk_rows, n_jobs
):
    rng = np.random.default_rng(n * 1000 + chunk_rows)
    X = rng.standard_normal((n, 3)) * 5 + 2
    tmp = tmp_path_factory.mktemp("prop")
    stages = [Estimator(StandardScaler(), name="s"), Estimator(IncrementalPCA(1), name="p")]
    if n < 2:  # IncrementalPCA needs at least as many rows as components in its first batch
        stages = stages[:1]
    one = run(X, stages, tmp, chunks=chunk_rows, n_jobs=1, backend="sequential")
    other = run(X, stages, tmp, chunks=chunk_rows, n_jobs=n_jobs, backend="threading")
    np.testing.assert_array_equal(one.output, other.output)
    np.testing.assert_allclose(one.models["s"].mean_, X.mean(axis=0), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- tables


def write_table(path: Path, X: np.ndarray, y: np.ndarray) -> str:
    table = pa.table({f"x{j}": X[:, j] for j in range(D)} | {"label": y, "id": np.arange(len(y))})
    pq.write_table(table, path, row_group_size=60)
    return str(path)


def test_table_features_target_and_output_columns(rng, tmp_path):
    X, y = make_xy(rng)
    source = {"parquet": write_table(tmp_path / "t.parquet", X, y)}
    features = [f"x{j}" for j in range(D)]
    stages = [
        Estimator(StandardScaler(), features=features, output=features, name="scale"),
        Estimator(
            LogisticRegression(), features=features, target="label", apply="predict_proba", name="p"
        ),
    ]
    result = run(source, stages, tmp_path, sink=str(tmp_path / "out"), chunks=60, **THREADS)
    table = result.output.to_table()
    scale, model = result.models["scale"], result.models["p"]
    np.testing.assert_allclose(scale.mean_, X.mean(axis=0), rtol=1e-12)
    scaled = scale.transform(X)
    assert table.column_names == [*features, "label", "id", "p_0", "p_1", "p_2"]
    np.testing.assert_array_equal(np.column_stack([table[f].to_numpy() for f in features]), scaled)
    proba = np.column_stack([table[f"p_{k}"].to_numpy() for k in range(3)])
    np.testing.assert_array_equal(proba, model.predict_proba(scaled))
    np.testing.assert_array_equal(model.coef_, LogisticRegression().fit(scaled, y).coef_)


def test_a_replaced_column_keeps_its_nulls(tmp_path):
    # The scaler carries NaN for a missing value: written back as null, so that a
    # later fill_null or null count still sees it. An imputer's filled value stays.
    table = pa.table({"a": [1.0, None, 3.0, 5.0], "b": [2.0, 4.0, None, 8.0]})
    pq.write_table(table, tmp_path / "t.parquet")
    source = {"parquet": str(tmp_path / "t.parquet")}
    scaled = run(
        source, [Estimator(StandardScaler(), output=["a", "b"], name="s")], tmp_path
    ).output
    assert scaled["a"].null_count == scaled["b"].null_count == 1
    assert scaled["a"].is_null().to_pylist() == [False, True, False, False]
    np.testing.assert_allclose(
        scaled["a"].drop_null().to_numpy(), [-1.224744871391589, 0, 1.224744871391589]
    )
    imputer = Estimator("sklearn.impute.SimpleImputer", output=["a", "b"], name="i")
    filled = run(source, [imputer], tmp_path).output
    assert filled["a"].to_pylist() == [1.0, 3.0, 3.0, 5.0]
    assert filled["b"].null_count == 0


def test_table_default_features_are_every_column_but_the_target(rng, tmp_path):
    X, y = make_xy(rng)
    source = {
        "parquet": write_table(tmp_path / "t.parquet", X, y),
        "columns": ["x0", "x1", "label"],
    }
    stage = Estimator(GaussianNB(), target="label", name="nb")
    result = run(source, [stage], tmp_path, chunks=60, **SEQUENTIAL)
    expected = GaussianNB().fit(X[:, :2], y)
    np.testing.assert_allclose(result.models["nb"].theta_, expected.theta_)
    assert result.output["nb"].to_numpy().tolist() == expected.predict(X[:, :2]).tolist()


def test_a_partial_fit_batch_does_not_depend_on_the_stages_before_it(tmp_path):
    # The IncrementalPCA's apply asks for large chunks; the classifier fitted in
    # the same pass still gets the default batches, as the IncrementalPCA did.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200_000, 10))
    y = (X[:, 0] > 0).astype(int)
    stages = [
        Estimator(IncrementalPCA(3), name="pca"),
        Estimator(SGDClassifier(random_state=0), name="clf"),
    ]
    result = run(ArraySource(X, y), stages, tmp_path, **SEQUENTIAL)
    chunks = {fit.name: fit.chunks for fit in result.report.fits}
    assert chunks["clf"] == chunks["pca"] > 1


def test_partial_fit_gives_the_same_model_for_every_n_jobs(tmp_path):
    # Chunks large enough for OpenBLAS to thread IncrementalPCA's SVD: with a
    # BLAS thread count following n_jobs, the components differed by ~5e-15.
    X = np.random.default_rng(0).standard_normal((300_000, 10)) * np.arange(1, 11)
    stage = Estimator(IncrementalPCA(5), name="pca")
    one, two = (
        run(X, [stage], tmp_path, chunks=100_000, n_jobs=n_jobs, backend="threading")
        for n_jobs in (1, 2)
    )
    np.testing.assert_array_equal(one.models["pca"].components_, two.models["pca"].components_)
    np.testing.assert_array_equal(one.output, two.output)


@pytest.mark.parametrize("fit", ["partial_fit", "full"])
def test_a_text_target_column_trains_as_scikit_learn_does(rng, tmp_path, fit):
    # Sorted by label, chunks hold labels of different lengths ("no" only in
    # the first): the rows written for the fit must keep every label whole.
    X, y = make_xy(rng)
    order = np.argsort(y, kind="stable")
    X, labels = X[order], np.array(["no", "maybe", "definitely"])[y[order]]
    source = {"parquet": write_table(tmp_path / "t.parquet", X, labels)}
    features = [f"x{j}" for j in range(D)]
    stage = Estimator(
        SGDClassifier(random_state=0), fit=fit, features=features, target="label", name="clf"
    )
    result = run(source, [stage], tmp_path, chunks=60, **THREADS)
    expected = SGDClassifier(random_state=0)
    if fit == "full":
        expected.fit(X, labels)
    else:
        for start in range(0, len(X), 60):
            rows = slice(start, start + 60)
            expected.partial_fit(X[rows], labels[rows], classes=np.unique(labels))
    model = result.models["clf"]
    assert model.classes_.tolist() == ["definitely", "maybe", "no"]
    np.testing.assert_array_equal(model.coef_, expected.coef_)
    assert result.output["clf"].to_pylist() == expected.predict(X).tolist()


# ---------------------------------------------------------------- saved models


def test_models_are_saved_and_applied_later_without_refitting(rng, tmp_path):
    X, y = make_xy(rng)
    models = tmp_path / "models"
    stage = Estimator(
        SGDClassifier(loss="log_loss", random_state=0), apply="predict_proba", name="clf"
    )
    first = run(
        ArraySource(X, y),
        [stage],
        tmp_path,
        sink={"models": str(models), "npy": str(tmp_path / "p.npy")},
        chunks=70,
        **THREADS,
    )
    assert sorted(os.listdir(models)) == ["clf.joblib", "clf.json", "clf.skops"]
    card = (models / "clf.json").read_text()
    assert '"fit": "partial_fit"' in card and '"estimator": "sklearn.linear_model' in card
    for name in ("clf.joblib", "clf.skops"):
        saved = Estimator(model=str(models / name), apply="predict_proba", name="clf")
        again = run(X, [saved], tmp_path, chunks=70, **LOKY)
        np.testing.assert_array_equal(again.output, np.load(tmp_path / "p.npy"))
        assert again.report.fits == ()  # nothing fitted
    assert_same_params(learning.load_model(models / "clf.skops"), first.models["clf"], ["coef_"])
    assert isinstance(joblib.load(models / "clf.joblib"), SGDClassifier)


class Tripler(TransformerMixin, BaseEstimator):
    """A third-party transformer: a BaseEstimator that declares no parameter constraints."""

    def fit(self, X: Any, y: Any = None) -> Tripler:
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(X) * 3.0


def test_estimators_from_other_packages_work_without_scikit_learns_constraints(rng, tmp_path):
    X, _ = make_xy(rng)
    result = run(X, [Estimator(Tripler(), name="t")], tmp_path, chunks=70, **LOKY)
    np.testing.assert_array_equal(result.output, X * 3.0)
    assert_same_params(result.models["t"], Tripler().fit(X), ["n_features_in_"])


def double(X: np.ndarray) -> np.ndarray:
    return X * 2.0


def test_a_merge_fit_after_a_fit_that_wrote_its_rows_recomputes_nothing_twice(rng, tmp_path):
    # map -> partial_fit (writes the doubled rows) -> merge (writes nothing): the
    # pass after the merge reads the rows the first fit wrote, so it must not
    # double them (nor scale them) again.
    X, _ = make_xy(rng)
    stages = [
        Map(double, name="double"),
        Estimator(StandardScaler(), fit="partial_fit", name="s1"),
        Estimator(MinMaxScaler(), fit="merge", name="s2"),
    ]
    result = run(X, stages, tmp_path, chunks=70, **THREADS)
    s1, s2 = result.models["s1"], result.models["s2"]
    np.testing.assert_allclose(s1.mean_, (2 * X).mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(result.output, s2.transform(s1.transform(2 * X)))
    text = Pipeline(X, stages, chunks=70, **THREADS).explain()
    assert "recomputes 'double'" not in text


def test_partial_fit_after_a_filter_that_empties_a_chunk(rng, tmp_path):
    X, y = make_xy(rng)
    X[70:140, 2] = np.nan  # chunk 1 loses every row to the filter
    keep = np.isfinite(X).all(axis=1)
    stages = [Filter("finite_rows", name="finite"), Estimator(IncrementalPCA(2), name="pca")]
    result = run(ArraySource(X, y), stages, tmp_path, chunks=70, **THREADS)
    expected = pca_over_kept_rows(X, keep, 70)
    assert_same_params(result.models["pca"], expected, ["components_", "mean_"])
    np.testing.assert_array_equal(result.output, result.models["pca"].transform(X[keep]))


def test_decision_function_and_score_samples(rng, tmp_path):
    from sklearn.ensemble import IsolationForest

    X, y = make_xy(rng)
    svm = run(
        ArraySource(X, y),
        [Estimator(SGDClassifier(random_state=0), fit="full", apply="decision_function", name="m")],
        tmp_path,
        chunks=70,
        **THREADS,
    )
    np.testing.assert_array_equal(svm.output, svm.models["m"].decision_function(X))
    forest = IsolationForest(n_estimators=10, random_state=0)
    iso = run(
        X, [Estimator(forest, apply="score_samples", name="iso")], tmp_path, chunks=70, **LOKY
    )
    np.testing.assert_array_equal(iso.output, iso.models["iso"].score_samples(X))


def test_a_model_given_in_memory_reaches_worker_processes_as_a_file(rng, tmp_path):
    import pickle

    X, y = make_xy(rng)
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    stage = Estimator(model=forest, apply="predict_proba", name="rf")
    plan = Pipeline(X, [stage], chunks=40, **LOKY).plan()
    applier = plan.passes[0].stages[0].func
    assert applier.kernel.path is not None  # written to the workspace once
    assert len(pickle.dumps(applier)) < len(pickle.dumps(forest)) / 20  # not with each task
    result = run(X, [stage], tmp_path, chunks=40, **LOKY)
    np.testing.assert_array_equal(result.output, forest.predict_proba(X))


def test_loading_a_model_gives_a_fresh_object_every_time(rng, tmp_path):
    path = tmp_path / "m.joblib"
    joblib.dump(StandardScaler().fit(rng.standard_normal((5, 2))), path)
    assert learning.load_model(path) is not learning.load_model(path)


def test_workers_applying_the_scalers_import_no_scikit_learn(tmp_path, save_npy, rng):
    # In a fresh interpreter: the loky pool of this test session has run others.
    import subprocess
    import sys

    path = save_npy("x", rng.standard_normal((4000, 3)))
    script = f"""
import sys, joblib
from pipeline import Pipeline
from stages import Estimator
Pipeline({path!r}, [Estimator("sklearn.preprocessing.StandardScaler")], chunks=500,
         n_jobs=2, backend="loky").run(progress=False)
def loaded():
    import sys
    return "sklearn" in sys.modules
print(any(joblib.Parallel(n_jobs=2)(joblib.delayed(loaded)() for _ in range(8))))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


class DoubledScaler(StandardScaler):
    """A subclass whose fit is not StandardScaler's: its base's merge would be wrong."""

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> DoubledScaler:
        return super().fit(np.asarray(X) * 2.0, y)


def test_auto_does_not_merge_a_subclass_that_fits_otherwise():
    assert Estimator(DoubledScaler(), name="d").strategy == "partial_fit"
    assert Estimator(DoubledScaler(), fit="merge", name="d").strategy == "merge"  # if asked


def test_a_stage_backend_overrides_the_threads_default_of_its_passes(rng, tmp_path):
    X, y = make_xy(rng)
    stage = Estimator(GaussianNB(), backend="loky", n_jobs=2, name="nb")
    plan = Pipeline(ArraySource(X, y), [stage], chunks=70).plan()
    assert [p.parallel.backend_name for p in plan.passes] == ["loky", "loky"]
    default = Pipeline(
        ArraySource(X, y), [Estimator(GaussianNB(), name="nb")], chunks=70, n_jobs=2
    ).plan()
    assert [p.parallel.backend_name for p in default.passes] == ["threading", "threading"]
    result = run(ArraySource(X, y), [stage], tmp_path, chunks=70)
    np.testing.assert_array_equal(result.output, result.models["nb"].predict(X))


@pytest.mark.parametrize(
    ("stage", "memory"),
    [
        (
            Estimator("sklearn.preprocessing.StandardScaler"),
            "per-chunk statistics only (a few values per feature)",
        ),
        # 40 rows x 5 float64 = 1600 B per chunk.
        (
            Estimator("sklearn.linear_model.SGDRegressor"),
            "one chunk of rows at a time, about 1.6 KiB",
        ),
        (
            Estimator("sklearn.linear_model.Ridge", fit="sample", sample_rows=100),
            "the sample of 100 rows, about 3.9 KiB",  # 100 x 40 B
        ),
        (
            Estimator("sklearn.linear_model.Ridge", fit="full"),
            "every row (9.4 KiB), memory-mapped from the workspace: read, not copied, unless "
            "Ridge converts or copies its input",
        ),
    ],
)
def test_explain_says_what_a_fit_holds_in_the_parent(rng, stage, memory):
    X, y = make_xy(rng)
    explained = Pipeline(ArraySource(X, y.astype(float)), [stage], chunks=40).explain()
    assert f"  fit memory in the parent: {memory}\n" in explained + "\n", explained


def test_explain_says_what_a_later_fit_holds_before_its_rows_are_known(rng):
    # The classifier learns from rows the IncrementalPCA's pass wrote: their
    # size is known only when that pass has run.
    X, y = make_xy(rng)
    stages = [
        Estimator(StandardScaler(), name="scale"),
        Estimator(IncrementalPCA(2), name="pca"),
        Estimator(SGDClassifier(), name="clf"),
    ]
    explained = Pipeline(ArraySource(X, y), stages, chunks=40).explain()
    clf = explained.split("then fit 'clf'", 1)[1]
    expected = "one chunk of rows at a time (its size known when the pass starts)"
    assert f"  fit memory in the parent: {expected}\n" in clf, explained
