"""How rows are cut into chunks.

A chunk is a half-open row range ``[start, stop)`` along axis 0, plus an
optional halo of ``overlap`` rows on each side for windowed functions. The
chunk plan covers every row exactly once and in order; halos are clipped at
the array's ends (no padding is invented).

Chunk size is given by the user in one of several forms (rows, bytes, a
memory budget, or nothing) and is normalized here once, into a row count,
by :func:`resolve_chunk_rows`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import SpecError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_TABLE_CHUNK_BYTES",
    "Chunk",
    "ChunkSpec",
    "WORKING_SET_FACTOR",
    "format_bytes",
    "parse_bytes",
    "plan_chunks",
    "resolve_chunk_rows",
]

#: Default chunk size when none is given. Small enough that NumPy temporaries
#: of a chunk are recycled by the allocator instead of being mmapped and
#: zero-filled by the kernel on every chunk (see benchmarks/), large enough
#: that per-task overhead (~0.2 ms) stays under 1% of the work.
DEFAULT_CHUNK_BYTES = 4 * 2**20

#: Default chunk size of table sources: whole Parquet row groups (up to
#: about a million rows of typical width). Arrow's per-batch costs make smaller
#: table chunks slower (see benchmarks/), and row groups bound the size anyway.
DEFAULT_TABLE_CHUNK_BYTES = 64 * 2**20

#: How many chunk-sized buffers a worker is assumed to hold at once (input
#: view, output and a couple of temporaries) when a memory budget is turned
#: into a chunk size.
WORKING_SET_FACTOR = 4

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | float | str) -> int:
    """Turn a size such as ``"64MB"``, ``"1.5GiB"`` or ``4096`` into bytes.

    Decimal units (kB, MB, GB) are powers of 1000 and binary units (KiB, MiB,
    GiB) powers of 1024, as in dask.

    >>> parse_bytes("64MB")
    64000000
    >>> parse_bytes("2 GiB")
    2147483648
    >>> parse_bytes(512)
    512
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 64MB, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or int(value) <= 0:
            raise ValueError(f"expected a positive size, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 64MB, got {value!r}")
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected a size such as 64MB or 2GiB, got {value!r}")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def format_bytes(nbytes: float) -> str:
    """A size for people to read, in binary units (the inverse of :func:`parse_bytes`).

    >>> format_bytes(4 * 2**20), format_bytes(512), format_bytes(3 * 2**40)
    ('4.0 MiB', '512 B', '3072.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, in the ``plural`` (default: ``noun`` + "s") unless ``n`` is 1.

    >>> counted(1, "chunk"), counted(3, "chunk"), counted(2, "pass", "passes")
    ('1 chunk', '3 chunks', '2 passes')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


@dataclass(frozen=True, kw_only=True)
class ChunkSpec:
    """How to size chunks: exactly one of ``rows``, ``bytes``, ``memory``, or none.

    Parameters
    ----------
    rows
        Rows per chunk.
    bytes
        Target bytes of input per chunk.
    memory
        Total memory budget for all workers; the chunk size is chosen so that
        ``n_jobs`` workers, each holding about ``WORKING_SET_FACTOR`` chunks'
        worth of buffers, stay within it.
    overlap
        Halo rows added on each side of every chunk for windowed functions,
        trimmed from the output.
    """

    rows: int | None = None
    bytes: int | None = None
    memory: int | None = None
    overlap: int = 0

    def __post_init__(self) -> None:
        given = [k for k in ("rows", "bytes", "memory") if getattr(self, k) is not None]
        if len(given) > 1:
            raise SpecError.at("", f"give only one of rows, bytes or memory; got {given}")
        for key in ("rows", "bytes", "memory"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise SpecError.at(key, f"expected a positive integer, got {value!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 0:
            raise SpecError.at("overlap", f"expected a non-negative integer, got {self.overlap!r}")

    def describe(self) -> str:
        """A short human description, e.g. ``"rows=1000"`` or ``"default (4 MiB)"``."""
        parts = [f"{k}={getattr(self, k)}" for k in ("rows", "bytes", "memory")]
        parts = [p for p in parts if not p.endswith("=None")] or ["default"]
        if self.overlap:
            parts.append(f"overlap={self.overlap}")
        return ", ".join(parts)


def resolve_chunk_rows(
    spec: ChunkSpec, row_nbytes: int, n_workers: int, default_bytes: int = DEFAULT_CHUNK_BYTES
) -> int:
    """Rows per chunk for rows of ``row_nbytes`` bytes and ``n_workers`` workers.

    >>> resolve_chunk_rows(ChunkSpec(rows=10), 64, 2)
    10
    >>> resolve_chunk_rows(ChunkSpec(bytes=6400), 64, 2)
    100
    >>> resolve_chunk_rows(ChunkSpec(memory=64 * 4 * 2 * 100), 64, 2)
    100
    """
    row_nbytes = max(1, row_nbytes)
    if spec.rows is not None:
        return spec.rows
    if spec.memory is not None:
        per_chunk = spec.memory // (max(1, n_workers) * WORKING_SET_FACTOR)
    elif spec.bytes is not None:
        per_chunk = spec.bytes
    else:
        per_chunk = default_bytes
    return max(1, per_chunk // row_nbytes)


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """One chunk: rows ``[start, stop)`` read with halo ``[read_start, read_stop)``."""

    index: int
    start: int
    stop: int
    read_start: int
    read_stop: int

    def __post_init__(self) -> None:
        if not (0 <= self.read_start <= self.start <= self.stop <= self.read_stop):
            raise ValueError(f"inconsistent chunk bounds: {self}")

    @property
    def rows(self) -> int:
        """Number of rows the chunk owns (halo excluded)."""
        return self.stop - self.start

    @property
    def halo(self) -> tuple[int, int]:
        """Rows of halo read before and after the chunk's own rows."""
        return self.start - self.read_start, self.read_stop - self.stop


def plan_chunks(n_rows: int, chunk_rows: int, overlap: int = 0) -> tuple[Chunk, ...]:
    """Cut ``n_rows`` rows into chunks of ``chunk_rows`` (the last may be shorter).

    An empty array has no chunks.

    >>> [(c.start, c.stop) for c in plan_chunks(10, 4)]
    [(0, 4), (4, 8), (8, 10)]
    >>> [(c.read_start, c.read_stop) for c in plan_chunks(10, 4, overlap=1)]
    [(0, 5), (3, 9), (7, 10)]
    """
    if n_rows < 0 or chunk_rows <= 0 or overlap < 0:
        raise ValueError(
            f"need n_rows >= 0, chunk_rows > 0, overlap >= 0; got {n_rows}, {chunk_rows}, {overlap}"
        )
    return tuple(
        Chunk(
            index=i,
            start=start,
            stop=min(start + chunk_rows, n_rows),
            read_start=max(0, start - overlap),
            read_stop=min(n_rows, start + chunk_rows + overlap),
        )
        for i, start in enumerate(range(0, n_rows, chunk_rows))
    )
