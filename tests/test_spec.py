"""Spec files and spec mappings: parsing, equivalence, round trips, and every spec error.

Every error is a :class:`pipeline.SpecError` (also a ``ValueError``) whose message
names the field path, what was found and what is allowed; all problems in one
spec are reported together.
"""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import (
    ChunklineError,
    ChunkSpec,
    Filter,
    Map,
    Pipeline,
    Reduce,
    SpecError,
    SpecIssue,
    load_spec,
)

YAML_SPEC = """\
name: tiny
source: {npy: data/x.npy, y: data/y.npy}
chunks: {rows: 25, overlap: 1}
parallel: {n_jobs: 2, backend: threading}
workspace: ws
stages:
  - name: finite
    filter: finite_rows
  - name: clip
    map: clip
    params: {min: -1.5, max: 1.5}
  - name: compress
    map: numpy:arcsinh
    n_jobs: 1
  - name: clean
    map: numpy.nan_to_num
  - name: stats
    reduce: moments
  - name: hist
    reduce: histogram
    params: {bins: 4, range: [-2, 2]}
sink:
  npy: out/x.npy
  y: out/y.npy
  reductions: out/stats.json
"""

TOML_SPEC = """\
name = "tiny"
chunks = { rows = 25, overlap = 1 }
parallel = { n_jobs = 2, backend = "threading" }
workspace = "ws"

[source]
npy = "data/x.npy"
y = "data/y.npy"

[[stages]]
name = "finite"
filter = "finite_rows"

[[stages]]
name = "clip"
map = "clip"
params = { min = -1.5, max = 1.5 }

[[stages]]
name = "compress"
map = "numpy:arcsinh"
n_jobs = 1

[[stages]]
name = "clean"
map = "numpy.nan_to_num"

[[stages]]
name = "stats"
reduce = "moments"

[[stages]]
name = "hist"
reduce = "histogram"
params = { bins = 4, range = [-2, 2] }

[sink]
npy = "out/x.npy"
y = "out/y.npy"
reductions = "out/stats.json"
"""

# The smallest valid spec; error cases below change one field of it.
BASE: dict[str, Any] = {
    "name": "base",
    "source": {"npy": "data/x.npy"},
    "stages": [
        {"name": "clean", "map": "nan_to_num"},
        {"name": "scale", "map": "clip", "params": {"min": 0, "max": 1}},
        {"name": "stats", "reduce": "moments"},
    ],
    "sink": {"npy": "out/x.npy"},
}


def spec_with(**changes: Any) -> dict[str, Any]:
    """A deep copy of BASE with top-level keys replaced (``None`` deletes a key)."""
    spec = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def stage_with(index: int, **changes: Any) -> dict[str, Any]:
    """BASE with one stage's keys replaced (``None`` deletes a key)."""
    spec = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            spec["stages"][index].pop(key, None)
        else:
            spec["stages"][index][key] = value
    return spec


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- parsing


def test_yaml_and_toml_specs_give_equal_pipelines(in_tmp: Path) -> None:
    (in_tmp / "spec.yaml").write_text(YAML_SPEC)
    (in_tmp / "spec.yml").write_text(YAML_SPEC)
    (in_tmp / "spec.toml").write_text(TOML_SPEC)
    from_yaml = load_spec("spec.yaml")
    assert from_yaml == Pipeline.from_file(in_tmp / "spec.yml")
    assert from_yaml == load_spec(in_tmp / "spec.toml")
    assert from_yaml == Pipeline.from_dict(yaml.safe_load(YAML_SPEC))


def test_spec_file_parses_into_the_declared_objects(in_tmp: Path) -> None:
    (in_tmp / "spec.yaml").write_text(YAML_SPEC)
    p = load_spec("spec.yaml")
    assert p.name == "tiny"
    assert p.n_jobs == 2 and p.backend == "threading"
    assert p.chunks == ChunkSpec(rows=25, overlap=1)
    assert [(s.name, s.kind) for s in p.stages] == [
        ("finite", "filter"),
        ("clip", "map"),
        ("compress", "map"),
        ("clean", "map"),
        ("stats", "reduce"),
        ("hist", "reduce"),
    ]
    assert p.stages[2].n_jobs == 1
    assert p.stages[1].params == {"min": -1.5, "max": 1.5}
    assert p.sink.npy == "out/x.npy" and p.sink.y == "out/y.npy"
    assert p.sink.reductions == "out/stats.json"
    assert str(p.workspace) == "ws"


