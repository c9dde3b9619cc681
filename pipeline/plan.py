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

from .chunking import WORKING_SET_FACTOR, ChunkSpec, plan_chunks, resolve_chunk_rows
from .errors import StageError
from .parallel import ParallelSettings, resolve_parallel
from .sources import OpenedSource
from .stage import Stage

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["ArrayMeta", "PassPlan", "Plan", "build_plan", "probe_stages"]

#: Rows the probe runs every stage on.
PROBE_ROWS = 16

# Interpreter, NumPy and joblib in one worker process, measured on Linux.
_WORKER_BASE_BYTES = 60 * 2**20

Output = Literal["sink", "memory", "workspace", "none"]


@dataclass(frozen=True)
class ArrayMeta:
    """What one row of data looks like: dtype and trailing shape."""

    dtype: str
    tail: tuple[int, ...]

    @property
    def row_nbytes(self) -> int:
        """Bytes in one row."""
        return int(np.prod(self.tail, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """e.g. ``float64 (n, 8)``."""
        return f"{np.dtype(self.dtype).name} {('n', *self.tail)}".replace("'n'", "n")

    @classmethod
    def of(cls, array: np.ndarray) -> ArrayMeta:
        """The meta of an array's rows."""
        return cls(array.dtype.str, tuple(array.shape[1:]))


def _as_rows(value: object, stage: Stage, rows: int, what: str) -> np.ndarray:
    """Check a stage result has ``rows`` rows; return it as an array."""
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] != rows:
        got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
        raise ValueError(f"returned {got} for {rows} input rows; {what}")
    return array


def apply_map(stage: Stage, data: np.ndarray) -> np.ndarray:
    """Run a map stage and check that it kept the rows."""
    return _as_rows(
        stage.call(data),  # type: ignore[attr-defined]
        stage,
        data.shape[0],
        "a map must return one row per input row (use a filter to drop rows)",
    )


def filter_mask(stage: Stage, data: np.ndarray) -> np.ndarray:
    """Run a filter stage and check that it returned a boolean row mask."""
    mask = _as_rows(
        stage.call(data),  # type: ignore[attr-defined]
        stage,
        data.shape[0],
        "a filter must return a boolean mask with one value per row",
    )
    if mask.dtype != np.bool_ or mask.ndim != 1:
        raise ValueError(
            f"returned {mask.dtype} values of shape {mask.shape}; a filter must return "
            "a 1-D boolean mask with one value per row"
        )
    return mask


def probe_stages(
    stages: Sequence[Stage], sample: np.ndarray
) -> tuple[ArrayMeta, tuple[ArrayMeta, ...]]:
    """Run the stages on ``sample`` rows; return the input meta and the meta after each.

    Raises
    ------
    StageError
        Naming the first stage that fails on the sample or returns the wrong rows.
    """
    data = sample
    metas = []
    for stage in stages:
        try:
            if stage.kind == "map":
                data = apply_map(stage, data)
            elif stage.kind == "filter":
                data = data[filter_mask(stage, data)]
            else:
                stage.reduction.chunk(data)  # type: ignore[attr-defined]
        except Exception as exc:
            raise StageError(
                stage.name,
                None,
                None,
                f"{type(exc).__name__}: {exc} (while checking the stage on the first "
                f"{sample.shape[0]} rows of {ArrayMeta.of(sample).describe()} data)",
            ) from exc
        metas.append(ArrayMeta.of(data))
    return ArrayMeta.of(sample), tuple(metas)


@dataclass(frozen=True, kw_only=True)
class PassPlan:
    """One pass: fused stages, how they run, and where their output goes."""

    index: int
    stages: tuple[Stage, ...]
    parallel: ParallelSettings
    input_meta: ArrayMeta
    output_meta: ArrayMeta
    stage_metas: tuple[ArrayMeta, ...]
    output: Output
    n_rows: int | None
    chunk_rows: int

    @property
    def ragged(self) -> bool:
        """Whether rows may be dropped, so the output length is known only afterwards."""
        return any(stage.kind == "filter" for stage in self.stages)

    @property
    def changes_data(self) -> bool:
        """Whether the data leaving the pass differs from the data entering it."""
        return any(stage.changes_data for stage in self.stages)

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
    passes: tuple[PassPlan, ...]

    @property
    def peak_bytes(self) -> int:
        """Estimated peak anonymous memory: the largest pass's estimate."""
        return max((p.peak_bytes for p in self.passes), default=_WORKER_BASE_BYTES)

    def explain(self) -> str:
        """The plan as text: passes, fused stages, chunks, files, memory."""
        lines = [f"pipeline {self.name!r}", f"source: {self.source}"]
        if self.passes:
            lines.append(f"  rows: {self.passes[0].input_meta.describe()}")
        lines.append(f"sink: {self.sink}")
        lines.append(f"chunks: {self.chunks.describe()}")
        for p in self.passes:
            lines.append(f"pass {p.index + 1} of {len(self.passes)}: {p.parallel.describe()}")
            if p.n_rows is None:
                lines.append(f"  chunks: {p.chunk_rows} rows each (input length known after pass)")
            else:
                n = len(plan_chunks(p.n_rows, p.chunk_rows))
                size = _human(p.chunk_rows * p.input_meta.row_nbytes)
                lines.append(
                    f"  chunks: {n} of up to {p.chunk_rows} rows ({size} each) "
                    f"over {p.n_rows} rows"
                    + (f", halo {self.overlap} rows" if self.overlap else "")
                )
            lines.append("  fused stages (one task per chunk):")
            for stage, meta in zip(p.stages, p.stage_metas, strict=True):
                lines.append(f"    {stage.name:<16} {stage.kind:<7} -> {meta.describe()}")
            lines.append(f"  output: {_describe_output(p, self.sink, self.has_y)}")
            lines.append(f"  estimated peak memory: {_human(p.peak_bytes)}")
        return "\n".join(lines)


def _describe_output(p: PassPlan, sink: str, has_y: bool) -> str:
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


def build_plan(
    pipeline: Pipeline,
    opened: OpenedSource,
    *,
    n_jobs: int | None = None,
    backend: str | None = None,
) -> Plan:
    """Compile ``pipeline`` over an opened source, probing every stage first."""
    x = opened.x
    sample = x.read(0, min(x.n_rows, PROBE_ROWS))
    input_meta, metas = probe_stages(pipeline.stages, np.asarray(sample))
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

    writes_data = pipeline.sink.npy is not None or any(s.changes_data for s in pipeline.stages)
    passes = []
    meta = input_meta
    n_rows: int | None = x.n_rows
    for k, group in enumerate(groups):
        stages = tuple(pipeline.stages[i] for i in group)
        stage_metas = tuple(metas[i] for i in group)
        settings = (
            resolve_parallel(*settings_of(stages[0]))
            if stages
            else resolve_parallel(default_n_jobs, default_backend)
        )
        last = k == len(groups) - 1
        changes = any(s.changes_data for s in stages)
        output: Output
        if last:
            output = "none" if not writes_data else "sink" if pipeline.sink.npy else "memory"
        else:
            output = "workspace" if changes else "none"
        out_meta = stage_metas[-1] if stage_metas else meta
        chunk_rows = resolve_chunk_rows(
            pipeline.chunks, max(meta.row_nbytes, out_meta.row_nbytes), settings.n_workers
        )
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
        has_y=opened.y is not None,
        passes=tuple(passes),
    )
