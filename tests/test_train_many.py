"""``train_many``: many candidates on one memory-mapped copy, compared with a plain loop.

Every candidate's score must equal what fitting it by hand on the same rows
gives; the best one is kept, saved and applied; the parallel split follows
whether the estimator parallelizes itself; k-fold scores match scikit-learn's
``cross_val_score`` on the same folds.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.csv as pacsv
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Lasso, Ridge
from sklearn.model_selection import KFold, cross_val_score

from pipeline import ArraySource, Pipeline
from stages import TrainMany, choose_split

N, D = 300, 4


@pytest.fixture
def xy(rng):
    X = rng.standard_normal((N, D))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 * rng.standard_normal(N)
    return X, y


def run(X, y, stage, tmp_path, **kwargs):
    return Pipeline(ArraySource(X, y), [stage], workspace=tmp_path / "ws", **kwargs).run(
        progress=False
    )


@pytest.mark.parametrize(
    "parallel", [{"n_jobs": 1}, {"n_jobs": 2, "backend": "loky"}], ids=["1", "2-loky"]
)
def test_holdout_scores_and_best_model_equal_a_plain_loop(xy, tmp_path, parallel):
    X, y = xy
    grid = {"alpha": [0.01, 0.1, 1.0, 10.0]}
    stage = TrainMany("sklearn.linear_model.Lasso", grid=grid, name="lasso")
    result = run(X, y, stage, tmp_path, **parallel)
    cut = N - round(N * 0.2)
    expected = [Lasso(alpha=a).fit(X[:cut], y[:cut]).score(X[cut:], y[cut:]) for a in grid["alpha"]]
    trials = result.trials["lasso"]
    assert [t["alpha"] for t in trials] == grid["alpha"]
    np.testing.assert_array_equal([t["score"] for t in trials], expected)
    best = int(np.argmax(expected))
    assert [t["best"] for t in trials] == [i == best for i in range(4)]
    model = result.models["lasso"]
    assert model.alpha == grid["alpha"][best]
    np.testing.assert_array_equal(model.coef_, Lasso(alpha=model.alpha).fit(X[:cut], y[:cut]).coef_)
    np.testing.assert_array_equal(result.output, model.predict(X))


def test_cross_validation_refits_the_best_on_all_rows(xy, tmp_path):
    X, y = xy
    stage = TrainMany(
        Ridge(), grid={"alpha": [0.1, 100.0]}, score={"cv": 3}, scoring="r2", name="ridge"
    )
    result = run(X, y, stage, tmp_path, n_jobs=2, backend="threading")
    for trial, alpha in zip(result.trials["ridge"], [0.1, 100.0], strict=True):
        folds = cross_val_score(Ridge(alpha=alpha), X, y, cv=KFold(3), scoring="r2")
        assert trial["score"] == pytest.approx(folds.mean(), rel=1e-12)
    np.testing.assert_allclose(result.models["ridge"].coef_, Ridge(alpha=0.1).fit(X, y).coef_)


def test_a_list_of_candidates_and_the_saved_trials(xy, tmp_path):
    X, y = xy
    stage = TrainMany(
        [
            {"sklearn": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}},
            "sklearn.linear_model.LinearRegression",
        ],
        name="mix",
    )
    models = tmp_path / "models"
    result = Pipeline(ArraySource(X, y), [stage], sink={"models": str(models)}, n_jobs=2).run(
        progress=False
    )
    assert result.output is None
    assert [t["estimator"] for t in result.trials["mix"]] == ["Ridge", "LinearRegression"]
    assert sorted(os.listdir(models)) == ["mix-trials.csv", "mix.joblib", "mix.json", "mix.skops"]
    table = pacsv.read_csv(models / "mix-trials.csv")
    assert table.column_names == ["candidate", "estimator", "score", "fit_seconds", "best"]
    assert table["best"].to_pylist().count(True) == 1


def test_the_split_gives_self_parallel_estimators_the_cores():
    many = [HistGradientBoostingRegressor()] * 8
    assert (choose_split(many, 2).outer, choose_split(many, 2).inner) == (1, 2)
    assert (choose_split([Ridge()] * 8, 2).outer, choose_split([Ridge()] * 8, 2).inner) == (2, 1)
    assert choose_split([Ridge()], 4).outer == 1  # never more side by side than candidates
    forced = choose_split(many, 2, "models")
    assert (forced.outer, forced.inner, forced.why) == (2, 1, "as the spec says")


def test_explain_says_which_split_it_chose_and_why(xy, tmp_path):
    X, y = xy
    stage = TrainMany(
        "sklearn.ensemble.HistGradientBoostingRegressor",
        params={"max_iter": 5},
        grid={"learning_rate": [0.1, 0.2], "max_leaf_nodes": [7, 15]},
        name="hgb",
    )
    text = Pipeline(ArraySource(X, y), [stage], n_jobs=2).explain()
    assert (
        "then fit 'hgb': 4 candidates (HistGradientBoostingRegressor) on one memory-mapped copy "
        "of the rows, fitted on the first 80% of the rows and scored on the rest (their own "
        "score); 1 model at a time x 2 threads each (HistGradientBoostingRegressor runs OpenMP "
        "threads: side by side, models would only contend for the cores)"
    ) in text
    result = run(X, y, stage, tmp_path, n_jobs=2)
    assert "1 model at a time x 2 threads each" in result.report.format()
    scores = [t["score"] for t in result.trials["hgb"]]
    cut = N - 60
    for (lr, leaves), score in zip([(0.1, 7), (0.1, 15), (0.2, 7), (0.2, 15)], scores, strict=True):
        model = HistGradientBoostingRegressor(max_iter=5, learning_rate=lr, max_leaf_nodes=leaves)
        assert score == model.fit(X[:cut], y[:cut]).score(X[cut:], y[cut:])


def blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("split", ["models", "estimator"])
def test_an_explicit_split_gives_the_same_models_and_leaves_thread_limits(xy, tmp_path, split):
    X, y = xy
    before = blas_threads()
    stage = TrainMany(Ridge(), grid={"alpha": [0.1, 1.0, 10.0]}, split=split, name="r")
    result = run(X, y, stage, tmp_path, n_jobs=2)
    assert blas_threads() == before  # the run's thread limits did not leak
    detail = result.report.fits[0].detail
    assert ("2 models at a time" if split == "models" else "1 model at a time") in detail
    cut = N - round(N * 0.2)
    expected = [Ridge(alpha=a).fit(X[:cut], y[:cut]).score(X[cut:], y[cut:]) for a in (0.1, 1, 10)]
    np.testing.assert_array_equal([t["score"] for t in result.trials["r"]], expected)


def test_refit_fits_the_best_holdout_candidate_on_all_rows(xy, tmp_path):
    X, y = xy
    stage = TrainMany(
        Lasso(),
        grid={"alpha": [0.01, 10.0]},
        scoring="neg_mean_absolute_error",
        refit=True,
        name="l",
    )
    result = run(X, y, stage, tmp_path, n_jobs=1)
    assert result.models["l"].alpha == 0.01
    np.testing.assert_array_equal(result.models["l"].coef_, Lasso(alpha=0.01).fit(X, y).coef_)


class NanScore(Ridge):
    """A regressor whose score is undefined."""

    def score(self, X, y, sample_weight=None):
        return float("nan")


def test_candidates_that_all_score_nan_keep_nothing(xy, tmp_path):
    from pipeline import StageError

    X, y = xy
    with pytest.raises(StageError, match=r"every candidate of 'n' scored NaN"):
        run(X, y, TrainMany([NanScore(), NanScore(alpha=2.0)], name="n"), tmp_path, n_jobs=1)
