"""Bad input to scikit-learn stages: one clear error, and nothing lost or half-written.

Mistakes in the spec (a strategy the estimator cannot use, unknown
parameters, missing features, a saved model for other data) are
``SpecError``s found before any data is read, CLI exit code 2. Bad data (NaNs
an estimator refuses, a label outside the given classes) and failing fits are
``StageError``s naming the stage, the chunk and its rows, CLI exit code 1.
Either way the sink's final paths, model files included, are untouched.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler
from test_cli import chunkline

from pipeline import ArraySource, Map, Pipeline, SinkError, SourceError, SpecError, StageError
from stages import Estimator

N, D, CHUNK = 120, 3, 40  # chunks 0, 1, 2: rows 0-40, 40-80, 80-120


def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((N, D))
    return X, (X[:, 0] > 0).astype(np.int64)


def spec_error(stage: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        Pipeline.from_dict({"source": {"npy": "x.npy"}, "stages": [{"name": "s", **stage}]})


# ---------------------------------------------------------------- spec errors


@pytest.mark.parametrize(
    ("stage", "match"),
    [
        pytest.param(
            {"sklearn": "sklearn.linear_model.SGDClassifier", "fit": "merge"},
            r"^stages\[0\] \(s\)\.fit: SGDClassifier has no exact merge; estimators with one: "
            r"BernoulliNB, .*use fit: partial_fit \(SGDClassifier has partial_fit\) or fit: full$",
            id="merge-without-merge",
        ),
        pytest.param(
            {"sklearn": "sklearn.ensemble.RandomForestClassifier", "fit": "partial_fit"},
            r"^stages\[0\] \(s\)\.fit: RandomForestClassifier has no partial_fit; use fit: full",
            id="partial-fit-without-it",
        ),
        pytest.param(
            {"sklearn": "sklearn.preprocessing.StandardScaler", "params": {"wit_mean": False}},
            r"^stages\[0\] \(s\)\.params: StandardScaler "
            r"has no parameter 'wit_mean' \(did you mean "
            r"'with_mean'\?\); its parameters: copy, with_mean, with_std$",
            id="unknown-param",
        ),
        pytest.param(
            {"sklearn": "sklearn.decomposition.IncrementalPCA", "params": {"n_components": "x"}},
            r"^stages\[0\] \(s\)\.params: The "
            r"'n_components' parameter of IncrementalPCA must be an "
            r"int in the range \[1, inf\) or None\. Got 'x' instead\.$",
            id="bad-param-value",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.SGDClassifier", "apply": "predict_proba"},
            r"^stages\[0\] \(s\)\.apply: SGDClassifier\(\) has no predict_proba$",
            id="apply-not-available",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.SGDClassifier", "apply": "predict_probe"},
            r"^stages\[0\] \(s\)\.apply: expected one of transform, predict, predict_proba, "
            r"decision_function, score_samples, got 'predict_probe' \(did you mean "
            r"'predict_proba'\?\)$",
            id="apply-unknown",
        ),
        pytest.param(
            {"sklearn": "sklearn.preprocessing.StandardScaler", "fit": "merj"},
            r"^stages\[0\] \(s\)\.fit: expected one of auto, merge, partial_fit, full, sample, got "
            r"'merj' \(did you mean 'merge'\?\)$",
            id="fit-unknown",
        ),
        pytest.param(
            {"sklearn": "sklearn.preprocessing.StandardScaler", "epochs": 3},
            r"^stages\[0\] \(s\)\.epochs: only "
            r"used with fit: partial_fit \(this stage fits by merge\)$",
            id="epochs-with-merge",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.SGDRegressor", "classes": [0, 1]},
            r"^stages\[0\] \(s\)\.classes: only used with fit: partial_fit of a classifier",
            id="classes-of-a-regressor",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.SGDClassifier", "epochs": 0},
            r"^stages\[0\] \(s\)\.epochs: expected a positive integer, got 0$",
            id="epochs-zero",
        ),
        pytest.param(
            {"sklearn": "numpy.sum"},
            r"^stages\[0\] \(s\)\.sklearn: expected a scikit-learn estimator",
            id="not-an-estimator",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.LogisticRegresion"},
            r"^stages\[0\] \(s\)\.sklearn: cannot "
            r"import 'sklearn\.linear_model\.LogisticRegresion'.*"
            r"did you mean 'LogisticRegression'",
            id="typo-in-import",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.Ridge", "model": "m.joblib", "fit": "full"},
            r"^stages\[0\] \(s\)\.fit: a stage with model: applies a saved model",
            id="fit-and-model",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.Ridge", "params": {"alpah": 1}, "features": "a"},
            r"^2 problems in the pipeline spec:\n  - stages\[0\] \(s\)\.params: Ridge has no "
            r"parameter 'alpah' .*\n  - stages\[0\] \(s\)\.features: expected a list of column "
            r"names, got 'a'$",
            id="problems-together",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.SGDClassifier", "output": ["p", "p"]},
            r"^stages\[0\] \(s\)\.output: each column is named once; \['p'\] appear more than",
            id="output-named-twice",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.Ridge", "features": ["a", "y"], "target": "y"},
            r"^stages\[0\] \(s\)\.features: the target 'y' is among the features",
            id="target-among-features",
        ),
        pytest.param(
            {"sklearn": "sklearn.linear_model.SGDClassifier", "classes": []},
            r"^stages\[0\] \(s\)\.classes: expected the labels, got an empty list$",
            id="no-classes",
        ),
        pytest.param(
            {"train_many": "sklearn.linear_model.Ridge", "grid": []},
            r"^stages\[0\] \(s\)\.grid: expected a mapping of parameter lists",
            id="empty-grid",
        ),
    ],
)
def test_spec_errors_name_the_field_and_the_fix(stage, match):
    spec_error(stage, match)


def test_train_many_spec_errors():
    base = {"train_many": "sklearn.linear_model.Ridge"}
    spec_error(
        {**base, "grid": {"alpah": [1.0]}}, r"^stages\[0\] \(s\)\.grid\.params: Ridge has no"
    )
    spec_error({**base, "score": {"holdout": 2}}, r"^stages\[0\] \(s\)\.score\.holdout: expected a")
    spec_error({**base, "score": {"kfold": 3}}, r"^stages\[0\] \(s\)\.score\.kfold: unknown way")
    spec_error({**base, "split": "model"}, r"^stages\[0\] \(s\)\.split: .*did you mean 'models'")
    spec_error({**base, "scoring": "r3"}, r"^stages\[0\] \(s\)\.scoring: 'r3' is not a valid")
    spec_error(
        {"train_many": [{"sklearn": "sklearn.linear_model.Ridge", "parms": {"alpha": 2.0}}]},
        r"^stages\[0\] \(s\)\.train_many\[0\]: unknown key 'parms' \(did you mean 'params'\?\); a "
        r"candidate is \{sklearn: <estimator>, params: \{\.\.\.\}\}$",
    )


def test_missing_features_are_a_spec_error_listing_the_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [0, 1]}), path)
    stage = Estimator("sklearn.linear_model.LogisticRegression", features=["a", "c"], target="b")
    with pytest.raises(SpecError, match=r"stage 'LogisticRegression'.*'c'.*columns: a, b"):
        Pipeline({"parquet": str(path)}, [stage]).plan()


def test_supervised_estimator_without_targets(rng, tmp_path):
    X, _ = data(rng)
    with pytest.raises(
        SpecError,
        match=r"^stage 'lr'\.target: LogisticRegression learns from "
        r"targets y: give source\.y",
    ):
        Pipeline(X, [Estimator("sklearn.linear_model.LogisticRegression", name="lr")]).plan()


def test_features_of_an_array_are_its_columns(rng):
    X, y = data(rng)
    stage = Estimator("sklearn.linear_model.Ridge", features=["a"], name="r")
    with pytest.raises(SpecError, match=r"^stage 'r'\.features: only for table input"):
        Pipeline(ArraySource(X, y), [stage]).plan()


def test_output_names_are_for_tables(rng):
    X, y = data(rng)
    stage = Estimator("sklearn.linear_model.Ridge", output=["a"], name="r")
    with pytest.raises(SpecError, match=r"^stage 'r'\.output: only for table input"):
        Pipeline(ArraySource(X, y), [stage]).plan()


@pytest.mark.parametrize("unfitted", [StandardScaler(), LogisticRegression()], ids=type)
def test_a_saved_model_that_was_never_fitted(rng, tmp_path, unfitted):
    X, _ = data(rng)
    path = tmp_path / "m.joblib"
    joblib.dump(unfitted, path)
    name = type(unfitted).__name__
    with pytest.raises(SpecError, match=rf"^stage 'm': {name} has no n_features_in_: it does not"):
        Pipeline(X, [Estimator(model=str(path), name="m")], sink=str(tmp_path / "out.npy")).run()
    assert sorted(os.listdir(tmp_path)) == ["m.joblib"]


def test_saved_model_fitted_on_other_features(rng, tmp_path):
    X, _y = data(rng)
    path = tmp_path / "m.joblib"
    joblib.dump(LinearRegression().fit(np.ones((4, 5)), np.arange(4)), path)
    stage = Estimator(model=str(path), name="lr")
    with pytest.raises(
        SpecError,
        match=rf"^stage 'lr'\.model: model {path} was fitted on 5 "
        r"features, but its input has 3 columns$",
    ):
        Pipeline(X, [stage]).plan()


def test_saved_model_missing_or_unreadable(rng, tmp_path):
    X, _ = data(rng)
    missing = tmp_path / "none.joblib"
    with pytest.raises(SourceError, match=rf"^stage 'm': model file not found: {missing}$"):
        Pipeline(X, [Estimator(model=str(missing), name="m")]).plan()
    garbage = tmp_path / "bad.joblib"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(SourceError, match=rf"^stage 'm': cannot load the model in {garbage}: "):
        Pipeline(X, [Estimator(model=str(garbage), name="m")]).plan()


def test_typos_in_features_and_target_are_one_spec_error(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "label": [0, 1]}), path)
    stage = Estimator("sklearn.linear_model.SGDClassifier", features=["a", "c"], target="lable")
    with pytest.raises(SpecError) as caught:
        Pipeline({"parquet": str(path)}, [stage]).plan()
    assert [str(issue) for issue in caught.value.issues] == [
        "stage 'SGDClassifier': features: unknown column 'c'; available columns: a, label",
        "stage 'SGDClassifier': target: unknown column 'lable' (did you mean 'label'?); "
        "available columns: a, label",
    ]


def table_model(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, pa.Table, np.ndarray]:
    """A classifier fitted on columns f0-f3 of a table that also has 'cat' and 'label'.

    Returns the table's file, the table and the model's probabilities of class 1.
    """
    X = rng.standard_normal((N, 4))
    table = pa.table(
        {
            **{f"f{j}": X[:, j] for j in range(4)},
            "cat": ["a", "b"] * (N // 2),
            "label": (X[:, 0] > 0).astype(np.int64),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    fit = Estimator(
        "sklearn.linear_model.LogisticRegression",
        features=["f0", "f1", "f2", "f3"],
        target="label",
        apply="predict_proba",
        name="clf",
    )
    result = Pipeline({"parquet": str(path)}, [fit], sink={"models": str(tmp_path / "m")}).run(
        progress=False
    )
    return path, table, result.models["clf"].predict_proba(X)[:, 1]


def test_a_saved_model_sees_the_columns_it_was_fitted_on(tmp_path, rng):
    path, _, expected = table_model(tmp_path, rng)
    model = str(tmp_path / "m" / "clf.joblib")
    # No features given: the model card's, not every column ('cat' is text).
    out = Pipeline(
        {"parquet": str(path)}, [Estimator(model=model, apply="predict_proba", name="clf")]
    ).run(progress=False)
    np.testing.assert_array_equal(out.output.column("clf_1").to_numpy(), expected)
    # The same columns in another order would give wrong answers: refused.
    reordered = Estimator(
        model=model, apply="predict_proba", features=["f3", "f2", "f1", "f0"], name="clf"
    )
    with pytest.raises(
        SpecError,
        match=r"^stage 'clf'\.features: model .*clf\.joblib was fitted on the columns "
        r"\['f0', 'f1', 'f2', 'f3'\] \(see .*clf\.json\), in that order, but the stage "
        r"gives \['f3', 'f2', 'f1', 'f0'\]: leave features out to use the saved ones$",
    ):
        Pipeline({"parquet": str(path)}, [reordered]).plan()
    # A table without one of them: named as the features it misses.
    with pytest.raises(SpecError, match=r"features: unknown column 'f3'; available columns: "):
        Pipeline(
            {"parquet": str(path), "columns": ["f0", "f1", "f2", "label"]},
            [Estimator(model=model, name="clf")],
        ).plan()


def test_a_model_fitted_on_every_column_records_them(tmp_path, rng):
    path, table, _ = table_model(tmp_path, rng)
    pq.write_table(table.drop_columns(["cat"]), path)
    fit = Estimator("sklearn.linear_model.LogisticRegression", target="label", name="all")
    Pipeline({"parquet": str(path)}, [fit], sink={"models": str(tmp_path / "m")}).run(
        progress=False
    )
    card = json.loads((tmp_path / "m" / "all.json").read_text())
    assert card["features"] == ["f0", "f1", "f2", "f3"]
    # The same columns stored in another order: applied by name, not by position.
    pq.write_table(table.select(["label", "f3", "f2", "f1", "f0"]), path)
    out = Pipeline(
        {"parquet": str(path)},
        [Estimator(model=str(tmp_path / "m" / "all.joblib"), apply="predict_proba", name="p")],
    ).run(progress=False)
    model = joblib.load(tmp_path / "m" / "all.joblib")
    X = np.column_stack([table.column(f"f{j}").to_numpy() for j in range(4)])
    np.testing.assert_array_equal(out.output.column("p_1").to_numpy(), model.predict_proba(X)[:, 1])


def test_a_model_fitted_on_a_dataframe_sees_its_own_columns(tmp_path, rng):
    # No model card: the model's feature_names_in_ says which columns, in order.
    pd = pytest.importorskip("pandas")
    path, table, _ = table_model(tmp_path, rng)
    frame = pd.DataFrame({f"f{j}": table.column(f"f{j}").to_numpy() for j in range(4)})
    model = LogisticRegression().fit(frame, table.column("label").to_numpy())
    joblib.dump(model, tmp_path / "df.joblib")
    pq.write_table(table.select(["label", "f3", "f2", "f1", "f0"]), path)
    stage = {"model": str(tmp_path / "df.joblib"), "apply": "predict_proba", "name": "p"}
    out = Pipeline({"parquet": str(path)}, [stage]).run(progress=False)
    expected = model.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(out.output.column("p_1").to_numpy(), expected, rtol=1e-12)
    with pytest.raises(
        SpecError,
        match=r"^stage 'p'\.features: model .*df\.joblib was fitted on the columns "
        r"\['f0', 'f1', 'f2', 'f3'\] \(see its feature_names_in_\), in that order",
    ):
        Pipeline({"parquet": str(path)}, [{**stage, "features": ["f3", "f2", "f1", "f0"]}]).plan()


@pytest.mark.parametrize(
    ("card", "match"),
    [
        pytest.param(
            {"estimator": "sklearn.linear_model._ridge.Ridge", "n_features_in": 4},
            r"describes a sklearn\.linear_model\._ridge\.Ridge fitted on 4 features, not this "
            r"sklearn\.linear_model\._logistic\.LogisticRegression fitted on 4: save a model "
            r"with its card \(sink\.models\), or remove the card$",
            id="another-model",
        ),
        pytest.param(
            {"features": "f0"}, r"is not one chunkline wrote: no list of features", id="not-a-list"
        ),
        pytest.param([1, 2], r"is not one chunkline wrote", id="not-a-mapping"),
    ],
)
def test_a_model_card_that_does_not_fit_the_model(tmp_path, rng, card, match):
    path, _, _ = table_model(tmp_path, rng)
    (tmp_path / "m" / "clf.json").write_text(json.dumps(card))
    with pytest.raises(
        SourceError, match=r"^stage 'clf': the model card .*clf\.json of .* " + match
    ):
        Pipeline(
            {"parquet": str(path)},
            [Estimator(model=str(tmp_path / "m" / "clf.joblib"), name="clf")],
        ).plan()


def test_output_names_that_do_not_fit_the_model(tmp_path, rng):
    path, _, _ = table_model(tmp_path, rng)
    stage = Estimator(model=str(tmp_path / "m" / "clf.joblib"), output=["a", "b"], name="clf")
    with pytest.raises(
        SpecError,
        match=r"^stage 'clf'\.output: the model gives 1 value\(s\) per row, but output names "
        r"2 column\(s\): \['a', 'b'\]$",
    ):
        Pipeline({"parquet": str(path)}, [stage]).plan()


@pytest.mark.parametrize(
    ("stage", "width"),
    [
        pytest.param({"sklearn": "sklearn.linear_model.Ridge", "target": "label"}, 1, id="predict"),
        pytest.param(
            {
                "sklearn": "sklearn.linear_model.SGDClassifier",
                "params": {"loss": "log_loss"},
                "classes": [0, 1],
                "apply": "predict_proba",
                "target": "label",
            },
            2,
            id="predict_proba-of-given-classes",
        ),
        pytest.param(
            {"sklearn": "sklearn.decomposition.PCA", "params": {"n_components": 2}},
            2,
            id="n_components",
        ),
    ],
)
def test_output_names_the_spec_can_count_are_checked_before_the_fit(tmp_path, rng, stage, width):
    path, _, _ = table_model(tmp_path, rng)
    features = ["f0", "f1", "f2", "f3"]
    spec = {
        "source": {"parquet": str(path)},
        "stages": [{"name": "m", "features": features, "output": ["a", "b", "c"], **stage}],
    }
    with pytest.raises(
        SpecError,
        match=rf"^stage 'm'\.output: the model gives {width} value\(s\) per row, but output "
        r"names 3 column\(s\)",
    ):
        Pipeline.from_dict(spec).plan()  # as validate and explain do: nothing fitted


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param(
            {"sklearn": "sklearn.kernel_approximation.Nystroem", "params": {"n_components": 200}},
            id="fewer-rows-than-components",
        ),
        pytest.param(
            {
                "sklearn": "sklearn.linear_model.SGDClassifier",
                "params": {"loss": "log_loss"},
                "classes": [0, 1, 1],
                "apply": "predict_proba",
                "target": "label",
            },
            id="a-class-listed-twice",
        ),
    ],
)
def test_output_names_the_spec_cannot_count_wait_for_the_model(tmp_path, rng, stage):
    path, _, _ = table_model(tmp_path, rng)
    names = ["a", "b"] if "classes" in stage else [f"c{j}" for j in range(N)]
    spec = {
        "source": {"parquet": str(path)},
        "stages": [{"name": "m", "features": ["f0", "f1", "f2", "f3"], "output": names, **stage}],
    }
    table = Pipeline.from_dict(spec).run(progress=False).output
    assert table.column_names[-len(names) :] == names


def test_a_saved_model_refuses_nans_as_its_fit_did(tmp_path, rng):
    path, table, _ = table_model(tmp_path, rng)
    f2 = table.column("f2").to_numpy().copy()
    f2[95] = np.nan
    pq.write_table(table.set_column(2, "f2", pa.array(f2)), path)
    model = str(tmp_path / "m" / "clf.joblib")
    with pytest.raises(
        StageError,
        match=r"^stage 'clf' failed on chunk 0 \(.*\): Input X contains 1 NaN value\(s\) in "
        r"column 'f2'; model .*clf\.joblib does not accept missing values",
    ) as caught:
        Pipeline({"parquet": str(path)}, [Estimator(model=model, name="clf")]).run(progress=False)
    assert caught.value.data_error


def test_a_skops_forest_loads_only_with_its_types_trusted(tmp_path, rng):
    pytest.importorskip("skops")
    from sklearn.ensemble import RandomForestClassifier

    X = rng.standard_normal((N, D))
    y = (X[:, 0] > 0).astype(int)
    fit = Estimator(RandomForestClassifier(n_estimators=5, random_state=0), name="rf")
    forest = (
        Pipeline(ArraySource(X, y), [fit], sink={"models": str(tmp_path / "m")})
        .run(progress=False)
        .models["rf"]
    )
    np.save(tmp_path / "x.npy", X)
    saved = str(tmp_path / "m" / "rf.skops")
    with pytest.raises(
        SourceError,
        match=r"cannot load the model in .*rf\.skops: ValueError: it holds types that skops "
        r"does not trust by default: \['sklearn\.tree\._tree\.Tree'\]\. If you made the "
        r"file, or trust its source, list them in the stage's trusted: ",
    ):
        Pipeline(str(tmp_path / "x.npy"), [Estimator(model=saved, name="rf")]).run(progress=False)
    trusting = Estimator(model=saved, apply="predict_proba", trusted=["sklearn.tree._tree.Tree"])
    # On loky, each worker loads the file itself, trusting the same types.
    out = Pipeline(str(tmp_path / "x.npy"), [trusting], n_jobs=2, backend="loky").run(
        progress=False
    )
    np.testing.assert_array_equal(out.output, forest.predict_proba(X))
    # Written back as given, and only where given.
    (spec,) = Pipeline(str(tmp_path / "x.npy"), [trusting]).to_dict()["stages"]
    assert spec["trusted"] == ["sklearn.tree._tree.Tree"]
    (plain,) = Pipeline(str(tmp_path / "x.npy"), [Estimator(model=saved)]).to_dict()["stages"]
    assert "trusted" not in plain
    with pytest.raises(SpecError, match=r"^trusted: only used to load a model: file ending in"):
        Estimator(model=str(tmp_path / "m" / "rf.joblib"), trusted=["sklearn.tree._tree.Tree"])


def test_a_worker_reloads_a_model_copied_over_with_its_old_time(tmp_path, rng):
    # cp -p or rsync -t keep the modification time, and models of one shape
    # pickle to the same size: the change time still tells the files apart.
    from stages.learning import _WORKER_MODEL

    X = rng.standard_normal((N, D))
    path = tmp_path / "lr.joblib"
    first, second = (LinearRegression().fit(X, X @ w) for w in (np.ones(D), -np.ones(D)))
    joblib.dump(first, path)
    stamp = path.stat()
    assert _WORKER_MODEL.get(str(path), False, ()).coef_.tolist() == first.coef_.tolist()
    joblib.dump(second, path)  # written in place: the same file, the same inode
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_size) == (stamp.st_ino, stamp.st_size)
    assert _WORKER_MODEL.get(str(path), False, ()).coef_.tolist() == second.coef_.tolist()


def test_a_worker_keeps_the_few_models_a_pass_applies(tmp_path, rng, monkeypatch):
    # Two saved models applied in each chunk: each loaded once, not once per chunk.
    from stages import learning

    X = rng.standard_normal((N, D))
    paths = []
    for i in range(learning._WorkerModel.KEEP + 1):
        paths.append(str(tmp_path / f"m{i}.joblib"))
        joblib.dump(LinearRegression().fit(X, X @ np.full(D, float(i))), paths[-1])
    loaded = []
    load = learning.load_model
    monkeypatch.setattr(learning, "load_model", lambda p, t=(): loaded.append(p) or load(p, t))
    cache = learning._WorkerModel()
    for _ in range(3):  # chunks
        coefs = [cache.get(p, False, ()).coef_[0] for p in paths[:2]]
        np.testing.assert_allclose(coefs, [0.0, 1.0], atol=1e-9)
    assert loaded == paths[:2]
    for path in paths:  # more than it keeps: the least recently used goes
        cache.get(path, False, ())
    assert list(cache.models) == paths[1:]


def test_a_model_file_that_is_not_a_model(tmp_path, rng):
    X, _ = data(rng)
    card = tmp_path / "clf.json"
    card.write_text("{}")
    with pytest.raises(
        SpecError,
        match=rf"^stage 'm'\.model: {card} is a model card .*: the \.joblib or \.skops file",
    ):
        Pipeline(X, [Estimator(model=str(card), name="m")]).plan()
    other = tmp_path / "d.joblib"
    joblib.dump({"a": 1}, other)
    for apply in ("predict", None):  # given, or the default for what the file holds
        with pytest.raises(
            SpecError, match=rf"^stage 'm'\.apply: {other} holds a dict, which has no predict$"
        ):
            Pipeline(X, [Estimator(model=str(other), apply=apply, name="m")]).plan()


# ---------------------------------------------------------------- bad data, failing fits


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param({"sklearn": "sklearn.naive_bayes.GaussianNB"}, id="merge"),
        pytest.param({"sklearn": "sklearn.linear_model.SGDClassifier"}, id="partial_fit"),
        pytest.param({"sklearn": "sklearn.linear_model.LogisticRegression"}, id="full"),
        pytest.param(
            {"sklearn": "sklearn.linear_model.LogisticRegression", "fit": "sample"}, id="sample"
        ),
    ],
)
def test_nans_an_estimator_refuses_name_the_stage_and_chunk(rng, save_npy, stage):
    X, y = data(rng)
    X[95, 2] = np.nan
    spec = {
        "source": {"npy": save_npy("x", X), "y": save_npy("y", y)},
        "chunks": CHUNK,
        "parallel": {"n_jobs": 2},
        "stages": [{"name": "model", **stage}],
    }
    with pytest.raises(
        StageError,
        match=r"^stage 'model' failed on chunk 2 \(rows 80-120\): "
        r"Input X contains 1 NaN value\(s\) in column 2; \w+ does not "
        r"accept missing values: drop those rows first",
    ):
        Pipeline.from_dict(spec).run(progress=False)


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param({"sklearn": "sklearn.naive_bayes.GaussianNB"}, id="merge"),
        # A first pass finds the classes: NaN must not become one.
        pytest.param({"sklearn": "sklearn.linear_model.SGDClassifier"}, id="partial_fit"),
        pytest.param({"sklearn": "sklearn.linear_model.Ridge"}, id="full"),
    ],
)
def test_nan_targets_name_the_stage_and_chunk(rng, save_npy, stage):
    X, y = data(rng)
    y = y.astype(np.float64)
    y[50] = np.nan
    spec = {
        "source": {"npy": save_npy("x", X), "y": save_npy("y", y)},
        "chunks": CHUNK,
        "stages": [{"name": "model", **stage}],
    }
    with pytest.raises(
        StageError,
        match=r"^stage 'model' failed on chunk 1 \(rows 40-80\): source\.y has 1 NaN or "
        r"infinite value\(s\); \w+ learns from finite targets only",
    ):
        Pipeline.from_dict(spec).run(progress=False)


def test_an_unsupervised_stage_ignores_the_targets(rng):
    X, y = data(rng)
    y = np.full(len(X), np.nan)  # not the scaler's business
    result = Pipeline(ArraySource(X, y), [Estimator(StandardScaler())], chunks=CHUNK).run()
    np.testing.assert_allclose(result.output, StandardScaler().fit_transform(X), atol=1e-12)


@pytest.mark.parametrize("scaler", ["StandardScaler", "MinMaxScaler", "MaxAbsScaler"])
@pytest.mark.parametrize("dtype", [np.float64, np.longdouble])
def test_infinities_a_scaler_refuses_name_the_stage_and_chunk(rng, scaler, dtype):
    # The scalers take NaNs but not infinities, including long doubles that
    # become infinite as float64 (the type scikit-learn converts them to).
    X, _ = data(rng)
    X = X.astype(dtype)
    X[95, 1] = np.inf if dtype is np.float64 else np.longdouble("1e400")
    stage = Estimator(f"sklearn.preprocessing.{scaler}", name="scale")
    with pytest.raises(
        StageError,
        match=r"^stage 'scale' failed on chunk 2 \(rows 80-120\): "
        r"Input X contains infinity in column 1",
    ):
        Pipeline(X, [stage], chunks=CHUNK, n_jobs=2).run(progress=False)


def test_a_label_outside_the_given_classes(rng):
    X, y = data(rng)
    y[45] = 7
    stage = Estimator("sklearn.linear_model.SGDClassifier", classes=[0, 1], name="clf")
    with pytest.raises(
        StageError,
        match=r"^stage 'clf' failed on chunk 1 \(rows 40-80\): "
        r"label\(s\) \[7\] are not among the classes \[0, 1\]",
    ):
        Pipeline(ArraySource(X, y), [stage], chunks=CHUNK, n_jobs=2).run(progress=False)


def test_a_partial_fit_failing_in_the_parent_names_its_chunk(rng):
    X, _ = data(rng)
    stage = Estimator("sklearn.cluster.MiniBatchKMeans", params={"n_clusters": 50}, name="km")
    # partial_fit runs in the parent; the first chunk has fewer rows than clusters.
    with pytest.raises(
        StageError,
        match=r"^stage 'km' failed on chunk 0 \(rows 0-40\): "
        r"ValueError: n_samples=40 should be >= n_clusters=50",
    ):
        Pipeline(X, [stage], chunks=CHUNK, n_jobs=2).run(progress=False)


def test_a_failing_full_fit_says_so(rng):
    X, _y = data(rng)
    stage = Estimator("sklearn.linear_model.LogisticRegression", name="lr")
    with pytest.raises(
        StageError,
        match=r"^stage 'lr' failed: ValueError: This solver needs "
        r"samples of at least 2 classes .* \(in fit: full\)$",
    ):
        Pipeline(ArraySource(X, np.zeros(N, dtype=int)), [stage], n_jobs=1).run(progress=False)


# ---------------------------------------------------------------- nothing half-written


def fail_on_two_columns(X: np.ndarray) -> np.ndarray:
    """Fails on the PCA's output only: after both models are fitted and staged."""
    if X.shape[1] == 2:
        raise RuntimeError("boom")
    return X


