"""Compiling a pipeline into passes, and explaining the result.

Consecutive stages that run with the same parallel settings are *fused*: they
run one after the other inside a single task per chunk, so intermediate data
never leaves the worker. Each group of fused stages is a *pass*: one
``joblib.Parallel`` call over chunk descriptors. A pass that hands data to a
later pass materializes it in the workspace.

A fit (see :class:`~pipeline.stage.Fit`) is a *barrier*: its pass ends with
the fit's :class:`~pipeline.fitting.Feed`, the parent fits the model, and the
next pass starts by applying it. That pass needs the fit's input rows again:
it reads them from the workspace when the fit pass wrote them anyway (a
``partial_fit`` or ``full`` fit of array rows), and otherwise recomputes them
from the fit pass's own input, re-running the stages before the fit (but
not the taps, which have already seen every row). ``explain`` says which.

Every pass is probed (:mod:`pipeline.probe`) before data is processed. What
comes after an estimator that is not fitted yet cannot be probed before it
is: those passes are probed again, with the fitted model, just before they
run (:func:`realize_pass`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .blocks import ArrayMeta, Meta, TableMeta, meta_of
from .chunking import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_TABLE_CHUNK_BYTES,
    WORKING_SET_FACTOR,
    ChunkSpec,
    format_bytes,
    plan_chunks,
    resolve_chunk_rows,
)
from .datasets import TableRef
from .errors import SpecError
from .fitting import Applied, Feed, PendingApply, Sample, model_file
from .parallel import ParallelSettings, resolve_parallel
from .parquet import ParquetTarget
from .probe import Probe, probe_stages, sample_of
from .schema import check_columns
from .sinks import Sink
from .sources import OpenedSource
from .stage import Fit, Stage

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .workspace import Workspace

__all__ = [
    "ArrayMeta",
    "PassPlan",
    "Plan",
    "applied_model",
    "build_plan",
    "reads_output_of",
    "realize_pass",
]

# Interpreter, NumPy and joblib in one worker process, measured on Linux.
_WORKER_BASE_BYTES = 60 * 2**20

Output = Literal["sink", "memory", "workspace", "none"]
Input = OpenedSource | TableRef


@dataclass(frozen=True, kw_only=True)
class PassPlan:
    """One pass: fused stages, how they run, and where their output goes.

    Metas are ``None`` where they depend on a model not fitted yet; such a
    pass is probed again with the model before it runs (:func:`realize_pass`).
    """

    index: int
    stages: tuple[Stage, ...]
    parallel: ParallelSettings
    input_meta: Meta | None
    output_meta: Meta | None
    stage_metas: tuple[Meta | None, ...]
    output: Output
    n_rows: int | None
    chunk_rows: int
    n_chunks: int | None
    #: The fit whose Feed ends this pass (its model is fitted after the pass).
    fit: Fit | None = None
    #: Leading stages that recompute the previous fit pass's rows (not taps).
    replayed: int = 0
    #: What ``y`` looks like after the pass (``None``: no y).
    y_meta: Meta | None = None
    #: The pass before: -1 for the source. ``reads_output``: this pass reads that
    #: pass's output; otherwise, that pass's own input (it wrote no rows, or
    #: wrote training rows this pass cannot use).
    after: int = -1
    reads_output: bool = False
    #: Whether the rows entering the fit's Feed are an array (known before the
    #: models are: applying a model keeps arrays arrays and tables tables).
    fit_sees_array: bool = False

    @property
    def ragged(self) -> bool:
        """Whether the output length is known only afterwards (filters, table input)."""
        table_input = isinstance(self.input_meta, TableMeta)
        return table_input or any(stage.kind == "filter" for stage in self.stages)

    @property
    def row_nbytes(self) -> int:
        """Bytes in one input row (the pass must be probed)."""
        assert self.input_meta is not None, "the pass has not been probed"
        return self.input_meta.row_nbytes

    @property
    def known(self) -> bool:
        """Whether every meta is known (no model this pass needs is still unfitted)."""
        return self.output_meta is not None

    @property
    def writes_fit_input(self) -> bool:
        """Whether the pass wrote exactly the rows its fit saw (array rows, kept).

        Then the next pass applies the model to those rows instead of
        recomputing them.
        """
        feed = self.stages[-1] if self.fit is not None and self.stages else None
        return isinstance(feed, Feed) and feed.writes and self.fit_sees_array

    @property
    def peak_bytes(self) -> int:
        """Estimated peak anonymous memory of the pass (all workers)."""
        metas = [m for m in (self.input_meta, self.output_meta) if m is not None]
        row = max([m.row_nbytes for m in metas] + [1])
        # No chunk holds more rows than the input, and no more workers are busy
        # than there are chunks.
        rows = self.chunk_rows if self.n_rows is None else min(self.chunk_rows, self.n_rows)
        workers = self.parallel.n_workers
        if self.n_chunks is not None:
            workers = max(1, min(workers, self.n_chunks))
        return workers * (WORKING_SET_FACTOR * rows * row + _WORKER_BASE_BYTES)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The compiled schedule of a pipeline run (see :meth:`explain`)."""

    name: str
    source: str
    sink: str
    chunks: ChunkSpec
    overlap: int
    has_y: bool
    table: bool
    passes: tuple[PassPlan, ...]
    #: What the executor needs to probe again a pass after a fit.
    sink_spec: Sink = field(default_factory=Sink, repr=False, compare=False)
    settings: Callable[[Stage | None], tuple[int | None, str | None]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def peak_bytes(self) -> int:
        """Estimated peak anonymous memory: the largest pass's estimate."""
        return max((p.peak_bytes for p in self.passes), default=_WORKER_BASE_BYTES)

    def schemas(self) -> str:
        """The data's shape or schema at the source and after each stage."""
        if not self.passes:
            return ""
        first = self.passes[0].input_meta
        lines = [f"  source{'':<10} {_describe_meta(first, None)}"]
        for p in self.passes:
            for stage, meta in list(zip(p.stages, p.stage_metas, strict=True))[p.replayed :]:
                lines.append(f"  {_label(stage):<16} {_describe_meta(meta, p)}")
        return "\n".join(lines)

    def explain(self) -> str:
        """The plan as text: passes, fused stages, fits, chunks, files, memory."""
        lines = [f"pipeline {self.name!r}", f"source: {self.source}"]
        if self.passes:
            lines.append(f"  rows: {_describe_meta(self.passes[0].input_meta, None)}")
        lines.append(f"sink: {self.sink}")
        lines.append(f"chunks: {self.chunks.describe()}")
        for p in self.passes:
            lines.append(f"pass {p.index + 1} of {len(self.passes)}: {p.parallel.describe()}")
            lines.append(f"  input: {_describe_input(p, self.passes)}")
            lines.append(f"  chunks: {self._describe_chunks(p)}")
            lines.append("  fused stages (one task per chunk):")
            for i, (stage, meta) in enumerate(zip(p.stages, p.stage_metas, strict=True)):
                again = " (recomputed)" if i < p.replayed else ""
                lines.append(
                    f"    {stage.name:<16} {stage.role:<7} -> {_describe_meta(meta, p)}{again}"
                )
            lines.append(f"  output: {_describe_output(p, self.sink, self.has_y)}")
            lines.append(f"  estimated peak memory: {format_bytes(p.peak_bytes)}")
            if p.fit is not None:
                lines.append(f"  then fit {p.fit.describe_fit(p.parallel)}")
                memory = self._describe_fit_memory(p)
                if memory:
                    lines.append(f"  fit memory in the parent: {memory}")
        return "\n".join(lines)

    @staticmethod
    def _describe_fit_memory(p: PassPlan) -> str:
        assert p.fit is not None
        # The rows the fit learns from are what its feed stage, last in the pass,
        # hands on; while earlier models are unfitted, the nearest shape known before.
        seen = next((m for m in (*p.stage_metas[::-1], p.input_meta) if m is not None), None)
        row_nbytes = None if seen is None else seen.row_nbytes
        return p.fit.describe_parent_memory(p.n_rows, row_nbytes, p.chunk_rows)

    def _describe_chunks(self, p: PassPlan) -> str:
        if p.input_meta is None:
            return "sized when the pass starts (its input depends on a fitted model)"
        size = format_bytes(p.chunk_rows * p.input_meta.row_nbytes)
        if p.n_chunks is None:
            return (
                f"up to {p.chunk_rows} rows ({size}) each (input length known after pass {p.index})"
            )
        total = "an unknown number of" if p.n_rows is None else str(p.n_rows)
        where = (
            " (whole row groups, read by the workers)"
            if isinstance(p.input_meta, TableMeta) and p.after == -1
            else ""
        )
        return (
            f"{p.n_chunks} of up to {p.chunk_rows} rows ({size} each) over {total} rows{where}"
            + (f", halo {self.overlap} rows" if self.overlap else "")
        )


def _label(stage: Stage) -> str:
    return (
        stage.name if stage.role in ("map", "filter", "reduce") else f"{stage.name} ({stage.role})"
    )


def _describe_meta(meta: Meta | None, p: PassPlan | None) -> str:
    if meta is not None:
        return meta.describe()
    pending = next((s.fit.name for s in (p.stages if p else ()) if isinstance(s, PendingApply)), "")
    return f"known once {pending!r} is fitted" if pending else "known once the models are fitted"


def _origin(p: PassPlan, passes: Sequence[PassPlan]) -> str:
    """Where a pass's rows come from: the source, or what an earlier pass wrote."""
    if p.after == -1:
        return "the source"
    before = passes[p.after]
    if not p.reads_output:
        return _origin(before, passes)
    if before.fit is not None:
        return f"the rows pass {before.index + 1} wrote for {before.fit.name!r} (not recomputed)"
    return f"pass {before.index + 1}'s output"


def _describe_input(p: PassPlan, passes: Sequence[PassPlan]) -> str:
    origin = _origin(p, passes)
    if p.after == -1 or p.reads_output:
        return origin
    again = f"{origin}, read again"
    if p.replayed:
        names = ", ".join(repr(s.name) for s in p.stages[: p.replayed])
        return f"{again}; recomputes {names} (the rows the fit saw were not written)"
    return again


def _describe_output(p: PassPlan, sink: str, has_y: bool) -> str:
    if p.output_meta is None:
        return {
            "sink": "the sink",
            "memory": "returned in memory",
            "workspace": "workspace files for the next pass",
        }.get(p.output, "none (reductions only)") + " (layout known once the model is fitted)"
    if p.fit is not None and p.output == "workspace":
        return (
            f"the training rows of {p.fit.name!r} (X{' and y' if p.y_meta else ''}) go to "
            "workspace files, read back by the fit"
            + (" and by the next pass" if p.writes_fit_input else "")
        )
    if isinstance(p.output_meta, TableMeta):
        where = {
            "sink": "into a staging folder beside the target, moved into place when every "
            "chunk has succeeded",
            "memory": "in the workspace, then loaded as one table",
            "workspace": "in the workspace, read by the next pass",
        }.get(p.output)
        if where is None:
            return "none (" + ("fit statistics" if p.fit else "reductions") + " only)"
        return f"each chunk writes its own Parquet part file(s), {where}"
    how = (
        "each chunk writes a part file; parts are joined in chunk order"
        if p.ragged
        else "preallocated .npy, each chunk writes its rows in place"
    )
    y = " (and y)" if has_y and p.y_meta is not None else ""
    if p.output == "sink":
        return f"sink{y}: {how}; written under temporary names, renamed on success"
    if p.output == "memory":
        return f"returned in memory{y}: {how} in the workspace, then loaded"
    if p.output == "workspace":
        return f"workspace file{y} for the next pass: {how}"
    return "none (" + ("fit statistics" if p.fit else "reductions") + " only)"


def _check_sink_fits(sink: Sink, meta: Meta) -> None:
    """The data output must be of the kind the sink writes."""
    if isinstance(meta, TableMeta) and sink.npy is not None:
        raise SpecError.at(
            "sink.npy",
            f"the pipeline's output is a {meta.describe()}; write it with sink.parquet, "
            "or end with a to_array stage",
        )
    if isinstance(meta, TableMeta) and sink.parquet_options.partition_by:
        check_columns(meta.schema, sink.parquet_options.partition_by, "sink.partition_by")
    if isinstance(meta, TableMeta) and sink.parquet is not None:
        ParquetTarget(sink.parquet, sink.parquet_options).check_append(meta.schema)
    if isinstance(meta, ArrayMeta) and sink.parquet is not None:
        raise SpecError.at(
            "sink.parquet",
            f"the pipeline's output is an array of {meta.describe()}; write it with "
            "sink.npy, or end with a from_array stage",
        )


# ---------------------------------------------------------------- the shape of the plan


@dataclass
class _Shape:
    """A pass before it is probed: its stages, and what it does for fits."""

    stages: list[Stage]
    fit: Fit | None = None
    #: After a fit whose pass filtered rows: this pass may recompute them
    #: through those filters (see realize_pass), so no halo is at hand.
    filtered_before: bool = False
    output: Output = "none"


def _feed_of(stage: Fit) -> Feed:
    schedule = stage.schedule()
    assert schedule is not None
    reduction = stage.chunk_state()
    if schedule.strategy == "sample":
        reduction = Sample(schedule.sample_rows, schedule.seed)
    return Feed(
        stage.training_rows(),
        name=stage.name,
        n_jobs=stage.n_jobs,
        backend=stage.backend,
        reduction=reduction,
    )


def _recomputing(
    after: PassPlan | None, reads_output: bool, stages: list[Stage]
) -> tuple[list[Stage], int]:
    """The pass's stages, led by those recomputing the rows a fit saw; how many lead.

    After a fit pass whose rows were not written, the next pass reads the fit
    pass's input again and re-runs what turned it into the fit's rows: that
    pass's stages before the fit that change data (taps, which have seen
    every row, are not re-run). They must be deterministic, as every stage is.
    """
    if after is None or after.fit is None or reads_output:
        return stages, 0
    again = [s for s in after.stages[:-1] if s.changes_data]
    return [*again, *stages], len(again)


def reads_output_of(after: PassPlan) -> bool:
    """Whether the pass after ``after`` reads its output (else the input it read).

    After a fit pass, only the rows the fit saw can be read back, and only if
    they were written as they were (arrays); other passes hand on whatever
    they wrote.
    """
    if after.fit is not None:
        return after.writes_fit_input
    return after.output == "workspace"


def _saved(stage: Fit, workspace: Workspace | None) -> Applied:
    """The map applying a saved model; one given in memory is written to the workspace.

    Worker processes then load it from the file once each, rather than
    receiving it with every task (threads share it in memory either way).
    """
    model, path = stage.saved_model()
    if path is None and workspace is not None:
        model, path = model_file(model, workspace.path(f"saved-{stage.name}.joblib"))
    return applied_model(stage, model, path)


def _shapes(
    pipeline: Pipeline,
    settings_of: Callable[[Stage], Any],
    output: bool = True,
    workspace: Workspace | None = None,
) -> list[_Shape]:
    """Cut the stages into passes: at fits, at changes of parallel settings, at halos."""
    overlap = pipeline.chunks.overlap

    def fuses_with(shape: _Shape, stage: Stage) -> bool:
        if settings_of(shape.stages[-1]) != settings_of(stage):
            return False
        # A windowed map after a filter needs halo rows of the *filtered* data,
        # which only exist once the filter's output is materialized. Applying a
        # model is row-wise: it needs no halo.
        after_filter = shape.filtered_before or any(s.kind == "filter" for s in shape.stages)
        windowed = stage.kind == "map" and stage.role == "map"
        return not (overlap and windowed and after_filter)

    shapes: list[_Shape] = []
    current = _Shape([])
    for stage in pipeline.stages:
        if isinstance(stage, Fit) and stage.schedule() is None:
            stage = _saved(stage, workspace)
        if current.stages and not fuses_with(current, stage):
            shapes.append(current)
            current = _Shape([])
        if isinstance(stage, Fit):
            current.stages.append(_feed_of(stage))
            current.fit = stage
            shapes.append(current)
            # The next pass applies the model to the rows the fit saw: it reads
            # them back, or recomputes them (decided when probed: realize_pass).
            pending = PendingApply(
                stage, name=stage.name, n_jobs=stage.n_jobs, backend=stage.backend
            )
            filtered = current.filtered_before or any(s.kind == "filter" for s in current.stages)
            current = _Shape([pending], filtered_before=filtered)
        else:
            current.stages.append(stage)
    if current.stages:
        shapes.append(current)
    # The last stage changing data feeds the sink; a pass that only recomputes
    # and applies a model nobody reads is dropped.
    writes_data = pipeline.sink.has_data or (
        output and pipeline.sink.in_memory and any(s.changes_data for s in pipeline.stages)
    )
    last = shapes[-1] if shapes else None
    if (
        last is not None
        and last.fit is None
        and not writes_data
        and all(s.kind != "reduce" for s in last.stages)
        and len(shapes) > 1
    ):
        shapes.pop()
    if not shapes:  # no stages: one pass that copies the source to the sink
        shapes = [_Shape([])]
    for k, shape in enumerate(shapes):
        if k == len(shapes) - 1:
            shape.output = (
                "none" if not writes_data else "sink" if pipeline.sink.has_data else "memory"
            )
        else:
            shape.output = "workspace"  # decided again when probed
    return shapes


def applied_model(stage: Fit, model: Any, model_path: str | None) -> Applied:
    """The map applying ``stage``'s fitted ``model`` (saved at ``model_path``)."""
    return Applied(
        stage.applier(model, model_path),
        name=stage.name,
        n_jobs=stage.n_jobs,
        backend=stage.backend,
        threads=stage.threaded_apply(model),
        preferred_chunk_bytes=stage.apply_chunk_bytes(model),
    )


# ---------------------------------------------------------------- probing a pass


def realize_pass(
    plan: Plan,
    shape: PassPlan,
    probe: Probe,
    *,
    after: PassPlan | None,
    n_rows: int | None,
    table: TableRef | None,
    models: Mapping[str, Applied],
) -> tuple[PassPlan, Probe | None]:
    """Probe a planned pass on the rows it will read, with the models fitted so far.

    ``shape`` is the pass as planned; ``probe`` holds the first rows of its
    input (with ``y``); ``after`` is the pass before it. A pass after a fit
    pass that wrote the fit's input rows reads those instead of recomputing
    them; models in ``models`` replace the pending applies. Returns the pass
    and the probe rows as they leave it (``None`` when a model is pending).
    """
    reads_output = after is not None and reads_output_of(after)
    # A pass planned earlier may lead with stages it recomputed then: drop them.
    stages, replayed = _recomputing(after, reads_output, list(shape.stages[shape.replayed :]))
    stages = [models.get(s.fit.name, s) if isinstance(s, PendingApply) else s for s in stages]
    fit = shape.fit
    stages = _with_feed_decided(stages, fit, isinstance(probe.data, np.ndarray))
    input_meta, metas, out = probe_stages(stages, probe.data, probe.y)
    output_meta = metas[-1] if metas else input_meta
    kinds = [None if m is None else isinstance(m, ArrayMeta) for m in (input_meta, *metas)]
    output = shape.output
    if fit is not None:  # a fit pass hands on its training rows, whatever comes after
        output = "workspace" if _feed_writes(stages) else "none"
    elif output == "workspace" and not any(s.changes_data for s in stages):
        output = "none"
    if output in ("sink", "memory") and output_meta is not None:
        _check_sink_fits(plan.sink_spec, output_meta)
    table_input = isinstance(input_meta, TableMeta)
    assert plan.settings is not None
    settings = _parallel_of(stages, replayed, table_input, plan.settings)
    row_nbytes = max(
        input_meta.row_nbytes,
        output_meta.row_nbytes if output_meta is not None else 0,
        table.row_nbytes if table is not None else 0,
    )
    preferred = [s.chunk_bytes for s in stages if s.chunk_bytes is not None]
    schedule = fit.schedule() if fit is not None else None
    if schedule is not None and schedule.strategy == "partial_fit":
        # A chunk is a partial_fit batch: its default size must not depend on
        # the stages before the fit (a model's apply asks for larger chunks).
        preferred = []
    default_bytes = DEFAULT_TABLE_CHUNK_BYTES if table_input else DEFAULT_CHUNK_BYTES
    chunk_rows = resolve_chunk_rows(
        plan.chunks, row_nbytes, settings.n_workers, max([default_bytes, *preferred])
    )
    n_chunks: int | None = None
    if table is not None:
        n_chunks = len(table.plan_chunks(chunk_rows))
    elif n_rows is not None:
        n_chunks = len(plan_chunks(n_rows, chunk_rows))
    realized = PassPlan(
        index=shape.index,
        stages=tuple(stages),
        parallel=settings,
        input_meta=input_meta,
        output_meta=output_meta,
        stage_metas=metas,
        output=output,
        n_rows=n_rows,
        chunk_rows=chunk_rows,
        n_chunks=n_chunks,
        fit=fit,
        replayed=replayed,
        y_meta=None if out is None or out.y is None else meta_of(np.asarray(out.y)),
        after=-1 if after is None else after.index,
        reads_output=reads_output,
        fit_sees_array=fit is not None and _sees_array(stages, kinds),
    )
    return realized, out


def _parallel_of(
    stages: Sequence[Stage],
    replayed: int,
    table_input: bool,
    settings_of: Callable[[Stage | None], tuple[int | None, str | None]],
) -> ParallelSettings:
    """How a pass runs: its own stages' settings, and the default backend it implies.

    pyarrow releases the GIL while it reads, computes and writes, so table
    passes run on threads unless told otherwise: no worker start-up, imports
    or pickling (a third faster on W3, see benchmarks/). So do passes of fits
    and applies of models alone (Stage.prefers_threads): faster than
    processes on W2, and a forest's predict_proba on W4 as fast as its own
    n_jobs with a quarter of the memory.
    """
    n_jobs, backend = settings_of(next(iter(stages[replayed:] or stages), None))
    threads = table_input or (bool(stages) and all(s.prefers_threads for s in stages))
    return resolve_parallel(n_jobs, backend, default_backend="threading" if threads else None)


def _reads_a_table(after: PassPlan | None, reads_output: bool) -> bool:
    """Whether a pass not probed yet reads a table: the input ``after`` read, if a table."""
    return after is not None and not reads_output and isinstance(after.input_meta, TableMeta)


def _feed_writes(stages: Sequence[Stage]) -> bool:
    return bool(stages) and isinstance(stages[-1], Feed) and stages[-1].writes


def _with_feed_decided(stages: list[Stage], fit: Fit | None, array_input: bool) -> list[Stage]:
    """Set whether the pass's Feed writes the training rows for the parent to read back.

    The fit reads the rows back (``partial_fit``, ``full``), and they must be
    written, unless they are the pass's input rows as they are: arrays, with
    nothing before the feed that changes them.
    """
    if fit is None:
        return stages
    schedule = fit.schedule()
    assert schedule is not None
    untouched = array_input and not any(s.changes_data for s in stages[:-1])
    feed = stages[-1]
    assert isinstance(feed, Feed)
    return [*stages[:-1], replace(feed, writes=schedule.needs_rows and not untouched)]


def _sees_array(stages: Sequence[Stage], kinds: Sequence[bool | None]) -> bool:
    """Whether the rows reaching the last stage (a Feed) are an array.

    ``kinds`` says for the input and after each stage whether the rows are an
    array (``None``: not probed). Applying a model that is not fitted yet
    keeps arrays arrays; other unprobed stages leave it unknown (not an array).
    """
    array = bool(kinds[0])
    for stage, kind in zip(stages[:-1], kinds[1:-1], strict=True):
        if kind is not None:
            array = kind
        elif not isinstance(stage, PendingApply):
            array = False
    return array


def build_plan(
    pipeline: Pipeline,
    opened: Input,
    *,
    n_jobs: int | None = None,
    backend: str | None = None,
    output: bool = True,
    workspace: Workspace | None = None,
) -> Plan:
    """Compile ``pipeline`` over an opened source, probing every stage it can.

    With ``output=False`` and a sink that writes no data file, the data
    output is not produced: passes that nothing reads are left out. Models
    given in memory are written to ``workspace`` (the run's), if given.

    Passes after a fit not done yet are probed as far as possible (see
    :func:`realize_pass`); the executor probes them again before they run.
    """
    default_n_jobs = n_jobs if n_jobs is not None else pipeline.n_jobs
    default_backend = backend if backend is not None else pipeline.backend

    def settings_of(stage: Stage | None) -> tuple[int | None, str | None]:
        if stage is None:  # a pass without stages
            return default_n_jobs, default_backend
        return (
            stage.n_jobs if stage.n_jobs is not None else default_n_jobs,
            stage.backend if stage.backend is not None else default_backend,
        )

    shapes = _shapes(pipeline, settings_of, output, workspace)
    plan = Plan(
        name=pipeline.name,
        source=pipeline.source.describe(),
        sink=pipeline.sink.describe(),
        chunks=pipeline.chunks,
        overlap=pipeline.chunks.overlap,
        has_y=isinstance(opened, OpenedSource) and opened.y is not None,
        table=isinstance(opened, TableRef),
        passes=(),
        sink_spec=pipeline.sink,
        settings=settings_of,
    )
    passes: list[PassPlan] = []
    # What each pass reads, as far as the probe can tell: rows, row count, table.
    source_input = (
        sample_of(opened),
        opened.n_rows if isinstance(opened, TableRef) else opened.x.n_rows,
        opened if isinstance(opened, TableRef) else None,
    )
    inputs: list[tuple[Probe | None, int | None, TableRef | None]] = []
    outputs: list[Probe | None] = []
    for k, shape in enumerate(shapes):
        planned = _unprobed(k, shape)
        after = passes[-1] if passes else None
        current = source_input if after is None else _next_input(after, inputs[-1], outputs[-1])
        inputs.append(current)
        probe, n_rows, table = current
        if probe is None:
            passes.append(_unknown(planned, after, settings_of))
            outputs.append(None)
            continue
        realized, out = realize_pass(
            plan, planned, probe, after=after, n_rows=n_rows, table=table, models={}
        )
        passes.append(realized)
        outputs.append(out)
    return replace(plan, passes=tuple(passes))


def _unprobed(k: int, shape: _Shape) -> PassPlan:
    """A pass as shaped, before probing (its metas unknown)."""
    return PassPlan(
        index=k,
        stages=tuple(shape.stages),
        parallel=resolve_parallel(1, "sequential"),
        input_meta=None,
        output_meta=None,
        stage_metas=(None,) * len(shape.stages),
        output=shape.output,
        n_rows=None,
        chunk_rows=1,
        n_chunks=None,
        fit=shape.fit,
    )


def _next_input(
    after: PassPlan,
    before: tuple[Probe | None, int | None, TableRef | None],
    out: Probe | None,
) -> tuple[Probe | None, int | None, TableRef | None]:
    """The probe rows, row count and table the pass after ``after`` reads, at plan time.

    ``before`` is what ``after`` read, ``out`` the probe rows it produced.
    """
    if not reads_output_of(after):
        return before
    if out is None:
        return None, None, None
    return out, None if after.ragged else after.n_rows, None


def _unknown(
    planned: PassPlan,
    after: PassPlan | None,
    settings_of: Callable[[Stage | None], tuple[int | None, str | None]],
) -> PassPlan:
    """A pass whose input depends on a model not fitted yet: settings only."""
    reads_output = after is not None and reads_output_of(after)
    stages, replayed = _recomputing(after, reads_output, list(planned.stages))
    # Its input is unknown, but an array if it reads rows a fit pass wrote.
    array_input = reads_output and after is not None and after.fit is not None
    stages = _with_feed_decided(stages, planned.fit, array_input)
    kinds = [array_input, *([None] * len(stages))]
    return replace(
        planned,
        stages=tuple(stages),
        stage_metas=(None,) * len(stages),
        replayed=replayed,
        output=(
            ("workspace" if _feed_writes(stages) else "none")
            if planned.fit is not None
            else planned.output
        ),
        parallel=_parallel_of(stages, replayed, _reads_a_table(after, reads_output), settings_of),
        after=-1 if after is None else after.index,
        reads_output=reads_output,
        fit_sees_array=planned.fit is not None and _sees_array(stages, kinds),
    )
