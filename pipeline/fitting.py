"""Running fits: the worker-side halves of a fit, and the strategies in the parent.

A :class:`~pipeline.stage.Fit` stage is split by the planner in two:

- a :class:`Feed`, the last stage of the pass that brings the rows to the
  fit. In a worker it turns the chunk into training arrays ``(X, y)``,
  checks them, computes the chunk's state (a merge statistic, the labels, a
  sample) and, when the fit needs the rows themselves (``partial_fit``,
  ``full``), hands ``(X, y)`` on to be written to the workspace;
- an :class:`Applied` map at the start of the next pass, applying the fitted
  model to every chunk.

Between the two, in the parent, a :class:`FitRun` turns what the pass
produced into a model, by the stage's :class:`~pipeline.stage.FitSchedule`:
``merge`` finalizes the combined statistics; ``partial_fit`` reads the
training rows back one chunk at a time, in chunk order (overlapping the pass
when it can); ``full`` fits the memory-mapped training rows at once;
``sample`` fits the rows of a uniform sample drawn in the workers.
"""

from __future__ import annotations

import functools
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
from threadpoolctl import threadpool_limits

from .blocks import Data
from .errors import StageError
from .parallel import ParallelSettings
from .sources import ArrayRef
from .stage import Fit, FitSchedule, Fitted, Map, Reduction, Stage, StageKind

__all__ = [
    "Applied",
    "Feed",
    "FitRun",
    "PendingApply",
    "Sample",
    "SampleState",
    "TrainingChunk",
    "TrainingRows",
    "model_file",
]


def model_file(model: Any, path: str) -> tuple[Any, str | None]:
    """Write ``model`` to ``path`` with joblib, for worker processes to load once each.

    Returns the model loaded back from the file, and the path: every backend
    then applies the same model. A pickle round trip can change how an array
    is laid out in memory (a fitted IncrementalPCA's ``components_`` is a
    strided view; its unpickled copy is contiguous), and with the layout, the
    last bits of a matrix product. If pickle cannot store the model (a lambda
    inside it, say) or make it again from the file, returns it as it is and
    ``None``: then only threads, which share it in memory, can apply it.
    """
    try:
        joblib.dump(model, path)
    except (pickle.PicklingError, TypeError, AttributeError):
        Path(path).unlink(missing_ok=True)
        return model, None
    try:
        return joblib.load(path), path
    except Exception:  # stored, but not made again (a handle it cannot reopen, say)
        Path(path).unlink(missing_ok=True)
        return model, None


@dataclass(frozen=True)
class TrainingChunk:
    """The training arrays of one block of a chunk, as a feed's reduction sees them."""

    X: Any
    y: Any
    chunk: int
    block: int = 0


@dataclass(frozen=True, eq=False)
class SampleState:
    """Rows kept so far by a :class:`Sample`, with their random keys, in row order."""

    keys: np.ndarray
    X: np.ndarray
    y: np.ndarray | None


@dataclass(frozen=True)
class Sample:
    """A uniform random sample of ``rows`` rows without replacement, mergeable.

    Every row gets a random key; a sample keeps the rows with the smallest
    keys (a *bottom-k* sample), and merging two samples keeps the smallest
    keys of both. Which rows are kept is therefore the same whatever the
    order and grouping of the merges: it depends on the seed and on the
    chunks (each chunk's keys come from ``seed`` and the chunk's index), not
    on ``n_jobs`` or the backend. Kept rows stay in row order.

    >>> s = Sample(rows=3, seed=0)
    >>> parts = [s.chunk(TrainingChunk(np.arange(5.0)[:, None] + 10 * i, None, i)) for i in (0, 1)]
    >>> s.finalize(s.combine(*parts))[0].ravel().tolist()  # 3 of 0..4 and 10..14
    [2.0, 3.0, 14.0]
    """

    rows: int
    seed: int

    def chunk(self, data: TrainingChunk) -> SampleState:
        X = np.asarray(data.X)
        rng = np.random.default_rng([self.seed, data.chunk, data.block])
        keys = np.asarray(rng.random(X.shape[0]))
        y = None if data.y is None else np.asarray(data.y)
        return self._smallest(keys, X, y)

    def combine(self, left: SampleState, right: SampleState) -> SampleState:
        y = None if left.y is None or right.y is None else np.concatenate([left.y, right.y])
        return self._smallest(
            np.concatenate([left.keys, right.keys]), np.concatenate([left.X, right.X]), y
        )

    def finalize(self, state: SampleState) -> tuple[np.ndarray, np.ndarray | None]:
        return state.X, state.y

    def _smallest(self, keys: np.ndarray, X: np.ndarray, y: np.ndarray | None) -> SampleState:
        if keys.shape[0] > self.rows:
            keep = np.sort(np.argpartition(keys, self.rows - 1)[: self.rows])
            keys, X = keys[keep], X[keep]
            y = None if y is None else y[keep]
        # Copies: a view would keep the whole chunk alive (and pickle it back).
        return SampleState(keys.copy(), np.array(X), None if y is None else np.array(y))


