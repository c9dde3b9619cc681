"""``train_many``: many candidates on one memory-mapped copy, compared with a plain loop.

Every candidate's score must equal what fitting it by hand on the same rows
gives; the best one is kept, saved and applied; the parallel split follows
whether the estimator parallelizes itself (an ``n_jobs`` scikit-learn ignores
does not count); k-fold scores match scikit-learn's ``cross_val_score`` on the
same folds; a spec of candidates round-trips; the trials table shows what
identifies each candidate.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sklearn
import yaml
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Lasso, LogisticRegression, LogisticRegressionCV, Ridge
from sklearn.model_selection import KFold, cross_val_score
from sklearn.tree import DecisionTreeRegressor

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


def test_a_text_target_column_of_a_table(xy, tmp_path):
    # Labels as strings of different lengths, sorted, so chunks differ in width.
    X, _ = xy
    labels = np.where(X[:, 0] > 0.5, "churned", "no")
    order = np.argsort(labels, kind="stable")
    X, labels = X[order], labels[order]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "label": labels}), path, row_group_size=50)
    stage = TrainMany(LogisticRegression(), grid={"C": [0.1, 1.0]}, target="label", name="lr")
    result = Pipeline(
        {"parquet": str(path)}, [stage], chunks={"rows": 50}, workspace=tmp_path / "ws"
    ).run(progress=False)
    cut = N - round(N * 0.2)
    expected = [
        LogisticRegression(C=c).fit(X[:cut, :2], labels[:cut]).score(X[cut:, :2], labels[cut:])
        for c in (0.1, 1.0)
    ]
    np.testing.assert_allclose([t["score"] for t in result.trials["lr"]], expected, rtol=1e-12)
    assert result.models["lr"].classes_.tolist() == ["churned", "no"]


def test_a_failing_candidate_is_named(xy, tmp_path):
    from pipeline import StageError

    X, y = xy
    # Valid settings each, refused together at fit: only a fit can tell.
    stage = TrainMany(Ridge(), grid={"solver": ["auto", "lbfgs"]}, name="l")
    with pytest.raises(
        StageError,
        match=r"stage 'l' failed: ValueError: candidate 1, Ridge\(solver='lbfgs'\), failed: "
        r"'lbfgs' solver can be used only when positive=True",
    ):
        run(X, y, stage, tmp_path, n_jobs=1)


@pytest.mark.parametrize(
    ("score", "match"),
    [({"cv": 500}, r"too few for 500 folds \(score\.cv\)"), ({"holdout": 0.999}, r"too few")],
)
def test_too_few_rows_to_score_is_a_data_error(xy, tmp_path, score, match):
    from pipeline import StageError

    X, y = xy
    stage = TrainMany(Ridge(), grid={"alpha": [1.0, 2.0]}, score=score, name="l")
    with pytest.raises(StageError, match=rf"stage 'l' failed: \d+ rows are {match}") as info:
        run(X[:20], y[:20], stage, tmp_path, n_jobs=1)
    assert info.value.data_error  # the command line prints it without a traceback


class NanScore(Ridge):
    """A regressor whose score is undefined."""

    def score(self, X, y, sample_weight=None):
        return float("nan")


def test_candidates_that_all_score_nan_keep_nothing(xy, tmp_path):
    from pipeline import StageError

    X, y = xy
    with pytest.raises(StageError, match=r"every candidate of 'n' scored NaN"):
        run(X, y, TrainMany([NanScore(), NanScore(alpha=2.0)], name="n"), tmp_path, n_jobs=1)


# ------------------------------------------- n_jobs that scikit-learn ignores


class DocumentedNoOpJobs(BaseEstimator):
    """An estimator whose ``n_jobs`` is deprecated the way LogisticRegression's is.

    Parameters
    ----------
    n_jobs : int, default=None
        Does not have any effect.

        .. deprecated:: 0.1
           `n_jobs` is deprecated in version 0.1 and will be removed in 0.3.

    alpha : float, default=1.0
        Unused.
    """

    def __init__(self, n_jobs=None, alpha=1.0):
        self.n_jobs = n_jobs
        self.alpha = alpha


class InheritsTheNoOp(DocumentedNoOpJobs):
    """A subclass that does not document its parameters: its parent's entry counts."""


class UsesItsJobs(DocumentedNoOpJobs):
    """A subclass whose ``n_jobs`` works again.

    Parameters
    ----------
    n_jobs : int, default=None
        Folds fitted in parallel.
    """