def test_spec_file_equals_the_same_pipeline_declared_in_python(in_tmp: Path) -> None:
    (in_tmp / "spec.yaml").write_text(YAML_SPEC)
    declared = Pipeline(
        source={"npy": "data/x.npy", "y": "data/y.npy"},
        stages=[
            Filter("finite_rows", name="finite"),
            Map("clip", name="clip", params={"min": -1.5, "max": 1.5}),
            Map("numpy:arcsinh", name="compress", n_jobs=1),
            Map("numpy.nan_to_num", name="clean"),
            Reduce("moments", name="stats"),
            Reduce("histogram", name="hist", params={"bins": 4, "range": [-2, 2]}),
        ],
        sink={"npy": "out/x.npy", "y": "out/y.npy", "reductions": "out/stats.json"},
        chunks={"rows": 25, "overlap": 1},
        n_jobs=2,
        backend="threading",
        name="tiny",
        workspace="ws",
    )
    assert declared == load_spec("spec.yaml")


def test_to_dict_round_trips_through_from_dict_and_yaml(in_tmp: Path) -> None:
    (in_tmp / "spec.toml").write_text(TOML_SPEC)
    p = load_spec("spec.toml")
    spec = p.to_dict()
    assert Pipeline.from_dict(spec) == p
    assert Pipeline.from_dict(spec).to_dict() == spec
    (in_tmp / "again.yaml").write_text(yaml.safe_dump(spec))
    assert load_spec("again.yaml") == p


def test_different_specs_are_not_equal() -> None:
    assert Pipeline.from_dict(BASE) == Pipeline.from_dict(copy.deepcopy(BASE))
    assert Pipeline.from_dict(BASE) != Pipeline.from_dict(spec_with(chunks={"rows": 10}))
    assert Pipeline.from_dict(BASE) != Pipeline.from_dict(stage_with(1, params={"min": 0}))


def test_chunk_sizes_are_normalized() -> None:
    assert Pipeline.from_dict(spec_with(chunks={"bytes": "64MB"})).chunks.bytes == 64_000_000
    assert Pipeline.from_dict(spec_with(chunks={"memory": "2GiB"})).chunks.memory == 2 * 2**30
    assert Pipeline.from_dict(spec_with(chunks={"rows": 7})).chunks == ChunkSpec(rows=7)
    assert Pipeline.from_dict(spec_with(chunks=None)).chunks == ChunkSpec()


# ---------------------------------------------------------------- spec errors


def raises_spec_error(spec: Any, match: str) -> SpecError:
    with pytest.raises(SpecError, match=match) as info:
        Pipeline.from_dict(spec)
    return info.value


def test_unknown_top_level_key_suggests_the_right_one() -> None:
    spec = spec_with(stages=None)
    spec["stagse"] = BASE["stages"]
    exc = raises_spec_error(
        spec, r"^stagse: unknown key \(did you mean 'stages'\?\); allowed keys: name, source"
    )
    assert exc.issues == (SpecIssue("stagse", exc.issues[0].message),)


