"""Spec files and loose Python arguments, normalized into canonical objects.

Everything a user may write in a spec (YAML or TOML) or pass to
:class:`~pipeline.Pipeline` goes through the ``normalize_*`` functions here,
once. Each returns the canonical frozen value (:class:`ChunkSpec`,
:class:`ArraySource`, :class:`Sink`, stage objects) or raises a
:class:`SpecError` whose field paths point into the spec. All problems in a
spec are collected and reported together; unknown keys are errors, with a
"did you mean" where one is close.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .chunking import ChunkSpec, parse_bytes
from .datasets import FORMATS, TableSource
from .errors import SpecError, SpecIssue
from .registry import available, did_you_mean
from .sinks import SINK_KEYS, Sink
from .sources import ArraySource
from .stage import Filter, Map, Reduce, Stage, check_parallel_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "STAGE_KINDS",
    "TOP_LEVEL_KEYS",
    "normalize_chunks",
    "normalize_sink",
    "normalize_source",
    "normalize_stage",
    "normalize_stages",
    "parse_spec",
    "read_spec_file",
    "stage_kinds",
]

T = TypeVar("T")

TOP_LEVEL_KEYS = ("name", "source", "chunks", "parallel", "stages", "sink", "workspace")
#: The engine's own stage kinds; more come from the ``chunkline.kinds`` entry points.
STAGE_KINDS: dict[str, type[Stage]] = {"map": Map, "filter": Filter, "reduce": Reduce}


def _check_keys(mapping: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    issues = []
    for key in mapping:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            issues.append(
                SpecIssue(
                    f"{where}.{key}" if where else str(key),
                    f"unknown key{hint}; allowed keys: {', '.join(allowed)}",
                )
            )
    if issues:
        raise SpecError(issues)


def _expect_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError.at(where, f"expected a mapping, got {type(value).__name__} {value!r}")
    return value


def normalize_chunks(value: Any) -> ChunkSpec:
    """Chunk size from ``None``, rows (int), bytes (``"64MB"``), a mapping, or a ChunkSpec.

    >>> normalize_chunks(1000)
    ChunkSpec(rows=1000, bytes=None, memory=None, overlap=0)
    >>> normalize_chunks({"bytes": "1MB", "overlap": 2})
    ChunkSpec(rows=None, bytes=1000000, memory=None, overlap=2)
    """
    if value is None:
        return ChunkSpec()
    if isinstance(value, ChunkSpec):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return ChunkSpec(rows=value)
    if isinstance(value, str):
        value = {"bytes": value}
    mapping = dict(_expect_mapping(value, ""))
    _check_keys(mapping, ("rows", "bytes", "memory", "overlap"), "")
    for key in ("bytes", "memory"):
        if isinstance(mapping.get(key), str):
            try:
                mapping[key] = parse_bytes(mapping[key])
            except ValueError as exc:
                raise SpecError.at(key, str(exc)) from None
    return ChunkSpec(**mapping)


def _path_field(value: Any, where: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise SpecError.at(where, f"expected a file path, got {value!r}")
    return os.fspath(value)


_TABLE_SOURCE_KEYS = ("columns", "filters", "schema")
_SOURCE_SUFFIXES = {
    ".npy": "npy",
    ".parquet": "parquet",
    ".pq": "parquet",
    "": "parquet",
    ".csv": "csv",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
}
_SINK_SUFFIXES = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet", "": "parquet"}


def _kind_of_path(path: str, suffixes: Mapping[str, str]) -> str | None:
    """The source or sink kind a bare path names, from its suffix (a folder: Parquet).

    >>> _kind_of_path("data/events/", _SOURCE_SUFFIXES), _kind_of_path("x.npy", _SINK_SUFFIXES)
    ('parquet', 'npy')
    """
    suffix = os.path.splitext(path.rstrip("/" + os.sep))[1].lower()
    if suffix in suffixes:
        return suffixes[suffix]
    return "parquet" if os.path.isdir(path) else None


def normalize_source(value: Any) -> ArraySource | TableSource:
    """A source from a path, an array, a spec mapping, or a source object.

    A path ending in ``.npy`` (or an array) is an array source; any other path
    (a ``.parquet`` file, a folder) is a Parquet source.

    >>> normalize_source("data/features.npy").describe()
    'npy data/features.npy'
    >>> normalize_source({"parquet": "data/events/", "columns": ["a"]}).describe()
    "parquet data/events/ columns ['a']"
    """
    if isinstance(value, (ArraySource, TableSource)):
        return value
    if isinstance(value, np.ndarray):
        return ArraySource(value)
    if isinstance(value, (str, os.PathLike)):
        kind = _kind_of_path(os.fspath(value), _SOURCE_SUFFIXES)
        if kind is None:
            raise SpecError.at(
                "",
                f"cannot tell the kind of {os.fspath(value)!r} from its name; give "
                "{npy: path}, {parquet: path}, {csv: path} or {ipc: path}",
            )
        value = {kind: value}
    mapping = _expect_mapping(value, "")
    kinds = [k for k in ("npy", *FORMATS) if k in mapping]
    if len(kinds) != 1:
        _check_keys(mapping, ("npy", "y", *FORMATS, *_TABLE_SOURCE_KEYS), "")
        found = f"got {', '.join(kinds)}" if kinds else "got none"
        raise SpecError.at(
            "",
            f"expected a source kind: npy, {', '.join(FORMATS)} ({found}); "
            "e.g. {npy: data/x.npy} or {parquet: data/events/}",
        )
    kind = kinds[0]
    if kind == "npy":
        _check_keys(mapping, ("npy", "y"), "")
        x = mapping["npy"]
        x = x if isinstance(x, np.ndarray) else _path_field(x, "npy")
        y = mapping.get("y")
        if y is not None and not isinstance(y, np.ndarray):
            y = _path_field(y, "y")
        return ArraySource(x, y)
    _check_keys(mapping, (kind, *_TABLE_SOURCE_KEYS), "")
    options = {k: mapping[k] for k in _TABLE_SOURCE_KEYS if k in mapping}
    return TableSource(path=mapping[kind], format=FORMATS[kind], **options)


def normalize_sink(value: Any) -> Sink:
    """A sink from ``None`` (in memory), a path, a mapping, or a Sink.

    A path ending in ``.npy`` is an array sink; any other is a Parquet dataset.
    """
    if value is None:
        return Sink()
    if isinstance(value, Sink):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        kind = _kind_of_path(path, _SINK_SUFFIXES)
        if kind is None:
            raise SpecError.at(
                "npy",
                f"expected a path ending in .npy, got {path!r} (for Parquet output, give "
                "a folder or a .parquet path)",
            )
        return Sink(npy=path) if kind == "npy" else Sink(parquet=path)
    mapping = _expect_mapping(value, "")
    _check_keys(mapping, SINK_KEYS, "")
    return Sink.from_mapping(mapping)


def stage_kinds() -> dict[str, Callable[[], type[Stage]]]:
    """Spec keys that name a stage kind, each with a loader of its stage class.

    ``map``, ``filter`` and ``reduce`` are the engine's own; others (such as
    ``sklearn``) are registered in the ``chunkline.kinds`` entry-point group,
    and their class is imported only when a spec uses them.
    """
    kinds: dict[str, Callable[[], type[Stage]]] = {
        key: functools.partial(lambda cls: cls, cls) for key, cls in STAGE_KINDS.items()
    }
    for key, entry_point in available("kind").items():
        kinds.setdefault(key, entry_point.load)
    return kinds


def _is_estimator(value: Any) -> bool:
    return hasattr(value, "fit") and hasattr(value, "get_params") and not isinstance(value, type)


def normalize_stage(value: Any) -> Stage:
    """A stage object from itself, its spec mapping (``{"map": ...}``), or an estimator.

    A scikit-learn estimator object becomes the stage of the registered
    ``sklearn`` kind, fitted by its default strategy.
    """
    if isinstance(value, Stage):
        return value
    kinds = stage_kinds()
    if _is_estimator(value) and "sklearn" in kinds:
        return kinds["sklearn"]().from_spec({"sklearn": value})
    mapping = _expect_mapping(value, "")
    found = [k for k in kinds if k in mapping]
    classes = {k: kinds[k]() for k in found}
    if len(set(classes.values())) != 1:
        where = f"found {', '.join(found)}" if found else "found none"
        common = ("name", "params", "n_jobs", "backend")
        unknown = [k for k in mapping if k not in {*kinds, *common}]
        hint = ""
        if unknown:
            close = did_you_mean(str(unknown[0]), list(kinds))
            hint = f"; unknown key {unknown[0]!r}{close}" if close else ""
        raise SpecError.at("", f"a stage needs exactly one of {', '.join(kinds)} ({where}){hint}")
    cls = classes[found[0]]
    # Unknown keys and problems of the known ones are reported together.
    issues: list[SpecIssue] = []
    try:
        _check_keys(mapping, cls.spec_keys, "")
    except SpecError as exc:
        issues.extend(exc.issues)
    try:
        stage = cls.from_spec({k: v for k, v in mapping.items() if k in cls.spec_keys})
    except SpecError as exc:
        issues.extend(exc.issues)
    if issues:
        raise SpecError(issues)
    return stage


def _collect(items: Sequence[tuple[str, Callable[[], T]]]) -> tuple[dict[str, T], list[SpecIssue]]:
    """Run each named normalizer; gather results and every problem (with path)."""
    results: dict[str, T] = {}
    issues: list[SpecIssue] = []
    for where, build in items:
        try:
            results[where] = build()
        except SpecError as exc:
            issues.extend(exc.prefixed(where).issues)
        except (ValueError, TypeError) as exc:
            issues.append(SpecIssue(where, str(exc)))
    return results, issues


def _named(item: Any) -> str:
    """`` (name)`` for a stage mapping with a name, else nothing."""
    name = item.get("name") if isinstance(item, Mapping) else getattr(item, "name", None)
    return f" ({name})" if isinstance(name, str) and name else ""


def normalize_stages(value: Any) -> tuple[Stage, ...]:
    """Stages from a list of stage objects or spec mappings; names must be unique."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise SpecError.at("", f"expected a list of stages, got {type(value).__name__}")
    # A stage's problems are located by its index and, when it has one, its name.
    labels = [f"[{i}]{_named(item)}" for i, item in enumerate(value)]
    builders: list[tuple[str, Callable[[], Stage]]] = [
        (label, functools.partial(normalize_stage, item))
        for label, item in zip(labels, value, strict=True)
    ]
    built, issues = _collect(builders)
    stages = [built[label] for label in labels if label in built]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        made = built.get(label)
        if made is None:
            continue
        if made.name in seen:
            issues.append(
                SpecIssue(
                    f"{label}.name",
                    f"duplicate stage name {made.name!r} (also stages[{seen[made.name]}]); "
                    "give each stage a unique name",
                )
            )
        seen[made.name] = i
    if issues:
        raise SpecError(issues)
    return tuple(stages)