class SentinelNoOpJobs(BaseEstimator):
    """scikit-learn's other way to deprecate a parameter: the default ``"deprecated"``."""

    def __init__(self, n_jobs="deprecated"):
        self.n_jobs = n_jobs


@pytest.mark.parametrize(
    ("estimator", "split"),
    [
        (DocumentedNoOpJobs(), (2, 1)),
        (DocumentedNoOpJobs(n_jobs=2), (2, 1)),  # set, it is still a no-op
        (InheritsTheNoOp(), (2, 1)),
        (SentinelNoOpJobs(), (2, 1)),
        (UsesItsJobs(), (1, 2)),
        (LogisticRegressionCV(), (1, 2)),  # its n_jobs runs the folds in parallel
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseEstimator) else None,
)
def test_an_n_jobs_that_does_nothing_is_not_inner_parallelism(estimator, split):
    chosen = choose_split([estimator] * 4, 2)
    assert (chosen.outer, chosen.inner) == split
    if split == (2, 1):
        assert chosen.why == (
            f"{type(estimator).__name__} uses one core: its n_jobs has no effect in "
            f"scikit-learn {sklearn.__version__}, so models run side by side"
        )


@pytest.mark.skipif(
    tuple(int(p) for p in sklearn.__version__.split(".")[:2]) < (1, 8),
    reason="LogisticRegression's n_jobs is deprecated (a no-op) from scikit-learn 1.8",
)
def test_logistic_regression_candidates_run_side_by_side(xy, tmp_path):
    X, y = xy
    y = (y > 0).astype(int)
    stage = TrainMany(LogisticRegression(), grid={"C": [0.1, 1.0, 10.0]}, name="lr")
    text = Pipeline(ArraySource(X, y), [stage], n_jobs=2).explain()
    assert (
        "2 models at a time x 1 thread each (LogisticRegression uses one core: its n_jobs "
        f"has no effect in scikit-learn {sklearn.__version__}, so models run side by side)"
    ) in text
    assert choose_split(stage.candidates, 2, "estimator").why == "as the spec says"


def test_a_mixed_list_names_a_model_that_uses_one_core():
    chosen = choose_split([HistGradientBoostingRegressor(), Ridge()], 2)
    assert chosen.why == "Ridge uses one core: models run side by side"


# ------------------------------------------------------- spec round trips

SEARCH = """\
name: round-trip
source: {{npy: {x}, y: {y}}}
stages:
  - name: search
    train_many:
      - {{sklearn: sklearn.linear_model.Ridge, params: {{alpha: 0.1}}}}
      - {{sklearn: sklearn.tree.DecisionTreeRegressor, params: {{max_depth: 3, random_state: 0}}}}
      - sklearn.linear_model.LinearRegression
    params: {{}}
    scoring: r2
"""


def without_times(trials):
    return [{k: v for k, v in row.items() if k != "fit_seconds"} for row in trials]


def test_a_list_of_candidates_from_a_file_round_trips(xy, tmp_path, save_npy):
    X, y = xy
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(SEARCH.format(x=save_npy("x", X), y=save_npy("y", y)))
    loaded = Pipeline.from_file(spec_file)
    spec = loaded.to_dict()
    assert spec["stages"] == [
        {
            "name": "search",
            "train_many": [
                {"sklearn": "sklearn.linear_model.Ridge", "params": {"alpha": 0.1}},
                {
                    "sklearn": "sklearn.tree.DecisionTreeRegressor",
                    "params": {"max_depth": 3, "random_state": 0},
                },
                "sklearn.linear_model.LinearRegression",
            ],
            "scoring": "r2",
        }
    ]
    again = Pipeline.from_dict(yaml.safe_load(yaml.safe_dump(spec)))
    assert again.to_dict() == spec
    assert again.explain() == loaded.explain()
    first = loaded.run(n_jobs=1, progress=False)
    second = again.run(n_jobs=1, progress=False)
    np.testing.assert_array_equal(second.output, first.output)
    assert without_times(second.trials["search"]) == without_times(first.trials["search"])


def test_candidates_given_as_python_import_strings_round_trip():
    stage = TrainMany(("sklearn.linear_model.Ridge", "sklearn.linear_model.Lasso"), name="two")
    spec = stage.to_spec()
    assert spec == {
        "name": "two",
        "train_many": ["sklearn.linear_model.Ridge", "sklearn.linear_model.Lasso"],
    }
    again = TrainMany.from_spec(spec)
    assert again.to_spec() == spec
    assert [repr(c) for c in again.candidates] == [repr(c) for c in stage.candidates]