def test_unknown_stage_key_suggests_the_right_one() -> None:
    spec = stage_with(1, paramz={"min": 0}, params=None)
    raises_spec_error(
        spec,
        r"^stages\[1\] \(scale\)\.paramz: unknown key \(did you mean 'params'\?\); allowed keys:",
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        pytest.param(
            stage_with(1, n_jobs="four"),
            r"^stages\[1\] \(scale\)\.n_jobs: expected a positive integer or -1, got 'four'$",
            id="stage-n_jobs-four",
        ),
        pytest.param(
            stage_with(0, n_jobs=0),
            r"^stages\[0\] \(clean\)\.n_jobs: expected a positive integer or -1, got 0$",
            id="stage-n_jobs-zero",
        ),
        pytest.param(
            spec_with(parallel={"n_jobs": -2}),
            r"^parallel\.n_jobs: expected a positive integer or -1, got -2$",
            id="parallel-n_jobs-negative",
        ),
        pytest.param(
            spec_with(parallel={"n_jobs": True}),
            r"^parallel\.n_jobs: expected a positive integer or -1, got True$",
            id="parallel-n_jobs-bool",
        ),
        pytest.param(
            spec_with(parallel={"backend": "lokky"}),
            r"^parallel\.backend: expected one of loky, threading, sequential.*"
            r"got 'lokky' \(did you mean 'loky'\?\)$",
            id="parallel-backend",
        ),
        pytest.param(
            stage_with(2, backend="threads"),
            r"^stages\[2\] \(stats\)\.backend: expected one of loky, .*got 'threads' "
            r"\(did you mean 'threading'\?\)$",
            id="stage-backend",
        ),
        pytest.param(
            spec_with(parallel={"njobs": 2}),
            r"^parallel\.njobs: unknown key \(did you mean 'n_jobs'\?\)",
            id="parallel-unknown-key",
        ),
        pytest.param(
            spec_with(parallel=[2]),
            r"^parallel: expected a mapping, got list",
            id="parallel-not-mapping",
        ),
    ],
)
def test_bad_parallel_settings(spec: dict[str, Any], match: str) -> None:
    raises_spec_error(spec, match)


