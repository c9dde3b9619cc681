"""Running a plan: one ``joblib.Parallel`` call per pass, over chunk descriptors.

The parent prepares each pass's outputs (a preallocated ``.npy``, or folders
for part files), dispatches one task per chunk (see :mod:`pipeline.worker`),
folds the reduction states it gets back in chunk order, so that results are
identical for every ``n_jobs`` and backend, and joins part files when rows
were dropped. Outputs go under temporary names (or a staging folder) beside
their final paths and are committed only after every pass succeeded; a
failure or Ctrl-C removes them and leaves the final paths untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from joblib import delayed

from .blocks import ArrayMeta, TableMeta
from .chunking import Chunk, plan_chunks
from .datasets import TableChunk, TableRef, TableSource
from .errors import SinkError, StageError
from .fitting import Applied, Feed, FitRun, PendingApply, TrainingRows, model_file
from .parallel import ThreadTasks
from .parquet import ParquetOptions, ParquetTarget, open_parts_folder
from .plan import PassPlan, Plan, applied_model, reads_output_of, realize_pass
from .probe import sample_of
from .progress import progress_bar
from .report import FitReport, PassReport, RunReport, StageReport
from .signals import stops_held_back
from .sinks import (
    Sink,
    allocate_npy,
    assemble_parts,
    final_path,
    read_parts,
    reductions_as_json,
    stage_files,
    temporary_sibling,
    write_json,
)
from .sources import ArrayRef, OpenedSource, read_npy_ref, shared_mappings
from .stage import Fitted, Stage
from .worker import (
    ChunkOutcome,
    PassTask,
    Writes,
    chunk_location,
    combine_states,
    run_chunk,
    stateful,
)
from .workspace import Workspace

__all__ = ["MIN_TASK_BYTES", "RunOutput", "execute_plan"]

Input = OpenedSource | TableRef

#: Input bytes a task should carry at least. Below this, per-task overhead
#: (~0.2 ms a round trip) starts to matter and chunks are sent in batches.
MIN_TASK_BYTES = 2**20


@dataclass
class RunOutput:
    """What a run produced, before it is presented to the user."""

    x: np.ndarray | pa.Table | None = None
    y: np.ndarray | None = None
    reductions: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    trials: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    report: RunReport | None = None


@dataclass
class _Outputs:
    """Where one pass writes, and what must happen to it when the run ends."""

    writes: Writes = "none"
    x: ArrayRef | str | None = None  # a preallocated .npy, or a folder of parts
    y: ArrayRef | str | None = None
    parquet: ParquetOptions | None = None


@dataclass
class _Commit:
    """Everything written beside a final path, to move into place or remove."""

    # (temporary, final); no temporary: a stale file at final is removed.
    moves: list[tuple[str | None, str]] = field(default_factory=list)
    parquet: ParquetTarget | None = None
    folders: list[str] = field(default_factory=list)  # made for outputs; removed if empty
    committed: bool = False  # every output is in place

    def abort(self) -> None:
        for temporary, _ in self.moves:
            if temporary is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temporary)
        if self.parquet is not None:
            self.parquet.abort()
        for folder in reversed(self.folders):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if the run left it empty

    def make_folder(self, path: str, what: str) -> None:
        """Create ``path`` (and its parents) for an output, remembering what was new."""
        missing = []
        folder = os.path.abspath(path)
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create the folder for {what} at {path}: {exc}") from exc
        self.folders.extend(reversed(missing))

    def commit(self, schema: pa.Schema | None) -> None:
        # The Parquet target is prepared first: its checks (mode, appended
        # columns) may refuse it, and a single file's merge takes a while.
        if self.parquet is not None:
            assert schema is not None
            self.parquet.prepare(schema)
        # Then only renames, with Ctrl-C held back: all the outputs move, or none.
        # Stops wait until the outputs are in place and the old contents gone:
        # stopped in between, a run would leave the old ones beside the new.
        with stops_held_back():  # a stop held back is raised on leaving it (see execute_plan)
            parquet = self.parquet  # still ours to abort until published
            try:
                if parquet is not None:
                    parquet.publish()
                    self.parquet = None
                for temporary, final in self.moves:
                    try:
                        if temporary is None:
                            with contextlib.suppress(FileNotFoundError):
                                os.remove(final)
                        else:
                            os.replace(temporary, final)
                    except OSError as exc:
                        raise SinkError(
                            f"cannot move the output into place at {final}: {exc}"
                        ) from exc
                self.moves.clear()
                self.folders.clear()
                self.committed = True
            finally:
                if parquet is not None:
                    parquet.finish()  # nothing to delete unless the new contents are in


def _npy_destination(
    p: PassPlan, final: str | None, name: str, workspace: Workspace, commit: _Commit
) -> str:
    """Where a pass writes an ``.npy``: beside the sink's final path, or in the workspace."""
    if p.output == "sink" and final is not None:
        final = final_path(final)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create the folder of {final}: {exc}") from exc
        temporary = temporary_sibling(final)
        commit.moves.append((temporary, final))
        return temporary
    return workspace.path(f"pass{p.index}-{name}.npy")