@pytest.mark.parametrize(
    "candidates",
    [
        Ridge(),
        Ridge,
        [Ridge(), "sklearn.linear_model.Lasso"],
        [{"sklearn": Ridge, "params": {"alpha": 2.0}}],
    ],
    ids=["instance", "class", "instance-in-list", "class-in-mapping"],
)
def test_candidates_given_as_objects_are_not_written_as_a_spec(candidates):
    stage = TrainMany(candidates, name="objects")
    with pytest.raises(
        TypeError,
        match=r"^stage 'objects' was built from estimator objects; only candidates given by "
        r"import string .* can be written as a spec$",
    ):
        stage.to_spec()


# ------------------------------------------------------------ trials table


def test_each_trial_shows_the_settings_that_identify_its_candidate(xy, tmp_path):
    X, y = xy
    stage = TrainMany(
        [
            {"sklearn": "sklearn.linear_model.Ridge", "params": {"alpha": 0.1}},
            {"sklearn": "sklearn.linear_model.Ridge", "params": {"alpha": 1000}},
            {"sklearn": "sklearn.tree.DecisionTreeRegressor", "params": {"max_depth": 3}},
        ],
        name="mixed",
    )
    models = tmp_path / "models"
    result = Pipeline(ArraySource(X, y), [stage], sink={"models": str(models)}, n_jobs=1).run(
        progress=False
    )
    trials = result.trials["mixed"]
    columns = ["candidate", "estimator", "alpha", "max_depth", "score", "fit_seconds", "best"]
    assert [list(t) for t in trials] == [columns] * 3
    # Each row holds its candidate's value; None where its class has no such parameter.
    assert [(t["alpha"], t["max_depth"]) for t in trials] == [(0.1, None), (1000, None), (None, 3)]
    table = pacsv.read_csv(models / "mixed-trials.csv")
    assert table.column_names == columns
    assert table["max_depth"].to_pylist() == [None, None, 3]
    assert table["alpha"].to_pylist() == [0.1, 1000, None]


def test_a_default_value_shows_when_it_tells_candidates_apart(xy, tmp_path):
    X, y = xy
    stage = TrainMany(
        "sklearn.linear_model.Ridge",
        params={"fit_intercept": False},  # shared, but set by the user
        grid={"alpha": [1.0, 10.0]},  # 1.0 is Ridge's default
        name="r",
    )
    trials = run(X, y, stage, tmp_path, n_jobs=1).trials["r"]
    assert [(t["alpha"], t["fit_intercept"]) for t in trials] == [(1.0, False), (10.0, False)]
    assert "solver" not in trials[0]  # left at its default by every candidate


def test_text_mixed_with_numbers_is_saved_as_text(xy, tmp_path):
    X, y = xy
    grid = {"max_features": ["sqrt", 0.5], "max_depth": [2]}
    stage = TrainMany(DecisionTreeRegressor(random_state=0), grid=grid, name="tree")
    models = tmp_path / "models"
    result = Pipeline(ArraySource(X, y), [stage], sink={"models": str(models)}, n_jobs=1).run(
        progress=False
    )
    assert [t["max_features"] for t in result.trials["tree"]] == ["sqrt", 0.5]
    table = pacsv.read_csv(models / "tree-trials.csv")
    assert table["max_features"].to_pylist() == ["sqrt", "0.5"]
    assert table["max_depth"].to_pylist() == [2, 2]
    assert table["random_state"].to_pylist() == [0, 0]


def test_numbers_arrow_cannot_hold_are_saved_as_text(xy, tmp_path):
    # 2**64 overflows Arrow's int64 with a Python OverflowError, not an Arrow error.
    X, y = xy
    stage = TrainMany(Ridge(), grid={"max_iter": [10, 2**64]}, name="r")
    models = tmp_path / "models"
    Pipeline(ArraySource(X, y), [stage], sink={"models": str(models)}, n_jobs=1).run(progress=False)
    table = pacsv.read_csv(
        models / "r-trials.csv",
        convert_options=pacsv.ConvertOptions(column_types={"max_iter": pa.string()}),
    )
    assert table["max_iter"].to_pylist() == ["10", str(2**64)]
