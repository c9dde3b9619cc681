"""Array sources and the descriptors that carry them to workers.

A source is what the user declared (a path or an in-memory array). Before a
run it is *opened* into an :class:`ArrayRef`: a small, picklable descriptor
(file, dtype, shape, data offset) from which any worker maps the rows it needs.
Only descriptors travel to workers; the data never does.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import SourceError

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = [
    "ArrayLike",
    "ArrayRef",
    "ArraySource",
    "OpenedSource",
    "read_npy_ref",
    "shared_mappings",
]

#: What a source field accepts: a path to an ``.npy`` file or an array.
ArrayLike = str | os.PathLike[str] | np.ndarray

# Copy in-memory inputs to the workspace in slices of this size, so that the
# copy itself never needs a second full-size buffer.
_COPY_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ArrayRef:
    """Where an array's bytes live on disk: enough for any process to map it.

    ``reserved``: the data's disk space was allocated when the file was made
    (:func:`pipeline.sinks.allocate_npy`), so rows may be written through a
    mapping without meeting a full disk.
    """

    path: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    fortran_order: bool = False
    reserved: bool = False

    @property
    def n_rows(self) -> int:
        """Length along axis 0."""
        return self.shape[0]

    @property
    def row_nbytes(self) -> int:
        """Bytes in one row (one index along axis 0)."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def open(self) -> np.ndarray:
        """Map the whole array read-only (no data is read until touched)."""
        if self.n_rows == 0 or self.row_nbytes == 0:
            # mmap cannot map zero bytes.
            return np.empty(self.shape, dtype=self.dtype)
        order: Literal["C", "F"] = "F" if self.fortran_order else "C"
        return np.memmap(
            self.path,
            dtype=np.dtype(self.dtype),
            mode="r",
            offset=self.offset,
            shape=self.shape,
            order=order,
        )

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a zero-copy view of the mapped file.

        Inside :func:`shared_mappings`, the file is mapped once for the
        whole process; elsewhere, for this call only.
        """
        return _SHARED.mapping(self)[start:stop]

    def describe(self) -> str:
        """e.g. ``data/x.npy float64 (1000, 8)``."""
        return f"{self.path} {np.dtype(self.dtype).name} {self.shape}"


@dataclass
class _SharedMappings:
    """The files mapped once in this process while runs are inside :func:`shared_mappings`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: int = 0
    maps: dict[ArrayRef, np.ndarray] = field(default_factory=dict)

    def mapping(self, ref: ArrayRef) -> np.ndarray:
        if not self.runs:
            return ref.open()
        with self.lock:
            mapped = self.maps.get(ref)
            if mapped is None:
                mapped = self.maps[ref] = ref.open()
            return mapped


_SHARED = _SharedMappings()


@contextmanager
def shared_mappings() -> Iterator[None]:
    """Within this block, :meth:`ArrayRef.read` maps each file once for the process.

    The threads of a pass, and the passes after it, then share one mapping
    per file instead of mapping and unmapping it for every chunk. In a
    process with several threads, each unmapping interrupts the other
    threads' CPUs and holds up their page faults; and pages mapped in an
    earlier pass need no page fault in the next one. The first pass of W2
    over 4 GB on two threads took 1.0-1.2 s instead of 1.2-2.2 s. Worker
    processes keep mapping per chunk, so that they hold no file once a run
    is over; the mappings made here are dropped when the last run in this
    process leaves the block.
    """
    with _SHARED.lock:
        _SHARED.runs += 1
    try:
        yield
    finally:
        with _SHARED.lock:
            _SHARED.runs -= 1
            if not _SHARED.runs:
                _SHARED.maps.clear()


