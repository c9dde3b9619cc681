"""What runs in a worker: read one chunk, run the fused stages, write the output.

A task is a :class:`PassTask` (descriptors of the input and output, and the
fused stages; small and picklable) plus one chunk. The worker reads its rows
itself (a memmap slice of an ``.npy`` file, or Parquet row groups), runs the
stages, writes its own output (rows in place, or its own part files) and
returns a small :class:`ChunkOutcome`: row counts, reduction states and timings.

A table chunk may arrive as several blocks (a row group larger than the chunk
size is streamed in batches); the stages run per block and the reduction
states of the blocks are combined in order, inside the task.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import cloudpickle
import numpy as np
import pyarrow as pa

from .blocks import ArrayMeta, Data, Meta, as_rows, num_rows, slice_rows, take
from .chunking import Chunk
from .datasets import TableChunk, TableRef
from .errors import StageError
from .fitting import Feed
from .parquet import ParquetOptions, write_table_part
from .probe import apply_map, filter_mask
from .sinks import write_part, write_rows
from .sources import ArrayRef, OpenedSource
from .stage import Stage

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

__all__ = [
    "ChunkOutcome",
    "PassTask",
    "chunk_location",
    "combine_states",
    "keep_freed_memory",
    "run_chunk",
    "stateful",
]

#: How a pass writes its output: rows in place into a preallocated ``.npy``,
#: ``.npy`` part files (row count known only afterwards), Parquet part files, or
#: nothing (reductions only).
Writes = Literal["rows", "parts", "parquet", "none"]


@dataclass(frozen=True, kw_only=True)
class PassTask:
    """Everything a worker needs for any chunk of a pass; small and picklable."""

    source: OpenedSource | TableRef
    chunk_rows: int
    stages: tuple[Stage, ...]
    output_meta: Meta
    writes: Writes
    x_target: ArrayRef | str | None = None  # an .npy to write rows into, or a parts folder
    y_target: ArrayRef | str | None = None
    parquet: ParquetOptions | None = None
    keep_freed_memory: bool = False
    shared_page_cache: bool = True  # every worker runs on this machine (see write_rows)
    import_paths: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # A worker may have started before these folders were put on sys.path
        # (loky reuses workers), so they travel with the task and are put on the
        # worker's sys.path before the stages, which may live there, are unpickled.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return (_load_task, (self.import_paths, cloudpickle.dumps(fields)))


def _load_task(import_paths: tuple[str, ...], payload: bytes) -> PassTask:
    """Rebuild a PassTask in a worker, after making its stage modules importable."""
    for path in reversed(import_paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    return PassTask(**cloudpickle.loads(payload))


@dataclass(frozen=True)
class ChunkOutcome:
    """What a worker sends back for one chunk: small things only."""

    index: int
    rows_in: int
    rows_out: int
    states: tuple[Any, ...]
    seconds: tuple[float, ...]
    peak_rss: int
    parts: tuple[int, ...] = ()  # rows of each block written as a part file


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


def _fit_output(data: Data, meta: Meta) -> Data:
    """Check a block's output against the probed meta; cast safely if needed."""
    if isinstance(meta, ArrayMeta):
        if not isinstance(data, np.ndarray):
            raise ValueError("returned a table, but an array on the first rows of the data")
        if data.shape[1:] != meta.tail:
            raise ValueError(
                f"returned rows of shape {data.shape[1:]}, but rows of shape {meta.tail} on "
                "the first rows of the data; every chunk must give rows of the same shape"
            )
        if data.dtype.str != meta.dtype:
            if not np.can_cast(data.dtype, meta.dtype, "safe"):
                raise ValueError(
                    f"returned {data.dtype} values, but {np.dtype(meta.dtype)} on the first "
                    "rows of the data; cast explicitly (e.g. an 'astype' stage) to keep one dtype"
                )
            data = data.astype(meta.dtype)
        return data
    if not isinstance(data, pa.Table):
        raise ValueError("returned an array, but a table on the empty probe table")
    if data.schema.names != meta.schema.names:
        raise ValueError(
            f"returned columns {data.schema.names}, but {meta.schema.names} on the empty "
            "probe table; every chunk must give the same columns"
        )
    if not data.schema.equals(meta.schema):
        # The probe saw no rows: where it could not tell a type (null), keep the data's.
        target = pa.schema(
            [
                m if not pa.types.is_null(m.type) else d
                for m, d in zip(meta.schema, data.schema, strict=True)
            ]
        )
        data = data.cast(target)
    return data


def stateful(stages: tuple[Stage, ...]) -> list[Stage]:
    """The stages that give a state per chunk: reductions, and feeds with a reduction."""
    return [
        s for s in stages if s.kind == "reduce" or (isinstance(s, Feed) and s.reduction is not None)
    ]


def combine_states(
    stages: tuple[Stage, ...], left: list[Any], right: tuple[Any, ...], chunk: int
) -> list[Any]:
    """Merge per-chunk states (``left`` holds earlier rows), naming a failing stage."""
    merged = []
    for stage, a, b in zip(stateful(stages), left, right, strict=True):
        try:
            merged.append(stage.reduction.combine(a, b))  # type: ignore[attr-defined]
        except Exception as exc:
            raise StageError.caused_by(
                exc, stage.name, chunk, where=" (in combine, merging this chunk's state)"
            ) from exc
    return merged