def _prepare_outputs(
    p: PassPlan, src: Input, sink: Sink, workspace: Workspace, commit: _Commit
) -> _Outputs:
    """Allocate (or make folders for) the files a pass writes into."""
    if p.output == "none":
        return _Outputs()
    if isinstance(p.output_meta, TableMeta):
        if p.output == "sink":
            assert sink.parquet is not None
            commit.parquet = ParquetTarget(sink.parquet, sink.parquet_options)
            return _Outputs("parquet", commit.parquet.open(), parquet=sink.parquet_options)
        folder = open_parts_folder(workspace.path(f"pass{p.index}-parquet"))
        return _Outputs("parquet", folder, parquet=ParquetOptions())
    y_meta = p.y_meta if isinstance(p.y_meta, ArrayMeta) else None
    want_y = y_meta is not None and (p.output != "sink" or sink.y is not None)
    if p.ragged:
        return _Outputs(
            "parts",
            workspace.folder(f"pass{p.index}-x-parts"),
            workspace.folder(f"pass{p.index}-y-parts") if want_y else None,
        )
    assert isinstance(src, OpenedSource) and isinstance(p.output_meta, ArrayMeta)
    outputs = _Outputs("rows")
    outputs.x = allocate_npy(
        _npy_destination(p, sink.npy, "x", workspace, commit),
        np.dtype(p.output_meta.dtype),
        (src.x.n_rows, *p.output_meta.tail),
    )
    if want_y and y_meta is not None:
        outputs.y = allocate_npy(
            _npy_destination(p, sink.y, "y", workspace, commit),
            np.dtype(y_meta.dtype),
            (src.x.n_rows, *y_meta.tail),
        )
    return outputs


def _joined(
    p: PassPlan,
    outputs: _Outputs,
    blocks: list[tuple[int, int, int]],
    src: Input,
    sink: Sink,
    workspace: Workspace,
    commit: _Commit,
) -> Input:
    """The pass's output as the next pass's input (joining part files if needed)."""
    if outputs.writes == "parquet":
        folder = str(outputs.x)
        if p.output == "sink":
            return src  # committed at the end; no later pass reads it
        if not glob.glob(os.path.join(folder, "*.parquet")):
            assert isinstance(p.output_meta, TableMeta)
            pq.write_table(p.output_meta.empty(), os.path.join(folder, "empty.parquet"))
        return TableSource(path=folder).open()
    if outputs.writes == "parts":
        assert isinstance(p.output_meta, ArrayMeta)
        x = assemble_parts(
            str(outputs.x),
            blocks,
            _npy_destination(p, sink.npy, "x", workspace, commit),
            np.dtype(p.output_meta.dtype),
            p.output_meta.tail,
        )
        y = None
        if outputs.y is not None and isinstance(p.y_meta, ArrayMeta):
            y = assemble_parts(
                str(outputs.y),
                blocks,
                _npy_destination(p, sink.y, "y", workspace, commit),
                np.dtype(p.y_meta.dtype),
                p.y_meta.tail,
            )
        return OpenedSource(x, y)
    assert isinstance(outputs.x, ArrayRef)
    return OpenedSource(outputs.x, outputs.y if isinstance(outputs.y, ArrayRef) else None)


def _finalize(stage: Stage, state: Any) -> Any:
    try:
        return stage.reduction.finalize(state)  # type: ignore[attr-defined]
    except Exception as exc:
        raise StageError.caused_by(exc, stage.name, where=" (in finalize)") from exc


