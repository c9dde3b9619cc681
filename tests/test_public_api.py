"""The public API is explicit, complete, documented, and its examples run.

``pipeline`` and ``stages`` each list their public names in a sorted
``__all__``; every name there imports and has a docstring; what users need
(errors, stage kinds, the objects a run hands back, the names the README and
the examples import, every built-in stage) is exported; and the doctests of
every module pass.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import pkgutil
import re
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import pipeline
import stages
from pipeline.registry import GROUPS

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (pipeline, stages)


def modules_of(package: ModuleType) -> list[str]:
    return [package.__name__] + [
        f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
    ]


MODULES = [name for package in PACKAGES for name in modules_of(package)]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_all_is_sorted_and_unique(package: ModuleType) -> None:
    names = list(package.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_exported_name_imports(package: ModuleType) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is namespace[name]


@pytest.mark.parametrize("module_name", MODULES)
def test_every_module_declares_all_and_its_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__ and module.__doc__.strip(), f"{module_name} has no docstring"
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ lists missing {name!r}"


def _own_docstring(obj: object) -> str | None:
    doc = obj.__doc__
    # A dataclass without a docstring gets its signature as __doc__.
    signature_only = doc is not None and doc.startswith(f"{getattr(obj, '__name__', '')}(")
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and signature_only:
        return None
    return doc


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_exported_name_is_documented(package: ModuleType) -> None:
    undocumented = []
    for name in package.__all__:
        obj = getattr(package, name)
        if not (inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj)):
            continue  # constants such as __version__
        doc = _own_docstring(obj)
        if not doc or not doc.strip():
            undocumented.append(name)
    assert undocumented == []


def test_version() -> None:
    assert isinstance(pipeline.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", pipeline.__version__)
    from importlib.metadata import version

    assert version("chunkline") == pipeline.__version__


# ---------------------------------------------------------------- nothing missing


def test_every_error_is_exported() -> None:
    from pipeline import errors

    for name in errors.__all__:
        assert name in pipeline.__all__
    for name, obj in vars(errors).items():
        if inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_"):
            assert name in pipeline.__all__, f"pipeline.errors.{name} is not exported"


def test_every_stage_kind_is_exported() -> None:
    from pipeline import stage as stage_module

    for name, obj in vars(stage_module).items():
        if name.startswith("_") or not inspect.isclass(obj):
            continue
        if issubclass(obj, stage_module.Stage) or obj.__name__ in (
            "Reduction",
            "CallableReduction",
        ):
            assert name in pipeline.__all__, f"pipeline.stage.{name} is not exported"


def _types_in(value: object, seen: set[int] | None = None) -> set[type]:
    """Types of ``value`` and of the dataclasses, tuples and dicts inside it."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return set()
    seen.add(id(value))
    found = {type(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found |= _types_in(getattr(value, f.name), seen)
    elif isinstance(value, (tuple, list)):
        for item in value:
            found |= _types_in(item, seen)
    elif isinstance(value, dict):
        for item in value.values():
            found |= _types_in(item, seen)
    return found


def test_objects_a_run_hands_back_are_exported(tmp_path: Path) -> None:
    # Whatever a user receives from the public API (the run result, its report and
    # the report's parts) can be imported from the package, e.g. for annotations.
    from pipeline import Map, Pipeline, Reduce

    p = Pipeline(
        np.arange(12.0).reshape(6, 2),
        [Map(np.negative, name="neg"), Reduce("moments", name="stats")],
        chunks=4,
        n_jobs=1,
        workspace=tmp_path,
    )
    result = p.run()
    types = _types_in(result) | {type(p.plan()), type(p.source), type(p.sink), type(p.chunks)}
    ours = {t for t in types if t.__module__.split(".")[0] == "pipeline"}
    missing = sorted(t.__name__ for t in ours if t.__name__ not in pipeline.__all__)
    assert missing == []


def test_names_used_in_readme_examples_and_docstrings_are_exported() -> None:
    texts = [(REPO / "README.md").read_text()]
    texts += [p.read_text() for p in (REPO / "examples").glob("*.py")]
    texts += [inspect.getsource(importlib.import_module(name)) for name in MODULES]
    pattern = re.compile(r"from (pipeline|stages) import (\([^)]*\)|[^\n]+)")
    for text in texts:
        for package, names in pattern.findall(text):
            module = importlib.import_module(package)
            for name in re.findall(r"\w+", names):
                assert name in module.__all__, f"{package}.{name} is used but not exported"


def test_every_built_in_stage_is_exported_by_stages() -> None:
    exported = {id(getattr(stages, name)) for name in stages.__all__}
    count = 0
    for group in GROUPS.values():
        for ep in entry_points(group=group):
            if not ep.value.startswith("stages."):
                continue
            count += 1
            assert id(ep.load()) in exported, f"{group}:{ep.name} -> {ep.value} is not exported"
    assert count >= 10


def test_public_functions_of_stages_modules_are_exported() -> None:
    for module_name in modules_of(stages)[1:]:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert name in stages.__all__, f"{module_name}.{name} is not exported by stages"


def test_pipeline_does_not_import_stages() -> None:
    # Dependencies point one way: the engine finds stages through the registry only.
    for module_name in modules_of(pipeline):
        source = inspect.getsource(importlib.import_module(module_name))
        assert not re.search(r"^\s*(from|import) stages\b", source, re.M), module_name


# ---------------------------------------------------------------- doctests


@pytest.mark.parametrize("module_name", MODULES)
def test_doctests(module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a doctest that writes files writes them here
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True
    )
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module_name}"


def test_there_are_doctests() -> None:
    finder = doctest.DocTestFinder()
    examples = sum(
        len(test.examples)
        for name in MODULES
        for test in finder.find(importlib.import_module(name))
    )
    assert examples >= 40