def _blocks(task: PassTask, chunk: Chunk | TableChunk) -> Iterator[tuple[Data, Any, int, int]]:
    """The chunk's rows as (data, y, halo before, halo after) blocks."""
    if isinstance(task.source, TableRef):
        for table in task.source.blocks(chunk, task.chunk_rows):  # type: ignore[arg-type]
            yield table, None, 0, 0
        return
    assert isinstance(chunk, Chunk)
    source = task.source
    y = None if source.y is None else source.y.read(chunk.start, chunk.stop)
    yield source.x.read(chunk.read_start, chunk.read_stop), y, *chunk.halo


class _Failed(Exception):
    """Carries the name of the stage that raised (the ``__cause__``) to run_chunk."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


def _run_stages(
    stages: tuple[Stage, ...],
    data: Data,
    y: Any,
    halo: tuple[int, int],
    where: tuple[int, int],
    seconds: list[float],
) -> tuple[Data, Any, list[Any]]:
    """Run the fused stages on one block; add each stage's time to ``seconds``.

    ``halo`` holds the rows read before and after the block's own rows,
    ``where`` its chunk and block index.
    """
    before, after = halo
    states = []
    for i, stage in enumerate(stages):
        started = time.perf_counter()
        try:
            if stage.kind == "map":
                data = apply_map(stage, data)
            elif stage.kind == "filter":
                # A filter decides on the chunk's own rows; the planner starts a new
                # pass before any windowed map that follows it, so no halo is needed.
                data = slice_rows(data, before, num_rows(data) - after)
                before = after = 0
                mask = filter_mask(stage, data)
                data = take(data, mask)
                if y is not None:
                    y = y[mask]
            elif isinstance(stage, Feed):
                # A fit sees each row once; it ends its pass, so the halo goes.
                data = slice_rows(data, before, num_rows(data) - after)
                before = after = 0
                state, X, y_train = stage.observe(data, y, *where)
                if stage.reduction is not None:
                    states.append(state)
                if stage.writes:
                    data, y = as_rows(X), y_train
            else:
                # A tap sees each row once, and passes the halo on for later maps.
                owned = slice_rows(data, before, num_rows(data) - after)
                states.append(stage.reduction.chunk(owned))  # type: ignore[attr-defined]
        except Exception as exc:
            raise _Failed(stage.name) from exc
        seconds[i] += time.perf_counter() - started
    return slice_rows(data, before, num_rows(data) - after), y, states


def chunk_location(
    source: OpenedSource | TableRef, chunk: Chunk | TableChunk
) -> tuple[int, int] | str:
    """Where a chunk's rows are, for error messages: a row range, or files and row groups."""
    if isinstance(chunk, TableChunk):
        assert isinstance(source, TableRef)
        return source.describe_chunk(chunk)
    return (chunk.start, chunk.stop)


def run_chunk(task: PassTask, chunk: Chunk | TableChunk) -> ChunkOutcome:
    """Run a pass's fused stages on one chunk and write its output (in a worker)."""
    if task.keep_freed_memory:
        keep_freed_memory()
    states: list[Any] | None = None
    seconds = [0.0] * len(task.stages)
    parts: list[int] = []
    rows_in = rows_out = 0
    last_changing = next((s.name for s in reversed(task.stages) if s.changes_data), "source")
    for block, (data, y, before, after) in enumerate(_blocks(task, chunk)):
        rows_in += num_rows(data) - before - after
        try:
            data, y, block_states = _run_stages(
                task.stages, data, y, (before, after), (chunk.index, block), seconds
            )
            data = _fit_output(data, task.output_meta)
        except Exception as exc:
            stage: str = last_changing
            cause: BaseException = exc
            if isinstance(exc, _Failed) and exc.__cause__ is not None:
                stage, cause = exc.stage, exc.__cause__
            raise StageError.caused_by(
                cause, stage, chunk.index, chunk_location(task.source, chunk)
            ) from cause
        states = (
            block_states
            if states is None
            else combine_states(task.stages, states, tuple(block_states), chunk.index)
        )
        rows_out += num_rows(data)
        _write(task, chunk, block, data, y)
        if task.writes == "parts":
            parts.append(num_rows(data))
    return ChunkOutcome(
        chunk.index,
        rows_in,
        rows_out,
        tuple(states or ()),
        tuple(seconds),
        _peak_rss(),
        tuple(parts),
    )


def _write(task: PassTask, chunk: Chunk | TableChunk, block: int, data: Data, y: Any) -> None:
    if task.writes == "rows":
        assert isinstance(chunk, Chunk) and isinstance(data, np.ndarray)
        shared = task.shared_page_cache
        write_rows(task.x_target, chunk.start, data, shared_page_cache=shared)  # type: ignore[arg-type]
        if y is not None and task.y_target is not None:
            write_rows(task.y_target, chunk.start, y, shared_page_cache=shared)  # type: ignore[arg-type]
    elif task.writes == "parts":
        write_part(task.x_target, chunk.index, block, data)  # type: ignore[arg-type]
        if y is not None and task.y_target is not None:
            write_part(task.y_target, chunk.index, block, y)  # type: ignore[arg-type]
    elif task.writes == "parquet":
        assert isinstance(data, pa.Table) and task.parquet is not None
        write_table_part(task.x_target, chunk.index, block, data, task.parquet)  # type: ignore[arg-type]