def _batch_size(p: PassPlan) -> int:
    """Chunks per task: one unless chunks are tiny.

    joblib's "auto" batching grows batches to ~0.2 s of work, which leaves a
    worker idle for up to a batch at the end of a pass; one chunk per task
    keeps the tail to one chunk.
    """
    chunk_bytes = max(1, p.chunk_rows * p.row_nbytes)
    return max(1, -(-MIN_TASK_BYTES // chunk_bytes))


def _chunks_of(src: Input, p: PassPlan, overlap: int) -> tuple[Chunk, ...] | tuple[TableChunk, ...]:
    if isinstance(src, TableRef):
        return src.plan_chunks(p.chunk_rows)
    return plan_chunks(src.x.n_rows, p.chunk_rows, overlap)


def _run_pass(
    p: PassPlan, task: PassTask, chunks: tuple[Any, ...], show_progress: bool
) -> Iterator[ChunkOutcome]:
    row_nbytes = p.row_nbytes
    total_bytes = sum(c.rows or 0 for c in chunks) * row_nbytes
    with ExitStack() as stack:
        stack.enter_context(p.parallel.activate())
        bar = stack.enter_context(
            progress_bar(len(chunks), total_bytes, f"pass {p.index + 1}", show_progress)
        )
        parallel = p.parallel.parallel(return_as="generator", batch_size=_batch_size(p))
        # Worker processes are killed when a task fails; threads must be waited for.
        threads = ThreadTasks() if p.parallel.uses_threads else None
        run = run_chunk if threads is None else functools.partial(threads.call, run_chunk)
        try:
            for outcome in parallel(delayed(run)(task, chunk) for chunk in chunks):
                bar.advance(outcome.rows_in, outcome.rows_in * row_nbytes)
                yield outcome
        except BaseException:
            if threads is not None:
                threads.stop()  # before the run removes the outputs they write into
            raise


def _empty_states(p: PassPlan, src: Input) -> list[Any]:
    """Per-chunk states of no rows at all (a source with no chunks)."""
    y = src.y.read(0, 0) if isinstance(src, OpenedSource) and src.y is not None else None
    states = []
    for stage, meta in zip(p.stages, (p.input_meta, *p.stage_metas), strict=False):
        assert meta is not None
        if stage.kind == "reduce":
            states.append(stage.reduction.chunk(meta.empty()))  # type: ignore[attr-defined]
        elif isinstance(stage, Feed) and stage.reduction is not None:
            states.append(stage.observe(meta.empty(), y, 0, 0)[0])
    return states


def _load_in_memory(src: Input) -> tuple[np.ndarray | pa.Table, np.ndarray | None]:
    if isinstance(src, TableRef):
        return pa.concat_tables(
            [pq.read_table(path) for path in src.files], promote_options="default"
        ), None
    return np.load(src.x.path), None if src.y is None else np.load(src.y.path)


@dataclass
class _Run:
    """The state of a run between passes: inputs, outputs, fitted models, results."""

    plan: Plan
    sink: Sink
    workspace: Workspace
    commit: _Commit
    overlap: int
    show_progress: bool
    import_paths: tuple[str, ...]
    result: RunOutput = field(default_factory=RunOutput)
    passes: list[PassPlan] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Input] = field(default_factory=list)
    models: dict[str, Applied] = field(default_factory=dict)
    pass_reports: list[PassReport] = field(default_factory=list)
    fit_reports: list[FitReport] = field(default_factory=list)

    def run_pass(self, planned: PassPlan, src: Input) -> None:
        after = self.passes[-1] if self.passes else None
        current = src if after is None else self._input_after(after)
        p = planned
        if any(prior.fit is not None for prior in self.passes) or not planned.known:
            # Passes after a fit are probed again, with the fitted models.
            table = current if isinstance(current, TableRef) else None
            n_rows = current.n_rows if table is not None else current.x.n_rows  # type: ignore[union-attr]
            p, _ = realize_pass(
                self.plan,
                planned,
                sample_of(current),
                after=after,
                n_rows=n_rows,
                table=table,
                models=self.models,
            )
        started = time.perf_counter()
        chunks = _chunks_of(current, p, self.overlap)
        outputs = _prepare_outputs(p, current, self.sink, self.workspace, self.commit)
        task = PassTask(
            source=current,
            chunk_rows=p.chunk_rows,
            stages=p.stages,
            output_meta=p.output_meta,  # type: ignore[arg-type]
            writes=outputs.writes,
            x_target=outputs.x,
            y_target=outputs.y,
            parquet=outputs.parquet,
            keep_freed_memory=p.parallel.owns_worker_processes,
            shared_page_cache=p.parallel.on_this_machine,
            import_paths=self.import_paths,
        )
        fit = None
        if p.fit is not None:
            schedule = p.fit.schedule()
            assert schedule is not None
            fit = FitRun(
                p.fit,
                schedule,
                p.parallel,
                describe_rows=lambda k: chunk_location(current, chunks[k]),
            )
        acc: list[Any] | None = None
        blocks: list[tuple[int, int, int]] = []
        rows_in = rows_out = peak_rss = 0
        stage_seconds = [0.0] * len(p.stages)
        for outcome in _run_pass(p, task, chunks, self.show_progress):
            acc = (
                list(outcome.states)
                if acc is None
                else combine_states(p.stages, acc, outcome.states, outcome.index)
            )
            blocks.extend((outcome.index, b, rows) for b, rows in enumerate(outcome.parts))
            rows_in += outcome.rows_in
            rows_out += outcome.rows_out
            stage_seconds = [a + b for a, b in zip(stage_seconds, outcome.seconds, strict=True)]
            peak_rss = max(peak_rss, outcome.peak_rss)
            if fit is not None and fit.streams:
                rows = (
                    _training_chunk(current, outputs, chunks, outcome)
                    if outcome.rows_out
                    else (None, None)  # a filter dropped every row of the chunk
                )
                fit.consume(outcome.index, *rows)
        states = acc if acc is not None else _empty_states(p, current)
        feed_state = None
        for stage, state in zip(stateful(p.stages), states, strict=True):
            if isinstance(stage, Feed):
                feed_state = state
            else:
                self.result.reductions[stage.name] = _finalize(stage, state)
        joined = current
        if outputs.writes != "none":
            joined = _joined(p, outputs, blocks, current, self.sink, self.workspace, self.commit)
        if fit is not None:
            training = (
                _training_rows(current, joined, outputs, chunks, blocks)
                if fit.schedule.needs_rows
                else None
            )
            self._fitted(p, fit, fit.finish(feed_state, training), len(chunks))
        self.passes.append(p)
        self.inputs.append(current)
        self.outputs.append(joined)
        self.pass_reports.append(
            PassReport(
                index=p.index,
                parallel=p.parallel.describe(),
                chunks=len(chunks),
                rows_in=rows_in,
                rows_out=rows_out,
                bytes_in=rows_in * p.row_nbytes,
                seconds=time.perf_counter() - started,
                worker_peak_rss=peak_rss,
                stages=tuple(
                    StageReport(name=s.name, kind=s.role, seconds=t)
                    for s, t in zip(p.stages, stage_seconds, strict=True)
                ),
            )
        )

    def _input_after(self, after: PassPlan) -> Input:
        """What the pass after ``after`` reads: its output, or the input it read."""
        return self.outputs[-1] if reads_output_of(after) else self.inputs[-1]

    def _fitted(self, p: PassPlan, run: FitRun, fitted: Fitted, n_chunks: int) -> None:
        """Keep a fitted model: for later passes, for the result and the sink's folder."""
        stage = p.fit
        assert stage is not None
        # The fit is the pass's last stage: it saw the meta before it.
        seen = (p.input_meta, *p.stage_metas)[len(p.stages) - 1]
        if isinstance(seen, TableMeta):
            fitted = dataclasses.replace(fitted, columns=tuple(seen.schema.names))
        # A model applied by a later pass travels through a file, and every backend
        # applies it as the file gives it back (see model_file); one that no pass
        # applies (ChunkedEstimator.fit) is kept as fitted, at no cost.
        if any(
            isinstance(s, PendingApply) and s.fit.name == stage.name
            for later in self.plan.passes
            for s in later.stages
        ):
            model, path = model_file(fitted.model, self.workspace.path(f"model-{p.index}.joblib"))
            fitted = dataclasses.replace(fitted, model=model)
            self.models[stage.name] = applied_model(stage, fitted.model, path)
        self.result.models[stage.name] = fitted.model
        if fitted.trials is not None:
            self.result.trials[stage.name] = fitted.trials
        if self.sink.models is not None:
            self.commit.make_folder(final_path(self.sink.models), "sink.models")
            try:
                self.commit.moves.extend(stage.save_model(fitted, self.sink.models))
            except Exception as exc:  # pickling errors, full disks, ...
                raise SinkError(
                    f"sink.models: cannot save the model of stage {stage.name!r} into "
                    f"{self.sink.models}: {type(exc).__name__}: {exc}"
                ) from exc
        schedule = run.schedule
        self.fit_reports.append(
            FitReport(
                name=stage.name,
                strategy=schedule.strategy,
                seconds=run.seconds,
                chunks=n_chunks,
                epochs=schedule.epochs if schedule.strategy == "partial_fit" else 1,
                detail=fitted.detail,
            )
        )


def _training_chunk(
    src: Input, outputs: _Outputs, chunks: tuple[Any, ...], outcome: ChunkOutcome
) -> tuple[np.ndarray, np.ndarray | None]:
    """The training rows a feed produced for one chunk, read back as soon as it is done."""
    if outputs.writes == "parts":
        return read_parts(str(outputs.x), outcome.index, outcome.parts), (
            None if outputs.y is None else read_parts(str(outputs.y), outcome.index, outcome.parts)
        )
    chunk = chunks[outcome.index]
    if outputs.writes == "rows":
        x, y = outputs.x, outputs.y
    else:  # the feed's rows are the pass's input rows
        assert isinstance(src, OpenedSource)
        x, y = src.x, src.y
    assert isinstance(x, ArrayRef)
    return x.read(chunk.start, chunk.stop), (
        y.read(chunk.start, chunk.stop) if isinstance(y, ArrayRef) else None
    )


def _training_rows(
    src: Input,
    joined: Input,
    outputs: _Outputs,
    chunks: tuple[Any, ...],
    blocks: list[tuple[int, int, int]],
) -> TrainingRows:
    """Where every chunk's training rows are once the pass is done."""
    rows_of: dict[int, int] = {}
    if outputs.writes == "parts":
        for chunk, _, rows in blocks:
            rows_of[chunk] = rows_of.get(chunk, 0) + rows
        bounds = np.cumsum([0] + [rows_of.get(c.index, 0) for c in chunks]).tolist()
        spans = tuple(itertools.pairwise(bounds))
    else:
        spans = tuple((c.start, c.stop) for c in chunks)
    data = joined if outputs.writes != "none" else src
    assert isinstance(data, OpenedSource)
    return TrainingRows(data.x, data.y, spans)


def execute_plan(
    plan: Plan,
    src: Input,
    sink: Sink,
    workspace: Workspace,
    *,
    overlap: int,
    show_progress: bool,
    import_paths: tuple[str, ...] = (),
) -> RunOutput:
    """Run every pass of ``plan``; commit the sink's files only if all succeed."""
    sink.check_writable()
    started = time.perf_counter()
    commit = _Commit()
    run = _Run(plan, sink, workspace, commit, overlap, show_progress, import_paths)
    result = run.result
    try:
        with shared_mappings():
            for planned in plan.passes:
                run.run_pass(planned, src)
        last = run.passes[-1] if run.passes else None
        current = run.outputs[-1] if run.outputs else src
        if last is not None and last.output == "memory":
            result.x, result.y = _load_in_memory(current)
        if sink.reductions is not None:
            # Committed with the other outputs: never beside a failed run's data.
            statistics = reductions_as_json(result.reductions, sink.reductions)
            commit.make_folder(os.path.dirname(final_path(sink.reductions)), "sink.reductions")
            commit.moves.extend(
                stage_files({sink.reductions: lambda path: write_json(path, statistics)})
            )
        output_schema = (
            last.output_meta.schema
            if last is not None and isinstance(last.output_meta, TableMeta)
            else None
        )
        commit.commit(output_schema)
        if last is not None and last.output == "sink":
            result.x, result.y = _open_sink(sink, current)
    except KeyboardInterrupt as exc:
        if commit.committed:  # a stop once the outputs were in place: say so
            exc.committed = True  # type: ignore[attr-defined]
        raise
    finally:
        commit.abort()
    result.report = RunReport(
        name=plan.name,
        seconds=time.perf_counter() - started,
        passes=tuple(run.pass_reports),
        fits=tuple(run.fit_reports),
    )
    return result


def _open_sink(sink: Sink, current: Input) -> tuple[Any, np.ndarray | None]:
    """What a run returns for a sink: a memmap of the .npy, or the Parquet dataset."""
    if sink.parquet is not None:
        import pyarrow.dataset as ds

        return ds.dataset(sink.parquet, format="parquet", partitioning="hive"), None
    assert sink.npy is not None
    y = None
    if sink.y is not None and isinstance(current, OpenedSource) and current.y is not None:
        y = read_npy_ref(sink.y).open()
    return read_npy_ref(sink.npy).open(), y