@dataclass(frozen=True)
class Feed(Stage):
    """Worker-side half of a fit: a chunk's training rows, their state, their output.

    ``rows`` turns ``(chunk, y)`` into ``(X, y)`` and checks them;
    ``reduction`` (over :class:`TrainingChunk`) gives the state the parent
    combines in chunk order; with ``writes``, ``(X, y)`` become the pass's
    output, written to the workspace for the parent to read back.
    """

    kind: ClassVar[StageKind] = "feed"

    rows: Callable[[Any, Any], tuple[Any, Any]]
    reduction: Reduction | None = field(default=None, kw_only=True)
    writes: bool = field(default=False, kw_only=True)

    @property
    def changes_data(self) -> bool:
        return self.writes

    @property
    def role(self) -> str:
        return "fit"

    @property
    def prefers_threads(self) -> bool:
        # Checks and statistics over NumPy arrays: work that releases the GIL.
        return True

    def observe(self, data: Data, y: Any, chunk: int, block: int) -> tuple[Any, Any, Any]:
        """``(state, X, y)`` of one block: the state is ``None`` without a reduction."""
        X, y = self.rows(data, y)
        state = None
        if self.reduction is not None:
            state = self.reduction.chunk(TrainingChunk(X, y, chunk, block))
        return state, X, y


@dataclass(frozen=True)
class Applied(Map):
    """A map applying a fitted model (the second half of a fit, or a saved model).

    ``threads``: the model runs best on threads (see
    :meth:`~pipeline.stage.Fit.threaded_apply`), so its pass defaults to them;
    ``preferred_chunk_bytes``: see :meth:`~pipeline.stage.Fit.apply_chunk_bytes`.
    """

    threads: bool = field(default=False, kw_only=True)
    preferred_chunk_bytes: int | None = field(default=None, kw_only=True)

    @property
    def chunk_bytes(self) -> int | None:
        return self.preferred_chunk_bytes

    @property
    def role(self) -> str:
        return "apply"

    @property
    def prefers_threads(self) -> bool:
        return self.threads


@dataclass(frozen=True)
class PendingApply(Stage):
    """Where a fit's model will be applied, in a plan made before it is fitted."""

    kind: ClassVar[StageKind] = "map"

    fit: Fit

    @property
    def role(self) -> str:
        return "apply"

    @property
    def prefers_threads(self) -> bool:
        return self.fit.threaded_apply(None)  # as the Applied it becomes

    @property
    def chunk_bytes(self) -> int | None:
        return self.fit.apply_chunk_bytes(None)