@pytest.mark.parametrize(
    ("stage", "match"),
    [
        pytest.param(
            {"name": "s", "map": "clip", "filter": "finite_rows"},
            r"^stages\[1\] \(s\): a stage needs "
            r"exactly one of map, filter, reduce, model, sklearn, "
            r"train_many \(found map, filter\)",
            id="two-kinds",
        ),
        pytest.param(
            {"name": "s", "params": {"min": 0}},
            r"^stages\[1\] \(s\): a stage needs "
            r"exactly one of map, filter, reduce, model, sklearn, "
            r"train_many \(found none\)",
            id="no-kind",
        ),
        pytest.param(
            {"name": "s", "mapp": "clip"},
            r"^stages\[1\] \(s\): a stage needs "
            r"exactly one of map, filter, reduce, model, sklearn, "
            r"train_many \(found none\); unknown key 'mapp' \(did you mean 'map'\?\)",
            id="misspelt-kind",
        ),
        pytest.param(
            {"name": "s", "reduce": "momnets"},
            r"^stages\[1\] \(s\)\.reduce: unknown reduce 'momnets' \(did you mean 'moments'\?\); "
            r"built-in names: .*moments",
            id="unknown-reduction",
        ),
        pytest.param(
            {"name": "s", "map": "nan_to_nun"},
            r"^stages\[1\] \(s\)\.map: unknown map 'nan_to_nun' \(did you mean 'nan_to_num'\?\)",
            id="unknown-map",
        ),
        pytest.param(
            {"name": "s", "filter": "finite_row"},
            r"^stages\[1\] \(s\)\.filter: unknown filter 'finite_row' "
            r"\(did you mean 'finite_rows'\?\)",
            id="unknown-filter",
        ),
        pytest.param(
            {"name": "s", "map": "numpy.nan_to_numm"},
            r"^stages\[1\] \(s\)\.map: cannot import 'numpy\.nan_to_numm': module 'numpy' has no "
            r"attribute 'nan_to_numm' \(did you mean 'nan_to_num'\?\)$",
            id="missing-attribute",
        ),
        pytest.param(
            {"name": "s", "map": "nosuchmodule:f"},
            r"^stages\[1\] \(s\)\.map: cannot import 'nosuchmodule:f': cannot import module "
            r"'nosuchmodule'",
            id="missing-module",
        ),
        pytest.param(
            {"name": "s", "map": "nosuchpkg.sub.func"},
            r"^stages\[1\] \(s\)\.map: cannot import 'nosuchpkg\.sub\.func': cannot import module "
            r"'nosuchpkg",
            id="missing-dotted-module",
        ),
        pytest.param(
            {"name": "s", "map": "numpy.pi"},
            r"^stages\[1\] \(s\)\.map: 'numpy\.pi' is not callable$",
            id="not-callable",
        ),
        pytest.param(
            {"name": "s", "map": 3},
            r"^stages\[1\] \(s\)\.map: expected a name or an import string, got 3$",
            id="map-not-string",
        ),
        pytest.param(
            {"name": "s", "map": "clip", "params": [0, 1]},
            r"^stages\[1\] \(s\)\.params: expected a mapping of keyword arguments, got \[0, 1\]$",
            id="params-not-mapping",
        ),
        pytest.param(
            {"name": "s", "reduce": "histogram", "params": {"bins": 3}},
            r"^stages\[1\] \(s\)\.params: histogram needs range",
            id="histogram-without-range",
        ),
        pytest.param(
            {"name": "s", "reduce": "moments", "params": {"dof": 1}},
            r"^stages\[1\] \(s\)\.params: .*dof",
            id="reduction-bad-param",
        ),
        pytest.param(
            {"name": "s", "reduce": {"chunk": "numpy:sum"}},
            r"^stages\[1\] \(s\)\.reduce: give a reduction name \(e\.g\. 'moments'\) or both "
            r"'chunk' and 'combine'",
            id="custom-reduce-without-combine",
        ),
        pytest.param(
            {"name": "s", "reduce": {"chunk": "numpy:sum", "combine": "operator:addd"}},
            r"^stages\[1\] \(s\)\.combine: cannot import 'operator:addd': module 'operator' has no "
            r"attribute 'addd' \(did you mean 'add'\?\)",
            id="custom-reduce-bad-callable",
        ),
        pytest.param(
            {"name": "s", "reduce": {"chunk": "numpy:sum", "merge": "operator:add"}},
            r"stages\[1\] \(s\)\.reduce\.merge: unknown key",
            id="custom-reduce-unknown-key",
        ),
        pytest.param(
            {"name": 5, "map": "clip", "params": {"min": 0}},
            r"^stages\[1\]\.name: expected a string, got 5$",
            id="name-not-string",
        ),
        pytest.param(
            "clip",
            r"^stages\[1\]: expected a mapping, got str 'clip'$",
            id="stage-not-mapping",
        ),
    ],
)
def test_bad_stage(stage: Any, match: str) -> None:
    spec = copy.deepcopy(BASE)
    spec["stages"][1] = stage
    raises_spec_error(spec, match)


def test_stages_must_be_a_list() -> None:
    raises_spec_error(
        spec_with(stages={"map": "clip"}), r"^stages: expected a list of stages, got dict$"
    )


def test_duplicate_stage_names() -> None:
    spec = stage_with(2, name="clean")
    raises_spec_error(
        spec,
        r"^stages\[2\] \(clean\)\.name: duplicate stage name 'clean' \(also stages\[0\]\); "
        r"give each stage a unique name$",
    )


