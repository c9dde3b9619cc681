"""Compiling a pipeline into passes, and explaining the result.

Consecutive stages that run with the same parallel settings are *fused*: they
run one after the other inside a single task per chunk, so intermediate data
never leaves the worker. Each group of fused stages is a *pass*: one
``joblib.Parallel`` call over chunk descriptors. A pass that hands data to a
later pass materializes it in the workspace.

Before any data is processed, every stage is run on the first few rows (a
*probe*), which tells the output dtype and row shape after each stage, so the
output can be preallocated and a stage that does not fit its input fails
early, with its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .blocks import ArrayMeta, Data, Meta, TableMeta, as_mask, as_rows, meta_of, num_rows, take
from .chunking import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_TABLE_CHUNK_BYTES,
    WORKING_SET_FACTOR,
    ChunkSpec,
    plan_chunks,
    resolve_chunk_rows,
)
from .datasets import TableRef
from .errors import SpecError, StageError
from .parallel import ParallelSettings, resolve_parallel
from .schema import check_columns
from .sources import OpenedSource
from .stage import Stage

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = [
    "ArrayMeta",
    "PassPlan",
    "Plan",
    "apply_map",
    "build_plan",
    "filter_mask",
    "probe_stages",
]

#: Rows the probe runs every stage on.
PROBE_ROWS = 16

# Interpreter, NumPy and joblib in one worker process, measured on Linux.
_WORKER_BASE_BYTES = 60 * 2**20

Output = Literal["sink", "memory", "workspace", "none"]


def _as_rows(value: object, rows: int, what: str) -> Data:
    """Check a stage result has ``rows`` rows; return it as an array or a table."""
    data = as_rows(value)
    if isinstance(data, np.ndarray) and data.ndim == 0:
        raise ValueError(f"returned a scalar for {rows} input rows; {what}")
    if num_rows(data) != rows:
        raise ValueError(f"returned {num_rows(data)} rows for {rows} input rows; {what}")
    return data


def apply_map(stage: Stage, data: Data) -> Data:
    """Run a map stage and check that it kept the rows."""
    return _as_rows(
        stage.call(data),  # type: ignore[attr-defined]
        num_rows(data),
        "a map must return one row per input row (use a filter to drop rows)",
    )


def filter_mask(stage: Stage, data: Data) -> np.ndarray:
    """Run a filter stage and check that it returned a boolean row mask."""
    mask = _as_rows(
        as_mask(stage.call(data)),  # type: ignore[attr-defined]
        num_rows(data),
        "a filter must return a boolean mask with one value per row",
    )
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 1:
        kind = (
            f"{mask.dtype} values of shape {mask.shape}"
            if isinstance(mask, np.ndarray)
            else "a table"
        )
        raise ValueError(
            f"returned {kind}; a filter must return a 1-D boolean mask with one value per row"
        )
    return mask


def probe_stages(stages: Sequence[Stage], sample: Data) -> tuple[Meta, tuple[Meta, ...]]:
    """Run the stages on ``sample`` rows; return the input meta and the meta after each.

    Raises
    ------
    StageError
        Naming the first stage that fails on the sample or returns the wrong rows.
    SpecError
        When a stage finds its parameters do not fit the data (e.g. a column
        that does not exist): reported as a mistake in the spec.
    """
    data = sample
    metas = []
    for stage in stages:
        try:
            if stage.kind == "map":
                data = apply_map(stage, data)
            elif stage.kind == "filter":
                data = take(data, filter_mask(stage, data))
            else:
                stage.reduction.chunk(data)  # type: ignore[attr-defined]
        except SpecError as exc:
            raise exc.prefixed(f"stage {stage.name!r}") from None
        except Exception as exc:
            raise StageError(
                stage.name,
                None,
                None,
                f"{type(exc).__name__}: {exc} (while checking the stage on "
                f"{_sample_description(sample)})",
            ) from exc
        metas.append(meta_of(data))
    return meta_of(sample), tuple(metas)


def _sample_description(sample: Data) -> str:
    if num_rows(sample) == 0:
        return f"an empty sample of {meta_of(sample).describe()}"
    return f"the first {num_rows(sample)} rows of {meta_of(sample).describe()} data"


@dataclass(frozen=True, kw_only=True)
class PassPlan:
    """One pass: fused stages, how they run, and where their output goes."""

    index: int
    stages: tuple[Stage, ...]
    parallel: ParallelSettings
    input_meta: Meta
    output_meta: Meta
    stage_metas: tuple[Meta, ...]
    output: Output
    n_rows: int | None
    chunk_rows: int
    n_chunks: int | None

    @property
    def ragged(self) -> bool:
        """Whether the output length is known only afterwards (filters, table input)."""
        table_input = isinstance(self.input_meta, TableMeta)
        return table_input or any(stage.kind == "filter" for stage in self.stages)

    @property
    def peak_bytes(self) -> int:
        """Estimated peak anonymous memory of the pass (all workers)."""
        row = max(self.input_meta.row_nbytes, self.output_meta.row_nbytes, 1)
        per_worker = WORKING_SET_FACTOR * self.chunk_rows * row + _WORKER_BASE_BYTES
        return self.parallel.n_workers * per_worker


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

    @property
    def peak_bytes(self) -> int:
        """Estimated peak anonymous memory: the largest pass's estimate."""
        return max((p.peak_bytes for p in self.passes), default=_WORKER_BASE_BYTES)

    def schemas(self) -> str:
        """The data's shape or schema at the source and after each stage."""
        if not self.passes:
            return ""
        lines = [f"  source{'':<10} {self.passes[0].input_meta.describe()}"]
        for p in self.passes:
            for stage, meta in zip(p.stages, p.stage_metas, strict=True):
                lines.append(f"  {stage.name:<16} {meta.describe()}")
        return "\n".join(lines)

    def explain(self) -> str:
        """The plan as text: passes, fused stages, chunks, files, memory."""
        lines = [f"pipeline {self.name!r}", f"source: {self.source}"]
        if self.passes:
            lines.append(f"  rows: {self.passes[0].input_meta.describe()}")
        lines.append(f"sink: {self.sink}")
        lines.append(f"chunks: {self.chunks.describe()}")
        for p in self.passes:
            lines.append(f"pass {p.index + 1} of {len(self.passes)}: {p.parallel.describe()}")
            size = _human(p.chunk_rows * p.input_meta.row_nbytes)
            if p.n_chunks is None:
                lines.append(
                    f"  chunks: up to {p.chunk_rows} rows ({size}) each "
                    f"(input length known after pass {p.index})"
                )
            else:
                total = "an unknown number of" if p.n_rows is None else str(p.n_rows)
                where = " (whole row groups, read by the workers)" if self.table else ""
                lines.append(
                    f"  chunks: {p.n_chunks} of up to {p.chunk_rows} rows ({size} each) "
                    f"over {total} rows{where}"
                    + (f", halo {self.overlap} rows" if self.overlap else "")
                )
            lines.append("  fused stages (one task per chunk):")
            for stage, meta in zip(p.stages, p.stage_metas, strict=True):
                lines.append(f"    {stage.name:<16} {stage.kind:<7} -> {meta.describe()}")
            lines.append(f"  output: {_describe_output(p, self.sink, self.has_y)}")
            lines.append(f"  estimated peak memory: {_human(p.peak_bytes)}")
        return "\n".join(lines)


