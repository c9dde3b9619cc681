"""Running a plan: one ``joblib.Parallel`` call per pass, over chunk descriptors.

A task carries a :class:`PassTask` (descriptors of the input and output files
and the fused stages) and one :class:`~pipeline.chunking.Chunk`. The worker
maps its rows from the input file, runs the stages, writes its output rows
itself, and returns only a small :class:`ChunkOutcome` (row count, reduction
states, timings). The parent folds reduction states in chunk order, so
results are identical for every ``n_jobs`` and backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from joblib import delayed

from .chunking import Chunk, plan_chunks
from .errors import SinkError, StageError
from .plan import ArrayMeta, PassPlan, Plan, apply_map, filter_mask
from .progress import progress_bar
from .report import PassReport, RunReport, StageReport
from .sinks import (
    ArraySink,
    allocate_npy,
    assemble_parts,
    atomic_write_json,
    reductions_as_json,
    temporary_sibling,
    write_part,
    write_rows,
)
from .sources import ArrayRef, OpenedSource, read_npy_ref
from .stage import Stage
from .workspace import Workspace

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

__all__ = ["ChunkOutcome", "PassTask", "RunOutput", "execute_plan", "run_chunk"]

Writes = Literal["rows", "parts", "none"]


@dataclass(frozen=True, kw_only=True)
class PassTask:
    """Everything a worker needs for any chunk of a pass; small and picklable."""

    x: ArrayRef
    y: ArrayRef | None
    stages: tuple[Stage, ...]
    output_meta: ArrayMeta
    writes: Writes
    x_target: ArrayRef | str | None = None  # an .npy to write rows into, or a parts folder
    y_target: ArrayRef | str | None = None
    keep_freed_memory: bool = False


@dataclass(frozen=True)
class ChunkOutcome:
    """What a worker sends back for one chunk: small things only."""

    index: int
    rows_in: int
    rows_out: int
    states: tuple[Any, ...]
    seconds: tuple[float, ...]
    peak_rss: int


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed chunk buffers for the next chunk (worker processes only).

    By default glibc hands large freed blocks back to the kernel (its trim and
    mmap thresholds adapt to at most about twice the largest block), so every
    chunk's NumPy temporaries are page-faulted and zero-filled again: on W1 that
    was half the run time. Pinning the thresholds lets the allocator reuse them.
    What stays allocated is bounded by a worker's peak working set, itself set
    by the chunk size. Only called in processes that chunkline's pool owns, never
    in the caller's process. Returns whether the setting took effect.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        mallopt(m_trim_threshold, 1024 * 2**20)
    )


def _peak_rss() -> int:
    if resource is None:
        return 0
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kib) * (1 if sys.platform == "darwin" else 1024)


def _fit_output(data: np.ndarray, meta: ArrayMeta) -> np.ndarray:
    """Check a chunk's output against the probed meta; cast safely if needed."""
    if data.shape[1:] != meta.tail:
        raise ValueError(
            f"returned rows of shape {data.shape[1:]}, but rows of shape {meta.tail} on the "
            "first rows of the data; every chunk must give rows of the same shape"
        )
    if data.dtype.str != meta.dtype:
        if not np.can_cast(data.dtype, meta.dtype, "safe"):
            raise ValueError(
                f"returned {data.dtype} values, but {np.dtype(meta.dtype)} on the first rows "
                "of the data; cast explicitly (e.g. an 'astype' stage) to keep one dtype"
            )
        data = data.astype(meta.dtype)
    return data


def run_chunk(task: PassTask, chunk: Chunk) -> ChunkOutcome:
    """Run a pass's fused stages on one chunk and write its output (in a worker)."""
    if task.keep_freed_memory:
        keep_freed_memory()
    data = task.x.read(chunk.read_start, chunk.read_stop)
    y = None if task.y is None else task.y.read(chunk.start, chunk.stop)
    before, after = chunk.halo
    states = []
    seconds = []
    stage: Stage | None = None
    try:
        for stage in task.stages:
            started = time.perf_counter()
            if stage.kind == "map":
                data = apply_map(stage, data)
            elif stage.kind == "filter":
                # A filter decides on the chunk's own rows; the planner starts a new
                # pass before any windowed map that follows it, so no halo is needed.
                data = data[before : data.shape[0] - after]
                before = after = 0
                mask = filter_mask(stage, data)
                data = data[mask]
                if y is not None:
                    y = y[mask]
            else:
                # A tap sees each row once, and passes the halo on for later maps.
                owned = data[before : data.shape[0] - after]
                states.append(stage.reduction.chunk(owned))  # type: ignore[attr-defined]
            seconds.append(time.perf_counter() - started)
        stage = next((s for s in reversed(task.stages) if s.changes_data), None)
        data = _fit_output(np.asarray(data[before : data.shape[0] - after]), task.output_meta)
    except Exception as exc:
        raise StageError(
            stage.name if stage is not None else "source",
            chunk.index,
            (chunk.start, chunk.stop),
            f"{type(exc).__name__}: {exc}",
        ) from exc
    if task.writes == "rows":
        write_rows(task.x_target, chunk.start, data)  # type: ignore[arg-type]
        if y is not None and task.y_target is not None:
            write_rows(task.y_target, chunk.start, y)  # type: ignore[arg-type]
    elif task.writes == "parts":
        write_part(task.x_target, chunk.index, data)  # type: ignore[arg-type]
        if y is not None and task.y_target is not None:
            write_part(task.y_target, chunk.index, y)  # type: ignore[arg-type]
    return ChunkOutcome(
        chunk.index, chunk.rows, int(data.shape[0]), tuple(states), tuple(seconds), _peak_rss()
    )


