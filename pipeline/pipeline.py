"""The :class:`Pipeline`: a declared source, stages and sink, and how to run it.

A pipeline is data: it can be built, compared, validated, explained and
written back as a spec without running anything. ``n_jobs`` and the backend
may be supplied when it runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .datasets import TableSource
from .errors import SpecError, SpecIssue
from .execute import execute_plan
from .plan import Plan, build_plan
from .progress import should_show
from .report import RunReport
from .sinks import Sink
from .spec import (
    normalize_chunks,
    normalize_sink,
    normalize_source,
    normalize_stages,
    parse_spec,
    read_spec_file,
)
from .stage import check_parallel_settings
from .workspace import Workspace

__all__ = ["Pipeline", "RunResult", "load_spec"]


@dataclass(frozen=True)
class RunResult:
    """What :meth:`Pipeline.run` returns.

    Attributes
    ----------
    output
        The data after the last stage that changes it: an array in memory, or
        a read-only memmap of the sink's ``.npy`` file; ``None`` when nothing
        was written (a pipeline of reductions only, without an ``npy`` sink).
    y
        The aligned ``y`` after filters, likewise (``None`` without ``y``).
    reductions
        Results of the ``reduce`` stages, by stage name, in stage order.
    report
        Timings, rows and memory per pass and stage, and per fit.
    models
        The model each fit stage fitted, by stage name (a scikit-learn
        estimator for ``sklearn`` stages; the best one for ``train_many``).
    trials
        For model searches (``train_many``): one record per candidate model
        (its parameters, score and fit time), by stage name.
    """

    output: np.ndarray | None
    y: np.ndarray | None
    reductions: dict[str, Any]
    report: RunReport
    models: dict[str, Any] = field(default_factory=dict)
    trials: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Pipeline:
    """A chunked pipeline: read ``source`` in chunks, run ``stages``, write ``sink``.

    Parameters
    ----------
    source
        Path of an ``.npy`` file, an array, ``{"npy": path, "y": path}`` or an
        :class:`ArraySource`.
    stages
        :class:`Map`, :class:`Filter` and :class:`Reduce` objects, or their spec
        mappings (``{"map": "numpy.nan_to_num"}``).
    sink
        ``None`` to return the output in memory, a ``.npy`` path, or
        ``{"npy": path, "y": path, "reductions": path.json}``.
    chunks
        Rows per chunk (int), bytes per chunk (``"64MB"``), or a mapping with
        one of ``rows``/``bytes``/``memory`` and an optional ``overlap``.
    n_jobs, backend
        Default parallel settings of every stage (joblib's meaning); when not
        given, a caller's ``joblib.parallel_config`` applies, else all cores on
        ``loky``.
    name
        Shown in reports.
    workspace
        Folder under which the run's temporary workspace is created
        (default: the system's temporary folder).
    search_path
        Folders put on ``sys.path``, in this process and in the workers,
        so that stage functions given as ``"module:function"`` are found
        there. :meth:`from_file` sets it to the spec file's folder.

    Examples
    --------
    >>> import numpy as np
    >>> from pipeline import Map, Pipeline, Reduce
    >>> x = np.arange(12.0).reshape(6, 2)
    >>> result = Pipeline(x, [Map(np.sqrt), Reduce("max")], chunks=4, n_jobs=1).run()
    >>> bool(np.array_equal(result.output, np.sqrt(x)))
    True
    >>> result.reductions["max"].tolist()
    [3.1622776601683795, 3.3166247903554]
    """

    # Loose inputs are normalized in __post_init__: afterwards ``source`` is an
    # ArraySource, ``stages`` a tuple of Stage, ``sink`` an Sink and
    # ``chunks`` a ChunkSpec.
    source: Any
    stages: Sequence[Any] = ()
    sink: Any = None
    chunks: Any = None
    n_jobs: int | None = None
    backend: str | None = None
    name: str = "pipeline"
    workspace: str | os.PathLike[str] | None = field(default=None)
    search_path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        issues: list[SpecIssue] = []
        for key, normalize in (
            ("source", normalize_source),
            ("stages", normalize_stages),
            ("sink", normalize_sink),
            ("chunks", normalize_chunks),
        ):
            try:
                object.__setattr__(self, key, normalize(getattr(self, key)))
            except SpecError as exc:
                issues.extend(exc.prefixed(key).issues)
        try:
            check_parallel_settings(self.n_jobs, self.backend, "")
        except SpecError as exc:
            issues.extend(exc.issues)
        if not issues:
            issues.extend(_sink_inside_source(self.source, self.sink))
        if issues:
            raise SpecError(issues)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Pipeline:
        """Build a pipeline from a spec mapping (the parsed form of a spec file)."""
        return cls(**parse_spec(spec))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Pipeline:
        """Load a YAML or TOML spec file.

        Relative data paths are relative to the current directory. The spec
        file's folder is put on ``sys.path``, so that ``mymodule:func`` finds a
        ``mymodule.py`` beside the spec (worker processes inherit ``sys.path``).
        """
        spec = read_spec_file(path)
        folder = os.path.dirname(os.path.abspath(path))
        _on_sys_path((folder,))  # stage callables are imported while parsing
        return cls(**parse_spec(spec), search_path=(folder,))

    def with_settings(self, **changes: Any) -> Pipeline:
        """A copy with some fields changed (e.g. ``chunks=1000``)."""
        return replace(self, **changes)

    def plan(self, *, n_jobs: int | None = None, backend: str | None = None) -> Plan:
        """Check the source and every stage, and compile the plan, without running it."""
        check_parallel_settings(n_jobs, backend, "")
        with Workspace(self.workspace) as workspace:
            opened = self.source.open(workspace)
            return build_plan(self, opened, n_jobs=n_jobs, backend=backend, workspace=workspace)

    def explain(self, *, n_jobs: int | None = None, backend: str | None = None) -> str:
        """The plan as text: passes, fused stages, chunks, output files, memory."""
        return self.plan(n_jobs=n_jobs, backend=backend).explain()

    def run(
        self,
        *,
        n_jobs: int | None = None,
        backend: str | None = None,
        progress: bool | None = None,
        output: bool = True,
    ) -> RunResult:
        """Run the pipeline.

        Parameters
        ----------
        n_jobs, backend
            Override the pipeline's defaults for this run (a stage's own
            settings still win).
        progress
            Show a progress bar per pass; by default only when stdout is a
            terminal.
        output
            ``False``: do not return the data in memory (a sink without data
            files), e.g. when the run is for its fitted models or reductions;
            passes that would only produce it are skipped.

        Raises
        ------
        SourceError
            An input file is missing or invalid; nothing was written.
        StageError
            A stage failed; the sink's final paths are untouched.
        """
        check_parallel_settings(n_jobs, backend, "")
        _on_sys_path(self.search_path)
        out = None
        try:
            with Workspace(self.workspace) as workspace:
                opened = self.source.open(workspace)
                plan = build_plan(
                    self, opened, n_jobs=n_jobs, backend=backend, output=output, workspace=workspace
                )
                out = execute_plan(
                    plan,
                    opened,
                    self.sink,
                    workspace,
                    overlap=self.chunks.overlap,
                    show_progress=should_show(progress),
                    import_paths=self.search_path,
                )
        except KeyboardInterrupt as exc:
            if out is not None:  # stopped while the workspace was removed: all is written
                exc.committed = True  # type: ignore[attr-defined]
            raise
        assert out.report is not None
        return RunResult(
            output=out.x,
            y=out.y,
            reductions=out.reductions,
            report=out.report,
            models=out.models,
            trials=out.trials,
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec mapping of this pipeline (for stages given by import string or name)."""
        spec: dict[str, Any] = {"name": self.name, "source": self.source.to_dict()}
        chunks = {
            k: getattr(self.chunks, k)
            for k in ("rows", "bytes", "memory", "overlap")
            if getattr(self.chunks, k)
        }
        if chunks:
            spec["chunks"] = chunks
        parallel = {k: getattr(self, k) for k in ("n_jobs", "backend") if getattr(self, k)}
        if parallel:
            spec["parallel"] = parallel
        spec["stages"] = [stage.to_spec() for stage in self.stages]
        if self.sink.to_dict():
            spec["sink"] = self.sink.to_dict()
        if self.workspace is not None:
            spec["workspace"] = os.fspath(self.workspace)
        return spec

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        try:
            return self.to_dict() == other.to_dict()
        except TypeError:
            return self is other

    __hash__ = None  # type: ignore[assignment]


def _on_sys_path(folders: tuple[str, ...]) -> None:
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def load_spec(path: str | os.PathLike[str]) -> Pipeline:
    """Load a YAML or TOML spec file into a :class:`Pipeline`.

    Raises
    ------
    SpecError
        With every problem in the file, each with its field path.
    """
    return Pipeline.from_file(path)


def _sink_inside_source(source: Any, sink: Sink) -> list[SpecIssue]:
    """A dataset written inside the folder it is read from grows with every run.

    So does one appended to its own source; overwriting it is fine (the run
    reads it all before the commit replaces it). A source inside the target
    would be deleted with the target's old contents.
    """
    if sink.parquet is None or not isinstance(source, TableSource):
        return []
    target = os.path.realpath(sink.parquet)
    given = source.path
    paths = [given] if isinstance(given, (str, os.PathLike)) else list(given)
    appends = sink.parquet_options.mode == "append"
    for path in paths:
        folder = os.path.realpath(path)
        inside = os.path.commonpath([target, folder]) == folder
        if inside and (target != folder or appends):
            return [
                SpecIssue(
                    "sink.parquet",
                    f"{sink.parquet} is {'' if target == folder else 'inside '}the source "
                    f"folder {path}: each run would "
                    "read the rows the runs before it wrote; write it elsewhere",
                )
            ]
        if target != folder and os.path.commonpath([target, folder]) == target:
            return [
                SpecIssue(
                    "sink.parquet",
                    f"the source {path} is inside {sink.parquet}: replacing or adding to it "
                    "would change or delete the source; write it elsewhere",
                )
            ]
    return []
