"""Where results go, and how they get there without half-written files.

Array outputs are preallocated ``.npy`` files whose disk space is reserved
up front, so a full disk stops a run before any work. Workers write their
rows in place, each through a mapping of just its own rows: threads of one
process then write in parallel, where ``pwrite`` calls would queue on the
file's lock (see ``benchmarks/``). Workers that may run on other hosts
(dask), and files the filesystem could not reserve, get ``pwrite``.
Filtered (variable-length) outputs are written by each worker as its own part
file and then assembled in chunk order with ``copy_file_range``, so the
parent never holds the data.

A final output is written under a hidden temporary name in its target folder
and renamed into place only after every chunk succeeded, so its final path
never holds a partial file and an existing file there survives a failed run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .chunking import format_bytes
from .errors import SinkError, SpecError
from .parquet import ParquetOptions, ParquetTarget
from .sources import ArrayRef, read_npy_ref

__all__ = [
    "SINK_KEYS",
    "Sink",
    "allocate_npy",
    "assemble_parts",
    "atomic_write_json",
    "final_path",
    "write_json",
    "read_parts",
    "reductions_as_json",
    "stage_files",
    "temporary_sibling",
    "to_jsonable",
    "write_part",
    "write_rows",
]


def final_path(path: str | os.PathLike[str]) -> str:
    """The path an output replaces: where ``path`` leads, through any symbolic link.

    A nightly job often writes through a link (``out -> /data/2026-12-02``):
    the rename must replace the file or folder the link points to, beside
    it on its own filesystem, and leave the link a link.
    """
    return os.path.realpath(path)


def temporary_sibling(final: str | os.PathLike[str]) -> str:
    """A hidden, unique temporary path in the same folder as ``final``.

    Same folder, so that the final ``os.replace`` is an atomic rename.
    """
    final = Path(final)
    return str(final.with_name(f".{final.name}.chunkline-{secrets.token_hex(4)}.tmp"))


def stage_files(
    writers: Mapping[str, Callable[[str], None] | None],
) -> list[tuple[str | None, str]]:
    """Write files under temporary names beside their final paths, for a later commit.

    ``writers`` maps each final path to a function writing the file at the
    path it is given, or to ``None``: no such file this time, and one left
    at the final path by an earlier run must go (it would be stale). Returns
    ``(temporary, final)`` pairs, ``temporary`` being ``None`` for those. If
    a writer raises, the temporaries already written are removed first.
    """
    pairs: list[tuple[str | None, str]] = []
    try:
        for final, write in writers.items():
            if write is None:  # the stale name goes, not what a link there points to
                pairs.append((None, final))
                continue
            final = final_path(final)
            temporary = temporary_sibling(final)
            pairs.append((temporary, final))
            write(temporary)
    except BaseException:
        for written, _ in pairs:
            if written is not None:
                Path(written).unlink(missing_ok=True)
        raise
    return pairs


def allocate_npy(path: str, dtype: np.dtype, shape: tuple[int, ...]) -> ArrayRef:
    """Create an ``.npy`` file of the given shape with its disk space reserved, no data written.

    A filesystem that cannot reserve space gets a sparse file instead
    (``reserved`` is then false in the returned descriptor).

    Raises
    ------
    SinkError
        If the file cannot be made or the disk cannot hold it; nothing is
        left at ``path``.
    """
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            offset = f.tell()
            f.flush()  # the header's failure to fit is reported here, not at close
            reserved = _reserve(f.fileno(), offset, nbytes)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.remove(path)
        raise SinkError(
            f"cannot make {path} ({format_bytes(nbytes)}) on disk: {exc.strerror or exc}"
        ) from exc
    return ArrayRef(path, dtype.str, tuple(shape), offset, reserved=reserved)


def _reserve(fd: int, offset: int, nbytes: int) -> bool:
    """Allocate the file's data blocks; ``False`` (a sparse file) where the OS cannot."""
    # A full disk is found here, before any work, rather than by a worker
    # halfway through, and rows may then be written through mappings (see
    # write_rows). Reserving also speeds writes up: two threads pwrite-ing
    # 1 GB into a sparse ext4 file took 2.1 s (spinning on the inode lock
    # while blocks were allocated), 0.2 s once reserved.
    if nbytes == 0:
        return True
    if not hasattr(os, "posix_fallocate"):  # e.g. macOS
        os.ftruncate(fd, offset + nbytes)
        return False
    try:
        os.posix_fallocate(fd, offset, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, offset + nbytes)
        return False
    return True


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    # A single pwrite may write fewer bytes than asked (e.g. over 2 GiB).
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def write_rows(
    target: ArrayRef, start: int, block: np.ndarray, *, shared_page_cache: bool = True
) -> None:
    """Write ``block`` as rows ``start:start + len(block)`` of the ``.npy`` ``target``.

    Through a mapping of just those rows when ``target``'s space is reserved
    and every writer shares this machine's page cache (``shared_page_cache``:
    threads or processes here): concurrent writers then do not queue on the
    file's lock as ``pwrite`` calls do. Otherwise by ``pwrite``: into a sparse
    file a write through a mapping could meet a full disk as SIGBUS, which
    kills the process, and workers on other hosts of a shared filesystem
    would write back whole pages, over their neighbours' rows. (On
    copy-on-write filesystems, such as btrfs, a reserved file may still need
    space when written.)
    """
    if block.shape[0] == 0:
        return
    position = target.offset + start * target.row_nbytes
    if target.reserved and shared_page_cache:
        rows = np.memmap(
            target.path,
            dtype=np.dtype(target.dtype),
            mode="r+",
            offset=position,
            shape=(block.shape[0], *target.shape[1:]),
        )
        try:
            rows[...] = block
        finally:
            del rows  # unmapped, even on failure: the pages are the kernel's to write back
        return
    data = np.ascontiguousarray(block, dtype=target.dtype)
    # Write-only: over NFS, the client then sends just these bytes, not whole pages.
    fd = os.open(target.path, os.O_WRONLY)
    try:
        _pwrite_all(fd, data.data.cast("B"), position)
    finally:
        os.close(fd)


