"""What the workloads over ``.npy`` arrays share (W1, W2, W4, W5, W6).

- chunk sizes and row ranges (:func:`parse_bytes`, :func:`chunk_bounds`) and
  the ``--chunk-bytes`` option;
- inputs: a float64 ``.npy`` written block by block with bounded memory and
  fsynced (:func:`write_npy`), of standard normal rows, optionally mixed and
  shifted (:func:`write_normal`);
- the hand-written joblib pattern: loky workers over row ranges, each reading
  its rows from the input memmap and writing them into a shared,
  preallocated output memmap (:func:`joblib_map_rows`);
- comparing two ``.npy`` outputs block by block, bitwise or within a
  tolerance (:func:`compare_npy`);
- what ``bench`` prints and how much disk it needs.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from benchmarks.harness import MB
from benchmarks.workload import ChunkOption, sync_to_disk

DTYPE = np.dtype(np.float64)
#: Chunk size of the hand-written implementations of the array workloads, as
#: in the issues' reference figures; chunkline uses its own default unless told.
DEFAULT_CHUNK_BYTES = "32MB"
#: How much of an input :func:`write_npy` generates at a time.
WRITE_BLOCK_BYTES = 64 * MB


# --------------------------------------------------------------------------
# Chunks
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


def row_bounds(n_rows: int, rows: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of ``rows`` rows each (the last may be shorter).

    Examples
    --------
    >>> row_bounds(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows)]


def chunk_bounds(n_rows: int, chunk_bytes: str | int, row_bytes: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of about ``chunk_bytes`` each, covering all rows.

    Examples
    --------
    >>> chunk_bounds(10, 32, 8)
    [(0, 4), (4, 8), (8, 10)]
    """
    return row_bounds(n_rows, max(1, parse_bytes(chunk_bytes) // row_bytes))


def _chunk_size(text: str) -> str:
    """argparse type: check a chunk size early but keep it as written.

    chunkline receives the text itself and parses it its own way.
    """
    try:
        parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


#: ``--chunk-bytes``: the chunk size of every implementation, chunkline's included.
CHUNK_BYTES_OPTION = ChunkOption(
    flag="--chunk-bytes",
    type=_chunk_size,
    help=f"chunk size such as 32MB (default {DEFAULT_CHUNK_BYTES}; chunkline: its own)",
)


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def write_npy(
    path: Path,
    shape: tuple[int, ...],
    fill: Callable[[np.ndarray, int], None],
    *,
    block_bytes: int = WRITE_BLOCK_BYTES,
) -> Path:
    """Write a float64 ``.npy`` of ``shape``, a block of rows at a time, and fsync it.

    ``fill(block, start)`` writes rows ``start:start + len(block)`` into
    ``block``, a view of the mapped file: only a block (~64 MB) is ever in
    memory. The fsync keeps the kernel from still writing the file back to
    disk while the first implementations are being timed.

    Returns
    -------
    Path
        ``path``.
    """
    if shape[0] <= 0:
        raise ValueError(f"--rows must be a positive integer; got {shape[0]}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    row_bytes = DTYPE.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    block_rows = max(1, block_bytes // row_bytes)
    data = open_memmap(path, mode="w+", dtype=DTYPE, shape=shape)
    for start in range(0, shape[0], block_rows):
        fill(data[start : start + block_rows], start)
    data.flush()
    del data
    sync_to_disk(path)
    return path


def write_normal(
    path: Path,
    rows: int,
    cols: int,
    *,
    seed: int,
    mix: np.ndarray | None = None,
    shift: np.ndarray | None = None,
) -> Path:
    """Write ``rows x cols`` float64 rows ``z @ mix + shift``, ``z`` standard normal.

    Without ``mix`` the rows are ``z`` itself, generated straight into the
    mapped file (``out=``: no temporary). The same seed gives the same file.

    Parameters
    ----------
    mix : array of shape (cols, cols), optional
        Mixing matrix: correlated columns (W5) or other scales (W2).
    shift : array of shape (cols,), optional
        Added to every row: column means other than 0.
    """
    rng = np.random.default_rng(seed)

    def fill(block: np.ndarray, start: int) -> None:
        if mix is None:
            rng.standard_normal(dtype=DTYPE, out=block)
        else:
            np.matmul(rng.standard_normal(block.shape), mix, out=block)
        if shift is not None:
            block += shift

    return write_npy(path, (rows, cols), fill)


def describe_array(rows: int, cols: int) -> str:
    """``16,000,000 x 8 float64 (1024 MB)``: what ``bench`` makes, for its report."""
    return f"{rows:,} x {cols} float64 ({rows * cols * DTYPE.itemsize / MB:.0f} MB)"


def describe_made(path: Path, rows: int) -> str:
    """``wrote PATH (N MB)``: what ``make`` prints."""
    return f"wrote {path} ({path.stat().st_size / MB:.0f} MB)"


def disk_needed(rows: int, check: bool, *, in_cols: int, out_cols: int, extra: int = 0) -> int:
    """Input + one output at a time (+ the baseline's kept output with --check) + ``extra``."""
    return rows * DTYPE.itemsize * (in_cols + out_cols * (2 if check else 1)) + extra


# --------------------------------------------------------------------------
# Hand-written joblib over row ranges
# --------------------------------------------------------------------------


def _map_chunk(
    func: Callable[[np.ndarray], np.ndarray], in_path: str, out_path: str, start: int, stop: int
) -> int:
    """One joblib task: read rows from the input, write ``func`` of them to the output."""
    # Paths travel, not arrays: opening a memmap costs ~100 us, pickling a
    # 32 MB chunk costs far more.
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="r+")
    out[start:stop] = func(x[start:stop])
    return stop - start


def joblib_map_rows(
    func: Callable[[np.ndarray], np.ndarray],
    in_path: Path,
    out_path: Path,
    bounds: list[tuple[int, int]],
    *,
    n_jobs: int,
    out_tail: tuple[int, ...] | None = None,
) -> None:
    """Hand-written joblib: loky workers write ``func(rows)`` into a shared output memmap.

    Each task carries ``(func, path, start, stop)``; ``func`` must pickle
    small (a module-level function, or a ``functools.partial`` of one with
    small arguments). The output is float64 of ``(rows, *out_tail)``, by
    default the input's shape.
    """
    from joblib import Parallel, delayed

    shape = np.load(in_path, mmap_mode="r").shape
    out_shape = shape if out_tail is None else (shape[0], *out_tail)
    # Preallocate (header + sparse file) so workers can open it with r+; the
    # parent's own map is dropped at once.
    open_memmap(out_path, mode="w+", dtype=DTYPE, shape=out_shape)
    done = Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(_map_chunk)(func, str(in_path), str(out_path), start, stop)
        for start, stop in bounds
    )
    if sum(done) != shape[0]:
        raise RuntimeError(f"joblib wrote {sum(done)} rows, expected {shape[0]}.")


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def compare_npy(
    actual: Path,
    expected: Path,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    block_bytes: str = DEFAULT_CHUNK_BYTES,
) -> str | None:
    """Compare two ``.npy`` files block by block: bitwise, or within a tolerance.

    With ``rtol`` and ``atol`` both 0 (the default) every element must be
    equal; otherwise ``np.isclose(actual, expected, rtol, atol)``. Memory
    stays at a block of each.

    Returns
    -------
    str or None
        None if they agree, else where they differ first (and, with a
        tolerance, the largest absolute difference in that block).
    """
    a = np.load(actual, mmap_mode="r")
    b = np.load(expected, mmap_mode="r")
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype}, expected {b.shape} {b.dtype}"
    exact = rtol == 0 and atol == 0
    for start, stop in chunk_bounds(len(a), block_bytes, max(1, a[0].nbytes)):
        x, y = a[start:stop], b[start:stop]
        if exact and np.array_equal(x, y):
            continue
        same = (x == y) if exact else np.isclose(x, y, rtol=rtol, atol=atol)
        if same.all():
            continue
        bad = start + int(np.flatnonzero(~same.reshape(len(x), -1).all(axis=1))[0])
        worst = "" if exact else f" (max |difference| in its block {np.abs(x - y).max():.3g})"
        return f"first difference at row {bad}{worst}"
    return None