@dataclass(frozen=True)
class TrainingRows:
    """Where the training rows of each chunk are, for the parent to read back.

    ``spans`` holds each chunk's row range in ``x`` (and ``y``), in chunk order.
    """

    x: ArrayRef
    y: ArrayRef | None
    spans: tuple[tuple[int, int], ...]

    def chunk(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Chunk ``k``'s rows: read-only memmap views, no copy."""
        start, stop = self.spans[k]
        return self.x.read(start, stop), None if self.y is None else self.y.read(start, stop)

    def all(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every row, as a read-only memmap (``y`` loaded in memory: it is small)."""
        return self.x.open(), None if self.y is None else np.asarray(self.y.open())


def _epoch_orders(schedule: FitSchedule, n_chunks: int) -> Iterator[Sequence[int]]:
    """The chunk order of every epoch: chunk order, or shuffled from the seed."""
    rng = np.random.default_rng(schedule.seed)
    for _ in range(schedule.epochs):
        if schedule.shuffle_chunks:
            yield rng.permutation(n_chunks).tolist()
        else:
            yield range(n_chunks)


@dataclass
class FitRun:
    """One fit in the parent: from what its pass produced to a fitted model.

    ``streams`` says whether ``partial_fit`` consumes each chunk as soon as
    its rows are written (:meth:`consume`), overlapping the pass; otherwise
    every epoch runs in :meth:`finish`, after the pass. It streams unless the
    first ``partial_fit`` call needs the combined state (a classifier's
    classes, discovered in this pass) or the chunks are shuffled.
    """

    stage: Fit
    schedule: FitSchedule
    parallel: ParallelSettings
    model: Any = None
    seconds: float = 0.0
    consumed: int = 0
    describe_rows: Callable[[int], tuple[int, int] | str | None] = field(
        default=lambda k: None, repr=False
    )

    @functools.cached_property
    def streams(self) -> bool:  # asked for every chunk: worked out once
        return (
            self.schedule.strategy == "partial_fit"
            and self.stage.chunk_state() is None
            and not self.schedule.shuffle_chunks
        )

    def consume(self, k: int, X: Any, y: Any) -> None:
        """Stream chunk ``k`` into ``partial_fit`` (chunks arrive in chunk order).

        ``X`` is ``None`` for a chunk a filter emptied.
        """
        if X is not None:
            self._partial_fit(k, X, y, None)
        self.consumed += 1

    def finish(self, state: Any, training: TrainingRows | None) -> Fitted:
        """The fitted model, once the pass is done (``state``: the combined feed state)."""
        strategy = self.schedule.strategy
        started = time.perf_counter()
        if strategy == "partial_fit":
            assert training is not None
            for epoch, order in enumerate(_epoch_orders(self.schedule, len(training.spans))):
                for k in order:
                    if epoch == 0 and self.streams and k < self.consumed:
                        continue  # consumed while the pass ran
                    self._partial_fit(k, *training.chunk(k), state)  # times itself
            if self.model is None:
                raise StageError(self.stage.name, None, None, "no rows reached partial_fit")
            return Fitted(model=self.model)
        if strategy == "merge":
            fitted = self._call(None, lambda: self.stage.fit_state(state))
        elif strategy == "sample":
            X, y = Sample(self.schedule.sample_rows, self.schedule.seed).finalize(state)
            fitted = self._call(None, lambda: self.stage.fit_rows(X, y, self.parallel))
        else:
            assert training is not None
            X, y = training.all()
            fitted = self._call(None, lambda: self.stage.fit_rows(X, y, self.parallel))
        self.seconds += time.perf_counter() - started
        return fitted

    def _partial_fit(self, k: int, X: Any, y: Any, state: Any) -> None:
        """One ``partial_fit`` call, on one BLAS thread whatever ``n_jobs``.

        LAPACK's results (IncrementalPCA's SVD) change in the last bits with
        the number of threads, and each call builds on the last: one thread
        keeps the model the same for every ``n_jobs``. While the pass's
        workers run, more threads would also fight them for the cores
        (uncapped, IncrementalPCA's partial_fit ran 2-3x slower).
        """
        started = time.perf_counter()
        if X.shape[0]:
            with threadpool_limits(1):
                self.model = self._call(k, lambda: self.stage.partial_fit(self.model, X, y, state))
        self.seconds += time.perf_counter() - started

    def _call(self, k: int | None, fit: Callable[[], Any]) -> Any:
        try:
            with self.parallel.for_estimator():
                return fit()
        except StageError:
            raise
        except Exception as exc:
            raise StageError.caused_by(
                exc,
                self.stage.name,
                k,
                None if k is None else self.describe_rows(k),
                where="" if k is not None else f" (in fit: {self.schedule.strategy})",
            ) from exc