def read_npy_ref(path: str | os.PathLike[str], *, what: str = "source") -> ArrayRef:
    """Check that ``path`` is a complete ``.npy`` file and describe it.

    Raises
    ------
    SourceError
        If the file is missing, not a ``.npy`` file, truncated, or holds
        Python objects (which cannot be memory-mapped).
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{what} file not found: {path}")
    if not path.is_file():
        raise SourceError(f"{what} {path} is not a file")
    try:
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
            except ValueError:
                raise SourceError(
                    f"{what} {path} is not a NumPy .npy file "
                    "(it does not start with the .npy magic bytes)"
                ) from None
            try:
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = read_header(f, max_header_size=2**20)
            except (ValueError, SyntaxError) as exc:
                raise SourceError(f"{what} {path} has an unreadable .npy header: {exc}") from None
            offset = f.tell()
    except SourceError:
        raise
    except OSError as exc:
        raise SourceError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if dtype.hasobject:
        raise SourceError(
            f"{what} {path} holds Python objects (dtype {dtype}), which cannot be "
            "memory-mapped; save it with a numeric dtype"
        )
    if len(shape) == 0:
        raise SourceError(f"{what} {path} is a 0-d array; chunkline needs at least one axis")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size - offset
    if actual < expected:
        raise SourceError(
            f"{what} {path} is truncated: its header promises {expected} bytes of "
            f"data {tuple(shape)} {dtype}, but the file holds {actual}"
        )
    return ArrayRef(str(path), dtype.str, tuple(shape), offset, bool(fortran_order))


def _ref_of_memmap(array: np.ndarray) -> ArrayRef | None:
    """The file behind ``array`` if it is a whole, unsliced ``np.memmap``."""
    # Slices of a memmap keep the parent's filename and offset, so only an
    # array whose buffer is the mapping itself can be described by them.
    if not isinstance(array, np.memmap) or not isinstance(array.base, mmap.mmap):
        return None
    if array.filename is None or not (array.flags.c_contiguous or array.flags.f_contiguous):
        return None
    return ArrayRef(
        str(array.filename),
        array.dtype.str,
        array.shape,
        int(array.offset),
        bool(array.flags.f_contiguous and not array.flags.c_contiguous),
    )


def _write_to_workspace(array: np.ndarray, workspace: Workspace, name: str) -> ArrayRef:
    """Write an in-memory array once into the workspace, slice by slice."""
    path = workspace.path(f"{name}.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    step = max(1, _COPY_BYTES // max(1, array[:1].nbytes))
    for start in range(0, array.shape[0], step):
        out[start : start + step] = array[start : start + step]
    out.flush()
    del out
    return read_npy_ref(path)


@dataclass(frozen=True)
class OpenedSource:
    """A source ready to run: descriptors of ``x`` and of the aligned ``y``."""

    x: ArrayRef
    y: ArrayRef | None = None


#: The spec's names of an array source's arrays, used in messages.
_KEYS = {"x": "npy", "y": "y"}


@dataclass(frozen=True, eq=False)
class ArraySource:
    """Rows of an array, from an ``.npy`` file or memory, with optional aligned ``y``.

    Parameters
    ----------
    x
        Path to an ``.npy`` file (opened as a read-only memmap) or an
        in-memory array (written once to the run's workspace). Any number of
        dimensions; chunked along axis 0. A spec calls it ``npy``, and so do
        error messages.
    y
        Optional second array with the same number of rows (e.g. targets),
        chunked identically and filtered together with ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> ArraySource(np.zeros((4, 2))).describe()
    'in-memory array float64 (4, 2)'
    """

    x: ArrayLike
    y: ArrayLike | None = None

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            value = getattr(self, name)
            if value is None and name == "y":
                continue
            name = _KEYS[name]
            if isinstance(value, np.ndarray):
                if value.ndim == 0:
                    raise SourceError(f"source.{name}: a 0-d array has no rows to chunk")
                if value.dtype.hasobject:
                    raise SourceError(
                        f"source.{name}: arrays of Python objects cannot be memory-mapped"
                    )
            elif not isinstance(value, (str, os.PathLike)):
                raise SourceError(
                    f"source.{name}: expected a path to an .npy file or a numpy array, "
                    f"got {type(value).__name__}"
                )

    def open(self, workspace: Workspace) -> OpenedSource:
        """Check the files (or spill in-memory arrays) and return descriptors."""
        x = self._open_one(self.x, workspace, "x")
        y = None if self.y is None else self._open_one(self.y, workspace, "y")
        if y is not None and y.n_rows != x.n_rows:
            raise SourceError(
                f"source.y has {y.n_rows} rows but source.npy has {x.n_rows}; "
                "they must be aligned row for row"
            )
        return OpenedSource(x, y)

    @staticmethod
    def _open_one(value: ArrayLike, workspace: Workspace, name: str) -> ArrayRef:
        if isinstance(value, np.ndarray):
            return _ref_of_memmap(value) or _write_to_workspace(value, workspace, f"input-{name}")
        return read_npy_ref(value, what=f"source.{_KEYS[name]}")

    def describe(self) -> str:
        """A one-line description for ``explain``."""

        def one(value: ArrayLike) -> str:
            if isinstance(value, np.ndarray):
                return f"in-memory array {value.dtype.name} {value.shape}"
            return f"npy {os.fspath(value)}"

        text = one(self.x)
        return text if self.y is None else f"{text}; y: {one(self.y)}"

    def to_dict(self) -> dict[str, Any]:
        """The spec form (``{"npy": path, "y": path}``); only for file sources."""
        if isinstance(self.x, np.ndarray) or isinstance(self.y, np.ndarray):
            raise TypeError("an in-memory source cannot be written as a spec file")
        spec: dict[str, Any] = {"npy": os.fspath(self.x)}
        if self.y is not None:
            spec["y"] = os.fspath(self.y)
        return spec
