"""ChunkedEstimator: scikit-learn's conformance suite, oracles, the estimator API, errors.

Oracles compare the wrapper with the plain scikit-learn estimator on the same
data: bitwise where the fit is the same computation (``full``, a
``partial_fit`` loop over the same chunks), to rounding for exact merges. Chunk
sizes divide the row count or leave a shorter last chunk, never a chunk of one
row: BLAS computes a single row (a matrix-vector product) with a different
rounding than a block of rows, so a one-row chunk can differ from the plain
``predict`` in the last bit, with or without chunkline.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import check_estimator

from stages import ChunkedEstimator

N_ROWS = 60
# 20 divides the rows, 7 and 25 leave a shorter last chunk (4 and 10 rows), None is
# chunkline's default (here one chunk).
CHUNK_ROWS = [20, 7, 25, None]
# In this process, and in two loky worker processes.
PARALLEL = [(1, None), (2, "loky")]
PARALLEL_IDS = ["n_jobs=1", "n_jobs=2-loky"]


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, three-class labels and a regression target, ``N_ROWS`` rows."""
    X = rng.standard_normal((N_ROWS, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 1.0, -3.0, 5.0]
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 2)
    target = X @ np.array([1.0, -2.0, 0.5, 0.1]) + rng.standard_normal(N_ROWS)
    return X, labels, target


# ---------------------------------------------------------------- conformance

# Small chunks, so that every check's data (usually 20 to 100 rows) is cut into
# several chunks. n_jobs=1 runs the chunks in this process, which keeps the ~50
# checks of each estimator to a few seconds; the oracles below also run on loky.
CONFORMANCE: dict[str, tuple[ChunkedEstimator, str]] = {
    "StandardScaler-merge": (ChunkedEstimator(StandardScaler(), chunk_rows=7, n_jobs=1), "merge"),
    "GaussianNB-merge": (ChunkedEstimator(GaussianNB(), chunk_rows=7, n_jobs=1), "merge"),
    "LogisticRegression-full": (
        ChunkedEstimator(LogisticRegression(), chunk_rows=7, n_jobs=1),
        "full",
    ),
    "Ridge-full": (ChunkedEstimator(Ridge(), chunk_rows=7, n_jobs=1), "full"),
    "SGDClassifier-partial_fit": (
        ChunkedEstimator(
            SGDClassifier(random_state=0), fit_strategy="partial_fit", chunk_rows=7, n_jobs=1
        ),
        "partial_fit",
    ),
    "StandardScaler-sample": (
        ChunkedEstimator(
            StandardScaler(), fit_strategy="sample", sample_rows=25, chunk_rows=7, n_jobs=1
        ),
        "sample",
    ),
}
# check_array_api_input skips itself unless SCIPY_ARRAY_API=1 was set before SciPy
# was imported; test_array_api_check_passes runs it in a fresh process.
SKIPS_WITHOUT_SCIPY_ARRAY_API = {"check_array_api_input"}


def _run_checks(estimator: ChunkedEstimator) -> list[dict[str, Any]]:
    with warnings.catch_warnings():
        # The checks' own data make some fits warn (convergence, one class, ...).
        warnings.simplefilter("ignore")
        return check_estimator(estimator, on_fail=None, on_skip=None)