def _part_name(chunk: int, block: int) -> str:
    return f"part-{chunk:06d}-{block:04d}.npy"


def write_part(folder: str, chunk: int, block: int, rows: np.ndarray) -> None:
    """Write block ``block`` of chunk ``chunk``'s rows as a part file of ``folder``."""
    if rows.shape[0]:
        np.save(os.path.join(folder, _part_name(chunk, block)), np.ascontiguousarray(rows))


def read_parts(folder: str, chunk: int, counts: Sequence[int]) -> np.ndarray:
    """Chunk ``chunk``'s rows from its part files (``counts``: rows of each block).

    One block is mapped, not copied; several are joined into one array.
    """
    blocks = [
        np.load(os.path.join(folder, _part_name(chunk, block)), mmap_mode="r")
        for block, rows in enumerate(counts)
        if rows
    ]
    if len(blocks) == 1:
        return blocks[0]
    if not blocks:
        raise SinkError(f"chunk {chunk} wrote no rows to {folder}")
    return np.concatenate(blocks)


def assemble_parts(
    folder: str,
    counts: Sequence[tuple[int, int, int]],
    target: str,
    dtype: np.dtype,
    tail: tuple[int, ...],
) -> ArrayRef:
    """Concatenate part files into a new ``.npy`` ``target``, in the order of ``counts``.

    ``counts`` lists ``(chunk, block, rows)`` for every block, in row order.
    Text (labels from a table's column) is as wide as each chunk's longest
    value: the output takes the widest part's width.
    """
    parts = [
        read_npy_ref(os.path.join(folder, _part_name(chunk, block)), what="part")
        for chunk, block, count in counts
        if count
    ]
    if np.dtype(dtype).kind in "SU":
        widths = [np.dtype(dtype), *(np.dtype(p.dtype) for p in parts)]
        dtype = max(widths, key=lambda d: d.itemsize)
    out = allocate_npy(target, dtype, (sum(rows for _, _, rows in counts), *tail))
    position = out.offset
    with open(target, "r+b") as dst:
        for part in parts:
            if np.dtype(part.dtype) != out.dtype:  # narrower text: widened by NumPy
                rows = part.open()
                os.pwrite(dst.fileno(), rows.astype(out.dtype).tobytes(), position)
                position += rows.shape[0] * out.row_nbytes
                continue
            length = part.n_rows * out.row_nbytes
            with open(part.path, "rb") as src:
                _copy_range(src.fileno(), dst.fileno(), part.offset, position, length)
            position += length
    return out


