"""Table sources: Parquet, CSV and Arrow IPC files, read through ``pyarrow.dataset``.

Opening a source reads metadata only (file footers and row-group statistics):
it checks every file, the schemas and the spec's column and filter names,
prunes the row groups whose statistics exclude the filter, and returns a
:class:`TableRef`, a picklable descriptor. Chunks are runs of whole row groups
(CSV and IPC files: whole files). Each worker reads its own chunk; a row group
larger than the chunk size is streamed in batches of that size, so memory
stays bounded either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import SourceError, SpecError
from .schema import Predicate, check_columns, filter_mask, validate_filters

if TYPE_CHECKING:
    import pyarrow.dataset as ds

    from .workspace import Workspace

__all__ = ["FORMATS", "Piece", "TableChunk", "TableRef", "TableSource"]

#: Spec keys of table sources and the pyarrow dataset format each names.
FORMATS = {"parquet": "parquet", "csv": "csv", "ipc": "ipc", "feather": "ipc"}

# Spark and pyarrow writers leave these beside the data (_SUCCESS, .crc files).
_IGNORED_PREFIXES = [".", "_"]


@dataclass(frozen=True)
class Piece:
    """Rows of one file: some of its row groups (Parquet) or all of it."""

    file: int
    row_groups: tuple[int, ...] | None
    rows: int | None


@dataclass(frozen=True, kw_only=True)
class TableChunk:
    """One chunk of a table source: consecutive pieces, in file order."""

    index: int
    pieces: tuple[Piece, ...]

    @property
    def rows(self) -> int | None:
        """Rows before filters, when the metadata tells."""
        counts = [p.rows for p in self.pieces]
        return None if None in counts else sum(counts)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class TableRef:
    """Everything a worker needs to read any chunk of a table source."""

    format: str
    files: tuple[str, ...]
    partitions: tuple[Any, ...]  # each file's partition expression (hive keys), or None
    schema: pa.Schema  # of the dataset, partition columns included
    columns: tuple[str, ...] | None
    conjunctions: tuple[tuple[Predicate, ...], ...] | None  # DNF filters on the rows
    pieces: tuple[Piece, ...]
    row_nbytes: int

    @property
    def n_rows(self) -> int | None:
        """Rows that will be read, when known before reading (no filter, Parquet)."""
        if self.conjunctions or any(p.rows is None for p in self.pieces):
            return None
        return sum(p.rows for p in self.pieces)  # type: ignore[misc]

    @property
    def output_schema(self) -> pa.Schema:
        """The schema of what is read: the dataset schema, projected."""
        if self.columns is None:
            return self.schema
        return pa.schema([self.schema.field(c) for c in self.columns])

    def empty(self) -> pa.Table:
        """A table with no rows and the source's (projected) schema."""
        return self.output_schema.empty_table()

    def plan_chunks(self, chunk_rows: int) -> tuple[TableChunk, ...]:
        """Group consecutive pieces into chunks of about ``chunk_rows`` rows."""
        chunks: list[TableChunk] = []
        current: list[Piece] = []
        rows = 0
        for piece in self.pieces:
            if current and (piece.rows is None or rows + piece.rows > chunk_rows):
                chunks.append(TableChunk(index=len(chunks), pieces=tuple(current)))
                current, rows = [], 0
            current.append(piece)
            rows += piece.rows or chunk_rows
        if current:
            chunks.append(TableChunk(index=len(chunks), pieces=tuple(current)))
        return tuple(chunks)

    def describe_chunk(self, chunk: TableChunk) -> str:
        """e.g. ``day=1/part-0.parquet row groups 2, 3; day=1/part-1.parquet row group 0``."""
        return "; ".join(self._describe_run(file, groups) for file, groups in _runs(chunk.pieces))

    def _describe_run(self, file: int, groups: list[int] | None) -> str:
        if groups is None:
            return self.files[file]
        noun = "row group" if len(groups) == 1 else "row groups"
        return f"{self.files[file]} {noun} {', '.join(map(str, groups))}"

    def blocks(self, chunk: TableChunk, chunk_rows: int) -> Iterator[pa.Table]:
        """The chunk's rows as tables of up to about ``chunk_rows`` rows (in a worker).

        Yields at least one (possibly empty) table, so that every chunk produces
        reduction states and an output schema.
        """
        pending: list[pa.RecordBatch] = []
        rows = 0
        produced = False
        for batch in self._batches(chunk, chunk_rows):
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                yield self._filtered(pa.Table.from_batches(pending, schema=self.read_schema))
                pending, rows, produced = [], 0, True
        if pending or not produced:
            yield self._filtered(pa.Table.from_batches(pending, schema=self.read_schema))

    @property
    def read_schema(self) -> pa.Schema:
        """What the scanner reads: the output columns plus those only the filter needs."""
        if self.columns is None:
            return self.schema
        return pa.schema([self.schema.field(c) for c in self._read_columns() or ()])

    def _read_columns(self) -> list[str] | None:
        if self.columns is None:
            return None
        extra = [
            column
            for conjunction in self.conjunctions or ()
            for column, _, _ in conjunction
            if column not in self.columns
        ]
        return [*self.columns, *dict.fromkeys(extra)]

    def _filtered(self, table: pa.Table) -> pa.Table:
        # Row groups were pruned by statistics when the source was opened; the
        # remaining rows are filtered here with a mask, which is about twice as
        # fast as letting the scanner evaluate the expression (see benchmarks/).
        if self.conjunctions:
            table = table.filter(filter_mask(table, [list(c) for c in self.conjunctions]))
        if self.columns is not None and table.num_columns != len(self.columns):
            table = table.select(list(self.columns))
        return table

    def _batches(self, chunk: TableChunk, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        import pyarrow.dataset as ds  # see _dataset_format

        file_format = _dataset_format(self.format)
        filesystem = pafs.LocalFileSystem()
        # One fragment per piece: pyarrow reads a fragment's row groups in set
        # order, not in the order given, which would reorder the rows.
        for piece in chunk.pieces:
            options: dict[str, Any] = {}
            if piece.row_groups is not None:
                options["row_groups"] = list(piece.row_groups)
            fragment = file_format.make_fragment(
                self.files[piece.file],
                filesystem=filesystem,
                partition_expression=self.partitions[piece.file],
                **options,
            )
            scanner = ds.Scanner.from_fragment(
                fragment,
                schema=self.schema,
                columns=self._read_columns(),
                batch_size=max(1, chunk_rows),
                # joblib owns parallelism: one thread per worker.
                use_threads=False,
            )
            try:
                yield from scanner.to_batches()
            except (pa.ArrowException, OSError) as exc:
                where = self._describe_run(
                    piece.file, list(piece.row_groups) if piece.row_groups else None
                )
                raise SourceError(f"cannot read {where}: {_first_line(exc)}") from exc


def _runs(pieces: Sequence[Piece]) -> Iterator[tuple[int, list[int] | None]]:
    """Consecutive pieces of the same file, merged: (file, row groups or None)."""
    file: int | None = None
    groups: list[int] | None = None
    for piece in pieces:
        if piece.file == file and groups is not None and piece.row_groups is not None:
            groups.extend(piece.row_groups)
            continue
        if file is not None:
            yield file, groups
        file = piece.file
        groups = list(piece.row_groups) if piece.row_groups is not None else None
    if file is not None:
        yield file, groups


def _dataset_format(name: str) -> ds.FileFormat:
    # pyarrow.dataset imports pandas (~0.4 s), so it is imported where tables are
    # read, not with the package: array pipelines and their workers never pay it.
    import pyarrow.dataset as ds

    if name == "parquet":
        return ds.ParquetFileFormat()
    if name == "csv":
        return ds.CsvFileFormat()
    return ds.IpcFileFormat()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@dataclass(frozen=True, eq=False, kw_only=True)
class TableSource:
    """Rows of a table: Parquet (or CSV, Arrow IPC) files, read through pyarrow.dataset.

    Parameters
    ----------
    path
        A file, a list of files, or a directory (read recursively, with
        ``key=value`` hive partition folders turned into columns). Files whose
        names start with ``_`` or ``.`` are skipped.
    format
        ``"parquet"``, ``"csv"`` or ``"ipc"`` (also ``"feather"``).
    columns
        Columns to read (projection pushed down to the reader).
    filters
        Rows to read, in the DNF form pyarrow and pandas accept:
        ``[("a", ">", 0)]`` or ``[[("a", ">", 0)], [("b", "in", [1, 2])]]``.
        Row groups whose statistics exclude the filter are never read;
        partition columns may be used.
    schema
        ``"strict"`` (default): every file must have the same schema.
        ``"unify"``: promote compatible types (e.g. int32 and int64) to one.
    """

    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    format: str = "parquet"
    columns: Sequence[str] | None = None
    filters: Any = None
    schema: str = "strict"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SpecError.at(
                "format", f"expected one of {', '.join(FORMATS)}, got {self.format!r}"
            )
        if self.schema not in ("strict", "unify"):
            raise SpecError.at("schema", f"expected 'strict' or 'unify', got {self.schema!r}")
        if self.columns is not None:
            if isinstance(self.columns, str) or not all(isinstance(c, str) for c in self.columns):
                raise SpecError.at(
                    "columns", f"expected a list of column names, got {self.columns!r}"
                )
            object.__setattr__(self, "columns", tuple(self.columns))
        paths = [self.path] if isinstance(self.path, (str, os.PathLike)) else list(self.path)
        if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
            raise SpecError.at(
                FORMATS[self.format], f"expected a path or a list of paths, got {self.path!r}"
            )

    @property
    def paths(self) -> list[str]:
        """The declared paths, as strings."""
        if isinstance(self.path, (str, os.PathLike)):
            return [os.fspath(self.path)]
        return [os.fspath(p) for p in self.path]

    def describe(self) -> str:
        """A one-line description for ``explain``."""
        text = f"{self.format} {', '.join(self.paths)}"
        if self.columns is not None:
            text += f" columns {list(self.columns)}"
        if self.filters is not None:
            text += f" filters {self.filters}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The spec form of this source."""
        paths = self.paths
        spec: dict[str, Any] = {self.format: paths[0] if len(paths) == 1 else paths}
        if self.columns is not None:
            spec["columns"] = list(self.columns)
        if self.filters is not None:
            spec["filters"] = self.filters
        if self.schema != "strict":
            spec["schema"] = self.schema
        return spec

    def open(self, workspace: Workspace | None = None) -> TableRef:
        """Check files, schema, columns and filters; find the pieces to read.

        Raises
        ------
        SourceError
            A file is missing, unreadable, not of the format, or the files'
            schemas disagree.
        SpecError
            ``columns`` or ``filters`` name a column the data does not have, or
            a filter value cannot be compared with its column.
        """
        dataset = self._dataset()
        schema = self._check_schemas(dataset)
        if schema is not dataset.schema:
            dataset = self._dataset(schema)
        schema = dataset.schema
        if self.columns is not None:
            check_columns(schema, self.columns, "source.columns")
        expression = conjunctions = None
        if self.filters is not None:
            conjunctions = validate_filters(schema, self.filters, "source.filters")
            expression = pq.filters_to_expression(conjunctions)
        return self._ref(dataset, expression, conjunctions)

    def _dataset(self, schema: pa.Schema | None = None) -> ds.Dataset:
        import pyarrow.dataset as ds  # see _dataset_format

        paths = self.paths
        for path in paths:
            if not os.path.exists(path):
                raise SourceError(f"source file not found: {path}")
        directory = len(paths) == 1 and os.path.isdir(paths[0])
        try:
            return ds.dataset(
                paths[0] if directory else paths,
                schema=schema,
                format=_dataset_format(self.format),
                partitioning="hive" if directory else None,
                ignore_prefixes=_IGNORED_PREFIXES,
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"cannot read {self.format} source: {_first_line(exc)}") from exc

    def _check_schemas(self, dataset: ds.Dataset) -> pa.Schema:
        """The dataset's schema after checking that every file agrees with it."""
        files: list[tuple[str, pa.Schema]] = []
        for fragment in dataset.get_fragments():
            try:
                files.append((fragment.path, fragment.physical_schema))
            except (pa.ArrowInvalid, OSError) as exc:
                raise SourceError(
                    f"{fragment.path} is not a readable {self.format} file: {_first_line(exc)}"
                ) from exc
        if not files:
            raise SourceError(f"no {self.format} files found in {', '.join(self.paths)}")
        if self.schema == "unify":
            unified = files[0][1]
            for path, other in files[1:]:
                try:
                    unified = pa.unify_schemas([unified, other], promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise SourceError(
                        f"cannot unify the files' schemas: {path} does not fit "
                        f"{files[0][0]}{' and the files before it' if len(files) > 2 else ''}: "
                        f"{_first_line(exc)}"
                    ) from exc
            partition_fields = [f for f in dataset.schema if f.name not in unified.names]
            return pa.schema([*unified, *partition_fields])
        first_path, first = files[0]
        for path, other in files[1:]:
            if other.equals(first):
                continue
            raise SourceError(_schema_difference(first_path, first, path, other))
        return dataset.schema

    def _ref(
        self, dataset: ds.Dataset, expression: Any, conjunctions: list[list[Predicate]] | None
    ) -> TableRef:
        import pyarrow.dataset as ds  # see _dataset_format

        files: list[str] = []
        partitions: list[Any] = []
        pieces: list[Piece] = []
        total_bytes = total_rows = 0
        for fragment in dataset.get_fragments(filter=expression):
            index = len(files)
            files.append(fragment.path)
            partitions.append(fragment.partition_expression)
            if not isinstance(fragment, ds.ParquetFileFragment):
                pieces.append(Piece(index, None, None))
                total_bytes += os.path.getsize(fragment.path)
                continue
            try:
                metadata = fragment.metadata
                for group in fragment.split_by_row_group(filter=expression, schema=dataset.schema):
                    for info in group.row_groups:
                        pieces.append(Piece(index, (info.id,), info.num_rows))
                for i in range(metadata.num_row_groups):
                    total_bytes += metadata.row_group(i).total_byte_size
                total_rows += metadata.num_rows
            except (pa.ArrowInvalid, OSError) as exc:
                raise SourceError(
                    f"{fragment.path} has unreadable Parquet metadata: {_first_line(exc)}"
                ) from exc
        n_columns = max(1, len(dataset.schema))
        share = len(self.columns) / n_columns if self.columns is not None else 1.0
        row_nbytes = int(total_bytes / max(1, total_rows) * share) if total_rows else 64
        return TableRef(
            format=FORMATS[self.format],
            files=tuple(files),
            partitions=tuple(partitions),
            schema=dataset.schema,
            columns=self.columns,  # type: ignore[arg-type]
            conjunctions=None
            if conjunctions is None
            else tuple(tuple(conjunction) for conjunction in conjunctions),
            pieces=tuple(pieces),
            row_nbytes=max(1, row_nbytes),
        )


def _schema_difference(path_a: str, a: pa.Schema, path_b: str, b: pa.Schema) -> str:
    """Name two files and the first field in which their schemas differ."""
    for field in a:
        if field.name not in b.names:
            detail = f"{path_a} has field '{field.name}: {field.type}', {path_b} has no such field"
            break
        other = b.field(field.name)
        if other.type != field.type:
            detail = (
                f"field {field.name!r} is {field.type} in {path_a} but {other.type} in {path_b}"
            )
            break
    else:
        extra = [f for f in b if f.name not in a.names]
        detail = (
            f"{path_b} has field '{extra[0].name}: {extra[0].type}', {path_a} has no such field"
            if extra
            else f"{path_a} and {path_b} differ in field order or metadata"
        )
    return (
        f"the source files' schemas disagree: {detail}; "
        "set schema: unify to promote compatible types"
    )