def test_default_stage_names_can_collide() -> None:
    spec = spec_with(stages=[{"map": "numpy:sqrt"}, {"map": "numpy.sqrt"}])
    raises_spec_error(spec, r"^stages\[1\]\.name: duplicate stage name 'sqrt'")


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        pytest.param({"rows": -3}, r"^chunks\.rows: expected a positive integer, got -3$", id="-3"),
        pytest.param({"rows": 0}, r"^chunks\.rows: expected a positive integer, got 0$", id="0"),
        pytest.param(
            {"rows": "ten"}, r"^chunks\.rows: expected a positive integer, got 'ten'$", id="str"
        ),
        pytest.param(
            {"bytes": "12 parsecs"},
            r"^chunks\.bytes: expected a size such as 64MB or 2GiB, got '12 parsecs'$",
            id="parsecs",
        ),
        pytest.param(
            {"memory": "0GB"}, r"^chunks\.memory: expected a positive size, got '0GB'$", id="0GB"
        ),
        pytest.param(
            {"rows": 10, "bytes": "1MB"},
            r"^chunks: give only one of rows, bytes or memory; got \['rows', 'bytes'\]$",
            id="rows-and-bytes",
        ),
        pytest.param(
            {"bytes": "1MB", "memory": "1GB"},
            r"^chunks: give only one of rows, bytes or memory; got \['bytes', 'memory'\]$",
            id="bytes-and-memory",
        ),
        pytest.param(
            {"rows": 10, "overlap": -1},
            r"^chunks\.overlap: expected a non-negative integer, got -1$",
            id="overlap",
        ),
        pytest.param(
            {"row": 10}, r"^chunks\.row: unknown key \(did you mean 'rows'\?\)", id="unknown-key"
        ),
        pytest.param("lots", r"^chunks\.bytes: expected a size such as 64MB", id="bad-string"),
        pytest.param([10], r"^chunks: expected a mapping, got list", id="list"),
    ],
)
def test_bad_chunks(chunks: Any, match: str) -> None:
    raises_spec_error(spec_with(chunks=chunks), match)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        pytest.param(None, r"^source: missing; e\.g\. source: \{npy: data/x\.npy\}$", id="missing"),
        pytest.param({}, r"^source: expected a source kind: npy", id="empty"),
        pytest.param({"npy": 3}, r"^source\.npy: expected a file path, got 3$", id="not-path"),
        pytest.param({"npy": ""}, r"^source\.npy: expected a file path, got ''$", id="empty-path"),
        pytest.param(
            {"npy": "data/x.npy", "z": "data/z.npy"},
            r"^source\.z: unknown key; allowed keys: npy, y$",
            id="unknown-key",
        ),
        pytest.param(
            {"np": "data/x.npy"},
            r"^source\.np: unknown key \(did you mean 'npy'\?\)",
            id="misspelt-npy",
        ),
    ],
)
def test_bad_source(source: Any, match: str) -> None:
    raises_spec_error(spec_with(source=source), match)


@pytest.mark.parametrize(
    ("sink", "match"),
    [
        pytest.param(
            {"npy": "out/x.txt"},
            r"^sink\.npy: expected a path ending in \.npy, got 'out/x\.txt'$",
            id="not-npy",
        ),
        pytest.param(
            {"y": "out/y.npy"}, r"^sink\.y: needs npy too \(y is written beside the data\)$", id="y"
        ),
        pytest.param(
            {"npy": "out/x.npy", "y": "out/x.npy"},
            r"^sink: npy, y, parquet, reductions and models must be different paths$",
            id="same-file",
        ),
        pytest.param(
            {"npy": "out/x.npy", "reduction": "out/r.json"},
            r"^sink\.reduction: unknown key \(did you mean 'reductions'\?\)",
            id="unknown-key",
        ),
        pytest.param({"npy": 7}, r"^sink\.npy: expected a file path, got 7$", id="not-path"),
    ],
)
def test_bad_sink(sink: Any, match: str) -> None:
    raises_spec_error(spec_with(sink=sink), match)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"name": ""}, r"^name: expected a non-empty string, got ''$", id="name"),
        pytest.param({"workspace": 3}, r"^workspace: expected a file path, got 3$", id="workspace"),
    ],
)
def test_bad_top_level_values(changes: dict[str, Any], match: str) -> None:
    raises_spec_error(spec_with(**changes), match)


def test_top_level_must_be_a_mapping() -> None:
    raises_spec_error(["source"], r"^a spec must be a mapping at the top level, got list$")


