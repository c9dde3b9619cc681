"""Workload W1: an elementwise, CPU-heavy map from one ``.npy`` to another.

The input is a float64 array of ``rows x 8`` (16M rows = 1.02 GB), the output
has the same shape, and every element goes through :func:`w1_formula`. The
implementations are what a user would otherwise write, plus chunkline:

========== ===========================================================
numpy      one process, a loop over memmapped chunks (the baseline)
joblib     loky workers read their rows from the input memmap and write
           into a shared, preallocated output memmap
pool       ``multiprocessing.Pool`` pickling every chunk both ways
dask       ``from_array(memmap)`` + ``map_blocks`` + ``store``, threads
chunkline-1, chunkline-2
           chunkline's Python API with ``n_jobs=1`` and ``n_jobs=2``
========== ===========================================================

Commands (from the repository root; every workload shares them, see
:mod:`benchmarks.workload`)::

    python -m benchmarks.w1_map bench --rows 16000000 --repeat 3
    python -m benchmarks.w1_map make --rows 2000000 --out /tmp/w1
    python -m benchmarks.w1_map run --impl joblib --data /tmp/w1
    python -m benchmarks.w1_map verify --data /tmp/w1
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import sys
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from benchmarks.arrays import (
    CHUNK_BYTES_OPTION,
    DEFAULT_CHUNK_BYTES,
    chunk_bounds,
    compare_npy,
    describe_array,
    describe_made,
    disk_needed,
    joblib_map_rows,
    parse_bytes,
    write_normal,
)
from benchmarks.workload import BytesRunner, Workload, check_chunkline

N_COLS = 8
INPUT_NAME = "input.npy"
BASELINE = "numpy"


def w1_formula(x: np.ndarray) -> np.ndarray:
    """The W1 map: ``sqrt(|x|) * log1p(|x|) + sin(x)``, elementwise.

    Written as a user would write it (temporaries and all): the workload is
    this expression, not a tuned kernel.

    Examples
    --------
    >>> w1_formula(np.array([0.0, -1.0])).round(6).tolist()
    [0.0, -0.148324]
    """
    return np.sqrt(np.abs(x)) * np.log1p(np.abs(x)) + np.sin(x)


# --------------------------------------------------------------------------
# Input data
# --------------------------------------------------------------------------


def make_input(out_dir: Path, rows: int, *, seed: int = 0) -> Path:
    """Write ``out_dir/input.npy``: ``rows x 8`` standard normal float64.

    Generated block by block straight into a memmap, so making 1 GB needs
    ~64 MB of memory, and fsynced (:func:`benchmarks.arrays.write_normal`).
    The same seed gives the same file.
    """
    return write_normal(out_dir / INPUT_NAME, rows, N_COLS, seed=seed)


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` and writes ``out_path``. None of
# them fsyncs its output: the run deletes it right away, so flushing it to
# disk would only measure the disk.
# --------------------------------------------------------------------------


def run_numpy(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Baseline: a single-process loop over memmapped chunks."""
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    for start, stop in chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes):
        out[start:stop] = w1_formula(x[start:stop])
    del out


def run_joblib(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Hand-written joblib: loky workers write into a shared output memmap."""
    x = np.load(in_path, mmap_mode="r")
    bounds = chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes)
    joblib_map_rows(w1_formula, in_path, out_path, bounds, n_jobs=n_jobs)


def run_pool(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Naive ``multiprocessing.Pool``: chunks are pickled to workers and back."""
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    bounds = chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes)
    # np.asarray: a plain ndarray view, pickled as its bytes; a memmap slice
    # would arrive as an np.memmap backed by no file, and results would
    # come back as that subclass too.
    chunks = (np.asarray(x[start:stop]) for start, stop in bounds)
    pool = multiprocessing.Pool(n_jobs)
    try:
        for (start, stop), result in zip(bounds, pool.imap(w1_formula, chunks), strict=True):
            out[start:stop] = result
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    del out


def run_dask(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """dask.array over the input memmap, stored into an output memmap, threads."""
    import dask.array as da

    x = np.load(in_path, mmap_mode="r")
    rows = max(1, parse_bytes(chunk_bytes or DEFAULT_CHUNK_BYTES) // x[0].nbytes)
    dx = da.from_array(x, chunks=(rows, x.shape[1]))
    dy = dx.map_blocks(w1_formula, dtype=x.dtype)
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    # Defaults otherwise (lock=True), as a user would write it.
    da.store(dy, out, scheduler="threads", num_workers=n_jobs)
    del out


def run_chunkline(
    in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int, workers: int
) -> None:
    """chunkline's Python API with ``workers`` jobs (``n_jobs`` is ignored).

    ``chunk_bytes`` is passed through as given (chunkline parses it); None
    leaves chunkline's default chunk size.
    """
    check_chunkline()
    from pipeline import Map, Pipeline

    Pipeline(
        source=str(in_path),
        stages=[Map(w1_formula, name="w1")],
        sink=str(out_path),
        n_jobs=workers,
        # None is Pipeline's own default: chunkline picks the chunk size.
        chunks=None if chunk_bytes is None else {"bytes": chunk_bytes},
    ).run()


IMPLEMENTATIONS: dict[str, BytesRunner] = {
    "numpy": run_numpy,
    "joblib": run_joblib,
    "pool": run_pool,
    "dask": run_dask,
    "chunkline-1": functools.partial(run_chunkline, workers=1),
    "chunkline-2": functools.partial(run_chunkline, workers=2),
}


# --------------------------------------------------------------------------
# The workload, for the shared command line (benchmarks.workload)
# --------------------------------------------------------------------------


def _notes(args: argparse.Namespace, in_path: Path) -> list[str]:
    """How the implementations were configured, under the report's table."""
    chunking = (
        f"chunks {args.chunk_bytes} for every implementation"
        if args.chunk_bytes
        else f"chunks {DEFAULT_CHUNK_BYTES} (chunkline: its default)"
    )
    return [f"Workload: W1 map, {chunking}, n_jobs {args.n_jobs} (chunkline-K: n_jobs K)."]


WORKLOAD = Workload(
    module="benchmarks.w1_map",
    description=__doc__.split("\n")[0],
    key="w1",
    title="W1 map",
    task=".npy -> .npy",
    implementations=IMPLEMENTATIONS,
    baseline=BASELINE,
    input_name=INPUT_NAME,
    output_name="out-{name}.npy",
    make_input=make_input,
    describe_input=functools.partial(describe_array, cols=N_COLS),
    describe_made=describe_made,
    disk_needed=functools.partial(disk_needed, in_cols=N_COLS, out_cols=N_COLS),
    compare_outputs=compare_npy,
    compared="bitwise, np.array_equal per chunk",
    chunk_option=CHUNK_BYTES_OPTION,
    n_jobs_help="workers of joblib, pool and dask (default 2)",
    rows_default=16_000_000,
    rows_help="rows of 8 float64 (default 16M = 1 GB)",
    notes=_notes,
)


if __name__ == "__main__":
    # Through the importable module, so that functions pickle by reference
    # (see benchmarks.workload).
    from benchmarks import w1_map

    sys.exit(w1_map.WORKLOAD.main())
