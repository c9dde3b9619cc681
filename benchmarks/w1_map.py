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
import re
import sys
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.lib.format import open_memmap

from benchmarks.harness import MB
from benchmarks.workload import REPO_ROOT, ChunkOption, Workload, sync_to_disk

N_COLS = 8
DTYPE = np.dtype(np.float64)
INPUT_NAME = "input.npy"
BASELINE = "numpy"
#: Chunk size of the non-chunkline implementations, as in the issue's
#: reference figures; chunkline uses its own default unless told otherwise.
DEFAULT_CHUNK_BYTES = "32MB"


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
# Chunking helpers
# --------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_bytes(text: str | int) -> int:
    """Turn ``"32MB"``, ``"1.5GiB"`` or ``4096`` into a number of bytes.

    Decimal units are powers of 1000 and binary ones powers of 1024, as in
    dask's ``parse_bytes``.

    Examples
    --------
    >>> parse_bytes("32MB"), parse_bytes("1 KiB"), parse_bytes(7)
    (32000000, 1024, 7)
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            raise ValueError(f"chunk size must look like '32MB', '64MiB' or 4096; got {text!r}.")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"chunk size must be positive; got {text!r}.")
    return value


def chunk_bounds(n_rows: int, chunk_bytes: str | int, row_bytes: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of about ``chunk_bytes`` each, covering all rows.

    Examples
    --------
    >>> chunk_bounds(10, 32, 8)
    [(0, 4), (4, 8), (8, 10)]
    """
    rows = max(1, parse_bytes(chunk_bytes) // row_bytes)
    return [(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows)]


# --------------------------------------------------------------------------
# Input data
# --------------------------------------------------------------------------


def make_input(out_dir: Path, rows: int, *, seed: int = 0, block_rows: int = 1_000_000) -> Path:
    """Write ``out_dir/input.npy``: ``rows x 8`` standard normal float64.

    Generated block by block straight into a memmap, so making 1 GB needs
    ~64 MB of memory, and fsynced, so that the kernel is not still writing
    it back to disk while the first implementations are being timed.

    Parameters
    ----------
    out_dir : Path
        Existing or new directory.
    rows : int
        Number of rows.
    seed : int, default 0
        Seed of the generator; the same seed gives the same file.
    block_rows : int, default 1_000_000
        Rows generated at a time.

    Returns
    -------
    Path
        The input file.
    """
    if rows <= 0:
        raise ValueError(f"--rows must be a positive integer; got {rows}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / INPUT_NAME
    rng = np.random.default_rng(seed)
    data = open_memmap(path, mode="w+", dtype=DTYPE, shape=(rows, N_COLS))
    for start in range(0, rows, block_rows):
        # ``out=`` fills the mapped pages in place: no temporary block.
        rng.standard_normal(dtype=DTYPE, out=data[start : start + block_rows])
    data.flush()
    del data
    sync_to_disk(path)
    return path


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` and writes ``out_path``. None of
# them fsyncs its output: the run deletes it right away, so flushing it to
# disk would only measure the disk.
# --------------------------------------------------------------------------


class Runner(Protocol):
    """How every implementation is called: read ``in_path``, write ``out_path``."""

    def __call__(
        self, in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int
    ) -> None: ...


def _input_meta(in_path: Path) -> tuple[tuple[int, ...], np.dtype]:
    x = np.load(in_path, mmap_mode="r")
    return x.shape, x.dtype


def run_numpy(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Baseline: a single-process loop over memmapped chunks."""
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    for start, stop in chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes):
        out[start:stop] = w1_formula(x[start:stop])
    del out


def _joblib_chunk(in_path: str, out_path: str, start: int, stop: int) -> int:
    """One joblib task: read rows from the input, write them to the output."""
    # Paths travel, not arrays: opening a memmap costs ~100 us, pickling a
    # 32 MB chunk costs far more.
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="r+")
    out[start:stop] = w1_formula(x[start:stop])
    return stop - start


def run_joblib(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Hand-written joblib: loky workers write into a shared output memmap."""
    from joblib import Parallel, delayed

    shape, dtype = _input_meta(in_path)
    # Preallocate (header + sparse file) so workers can open it with r+; the
    # parent's own map is dropped at once.
    open_memmap(out_path, mode="w+", dtype=dtype, shape=shape)
    bounds = chunk_bounds(shape[0], chunk_bytes or DEFAULT_CHUNK_BYTES, dtype.itemsize * shape[1])
    done = Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(_joblib_chunk)(str(in_path), str(out_path), start, stop) for start, stop in bounds
    )
    if sum(done) != shape[0]:
        raise RuntimeError(f"joblib wrote {sum(done)} rows, expected {shape[0]}.")


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
    try:
        from pipeline import Map, Pipeline
    except ImportError as exc:
        raise SystemExit(
            f"chunkline's engine is not importable ({exc}); `from pipeline import Map, Pipeline` "
            f"must work from {REPO_ROOT}."
        ) from exc
    Pipeline(
        source=str(in_path),
        stages=[Map(w1_formula, name="w1")],
        sink=str(out_path),
        n_jobs=workers,
        # None is Pipeline's own default: chunkline picks the chunk size.
        chunks=None if chunk_bytes is None else {"bytes": chunk_bytes},
    ).run()


IMPLEMENTATIONS: dict[str, Runner] = {
    "numpy": run_numpy,
    "joblib": run_joblib,
    "pool": run_pool,
    "dask": run_dask,
    "chunkline-1": functools.partial(run_chunkline, workers=1),
    "chunkline-2": functools.partial(run_chunkline, workers=2),
}


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def compare_outputs(
    actual: Path, expected: Path, *, chunk_bytes: str = DEFAULT_CHUNK_BYTES
) -> str | None:
    """Compare two ``.npy`` files bitwise, chunk by chunk.

    Returns
    -------
    str or None
        None if they are equal, else what differs first.
    """
    a = np.load(actual, mmap_mode="r")
    b = np.load(expected, mmap_mode="r")
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype}, expected {b.shape} {b.dtype}"
    for start, stop in chunk_bounds(len(a), chunk_bytes, max(1, a[0].nbytes)):
        if not np.array_equal(a[start:stop], b[start:stop]):
            bad = start + int(np.flatnonzero((a[start:stop] != b[start:stop]).any(axis=1))[0])
            return f"first difference at row {bad}"
    return None


# --------------------------------------------------------------------------
# The workload, for the shared command line (benchmarks.workload)
# --------------------------------------------------------------------------


def _chunk_size(text: str) -> str:
    """argparse type: check a chunk size early but keep it as written.

    chunkline receives the text itself and parses it its own way.
    """
    try:
        parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _input_bytes(rows: int) -> int:
    return rows * N_COLS * DTYPE.itemsize


def describe_input(rows: int) -> str:
    """``16,000,000 x 8 float64 (1024 MB)``: what ``bench`` makes, for its report."""
    return f"{rows:,} x {N_COLS} float64 ({_input_bytes(rows) / MB:.0f} MB)"


def _describe_made(path: Path, rows: int) -> str:
    return f"wrote {path} ({path.stat().st_size / MB:.0f} MB)"


def _disk_needed(rows: int, check: bool) -> int:
    """Input + one output at a time (+ the baseline's kept output with --check)."""
    return _input_bytes(rows) * (3 if check else 2)


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
    describe_input=describe_input,
    describe_made=_describe_made,
    disk_needed=_disk_needed,
    compare_outputs=compare_outputs,
    compared="bitwise, np.array_equal per chunk",
    chunk_option=ChunkOption(
        flag="--chunk-bytes",
        type=_chunk_size,
        help=f"chunk size such as 32MB (default {DEFAULT_CHUNK_BYTES}; chunkline: its own)",
    ),
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