def _describe_output(p: PassPlan, sink: str, has_y: bool) -> str:
    if isinstance(p.output_meta, TableMeta):
        where = {
            "sink": "into a staging folder beside the target, moved into place when every "
            "chunk has succeeded",
            "memory": "in the workspace, then loaded as one table",
            "workspace": "in the workspace, read by the next pass",
        }.get(p.output)
        if where is None:
            return "none (reductions only)"
        return f"each chunk writes its own Parquet part file(s), {where}"
    how = (
        "each chunk writes a part file; parts are joined in chunk order"
        if p.ragged
        else "preallocated .npy, each chunk writes its rows in place"
    )
    y = " (and y)" if has_y else ""
    if p.output == "sink":
        return f"sink{y}: {how}; written under temporary names, renamed on success"
    if p.output == "memory":
        return f"returned in memory{y}: {how} in the workspace, then loaded"
    if p.output == "workspace":
        return f"workspace file{y} for the next pass: {how}"
    return "none (reductions only)"


def _human(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _probe_sample(opened: OpenedSource | TableRef) -> Data:
    """Rows to probe the stages on: the first few of an array; an empty table.

    Tables are probed on no rows at all: the parent never reads table data.
    """
    if isinstance(opened, TableRef):
        return opened.empty()
    return np.asarray(opened.x.read(0, min(opened.x.n_rows, PROBE_ROWS)))


def _check_sink_fits(pipeline: Pipeline, meta: Meta) -> None:
    """The data output must be of the kind the sink writes."""
    sink = pipeline.sink
    if isinstance(meta, TableMeta) and sink.npy is not None:
        raise SpecError.at(
            "sink.npy",
            f"the pipeline's output is a {meta.describe()}; write it with sink.parquet, "
            "or end with a to_array stage",
        )
    if isinstance(meta, TableMeta) and sink.parquet_options.partition_by:
        check_columns(meta.schema, sink.parquet_options.partition_by, "sink.partition_by")
    if isinstance(meta, ArrayMeta) and sink.parquet is not None:
        raise SpecError.at(
            "sink.parquet",
            f"the pipeline's output is an array of {meta.describe()}; write it with "
            "sink.npy, or end with a from_array stage",
        )


def build_plan(
    pipeline: Pipeline,
    opened: OpenedSource | TableRef,
    *,
    n_jobs: int | None = None,
    backend: str | None = None,
) -> Plan:
    """Compile ``pipeline`` over an opened source, probing every stage first."""
    input_meta, metas = probe_stages(pipeline.stages, _probe_sample(opened))
    writes_data = pipeline.sink.has_data or any(s.changes_data for s in pipeline.stages)
    if writes_data:
        _check_sink_fits(pipeline, metas[-1] if metas else input_meta)
    default_n_jobs = n_jobs if n_jobs is not None else pipeline.n_jobs
    default_backend = backend if backend is not None else pipeline.backend

    def settings_of(stage: Stage) -> tuple[int | None, str | None]:
        return (
            stage.n_jobs if stage.n_jobs is not None else default_n_jobs,
            stage.backend if stage.backend is not None else default_backend,
        )

    def fuses_with(group: list[int], stage: Stage) -> bool:
        if settings_of(pipeline.stages[group[-1]]) != settings_of(stage):
            return False
        # A windowed map after a filter needs halo rows of the *filtered* data,
        # which only exist once the filter's output is materialized.
        after_filter = any(pipeline.stages[i].kind == "filter" for i in group)
        return not (pipeline.chunks.overlap and stage.kind == "map" and after_filter)

    groups: list[list[int]] = []
    for i, stage in enumerate(pipeline.stages):
        if groups and fuses_with(groups[-1], stage):
            groups[-1].append(i)
        else:
            groups.append([i])
    if not groups:  # no stages: one pass that copies the source to the sink
        groups = [[]]

    passes = []
    meta = input_meta
    n_rows = opened.n_rows if isinstance(opened, TableRef) else opened.x.n_rows
    # Table row sizes come from the Parquet metadata (decoded bytes per row).
    source_row_nbytes = opened.row_nbytes if isinstance(opened, TableRef) else 0
    for k, group in enumerate(groups):
        stages = tuple(pipeline.stages[i] for i in group)
        stage_metas = tuple(metas[i] for i in group)
        # pyarrow releases the GIL while it reads, computes and writes, so table
        # passes run on threads unless told otherwise: no worker start-up,
        # imports or pickling (a third faster on W3, see benchmarks/).
        table_input = isinstance(meta, TableMeta)
        settings = resolve_parallel(
            *(settings_of(stages[0]) if stages else (default_n_jobs, default_backend)),
            default_backend="threading" if table_input else None,
        )
        last = k == len(groups) - 1
        changes = any(s.changes_data for s in stages)
        output: Output
        if last:
            output = "none" if not writes_data else "sink" if pipeline.sink.has_data else "memory"
        else:
            output = "workspace" if changes else "none"
        out_meta = stage_metas[-1] if stage_metas else meta
        row_nbytes = max(meta.row_nbytes, out_meta.row_nbytes, source_row_nbytes if k == 0 else 0)
        chunk_rows = resolve_chunk_rows(
            pipeline.chunks,
            row_nbytes,
            settings.n_workers,
            DEFAULT_TABLE_CHUNK_BYTES if table_input else DEFAULT_CHUNK_BYTES,
        )
        n_chunks: int | None = None
        if k == 0 and isinstance(opened, TableRef):
            n_chunks = len(opened.plan_chunks(chunk_rows))
        elif n_rows is not None:
            n_chunks = len(plan_chunks(n_rows, chunk_rows))
        passes.append(
            PassPlan(
                index=k,
                stages=stages,
                parallel=settings,
                input_meta=meta,
                output_meta=out_meta,
                stage_metas=stage_metas,
                output=output,
                n_rows=n_rows,
                chunk_rows=chunk_rows,
                n_chunks=n_chunks,
            )
        )
        if any(s.kind == "filter" for s in stages):
            n_rows = None
        meta = out_meta
    return Plan(
        name=pipeline.name,
        source=pipeline.source.describe(),
        sink=pipeline.sink.describe(),
        chunks=pipeline.chunks,
        overlap=pipeline.chunks.overlap,
        has_y=isinstance(opened, OpenedSource) and opened.y is not None,
        table=isinstance(opened, TableRef),
        passes=tuple(passes),
    )