@dataclass
class RunOutput:
    """What a run produced, before it is presented to the user."""

    x: np.ndarray | None = None
    y: np.ndarray | None = None
    reductions: dict[str, Any] = field(default_factory=dict)
    report: RunReport | None = None


@dataclass
class _Files:
    """Output files of one pass, and where each must end up."""

    x: ArrayRef | str | None = None
    y: ArrayRef | str | None = None
    moves: list[tuple[str, str]] = field(default_factory=list)  # (temporary, final)


def _prepare_outputs(
    p: PassPlan,
    src: OpenedSource,
    sink: ArraySink,
    workspace: Workspace,
    pending: list[tuple[str, str]],
) -> tuple[Writes, _Files]:
    """Allocate (or make folders for) the files a pass writes into.

    Temporary files beside the sink's final paths are added to ``pending`` as
    soon as they exist, so that a failure removes them.
    """
    files = _Files(moves=pending)
    if p.output == "none":
        return "none", files
    want_y = src.y is not None and (p.output != "sink" or sink.y is not None)
    if p.ragged:
        files.x = workspace.folder(f"pass{p.index}-x-parts")
        files.y = workspace.folder(f"pass{p.index}-y-parts") if want_y else None
        return "parts", files
    files.x = allocate_npy(
        _destination(p, sink.npy, "x", workspace, files),
        np.dtype(p.output_meta.dtype),
        (src.x.n_rows, *p.output_meta.tail),
    )
    if want_y:
        assert src.y is not None
        files.y = allocate_npy(
            _destination(p, sink.y, "y", workspace, files),
            np.dtype(src.y.dtype),
            src.y.shape,
        )
    return "rows", files


def _destination(p: PassPlan, final: str | None, name: str, ws: Workspace, files: _Files) -> str:
    """Where a pass writes ``name``: beside the sink's final path, or in the workspace."""
    if p.output == "sink" and final is not None:
        folder = os.path.dirname(os.path.abspath(final))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create the folder of {final}: {exc}") from exc
        temporary = temporary_sibling(final)
        files.moves.append((temporary, final))
        return temporary
    return ws.path(f"pass{p.index}-{name}.npy")


def _assemble(
    p: PassPlan,
    files: _Files,
    counts: list[int],
    src: OpenedSource,
    sink: ArraySink,
    workspace: Workspace,
) -> None:
    """Join the part files of a ragged pass into its output files."""
    x_parts, y_parts = files.x, files.y
    files.x = assemble_parts(
        x_parts,  # type: ignore[arg-type]
        counts,
        _destination(p, sink.npy, "x", workspace, files),
        np.dtype(p.output_meta.dtype),
        p.output_meta.tail,
    )
    if y_parts is not None and src.y is not None:
        files.y = assemble_parts(
            y_parts,  # type: ignore[arg-type]
            counts,
            _destination(p, sink.y, "y", workspace, files),
            np.dtype(src.y.dtype),
            src.y.shape[1:],
        )


def _fold(stages: tuple[Stage, ...], acc: list[Any] | None, outcome: ChunkOutcome) -> list[Any]:
    """Combine one chunk's reduction states into the running states (chunk order)."""
    if acc is None:
        return list(outcome.states)
    reducers = [s for s in stages if s.kind == "reduce"]
    merged = []
    for stage, left, right in zip(reducers, acc, outcome.states, strict=True):
        try:
            merged.append(stage.reduction.combine(left, right))  # type: ignore[attr-defined]
        except Exception as exc:
            raise StageError(
                stage.name,
                outcome.index,
                None,
                f"{type(exc).__name__}: {exc} (in combine, merging this chunk's state)",
            ) from exc
    return merged


def _finalize(stage: Stage, state: Any) -> Any:
    try:
        return stage.reduction.finalize(state)  # type: ignore[attr-defined]
    except Exception as exc:
        raise StageError(
            stage.name, None, None, f"{type(exc).__name__}: {exc} (in finalize)"
        ) from exc


#: Input bytes a task should carry at least. Below this, per-task overhead
#: (~0.2 ms a round trip) starts to matter and chunks are sent in batches.
MIN_TASK_BYTES = 2**20