def test_all_problems_in_a_spec_are_reported_together() -> None:
    spec = copy.deepcopy(BASE)
    spec["stagse"] = spec.pop("stages")
    spec["stages"] = [
        {"name": "a", "map": "numpy.nan_to_numm"},
        {"name": "b", "map": "clip", "n_jobs": "four"},
        {"name": "c", "reduce": "momnets"},
        {"name": "d", "map": "numpy:sqrt"},
        {"name": "d", "map": "numpy:sqrt"},
    ]
    spec["chunks"] = {"rows": -3}
    spec["parallel"] = {"backend": "lokky"}
    spec["sink"] = {"npy": "out/x.txt"}
    with pytest.raises(SpecError, match=r"^8 problems in the pipeline spec:\n  - stagse: ") as info:
        Pipeline.from_dict(spec)
    paths = [issue.path for issue in info.value.issues]
    assert len(info.value.issues) == 8
    assert sorted(paths) == sorted(
        [
            "stagse",
            "chunks.rows",
            "parallel.backend",
            "stages[0] (a).map",
            "stages[1] (b).n_jobs",
            "stages[2] (c).reduce",
            "stages[4] (d).name",
            "sink.npy",
        ]
    )
    # Each problem is on its own line, with its path.
    for issue in info.value.issues:
        assert f"  - {issue.path}: {issue.message}" in str(info.value)


def test_missing_source_is_reported_with_the_other_problems() -> None:
    spec = spec_with(source=None, chunks={"rows": 0})
    with pytest.raises(SpecError, match=r"^2 problems") as info:
        Pipeline.from_dict(spec)
    assert {i.path for i in info.value.issues} == {"source", "chunks.rows"}


def test_all_problems_of_one_stage_are_reported_together() -> None:
    # STYLE principle 8: "collect all spec errors and report them together". A stage
    # with a bad n_jobs *and* a misspelt reduction should report both.
    spec = copy.deepcopy(BASE)
    spec["stages"][2] = {"name": "stats", "reduce": "momnets", "n_jobs": "four"}
    with pytest.raises(SpecError, match=r"^2 problems in the pipeline spec") as info:
        Pipeline.from_dict(spec)
    assert {i.path for i in info.value.issues} == {
        "stages[2] (stats).n_jobs",
        "stages[2] (stats).reduce",
    }


def test_python_api_raises_the_same_spec_errors() -> None:
    with pytest.raises(SpecError, match=r"^n_jobs: expected a positive integer or -1, got 'four'$"):
        Pipeline("data/x.npy", n_jobs="four")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"^chunks\.bytes: expected a size such as 64MB"):
        Pipeline("data/x.npy", chunks="12 parsecs")
    with pytest.raises(SpecError, match=r"^chunks\.rows: expected a positive integer, got -3$"):
        Pipeline("data/x.npy", chunks=-3)
    with pytest.raises(SpecError, match=r"^stages\[0\]\.reduce: unknown reduce 'momnets'"):
        Pipeline("data/x.npy", [{"reduce": "momnets"}])
    with pytest.raises(SpecError, match=r"^reduce: unknown reduce 'momnets'"):
        Reduce("momnets")
    with pytest.raises(SpecError, match=r"^map: cannot import 'numpy\.nan_to_numm'"):
        Map("numpy.nan_to_numm")
    with pytest.raises(SpecError, match=r"^sink\.npy: expected a path ending in \.npy"):
        Pipeline("data/x.npy", sink="out/x.csv")
    with pytest.raises(SpecError, match=r"^backend: expected one of .*\(did you mean 'loky'\?\)"):
        Pipeline("data/x.npy").run(backend="lokky")


def test_spec_error_is_a_value_error_and_a_chunkline_error() -> None:
    with pytest.raises(ValueError, match=r"chunks\.rows"):
        Pipeline.from_dict(spec_with(chunks={"rows": -3}))
    with pytest.raises(ChunklineError, match=r"chunks\.rows"):
        Pipeline.from_dict(spec_with(chunks={"rows": -3}))


@pytest.mark.parametrize("n_issues", [1, 3])
def test_spec_error_pickles(n_issues: int) -> None:
    spec = copy.deepcopy(BASE)
    spec["chunks"] = {"rows": -3}
    if n_issues == 3:
        spec["stages"][0]["n_jobs"] = "four"
        spec["sink"] = {"npy": "x.txt"}
    with pytest.raises(SpecError, match=r"chunks\.rows: expected a positive integer") as info:
        Pipeline.from_dict(spec)
    exc = info.value
    assert len(exc.issues) == n_issues
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is SpecError
    assert again.issues == exc.issues
    assert str(again) == str(exc)
    single = pickle.loads(pickle.dumps(SpecError("plain message")))
    assert str(single) == "plain message"


