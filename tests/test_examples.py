"""Every example in examples/ runs, as a user would run it, on a copy of data/.

Spec files run with ``chunkline run``, scripts with ``python``, from a folder
that looks like the repository root; the quickstart's outputs are checked
against the same computation in plain NumPy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from sklearn.decomposition import IncrementalPCA
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.preprocessing import StandardScaler

from pipeline import load_spec
from pipeline.cli import main
from stages import load_model

REPO = Path(__file__).resolve().parent.parent

#: The folder the examples ran in, and each example's finished process.
Ran = tuple[Path, dict[str, subprocess.CompletedProcess[str]]]
EXAMPLES = sorted(
    p.relative_to(REPO).as_posix()
    for pattern in ("*.yaml", "*.yml", "*.toml", "*.py")
    for p in (REPO / "examples").glob(pattern)
)


def command_for(example: str) -> list[str]:
    if example.endswith(".py"):
        return [sys.executable, example]
    return [sys.executable, "-m", "pipeline.cli", "run", example]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """Copy examples/ and data/ into a fresh folder and run every example there once."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "examples", root / "examples")
    shutil.copytree(REPO / "data", root / "data")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the examples must work with the installed package only
    results = {}
    for example in EXAMPLES:
        results[example] = subprocess.run(
            command_for(example),
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    return root, results


def test_there_are_examples() -> None:
    assert any(e.endswith(".py") for e in EXAMPLES)
    assert any(e.endswith((".yaml", ".yml", ".toml")) for e in EXAMPLES)
    assert "examples/quickstart.yaml" in EXAMPLES
    assert "examples/quickstart.py" in EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(
    ran: Ran,
    example: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, results = ran
    result = results[example]
    assert result.returncode == 0, f"{example} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    if not example.endswith(".py"):
        # Every output the spec declares exists, and nothing temporary is left.
        monkeypatch.chdir(root)
        sink = load_spec(example).sink
        for path in (sink.npy, sink.y, sink.reductions):
            if path is not None:
                assert (root / path).is_file(), f"{example} did not write {path}"
        if sink.models is not None:
            assert any((root / sink.models).glob("*.joblib")), f"{example} saved no model"
        for folder in {(root / p).parent for p in (sink.npy, sink.reductions) if p}:
            assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def quickstart_reference(root: Path) -> tuple[np.ndarray, np.ndarray]:
    x = np.load(root / "data" / "features.npy")
    y = np.load(root / "data" / "targets.npy")
    keep = np.isfinite(x).all(axis=1)
    return np.arcsinh(np.clip(x[keep], -1000, 1000)), y[keep]


def test_quickstart_spec_matches_numpy(
    ran: Ran,
) -> None:
    root, results = ran
    assert results["examples/quickstart.yaml"].returncode == 0
    want_x, want_y = quickstart_reference(root)
    got_x = np.load(root / "out" / "quickstart.npy")
    got_y = np.load(root / "out" / "quickstart_targets.npy")
    assert got_x.dtype == want_x.dtype and got_y.dtype == want_y.dtype
    np.testing.assert_array_equal(got_x, want_x)
    np.testing.assert_array_equal(got_y, want_y)
    assert 0 < len(want_x) < 50_000  # the sample data does have rows to drop

    stats = json.loads((root / "out" / "quickstart_stats.json").read_text())
    assert list(stats) == ["raw", "stats", "hist"]
    assert stats["raw"] == 50_000
    moments = stats["stats"]
    assert moments["count"] == len(want_x)
    np.testing.assert_allclose(moments["mean"], want_x.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(moments["std"], want_x.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(moments["min"], want_x.min(axis=0))
    np.testing.assert_array_equal(moments["max"], want_x.max(axis=0))
    hist = stats["hist"]
    np.testing.assert_allclose(hist["edges"], np.linspace(-8, 8, 9))
    want_counts = [np.histogram(col, bins=8, range=(-8, 8))[0].tolist() for col in want_x.T]
    assert hist["counts"] == want_counts

    # The CLI printed its report and the same reductions.
    stdout = results["examples/quickstart.yaml"].stdout
    assert stdout.startswith("quickstart: done in ")
    assert json.loads(stdout[stdout.index("{") :]) == stats


def test_quickstart_script_matches_the_spec(
    ran: Ran,
) -> None:
    root, results = ran
    result = results["examples/quickstart.py"]
    assert result.returncode == 0, result.stderr
    want_x, want_y = quickstart_reference(root)
    np.testing.assert_array_equal(np.load(root / "out" / "quickstart_py.npy"), want_x)
    np.testing.assert_array_equal(np.load(root / "out" / "quickstart_py_targets.npy"), want_y)
    # Same data as the YAML quickstart, byte for byte.
    assert (root / "out" / "quickstart_py.npy").read_bytes() == (
        root / "out" / "quickstart.npy"
    ).read_bytes()
    out = result.stdout
    assert "pass 1 of 1" in out  # it printed its plan
    assert f"kept {len(want_x)} of 50000 rows" in out
    negative = int((want_x[:, 0] < 0).sum())
    assert f"rows with a negative first column: {negative}" in out


def test_design_example_matches_numpy(
    ran: Ran,
) -> None:
    root, results = ran
    result = results["examples/design_example.yaml"]
    assert result.returncode == 0, result.stderr
    x = StandardScaler().fit_transform(np.nan_to_num(np.load(root / "data" / "features.npy")))
    np.testing.assert_allclose(np.load(root / "out" / "features_scaled.npy"), x, atol=1e-12)
    stdout = result.stdout
    moments = json.loads(stdout[stdout.index("{") :])["stats"]
    assert moments["count"] == len(x)
    np.testing.assert_allclose(moments["mean"], x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments["std"], x.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(moments["min"], x.min(axis=0))
    np.testing.assert_array_equal(moments["max"], x.max(axis=0))


def test_example_specs_validate_and_explain(
    ran: Ran, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process: the commands are the CLI's own entry point, without paying
    # a fresh interpreter and scikit-learn import for each of them.
    root, _ = ran
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", [str(root / "examples"), *sys.path])
    for example in EXAMPLES:
        if example.endswith(".py"):
            continue
        for command in ("validate", "explain"):
            code = main([command, example])
            out, err = capsys.readouterr()
            assert code == 0, f"{command} {example}:\n{err}"
            assert out.strip()


def events_reference(root: Path) -> pa.Table:
    """The ETL example computed by pyarrow on the whole dataset."""
    table = ds.dataset(root / "data" / "events", partitioning="hive").to_table(
        columns=["id", "a", "b", "c", "d", "cat", "day"],
        filter=(pc.field("a") > 0) & pc.field("day").isin([1, 2]),
    )
    table = table.set_column(3, "c", pc.fill_null(table["c"], 0.0))
    e = pc.add(pc.multiply(table["a"], table["b"]), pc.log1p(pc.abs(table["d"])))
    table = table.append_column("e", e)
    return table.filter(pc.less(table["e"], 50))


def test_events_etl_matches_pyarrow(ran: Ran) -> None:
    root, results = ran
    result = results["examples/events_etl.yaml"]
    assert result.returncode == 0, result.stderr
    expected = events_reference(root)
    out = root / "out" / "events_clean"
    assert (out / "_SUCCESS").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        f"cat={c}" for c in sorted(set(expected["cat"].to_pylist()))
    ]
    written = ds.dataset(out, partitioning="hive").to_table().sort_by("id")
    expected = expected.sort_by("id")
    assert written["id"].to_pylist() == expected["id"].to_pylist()
    np.testing.assert_allclose(written["e"].to_numpy(), expected["e"].to_numpy(), rtol=1e-12)
    assert written["cat"].to_pylist() == expected["cat"].to_pylist()

    profile = json.loads((root / "out" / "events_profile.json").read_text())
    e = expected["e"].to_numpy()
    assert profile["profile"]["e"]["count"] == len(e)
    np.testing.assert_allclose(profile["profile"]["e"]["mean"], e.mean(), rtol=1e-12)
    np.testing.assert_allclose(profile["profile"]["e"]["std"], e.std(), rtol=1e-10)
    assert profile["profile"]["c"]["nulls"] == 0  # filled before the tap
    by_cat = {row["cat"]: row for row in profile["by_cat"]}
    for cat in set(expected["cat"].to_pylist()):
        rows = expected.filter(pc.equal(expected["cat"], cat))
        assert by_cat[cat]["e_count"] == rows.num_rows
        np.testing.assert_allclose(by_cat[cat]["e_sum"], pc.sum(rows["e"]).as_py(), rtol=1e-12)
        assert by_cat[cat]["b_max"] == pc.max(rows["b"]).as_py()


def test_issue_specs_match_scikit_learn(ran: Ran) -> None:
    root, results = ran
    for name in ("issue_scale_pca", "issue_churn_model"):
        assert results[f"examples/{name}.yaml"].returncode == 0
    X = np.load(root / "data" / "customers.npy")
    y = np.load(root / "data" / "churned.npy")
    # scale-pca: one chunk of 50,000 rows covers the 20,000 customers.
    scaled = StandardScaler().fit_transform(X)
    expected = IncrementalPCA(5).partial_fit(scaled).transform(scaled)
    np.testing.assert_allclose(np.load(root / "out" / "pca.npy"), expected, atol=1e-9)
    # churn-model: partial_fit on the chunks in order; the saved model made the output.
    model = load_model(root / "out" / "models" / "clf.joblib")
    reference = SGDClassifier(loss="log_loss", random_state=0)
    for start in range(0, len(X), 20_000):  # the default chunk size holds every row
        reference.partial_fit(X[start : start + 20_000], y[start : start + 20_000], classes=[0, 1])
    np.testing.assert_array_equal(model.coef_, reference.coef_)
    np.testing.assert_array_equal(np.load(root / "out" / "proba.npy"), model.predict_proba(X))
    assert sorted(os.listdir(root / "out" / "models")) == ["clf.joblib", "clf.json", "clf.skops"]


def test_churn_search_keeps_the_best_of_its_trials(ran: Ran) -> None:
    root, results = ran
    assert results["examples/churn_search.yaml"].returncode == 0
    trials = (root / "out" / "churn_models" / "search-trials.csv").read_text().splitlines()
    assert trials[0].replace('"', "") == (
        "candidate,estimator,learning_rate,max_iter,max_leaf_nodes,random_state,score,"
        "fit_seconds,best"
    )
    assert len(trials) == 5 and sum(line.endswith("true") for line in trials) == 1
    best = load_model(root / "out" / "churn_models" / "search.joblib")
    scale = load_model(root / "out" / "churn_models" / "scale.joblib")
    X = np.load(root / "data" / "customers.npy")
    np.testing.assert_array_equal(
        np.load(root / "out" / "churn_proba.npy"), best.predict_proba(scale.transform(X))
    )


def test_events_model_adds_the_predicted_category(ran: Ran) -> None:
    root, results = ran
    assert results["examples/events_model.yaml"].returncode == 0
    table = ds.dataset(root / "data" / "events", partitioning="hive").to_table(
        columns=["id", "a", "b", "c", "d", "cat"]
    )
    table = table.set_column(3, "c", pc.fill_null(table["c"], 0.0))
    X = np.column_stack([table[c].to_numpy() for c in "abcd"])
    scaled = StandardScaler().fit_transform(X)
    expected = GaussianNB().fit(scaled, table["cat"].to_numpy(zero_copy_only=False))
    written = ds.dataset(root / "out" / "events_model").to_table().sort_by("id")
    assert written.column_names == ["id", "a", "b", "c", "d", "cat", "predicted_cat"]
    np.testing.assert_allclose(
        np.column_stack([written[c].to_numpy() for c in "abcd"]), scaled, atol=1e-12
    )
    agree = np.mean(
        written["predicted_cat"].to_numpy(zero_copy_only=False) == expected.predict(scaled)
    )
    assert agree > 0.999  # the merged fit equals the in-memory one to rounding