@pytest.mark.parametrize("case", list(CONFORMANCE))
def test_check_estimator_passes_every_check(
    case: str, data: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    estimator, strategy = CONFORMANCE[case]
    results = _run_checks(estimator)
    failed = [
        f"{r['check_name']}: {type(r['exception']).__name__}: {r['exception']}"
        for r in results
        if r["status"] not in ("passed", "skipped")
    ]
    assert failed == []
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= SKIPS_WITHOUT_SCIPY_ARRAY_API
    assert len(results) >= 45  # the checks did run (45 for a transformer, 54 for a classifier)
    # ... and on the strategy the case is named after.
    X, labels, _ = data
    assert clone(estimator).fit(X, labels).fit_strategy_ == strategy


def test_array_api_check_passes(tmp_path: Path) -> None:
    estimators = tmp_path / "estimators.pkl"
    estimators.write_bytes(pickle.dumps([e for e, _ in CONFORMANCE.values()]))
    code = textwrap.dedent(
        f"""
        import pickle, warnings
        from sklearn.utils.estimator_checks import check_array_api_input
        for estimator in pickle.loads(open({str(estimators)!r}, "rb").read()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # As check_estimator runs it for estimators without array API support.
                check_array_api_input(
                    "ChunkedEstimator", estimator, array_namespace="numpy",
                    expect_only_array_outputs=False,
                )
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SCIPY_ARRAY_API": "1"},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ---------------------------------------------------------------- oracles


@pytest.mark.parametrize(("n_jobs", "backend"), PARALLEL, ids=PARALLEL_IDS)
@pytest.mark.parametrize("chunk_rows", CHUNK_ROWS)
def test_full_fit_predicts_as_the_plain_estimator_bitwise(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    chunk_rows: int | None,
    n_jobs: int,
    backend: str | None,
) -> None:
    X, labels, target = data
    settings = {"chunk_rows": chunk_rows, "n_jobs": n_jobs, "backend": backend}
    clf = ChunkedEstimator(LogisticRegression(), **settings).fit(X, labels)
    plain = LogisticRegression().fit(X, labels)
    assert clf.fit_strategy_ == "full"
    assert_array_equal(clf.estimator_.coef_, plain.coef_)
    assert_array_equal(clf.classes_, plain.classes_)
    for method in ("predict", "predict_proba", "decision_function"):
        assert_array_equal(getattr(clf, method)(X), getattr(plain, method)(X))
    assert clf.score(X, labels) == plain.score(X, labels)

    reg = ChunkedEstimator(Ridge(alpha=0.5), **settings).fit(X, target)
    assert_array_equal(reg.predict(X), Ridge(alpha=0.5).fit(X, target).predict(X))


@pytest.mark.parametrize(("n_jobs", "backend"), PARALLEL, ids=PARALLEL_IDS)
@pytest.mark.parametrize("chunk_rows", CHUNK_ROWS)
def test_merge_fit_matches_the_plain_estimator(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    chunk_rows: int | None,
    n_jobs: int,
    backend: str | None,
) -> None:
    X, labels, _ = data
    settings = {"chunk_rows": chunk_rows, "n_jobs": n_jobs, "backend": backend}
    scaler = ChunkedEstimator(StandardScaler(), **settings).fit(X)
    plain_scaler = StandardScaler().fit(X)
    assert scaler.fit_strategy_ == "merge"
    assert_allclose(scaler.estimator_.mean_, plain_scaler.mean_, rtol=1e-12)
    assert_allclose(scaler.estimator_.scale_, plain_scaler.scale_, rtol=1e-12)
    assert_allclose(scaler.transform(X), plain_scaler.transform(X), rtol=1e-12, atol=1e-12)

    nb = ChunkedEstimator(GaussianNB(), **settings).fit(X, labels)
    plain_nb = GaussianNB().fit(X, labels)
    assert nb.fit_strategy_ == "merge"
    assert_allclose(nb.estimator_.theta_, plain_nb.theta_, rtol=1e-12)
    assert_allclose(nb.estimator_.var_, plain_nb.var_, rtol=1e-12)
    assert_array_equal(nb.predict(X), plain_nb.predict(X))
    assert_allclose(nb.predict_proba(X), plain_nb.predict_proba(X), rtol=1e-10, atol=1e-12)


def _partial_fit_loop(model: Any, X: np.ndarray, y: np.ndarray, rows: int, **first: Any) -> Any:
    """``model.partial_fit`` on consecutive chunks of ``rows`` rows, ``first`` on the first."""
    for start in range(0, len(X), rows):
        model.partial_fit(X[start : start + rows], y[start : start + rows], **first)
        first = {}
    return model


@pytest.mark.parametrize(("n_jobs", "backend"), PARALLEL, ids=PARALLEL_IDS)
@pytest.mark.parametrize("chunk_rows", [20, 7])
def test_partial_fit_strategy_is_a_partial_fit_loop_over_the_chunks(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    chunk_rows: int,
    n_jobs: int,
    backend: str | None,
) -> None:
    X, labels, _ = data
    clf = ChunkedEstimator(
        SGDClassifier(random_state=0),
        fit_strategy="partial_fit",
        chunk_rows=chunk_rows,
        n_jobs=n_jobs,
        backend=backend,
    ).fit(X, labels)
    loop = _partial_fit_loop(
        SGDClassifier(random_state=0), X, labels, chunk_rows, classes=np.unique(labels)
    )
    assert_array_equal(clf.estimator_.coef_, loop.coef_)
    assert_array_equal(clf.decision_function(X), loop.decision_function(X))


def test_partial_fit_epochs_and_shuffled_chunks_are_seeded(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, _ = data

    def fitted(**knobs: Any) -> np.ndarray:
        est = ChunkedEstimator(
            SGDClassifier(random_state=0),
            fit_strategy="partial_fit",
            chunk_rows=7,
            n_jobs=1,
            **knobs,
        )
        return np.asarray(est.fit(X, labels).estimator_.coef_)

    once = fitted()
    assert not np.array_equal(fitted(epochs=3), once)
    shuffled = fitted(epochs=3, shuffle_chunks=True, seed=1)
    assert_array_equal(fitted(epochs=3, shuffle_chunks=True, seed=1), shuffled)
    assert not np.array_equal(fitted(epochs=3, shuffle_chunks=True, seed=2), shuffled)


def test_sample_strategy_fits_sample_rows_rows(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, _, _ = data
    sampled = ChunkedEstimator(
        StandardScaler(), fit_strategy="sample", sample_rows=25, chunk_rows=7, n_jobs=1
    ).fit(X)
    assert sampled.estimator_.n_samples_seen_ == 25
    everything = ChunkedEstimator(StandardScaler(), fit_strategy="sample", n_jobs=1).fit(X)
    assert_allclose(everything.estimator_.mean_, X.mean(axis=0), rtol=1e-12)


def test_wrapper_partial_fit_continues_chunk_by_chunk(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, _ = data
    classes = np.unique(labels)
    est = ChunkedEstimator(SGDClassifier(random_state=0), chunk_rows=7, n_jobs=1)
    est.partial_fit(X[:30], labels[:30], classes=classes).partial_fit(X[30:], labels[30:])
    loop = _partial_fit_loop(SGDClassifier(random_state=0), X[:30], labels[:30], 7, classes=classes)
    loop = _partial_fit_loop(loop, X[30:], labels[30:], 7)
    assert est.fit_strategy_ == "partial_fit"
    assert_array_equal(est.estimator_.coef_, loop.coef_)
    assert_array_equal(est.classes_, classes)
    assert_array_equal(est.predict(X), loop.predict(X))

    # After fit, partial_fit goes on from the fitted model.
    scaler = ChunkedEstimator(StandardScaler(), n_jobs=1).fit(X[:30]).partial_fit(X[30:])
    assert_allclose(scaler.estimator_.mean_, X.mean(axis=0), rtol=1e-12)


def test_fit_transform_equals_fit_then_transform(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, _, _ = data
    est = ChunkedEstimator(StandardScaler(), chunk_rows=7, n_jobs=1)
    assert_array_equal(est.fit_transform(X), clone(est).fit(X).transform(X))
    assert est.fit_strategy_ == "merge"


def test_labels_given_as_objects_are_fitted_as_numpy_strings(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, _ = data
    names = np.array(["low", "mid", "high"], dtype=object)[labels]
    for inner in (GaussianNB(), LogisticRegression()):
        est = ChunkedEstimator(inner, chunk_rows=7, n_jobs=1).fit(X, names)
        plain = clone(inner).fit(X, names)
        assert est.classes_.dtype.kind == "U"
        assert est.classes_.tolist() == plain.classes_.tolist()
        assert est.predict(X).tolist() == plain.predict(X).tolist()


def test_data_frames_give_feature_names(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    pd = pytest.importorskip("pandas")
    X, labels, _ = data
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = ChunkedEstimator(LogisticRegression(), chunk_rows=7, n_jobs=1).fit(frame, labels)
    assert est.feature_names_in_.tolist() == ["a", "b", "c", "d"]
    assert_array_equal(est.predict(frame), LogisticRegression().fit(X, labels).predict(X))
    with pytest.raises(ValueError, match="The feature names should match those that were passed"):
        est.predict(frame.rename(columns={"a": "z"}))


def test_works_inside_scikit_learn_pipelines_and_searches(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, _ = data
    chunked = make_pipeline(
        ChunkedEstimator(StandardScaler(), chunk_rows=7, n_jobs=1),
        ChunkedEstimator(LogisticRegression(), chunk_rows=7, n_jobs=1),
    ).fit(X, labels)
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, labels)
    assert_allclose(chunked.predict_proba(X), plain.predict_proba(X), rtol=1e-9)

    grid = {"estimator__C": [0.01, 1.0, 100.0]}
    search = GridSearchCV(ChunkedEstimator(LogisticRegression(), n_jobs=1), grid, cv=3)
    plain_search = GridSearchCV(LogisticRegression(), {"C": grid["estimator__C"]}, cv=3)
    search.fit(X, labels)
    plain_search.fit(X, labels)
    assert search.best_params_["estimator__C"] == plain_search.best_params_["C"]
    assert_array_equal(
        search.cv_results_["mean_test_score"], plain_search.cv_results_["mean_test_score"]
    )


# ---------------------------------------------------------------- the estimator API


def test_get_params_set_params_and_clone_round_trip() -> None:
    est = ChunkedEstimator(LogisticRegression(C=2.0), chunk_rows=10, n_jobs=1)
    params = est.get_params()
    assert params["estimator__C"] == 2.0
    assert (params["fit_strategy"], params["chunk_rows"], params["n_jobs"]) == ("auto", 10, 1)
    assert params["backend"] is None and params["epochs"] == 1
    assert est.set_params(estimator__C=0.5, chunk_rows=5, backend="threading") is est
    assert (est.estimator.C, est.chunk_rows, est.backend) == (0.5, 5, "threading")

    copy = clone(est)
    assert copy.estimator is not est.estimator
    assert copy.get_params()["estimator__C"] == 0.5
    assert {k: v for k, v in copy.get_params(deep=False).items() if k != "estimator"} == {
        k: v for k, v in est.get_params(deep=False).items() if k != "estimator"
    }
    assert not hasattr(copy, "estimator_")
    # __init__ stores the parameters, nothing else.
    assert set(vars(ChunkedEstimator())) == set(est.get_params(deep=False))


def test_a_fitted_estimator_pickles(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, labels, _ = data
    est = ChunkedEstimator(GaussianNB(), chunk_rows=7, n_jobs=1).fit(X, labels)
    again = pickle.loads(pickle.dumps(est))
    assert again.fit_strategy_ == "merge"
    assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    assert_array_equal(again.classes_, est.classes_)


def test_tags_and_kind_follow_the_wrapped_estimator() -> None:
    assert is_classifier(ChunkedEstimator(LogisticRegression()))
    assert is_regressor(ChunkedEstimator(Ridge()))
    assert not is_classifier(ChunkedEstimator(StandardScaler()))
    assert get_tags(ChunkedEstimator(StandardScaler())).input_tags.allow_nan
    assert not get_tags(ChunkedEstimator(LogisticRegression())).input_tags.allow_nan
    # The engine cuts dense arrays: sparse input is refused whatever the estimator takes.
    assert get_tags(LogisticRegression()).input_tags.sparse
    assert not get_tags(ChunkedEstimator(LogisticRegression())).input_tags.sparse
    assert get_tags(ChunkedEstimator()).estimator_type is None


def test_methods_are_those_of_the_wrapped_estimator(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, _ = data
    methods = (
        "predict",
        "predict_proba",
        "decision_function",
        "transform",
        "fit_transform",
        "score_samples",
        "partial_fit",
        "score",
    )
    for inner in (StandardScaler(), Ridge(), LogisticRegression(), SVC(), SGDClassifier()):
        expected = [m for m in methods if hasattr(inner, m) and m != "fit_transform"]
        expected += ["fit_transform"] if hasattr(inner, "transform") else []
        assert sorted(m for m in methods if hasattr(ChunkedEstimator(inner), m)) == sorted(expected)
    # Once fitted, the fitted estimator's answer counts (SGDClassifier has
    # predict_proba only with a probabilistic loss).
    assert not hasattr(ChunkedEstimator(SGDClassifier(loss="hinge")), "predict_proba")
    sgd = ChunkedEstimator(SGDClassifier(loss="log_loss", random_state=0), n_jobs=1)
    sgd.fit(X, labels)
    assert hasattr(sgd, "predict_proba")
    sgd.estimator_.set_params(loss="hinge")
    assert not hasattr(sgd, "predict_proba")


def test_nan_follows_the_wrapped_estimator(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, labels, _ = data
    X = X.copy()
    X[3, 1] = np.nan
    scaled = ChunkedEstimator(StandardScaler(), chunk_rows=7, n_jobs=1).fit_transform(X)
    assert_allclose(scaled, StandardScaler().fit_transform(X), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        ChunkedEstimator(LogisticRegression(), n_jobs=1).fit(X, labels)


# ---------------------------------------------------------------- errors


def test_unfitted_use_raises_not_fitted_error(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, _, _ = data
    est = ChunkedEstimator(LogisticRegression(), n_jobs=1)
    for method in ("predict", "predict_proba", "decision_function"):
        with pytest.raises(NotFittedError, match="This ChunkedEstimator instance is not fitted"):
            getattr(est, method)(X)


def test_wrong_number_of_features(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, labels, _ = data
    est = ChunkedEstimator(LogisticRegression(), n_jobs=1).fit(X, labels)
    with pytest.raises(
        ValueError, match="X has 3 features, but ChunkedEstimator is expecting 4 features"
    ):
        est.predict(X[:, :3])
    scaler = ChunkedEstimator(StandardScaler(), n_jobs=1).partial_fit(X)
    with pytest.raises(
        ValueError, match="X has 2 features, but ChunkedEstimator is expecting 4 features"
    ):
        scaler.partial_fit(X[:, :2])


def test_estimator_none_or_not_an_estimator(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, _ = data
    with pytest.raises(
        ValueError,
        match=r"ChunkedEstimator\.estimator: give the scikit-learn estimator to wrap, "
        r"e\.g\. ChunkedEstimator\(LogisticRegression\(\)\); got None",
    ):
        ChunkedEstimator().fit(X, labels)
    with pytest.raises(
        TypeError, match=r"expected a scikit-learn estimator instance .* got <class"
    ):
        ChunkedEstimator(LogisticRegression).fit(X, labels)


def test_a_strategy_the_estimator_cannot_use(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, target = data
    with pytest.raises(
        ValueError,
        match=r"ChunkedEstimator\.fit_strategy: 'merge' is not possible: LogisticRegression has "
        r"no exact merge; estimators with one: BernoulliNB, .*GaussianNB.*; "
        r"use fit_strategy='full' or 'sample'",
    ):
        ChunkedEstimator(LogisticRegression(), fit_strategy="merge", n_jobs=1).fit(X, labels)
    with pytest.raises(
        ValueError,
        match=r"'merge' is not possible: SGDClassifier has no exact merge.*"
        r"use fit_strategy='full', 'partial_fit' or 'sample'",
    ):
        ChunkedEstimator(SGDClassifier(), fit_strategy="merge", n_jobs=1).fit(X, labels)
    with pytest.raises(
        ValueError,
        match=r"ChunkedEstimator\.fit_strategy: 'partial_fit' is not possible: Ridge has no "
        r"partial_fit; use fit_strategy='full' \(all rows at once\) or 'sample'",
    ):
        ChunkedEstimator(Ridge(), fit_strategy="partial_fit", n_jobs=1).fit(X, target)


def test_bad_parameters_are_named_all_at_once(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, _ = data
    with pytest.raises(
        ValueError,
        match=r"ChunkedEstimator\.fit_strategy: expected one of auto, merge, partial_fit, full, "
        r"sample, got 'mrege' \(did you mean 'merge'\?\)",
    ):
        ChunkedEstimator(GaussianNB(), fit_strategy="mrege").fit(X, labels)
    with pytest.raises(
        ValueError,
        match=r"(?s)3 problems in the parameters of ChunkedEstimator:\n"
        r"  - ChunkedEstimator\.n_jobs: expected a positive integer or -1, got 0\n"
        r"  - ChunkedEstimator\.chunk_rows: expected a positive integer or None, got 0\n"
        r"  - ChunkedEstimator\.epochs: expected a positive integer, got 0",
    ):
        ChunkedEstimator(GaussianNB(), chunk_rows=0, n_jobs=0, epochs=0).fit(X, labels)
    with pytest.raises(
        ValueError,
        match=r"ChunkedEstimator\.epochs: epochs=3 is only used with fit_strategy='partial_fit' "
        r"\(fit_strategy='auto', which is 'merge' for GaussianNB\)",
    ):
        ChunkedEstimator(GaussianNB(), epochs=3).fit(X, labels)
    with pytest.raises(
        ValueError,
        match=r"ChunkedEstimator\.sample_rows: sample_rows=10 is only used with "
        r"fit_strategy='sample' \(fit_strategy='full'\)",
    ):
        ChunkedEstimator(LogisticRegression(), fit_strategy="full", sample_rows=10).fit(X, labels)
    # The wrapped estimator's own parameters are checked as its fit checks them.
    with pytest.raises(ValueError, match="The 'C' parameter of LogisticRegression must be"):
        ChunkedEstimator(LogisticRegression(C=-1.0), n_jobs=1).fit(X, labels)


def test_sparse_input_is_refused(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    X, labels, _ = data
    est = ChunkedEstimator(LogisticRegression(), n_jobs=1)
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        est.fit(sp.csr_matrix(X), labels)
    est.fit(X, labels)
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        est.predict(sp.csr_array(X))


def test_errors_of_the_wrapped_estimator_keep_their_type(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, labels, target = data
    with pytest.raises(ValueError, match="at least 2 classes in the data") as raised:
        ChunkedEstimator(LogisticRegression(), chunk_rows=7, n_jobs=1).fit(X, np.zeros(N_ROWS))
    if sys.version_info >= (3, 11):  # where chunkline ran it, as a note
        assert raised.value.__notes__ == [
            "(raised inside chunkline, in stage 'LogisticRegression')"
        ]
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        ChunkedEstimator(GaussianNB(), chunk_rows=7, n_jobs=1).fit(X, target)
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        ChunkedEstimator(Ridge(), n_jobs=1).fit(X)
    with pytest.raises(ValueError, match="Found input variables with inconsistent numbers"):
        ChunkedEstimator(StandardScaler(), n_jobs=1).fit(X, labels[:-1])
    mixed = np.array([1, "a"] * (N_ROWS // 2), dtype=object)
    with pytest.raises(ValueError, match=r"Mix of label input types \(string and number\)"):
        ChunkedEstimator(StandardScaler(), n_jobs=1).fit(X, mixed)