def _copy_range(src: int, dst: int, src_offset: int, dst_offset: int, length: int) -> None:
    """Copy bytes between files inside the kernel where the OS allows it."""
    while length > 0:
        try:
            done = os.copy_file_range(src, dst, length, src_offset, dst_offset)
        except (AttributeError, OSError):  # not Linux, or a filesystem without support
            done = os.pwrite(dst, os.pread(src, min(length, 64 * 2**20), src_offset), dst_offset)
        if done == 0:
            raise SinkError("part file ended early while assembling the output")
        src_offset, dst_offset, length = src_offset + done, dst_offset + done, length - done


def to_jsonable(value: Any) -> Any:
    """Reduction results (NumPy arrays and scalars, dicts, tuples) as plain JSON values.

    NaN and infinities become ``null``, since JSON has no such numbers.

    >>> to_jsonable({"mean": np.array([1.0, np.nan]), "count": np.int64(3)})
    {'mean': [1.0, None], 'count': 3}
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, pa.Table):  # e.g. a group-by result: one record per row
        return to_jsonable(value.to_pylist())
    if isinstance(value, (np.ndarray, list, tuple)):
        return [
            to_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)
        ]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def reductions_as_json(results: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Reduction results as JSON values; a result JSON cannot hold names its stage."""
    converted = {}
    for name, value in results.items():
        converted[name] = to_jsonable(value)
        try:
            json.dumps(converted[name])
        except (TypeError, ValueError) as exc:
            raise SinkError(
                f"cannot write the result of reduce stage {name!r} to {path} as JSON: {exc}"
            ) from exc
    return converted


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` (reduction results too, see :func:`to_jsonable`) as JSON to ``path``."""
    with open(path, "w") as f:
        json.dump(to_jsonable(value), f, indent=2)
        f.write("\n")


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as JSON to ``path`` via a temporary file and a rename."""
    path = final_path(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write_json(tmp, value)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_PARQUET_OPTIONS = ("partition_by", "mode", "compression", "row_group_size", "single_file")

#: Keys of a sink in a spec.
SINK_KEYS = ("npy", "y", "parquet", *_PARQUET_OPTIONS, "reductions", "models")
_PATHS = ("npy", "y", "parquet", "reductions", "models")


@dataclass(frozen=True, kw_only=True)
class Sink:
    """Where a run's results go.

    Parameters
    ----------
    npy
        Path of the ``.npy`` file receiving an array output.
    y
        Path of the ``.npy`` file receiving the aligned ``y`` after filters.
    parquet
        Path of the Parquet dataset folder (or file, with ``single_file``)
        receiving a table output.
    parquet_options
        How the Parquet output is written (partitioning, mode, compression...).
    reductions
        Path of a JSON file receiving the results of the ``reduce`` stages.
    models
        Folder receiving the fitted model of every fit stage (created if
        needed; each stage's files are named after it).

    With no path at all, the data output is returned in memory (when any
    stage changes the data). With only ``reductions`` or ``models``, no data
    output is kept.
    """

    npy: str | None = None
    y: str | None = None
    parquet: str | None = None
    parquet_options: ParquetOptions = field(default_factory=ParquetOptions)
    reductions: str | None = None
    models: str | None = None

    def __post_init__(self) -> None:
        for key in _PATHS:
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, (str, os.PathLike)):
                raise SpecError.at(key, f"expected a file path, got {value!r}")
            object.__setattr__(self, key, os.fspath(value))
        if self.y is not None and self.npy is None:
            raise SpecError.at("y", "needs npy too (y is written beside the data)")
        if self.npy is not None and self.parquet is not None:
            raise SpecError.at("", "give either npy or parquet, not both")
        if self.npy is not None and not self.npy.endswith(".npy"):
            raise SpecError.at("npy", f"expected a path ending in .npy, got {self.npy!r}")
        folder_path = self.parquet is not None and self.parquet.endswith(("/", os.sep))
        if folder_path and self.parquet_options.single_file:
            raise SpecError.at(
                "parquet", f"single_file writes one file: give a file path, not {self.parquet!r}"
            )
        paths = [getattr(self, key) for key in _PATHS if getattr(self, key) is not None]
        if len(set(map(os.path.abspath, paths))) < len(paths):
            raise SpecError.at("", "npy, y, parquet, reductions and models must be different paths")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> Sink:
        """A sink from its spec form: ``{"parquet": path, "partition_by": [...], ...}``."""
        options = {k: mapping[k] for k in _PARQUET_OPTIONS if k in mapping}
        if options and mapping.get("parquet") is None:
            raise SpecError.at(next(iter(options)), "only applies to a parquet sink")
        fields = {k: v for k, v in mapping.items() if k not in _PARQUET_OPTIONS}
        return cls(parquet_options=ParquetOptions(**options), **fields)

    @property
    def has_data(self) -> bool:
        """Whether the data output goes to a file (rather than memory or nowhere)."""
        return self.npy is not None or self.parquet is not None

    @property
    def in_memory(self) -> bool:
        """Whether the sink names no file at all: the output comes back in memory."""
        return all(getattr(self, key) is None for key in _PATHS)

    def check_writable(self) -> None:
        """Fail before any work if an output path can never be written.

        Raises
        ------
        SinkError
            Naming the field and path: a folder stands at a file's path, a
            file stands where one of its folders would be, or a Parquet target
            exists and the mode does not allow writing to it.
        """
        if self.parquet is not None:
            ParquetTarget(self.parquet, self.parquet_options).check()
        given = {key: getattr(self, key) for key in _PATHS if getattr(self, key) is not None}
        resolved = [final_path(path) for path in given.values()]
        if len(set(resolved)) < len(resolved):  # two names, one file: links
            raise SinkError(
                "sink: "
                + ", ".join(f"{key} {path}" for key, path in given.items())
                + " lead to the same file or folder through symbolic links; each output "
                "needs its own"
            )
        for key in _PATHS:
            path = getattr(self, key)
            if path is None:
                continue
            if key == "models" and os.path.exists(path) and not os.path.isdir(path):
                raise SinkError(f"sink.models: {path} is a file, not a folder")
            if key not in ("parquet", "models") and os.path.isdir(path):
                raise SinkError(f"sink.{key}: {path} is a directory, not a file")
            for parent in Path(os.path.abspath(path)).parents:
                if parent.exists():
                    if not parent.is_dir():
                        raise SinkError(
                            f"sink.{key}: cannot create {path}: {parent} is a file, not a folder"
                        )
                    break

    def describe(self) -> str:
        """A one-line description for ``explain``."""
        parts = []
        for key in _PATHS:
            if getattr(self, key):
                parts.append(f"{key} {getattr(self, key)}")
            if key == "parquet" and self.parquet is not None:
                options = self.parquet_options
                detail = [f"mode {options.mode}", f"{options.compression} compression"]
                if options.partition_by:
                    detail.append(f"partitioned by {', '.join(options.partition_by)}")
                if options.single_file:
                    detail.append("merged into one file")
                parts[-1] += f" ({', '.join(detail)})"
        return "; ".join(parts) or "in memory"

    def to_dict(self) -> dict[str, Any]:
        """The spec form of this sink."""
        spec: dict[str, Any] = {k: getattr(self, k) for k in _PATHS if getattr(self, k)}
        if self.parquet is not None:
            default = ParquetOptions()
            for key in _PARQUET_OPTIONS:
                value = getattr(self.parquet_options, key)
                if value != getattr(default, key):
                    spec[key] = list(value) if isinstance(value, tuple) else value
        return spec