def test_a_failure_after_the_fits_leaves_models_and_outputs_untouched(tmp_path, rng):
    X, _ = data(rng)
    models, sink = tmp_path / "models", tmp_path / "out.npy"
    models.mkdir()
    (models / "scale.joblib").write_bytes(b"the old model")
    sink.write_bytes(b"the old output")
    stages = [
        Estimator("sklearn.preprocessing.MinMaxScaler", name="scale"),
        Estimator("sklearn.decomposition.IncrementalPCA", params={"n_components": 2}, name="pca"),
        Map(fail_on_two_columns, name="late"),
    ]
    pipe = Pipeline(
        X,
        stages,
        sink={"npy": str(sink), "models": str(models)},
        chunks=CHUNK,
        n_jobs=1,
        workspace=tmp_path / "ws",
    )
    # Once the PCA is fitted, the pass after it is probed again: the map fails there.
    with pytest.raises(
        StageError,
        match=r"^stage 'late' failed: RuntimeError: boom \(while "
        r"checking the stage on the first 16 rows",
    ):
        pipe.run(progress=False)
    assert sorted(os.listdir(models)) == ["scale.joblib"]
    assert (models / "scale.joblib").read_bytes() == b"the old model"
    assert sink.read_bytes() == b"the old output"
    assert sorted(os.listdir(tmp_path)) == ["models", "out.npy", "ws"]
    assert os.listdir(tmp_path / "ws") == []


