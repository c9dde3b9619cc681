"""Resolving ``n_jobs`` and the backend, in one place.

Precedence, as in joblib: an explicit setting (stage, then pipeline or run
call) wins over a ``joblib.parallel_config`` context set by the caller, which
wins over chunkline's default of all cores (``n_jobs=-1``) on ``loky``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import joblib
from joblib.parallel import get_active_backend
from threadpoolctl import threadpool_limits

from .errors import SpecError

__all__ = ["ParallelSettings", "ThreadTasks", "resolve_parallel"]

#: What to do when the dask backend is chosen with no cluster to run on.
NO_CLUSTER = (
    "no dask.distributed cluster to run on: create a distributed.Client first, or "
    "give the command line --scheduler ADDRESS (or set DASK_SCHEDULER_ADDRESS)"
)

#: joblib's backends whose workers are threads or processes of this machine.
_LOCAL_BACKENDS = frozenset({"loky", "threading", "multiprocessing", "sequential"})


@dataclass(frozen=True)
class ParallelSettings:
    """How one pass runs: the arguments given to ``joblib.Parallel`` and what they mean.

    ``n_jobs`` and ``backend`` are ``None`` when a caller's ``parallel_config``
    supplies them.
    """

    n_jobs: int | None
    backend: str | None
    backend_name: str
    n_workers: int
    uses_threads: bool

    @property
    def owns_worker_processes(self) -> bool:
        """Whether tasks run in a process pool of joblib's own (not the caller's process).

        Such processes can be tuned for chunk work; threads, the sequential
        backend and dask's workers (shared with other users) are left alone.
        """
        return self.backend_name == "loky" and self.n_workers > 1

    @property
    def on_this_machine(self) -> bool:
        """Whether every task runs on this machine (joblib's own backends; not dask)."""
        return self.backend_name in _LOCAL_BACKENDS

    @property
    def blas_threads(self) -> int:
        """BLAS/OpenMP threads per worker so that workers x threads <= cores."""
        return max(1, (os.cpu_count() or 1) // max(1, self.n_workers))

    def describe(self) -> str:
        """e.g. ``"n_jobs=2 (2 workers) on loky, 1 BLAS thread each"``."""
        threads = self.blas_threads
        return (
            f"{self.n_workers} worker{'s' if self.n_workers != 1 else ''} on "
            f"{self.backend_name}, {threads} BLAS thread{'s' if threads != 1 else ''} each"
        )

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Context in which ``Parallel(n_jobs=self.n_jobs, backend=self.backend)`` runs.

        loky already caps the BLAS threads of its worker processes; thread-based
        backends share the parent's thread pools, so those are capped here.
        """
        limit = threadpool_limits(self.blas_threads) if self.uses_threads else nullcontext()
        # The backend is set through parallel_config rather than Parallel(backend=):
        # joblib's dask backend only accepts being configured that way.
        config = (
            joblib.parallel_config(backend=self.backend)
            if self.backend is not None
            else nullcontext()
        )
        with limit, config:
            yield

    @contextmanager
    def for_estimator(self) -> Iterator[None]:
        """Context for code in the parent that parallelizes itself (a fit on all rows).

        joblib's ``Parallel`` inside (a random forest's trees, a grid search)
        runs on this pass's backend with its number of workers; BLAS and
        OpenMP threads are not capped, since no chunk workers run meanwhile.
        """
        settings: dict[str, Any] = {"n_jobs": self.n_workers}
        if self.backend is not None:
            settings["backend"] = self.backend
        with joblib.parallel_config(**settings):
            yield

    def parallel(self, **kwargs: Any) -> joblib.Parallel:
        """A ``joblib.Parallel`` for this pass; use it inside :meth:`activate`."""
        return joblib.Parallel(n_jobs=self.n_jobs, **kwargs)


def _backend_name(backend: Any) -> str:
    name = type(backend).__name__
    return name.removesuffix("Backend").lower() or name


def _context_sets_backend() -> bool:
    """Whether the caller chose a backend with ``joblib.parallel_config``."""
    # joblib has no public way to ask; its thread-local config holds a sentinel
    # for every setting the caller left alone.
    try:
        config = joblib.parallel._backend.config
        unset = joblib.parallel.default_parallel_config["backend"]
    except AttributeError:
        return False
    return config.get("backend") is not unset


def resolve_parallel(
    n_jobs: int | None, backend: str | None, default_backend: str | None = None
) -> ParallelSettings:
    """Settings for explicit ``n_jobs``/``backend`` (``None`` = not set here).

    ``default_backend`` replaces joblib's default (loky) when neither the
    pipeline nor a caller's ``parallel_config`` names a backend.
    """
    if backend is None and default_backend is not None and not _context_sets_backend():
        backend = default_backend
    try:
        context = joblib.parallel_config(backend=backend) if backend is not None else nullcontext()
    except ValueError as exc:  # joblib's dask backend finds no Client
        if backend != "dask":
            raise
        raise SpecError.at("backend", f"dask: {NO_CLUSTER}") from exc
    with context:
        active, context_n_jobs = get_active_backend()
        if n_jobs is None and context_n_jobs is None:
            n_jobs = -1
        effective = joblib.effective_n_jobs(n_jobs if n_jobs is not None else context_n_jobs)
    if backend == "sequential":
        effective = 1
    return ParallelSettings(
        n_jobs=n_jobs,
        backend=backend,
        backend_name=_backend_name(active),
        n_workers=max(1, int(effective)),
        uses_threads=bool(getattr(active, "uses_threads", False)) or backend == "threading",
    )


class ThreadTasks:
    """The tasks of one pass that run on threads of this process, so that a failure can
    wait for them.

    When a task fails, joblib's threading backend raises at once and leaves the
    other running tasks to finish on their own, still writing into outputs the
    run is about to remove (a Parquet writer even recreates a removed staging
    folder). After :meth:`stop`, no task starts, and every running one has ended.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._stopped = False

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)``, counted while it runs; nothing once the pass has stopped."""
        with self._changed:
            if self._stopped:
                return None  # the pass failed before this task started: its result is unused
            self._running += 1
        try:
            return func(*args)
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def stop(self) -> None:
        """Start no more tasks, and wait until the running ones have ended."""
        with self._changed:
            self._stopped = True
            self._changed.wait_for(lambda: self._running == 0)