def _batch_size(p: PassPlan) -> int:
    """Chunks per task: one unless chunks are tiny.

    joblib's "auto" batching grows batches to ~0.2 s of work, which leaves a
    worker idle for up to a batch at the end of a pass; one chunk per task
    keeps the tail to one chunk.
    """
    chunk_bytes = max(1, p.chunk_rows * p.input_meta.row_nbytes)
    return max(1, -(-MIN_TASK_BYTES // chunk_bytes))


def _run_pass(
    p: PassPlan, task: PassTask, chunks: tuple[Chunk, ...], show_progress: bool
) -> Iterator[ChunkOutcome]:
    total_bytes = sum(c.rows for c in chunks) * p.input_meta.row_nbytes
    with ExitStack() as stack:
        stack.enter_context(p.parallel.activate())
        bar = stack.enter_context(
            progress_bar(len(chunks), total_bytes, f"pass {p.index + 1}", show_progress)
        )
        parallel = p.parallel.parallel(return_as="generator", batch_size=_batch_size(p))
        for outcome in parallel(delayed(run_chunk)(task, chunk) for chunk in chunks):
            bar.advance(outcome.rows_in, outcome.rows_in * p.input_meta.row_nbytes)
            yield outcome


def execute_plan(
    plan: Plan,
    src: OpenedSource,
    sink: ArraySink,
    workspace: Workspace,
    *,
    overlap: int,
    show_progress: bool,
) -> RunOutput:
    """Run every pass of ``plan``; commit the sink's files only if all succeed."""
    sink.check_writable()
    started = time.perf_counter()
    result = RunOutput()
    pass_reports = []
    pending: list[tuple[str, str]] = []
    current = src
    try:
        for p in plan.passes:
            pass_started = time.perf_counter()
            n_rows = current.x.n_rows
            chunks = plan_chunks(n_rows, p.chunk_rows, overlap)
            writes, files = _prepare_outputs(p, current, sink, workspace, pending)
            task = PassTask(
                x=current.x,
                y=current.y,
                stages=p.stages,
                output_meta=p.output_meta,
                writes=writes,
                x_target=files.x,
                y_target=files.y,
                keep_freed_memory=p.parallel.owns_worker_processes,
            )
            acc: list[Any] | None = None
            counts: list[int] = []
            stage_seconds = [0.0] * len(p.stages)
            peak_rss = 0
            for outcome in _run_pass(p, task, chunks, show_progress):
                acc = _fold(p.stages, acc, outcome)
                counts.append(outcome.rows_out)
                stage_seconds = [a + b for a, b in zip(stage_seconds, outcome.seconds, strict=True)]
                peak_rss = max(peak_rss, outcome.peak_rss)
            if acc is None:  # no chunks: reduce an empty array for neutral states
                acc = _empty_states(p)
            reducers = [s for s in p.stages if s.kind == "reduce"]
            for stage, state in zip(reducers, acc, strict=True):
                result.reductions[stage.name] = _finalize(stage, state)
            if writes == "parts":
                _assemble(p, files, counts, current, sink, workspace)
            if writes != "none":
                current = OpenedSource(
                    x=_reopen(files.x),  # type: ignore[arg-type]
                    y=_reopen(files.y) if files.y is not None else None,
                )
            pass_reports.append(
                PassReport(
                    index=p.index,
                    parallel=p.parallel.describe(),
                    chunks=len(chunks),
                    rows_in=n_rows,
                    rows_out=sum(counts),
                    bytes_in=n_rows * p.input_meta.row_nbytes,
                    seconds=time.perf_counter() - pass_started,
                    worker_peak_rss=peak_rss,
                    stages=tuple(
                        StageReport(name=s.name, kind=s.kind, seconds=t)
                        for s, t in zip(p.stages, stage_seconds, strict=True)
                    ),
                )
            )
        last = plan.passes[-1] if plan.passes else None
        if last is not None and last.output == "memory":
            result.x = np.load(current.x.path)
            result.y = None if current.y is None else np.load(current.y.path)
        if sink.reductions is not None:
            atomic_write_json(
                sink.reductions, reductions_as_json(result.reductions, sink.reductions)
            )
        for temporary, final in pending:
            try:
                os.replace(temporary, final)
            except OSError as exc:
                raise SinkError(f"cannot move the output into place at {final}: {exc}") from exc
        pending.clear()
        if last is not None and last.output == "sink":
            result.x = read_npy_ref(sink.npy).open()  # type: ignore[arg-type]
            result.y = None if sink.y is None or current.y is None else read_npy_ref(sink.y).open()
    finally:
        for temporary, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
    result.report = RunReport(
        name=plan.name, seconds=time.perf_counter() - started, passes=tuple(pass_reports)
    )
    return result


def _reopen(target: ArrayRef | str) -> ArrayRef:
    return target if isinstance(target, ArrayRef) else read_npy_ref(target)


def _empty_states(p: PassPlan) -> list[Any]:
    states = []
    for stage, meta in zip(p.stages, (p.input_meta, *p.stage_metas), strict=False):
        if stage.kind == "reduce":
            empty = np.empty((0, *meta.tail), dtype=meta.dtype)
            states.append(stage.reduction.chunk(empty))  # type: ignore[attr-defined]
    return states