def test_a_models_folder_made_for_a_failed_run_is_removed(tmp_path, rng):
    X, y = data(rng)
    X[100, 0] = np.nan
    models = tmp_path / "new" / "models"
    stage = Estimator("sklearn.linear_model.LogisticRegression", name="lr")
    pipe = Pipeline(
        ArraySource(X, y),
        [Estimator("sklearn.preprocessing.StandardScaler"), stage],
        sink={"models": str(models)},
        chunks=CHUNK,
        n_jobs=1,
    )
    with pytest.raises(StageError, match="stage 'lr' failed on chunk 2"):
        pipe.run(progress=False)
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- through the CLI


def test_cli_exit_codes_for_estimator_stages(tmp_path, rng):
    X, y = data(rng)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    spec = {
        "source": {"npy": "x.npy", "y": "y.npy"},
        "stages": [
            {"name": "clf", "sklearn": "sklearn.linear_model.SGDClassifier", "fit": "merge"}
        ],
    }
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec))
    result = chunkline(tmp_path, "run", "bad.yaml")
    assert result.returncode == 2, result.stderr
    assert "stages[0] (clf).fit: SGDClassifier has no exact merge" in result.stderr
    X[50, 1] = np.nan
    np.save(tmp_path / "x.npy", X)
    spec["stages"][0]["fit"] = "partial_fit"
    spec["chunks"] = {"rows": CHUNK}
    spec["sink"] = {"npy": "out/p.npy", "models": "out/models"}
    (tmp_path / "nan.yaml").write_text(yaml.safe_dump(spec))
    result = chunkline(tmp_path, "run", "nan.yaml")
    assert result.returncode == 1, result.stderr
    assert "stage 'clf' failed on chunk 1 (rows 40-80): Input X contains 1 NaN" in (result.stderr)
    assert not (tmp_path / "out").exists()