# ---------------------------------------------------------------- spec files


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_invalid_yaml_syntax(in_tmp: Path) -> None:
    write(in_tmp / "bad.yaml", "name: x\nsource: {npy: data/x.npy\n")
    with pytest.raises(SpecError, match=r"(?s)bad\.yaml is not valid YAML: .*line \d+"):
        load_spec("bad.yaml")


def test_invalid_toml_syntax(in_tmp: Path) -> None:
    write(in_tmp / "bad.toml", 'name = "x"\nsource = {npy = "data/x.npy"\n')
    with pytest.raises(SpecError, match=r"bad\.toml is not valid TOML: .*line \d+"):
        load_spec("bad.toml")


def test_toml_type_errors_are_spec_errors_with_paths(in_tmp: Path) -> None:
    text = TOML_SPEC.replace("n_jobs = 1\n", 'n_jobs = "four"\n')
    write(in_tmp / "spec.toml", text)
    with pytest.raises(
        SpecError,
        match=r"^stages\[2\] \(compress\)\.n_jobs: expected a positive integer or -1, got 'four'$",
    ):
        load_spec("spec.toml")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_spec_file(in_tmp: Path, text: str) -> None:
    write(in_tmp / "empty.yaml", text)
    with pytest.raises(SpecError, match=r"^empty\.yaml is empty$"):
        load_spec("empty.yaml")


def test_empty_toml_file_reports_the_missing_source(in_tmp: Path) -> None:
    write(in_tmp / "empty.toml", "")
    with pytest.raises(SpecError, match=r"empty\.toml is empty|^source: missing"):
        load_spec("empty.toml")


def test_spec_file_that_is_not_a_mapping(in_tmp: Path) -> None:
    write(in_tmp / "list.yaml", "- source\n- stages\n")
    with pytest.raises(SpecError, match=r"^a spec must be a mapping at the top level, got list$"):
        load_spec("list.yaml")


def test_missing_spec_file(in_tmp: Path) -> None:
    with pytest.raises(SpecError, match=r"^spec file not found: nope\.yaml$"):
        load_spec("nope.yaml")


def test_spec_path_that_is_a_directory(in_tmp: Path) -> None:
    (in_tmp / "dir.yaml").mkdir()
    with pytest.raises(SpecError, match=r"dir\.yaml"):
        load_spec("dir.yaml")


@pytest.mark.parametrize("name", ["spec.json", "spec.txt", "spec"])
def test_unknown_spec_file_extension(in_tmp: Path, name: str) -> None:
    write(in_tmp / name, "{}")
    with pytest.raises(
        SpecError, match=rf"^{re.escape(name)}: expected a \.yaml, \.yml or \.toml spec file$"
    ):
        load_spec(name)


def test_spec_file_that_is_not_utf8(in_tmp: Path) -> None:
    (in_tmp / "latin.yaml").write_bytes(b"name: caf\xe9\xff\xfe\n")
    with pytest.raises(SpecError, match=r"latin\.yaml is not valid YAML"):
        load_spec("latin.yaml")


def test_errors_in_a_spec_file_carry_field_paths(in_tmp: Path) -> None:
    text = YAML_SPEC.replace("    n_jobs: 1\n", "    n_jobs: four\n").replace(
        "reduce: moments", "reduce: momnets"
    )
    write(in_tmp / "spec.yaml", text)
    with pytest.raises(SpecError, match=r"^2 problems in the pipeline spec:") as info:
        load_spec("spec.yaml")
    assert [str(i) for i in info.value.issues] == [
        "stages[2] (compress).n_jobs: expected a positive integer or -1, got 'four'",
        "stages[4] (stats).reduce: unknown reduce 'momnets' (did you mean 'moments'?); built-in "
        "names: count, group_by, histogram, max, mean, min, moments, profile, std, sum, "
        "variance; or give an import string like 'module:function'",
    ]