def parse_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a whole spec mapping; return canonical keyword arguments for Pipeline.

    Raises
    ------
    SpecError
        With every problem found, each with its field path.
    """
    if not isinstance(spec, Mapping):
        raise SpecError.at(
            "", f"a spec must be a mapping at the top level, got {type(spec).__name__}"
        )
    issues: list[SpecIssue] = []
    try:
        _check_keys(spec, TOP_LEVEL_KEYS, "")
    except SpecError as exc:
        issues.extend(exc.issues)
    if "source" not in spec:
        issues.append(SpecIssue("source", "missing; e.g. source: {npy: data/x.npy}"))
    parallel = spec.get("parallel") or {}

    def parse_parallel() -> dict[str, Any]:
        mapping = _expect_mapping(parallel, "")
        _check_keys(mapping, ("n_jobs", "backend"), "")
        check_parallel_settings(mapping.get("n_jobs"), mapping.get("backend"), "")
        return dict(mapping)

    def parse_name() -> str:
        name = spec.get("name", "pipeline")
        if not isinstance(name, str) or not name:
            raise SpecError.at("", f"expected a non-empty string, got {name!r}")
        return name

    def parse_workspace() -> str | None:
        value = spec.get("workspace")
        return None if value is None else _path_field(value, "")

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("name", parse_name),
        ("chunks", lambda: normalize_chunks(spec.get("chunks"))),
        ("parallel", parse_parallel),
        ("stages", lambda: normalize_stages(spec.get("stages"))),
        ("sink", lambda: normalize_sink(spec.get("sink"))),
        ("workspace", parse_workspace),
    ]
    if "source" in spec:
        steps.insert(1, ("source", lambda: normalize_source(spec["source"])))
    built, more = _collect(steps)
    issues.extend(more)
    if issues:
        raise SpecError(issues)
    parallel_settings = built.pop("parallel")
    return {**built, **parallel_settings}


def read_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) spec file into a mapping.

    Raises
    ------
    SpecError
        If the file is missing, of an unknown type, or not valid YAML/TOML.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError.at("", f"spec file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise SpecError.at("", f"{path}: expected a .yaml, .yml or .toml spec file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        language = "TOML" if suffix == ".toml" else "YAML"
        raise SpecError.at("", f"{path} is not valid {language}: {exc}") from None
    if data is None:
        raise SpecError.at("", f"{path} is empty")
    return data