def test_a_model_that_cannot_be_saved_leaves_no_file_behind(tmp_path, rng):
    from sklearn.preprocessing import FunctionTransformer

    X, _ = data(rng)
    models = tmp_path / "out" / "models"
    # A lambda inside the model: pickle (joblib) cannot save it.
    stage = Estimator(FunctionTransformer(func=lambda a: a + 1.0), name="ft")
    pipe = Pipeline(
        X, [stage], sink={"npy": str(tmp_path / "out" / "x.npy"), "models": str(models)}, n_jobs=1
    )
    with pytest.raises(
        SinkError,
        match=r"^sink\.models: cannot save the model of stage 'ft' "
        r"into .*models: PicklingError",
    ):
        pipe.run(progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stale", ["file", "link"])
def test_a_saved_model_replaces_every_file_of_the_earlier_one(tmp_path, rng, monkeypatch, stale):
    # No .skops this time (as if skops were not installed): the earlier one is
    # stale and goes; if it is a link, the link goes, not what it points to.
    X, _ = data(rng)
    models = tmp_path / "models"
    models.mkdir()
    elsewhere = tmp_path / "precious.skops"
    elsewhere.write_bytes(b"not ours")
    if stale == "file":
        (models / "scale.skops").write_bytes(b"an older model")
    else:
        (models / "scale.skops").symlink_to(elsewhere)
    monkeypatch.setitem(sys.modules, "skops.io", None)
    Pipeline(
        X,
        [Estimator("sklearn.preprocessing.StandardScaler", name="scale")],
        sink={"models": str(models)},
        n_jobs=1,
    ).run(progress=False)
    assert sorted(os.listdir(models)) == ["scale.joblib", "scale.json"]
    assert elsewhere.read_bytes() == b"not ours"


def test_a_fit_stage_name_must_be_a_file_name():
    spec_error(
        {"name": "../up", "sklearn": "sklearn.preprocessing.StandardScaler"},
        r"^stages\[0\] \(\.\./up\)\.name: '\.\./up' names the stage's model files",
    )


def test_apply_of_a_saved_model_is_one_of_the_apply_methods():
    spec_error(
        {"model": "m.joblib", "apply": "fit"},
        r"^stages\[0\] \(s\)\.apply: expected one of transform, predict, predict_proba, "
        r"decision_function, score_samples, got 'fit'",
    )


def test_a_seed_where_nothing_is_drawn():
    spec_error(
        {"sklearn": "sklearn.preprocessing.StandardScaler", "seed": 3},
        r"^stages\[0\] \(s\)\.seed: only used with fit: sample, or shuffle_chunks "
        r"\(this stage fits by merge\)$",
    )
