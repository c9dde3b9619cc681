"""Writing Parquet datasets: a part file per chunk, committed all at once.

Each worker writes the rows of its chunk as its own part file
(``part-00012-0000.parquet``: chunk 12, block 0, so file names sort in row
order; ``cat=x/part-00012-0000-0.parquet`` per partition with ``partition_by``),
into a hidden temporary folder beside the target. Only when every
chunk succeeded are the parts moved into place and a ``_SUCCESS`` marker
written; a failed or interrupted run removes the temporary folder and leaves
the target exactly as it was.

A task can outlive its run: dask cannot stop a task that has started, and a
partitioned write creates the folders it needs, the temporary one included.
So the temporary folder holds a marker while the run is open, which the run
removes first when it gives up; a task that finds the marker gone once it has
written removes the folder itself.

Modes: ``error`` (the target must not exist or be empty), ``overwrite`` (the
old contents are replaced: renamed aside, then deleted once the new ones are
in place) and ``append`` (new parts are added beside the old ones, under names
unique to the run). ``single_file`` merges the parts into one file by copying
row groups one at a time, never holding more than one in memory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SinkError, SpecError
from .registry import did_you_mean

__all__ = [
    "CODECS",
    "MODES",
    "ParquetOptions",
    "ParquetTarget",
    "open_parts_folder",
    "write_table_part",
]

MODES = ("error", "overwrite", "append")
#: Compression codecs the Parquet format supports.
CODECS = ("snappy", "zstd", "lz4", "gzip", "brotli", "none")
SUCCESS_MARKER = "_SUCCESS"
#: In the staging folder while its run may still commit it (see the module).
OPEN_MARKER = ".chunkline-open"


@dataclass(frozen=True, kw_only=True)
class ParquetOptions:
    """How Parquet output is written (the ``sink`` keys besides ``parquet``)."""

    partition_by: tuple[str, ...] = ()
    mode: str = "error"
    compression: str = "snappy"
    row_group_size: int | None = None
    single_file: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.partition_by, str) or not all(
            isinstance(c, str) for c in self.partition_by
        ):
            raise SpecError.at(
                "partition_by", f"expected a list of column names, got {self.partition_by!r}"
            )
        object.__setattr__(self, "partition_by", tuple(self.partition_by))
        if self.mode not in MODES:
            raise SpecError.at("mode", f"expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.row_group_size is not None and (
            isinstance(self.row_group_size, bool)
            or not isinstance(self.row_group_size, int)
            or self.row_group_size <= 0
        ):
            raise SpecError.at(
                "row_group_size", f"expected a positive integer, got {self.row_group_size!r}"
            )
        if self.single_file and (self.partition_by or self.mode == "append"):
            raise SpecError.at(
                "single_file", "cannot be combined with partition_by or mode: append"
            )
        if self.compression not in CODECS:
            hint = did_you_mean(str(self.compression), CODECS)
            raise SpecError.at(
                "compression",
                f"expected one of {', '.join(CODECS)}, got {self.compression!r}{hint}",
            )
        if self.compression != "none" and not pa.Codec.is_available(self.compression):
            raise SpecError.at(
                "compression", f"{self.compression!r} is not available in this pyarrow build"
            )

    def write_options(self, schema: pa.Schema) -> dict[str, Any]:
        """Keyword arguments for pyarrow's Parquet writer.

        Dictionary encoding is asked only for string-like columns: trying it on
        float columns costs time and never pays (see benchmarks/).
        """
        dictionary = [
            f.name
            for f in schema
            if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)
            or pa.types.is_binary(f.type)
            or pa.types.is_dictionary(f.type)
        ]
        return {
            "compression": None if self.compression == "none" else self.compression,
            "use_dictionary": dictionary,
        }


def write_table_part(
    folder: str, chunk: int, block: int, table: pa.Table, options: ParquetOptions
) -> None:
    """Write one block of a chunk's output as part file(s) under ``folder`` (in a worker).

    ``folder`` was made by :func:`open_parts_folder`. A write that ends after
    its run has given up removes the folder it may have written into, or
    recreated (see the module).
    """
    if table.num_rows == 0:
        return
    try:
        _write_part(folder, f"part-{chunk:05d}-{block:04d}", table, options)
    finally:
        if not os.path.exists(os.path.join(folder, OPEN_MARKER)):
            shutil.rmtree(folder, ignore_errors=True)


def open_parts_folder(path: str | os.PathLike[str]) -> str:
    """Create a folder for a run's part files, marked open (see the module)."""
    os.makedirs(path, exist_ok=True)
    Path(path, OPEN_MARKER).touch()
    return os.fspath(path)


def _write_part(folder: str, basename: str, table: pa.Table, options: ParquetOptions) -> None:
    if not options.partition_by:
        pq.write_table(
            table,
            os.path.join(folder, f"{basename}.parquet"),
            row_group_size=options.row_group_size,
            **options.write_options(table.schema),
        )
        return
    data_schema = pa.schema([f for f in table.schema if f.name not in options.partition_by])
    import pyarrow.dataset as ds  # imports pandas (~0.4 s): only where tables are written

    file_options = ds.ParquetFileFormat().make_write_options(**options.write_options(data_schema))
    ds.write_dataset(
        table,
        folder,
        format="parquet",
        partitioning=list(options.partition_by),
        partitioning_flavor="hive",
        basename_template=f"{basename}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        file_options=file_options,
        max_rows_per_group=options.row_group_size or 1024 * 1024,
        # pyarrow stops at 1024 partitions per write by default; a chunk
        # may hold more (a few years of days): never more than its rows.
        max_partitions=max(1024, table.num_rows),
        use_threads=False,
    )


class ParquetTarget:
    """The commit protocol of one Parquet output: staging folder -> final path."""

    def __init__(self, path: str, options: ParquetOptions) -> None:
        # Through a symbolic link: what it points to is replaced, not the link.
        self.path = Path(os.path.realpath(path))
        self.options = options
        self.token = secrets.token_hex(4)
        self.staging = self.path.with_name(f".{self.path.name}.chunkline-{self.token}.tmp")
        self._target_existed = False  # set by prepare
        self._published = False  # set by publish

    def check(self) -> None:
        """Refuse, before any work, a target that the mode does not allow."""
        exists = self.path.exists()
        if exists and self.options.single_file and self.path.is_dir():
            raise SinkError(f"sink.parquet: {self.path} is a folder; single_file needs a file path")
        if exists and not self.options.single_file and not self.path.is_dir():
            raise SinkError(f"sink.parquet: {self.path} is a file; a Parquet dataset is a folder")
        if self.options.mode == "error" and exists and _non_empty(self.path):
            raise SinkError(
                f"sink.parquet: {self.path} already exists; set mode: overwrite or append"
            )

    def open(self) -> str:
        """Create the staging folder; workers write their parts there."""
        self.check()
        try:
            self.staging.mkdir(parents=True)
            open_parts_folder(self.staging)
        except OSError as exc:
            raise SinkError(f"cannot create a folder beside {self.path}: {exc}") from exc
        return str(self.staging)

    def abort(self) -> None:
        """Forget the run: the target is left as it was."""
        # The marker goes first: a task still writing then cleans up after itself.
        (self.staging / OPEN_MARKER).unlink(missing_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self._merged.unlink(missing_ok=True)

    @property
    def _merged(self) -> Path:
        """Where ``single_file`` merges the parts before moving the file into place."""
        return self.path.with_name(f".{self.path.name}.chunkline-{self.token}.merge")

    @property
    def _old(self) -> Path:
        """Where an overwrite moves the old contents, until they are deleted."""
        return self.path.with_name(f".{self.path.name}.chunkline-{self.token}.old")

    def prepare(self, schema: pa.Schema) -> None:
        """Make the output ready to move into place, leaving the target untouched.

        Checks the target again (it may have appeared or changed while the run
        worked), gives the parts one schema, and merges them for
        ``single_file``: this may take a while, and :meth:`abort` undoes it.
        ``schema`` is the output's, for when no row was written.
        """
        self.check()
        # Decided once: publish must do what was prepared (see publish).
        self._target_existed = self.path.exists()
        try:
            (self.staging / OPEN_MARKER).unlink()
            if self.options.single_file:
                self._merge(schema)
                return
            self._align_parts()
            if self.options.mode == "append" and self._target_existed:
                self._check_appended_schema()
                return
            if not self._parts():
                # No rows: one empty part keeps the columns, for readers downstream.
                data = [f for f in schema if f.name not in self.options.partition_by]
                empty = pa.schema(data).empty_table()
                pq.write_table(empty, self.staging / "part-00000-0000.parquet")
            (self.staging / SUCCESS_MARKER).touch()
        except SinkError:
            raise
        except OSError as exc:
            raise SinkError(f"cannot prepare the Parquet output at {self.path}: {exc}") from exc

    def publish(self) -> None:
        """Move the prepared output into place: renames only, so quick.

        Deleting what is left (an overwrite's old contents) is :meth:`finish`'s.
        """
        if self.path.exists() != self._target_existed:
            self.abort()
            raise SinkError(
                f"sink.parquet: {self.path} was created or removed by someone else while "
                "this run was committing; nothing was written"
            )
        try:
            if self.options.single_file:
                os.replace(self._merged, self.path)
            elif self.options.mode == "append" and self._target_existed:
                self._commit_append()
            else:
                self._commit_replace()
            self._published = True
        except OSError as exc:
            raise SinkError(f"cannot commit the Parquet output at {self.path}: {exc}") from exc
        finally:
            self.abort()  # what is left of the staging folder and the merge: renames only

    def finish(self) -> None:
        """Delete an overwrite's old contents, once the new ones are in place."""
        if not self._published:  # then the old contents are all there is
            return
        shutil.rmtree(self._old, ignore_errors=True)
        if self._old.exists():  # the run succeeded; say what is left, rather than fail it
            warnings.warn(
                f"sink.parquet: the old contents of {self.path} were moved to {self._old}, "
                "which could not be deleted (permissions?): delete it by hand",
                stacklevel=2,
            )

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.staging.rglob("*.parquet") if p.is_file())

    def _align_parts(self) -> None:
        """Give every part the same columns' types, rewriting those that differ.

        A chunk whose new column holds only nulls writes it as type ``null``,
        where other chunks wrote ``string``: readers of the dataset take one
        part's schema and fail on the others. Such parts are rewritten with
        the common type; types that cannot be reconciled are refused.
        """
        parts = self._parts()
        schemas = [pq.read_schema(part) for part in parts]
        if all(s.equals(schemas[0]) for s in schemas[1:]):
            return
        common = self._common_schema(schemas)
        for part, schema in zip(parts, schemas, strict=True):
            if not schema.equals(common):
                table = pq.ParquetFile(part).read().select(common.names).cast(common)
                rewritten = part.with_name(f".{part.name}")
                pq.write_table(
                    table,
                    rewritten,
                    row_group_size=self.options.row_group_size,
                    **self.options.write_options(common),
                )
                os.replace(rewritten, part)

    def _common_schema(self, schemas: list[pa.Schema]) -> pa.Schema:
        """The parts' schema: each column's type, where only some chunks could tell it."""
        try:  # the same names in the same order: workers check that already
            return pa.unify_schemas(schemas)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SinkError(
                f"sink.parquet: the chunks' outputs for {self.path} disagree on a column's "
                f"type ({exc}); cast it in a stage so that every chunk gives the same type"
            ) from None

    def _commit_replace(self) -> None:
        old = self._old
        try:
            if self.path.exists():
                os.replace(self.path, old)
            os.replace(self.staging, self.path)
        except BaseException:
            # Ctrl-C too, which Python raises once a rename has returned: the
            # files say how far it got. New contents in place go back to the
            # staging folder (removed with it), and the old ones come back.
            if not self.staging.exists() and self.path.exists():
                os.replace(self.path, self.staging)
            if old.exists():
                os.replace(old, self.path)
            raise

    def _commit_append(self) -> None:
        moved: list[tuple[Path, Path]] = []
        made: list[Path] = []  # partition folders new to the dataset
        try:
            for part in self._parts():
                relative = part.relative_to(self.staging)
                # Unique per run, so that appended parts never replace old ones.
                final = self.path / relative.with_name(f"{self.token}-{relative.name}")
                if not final.parent.exists():
                    made.append(final.parent)
                    final.parent.mkdir(parents=True)
                moved.append((part, final))  # before the move: Ctrl-C comes after it
                os.replace(part, final)
        except BaseException:  # Ctrl-C too: the dataset is left as it was
            for part, final in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(final, part)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        (self.path / SUCCESS_MARKER).touch()

    def check_append(self, schema: pa.Schema) -> None:
        """Refuse, before any work, to append columns other than the dataset's.

        ``schema`` is the probed output's (partition columns included). Only
        the names are compared here: a probe that saw no rows has null types;
        the commit compares the types of the parts written.
        """
        old = self._first_file() if self.options.mode == "append" else None
        if old is None:
            return
        theirs = [(f.name, f.type) for f in pq.read_schema(old)]
        ours = [(f.name, f.type) for f in schema if f.name not in self.options.partition_by]
        if [name for name, _ in theirs] != [name for name, _ in ours]:
            self._refuse_append(ours, old, theirs)

    def _check_appended_schema(self) -> None:
        """Refuse parts whose columns conflict with the dataset's: it would become unreadable."""
        new = self._parts()
        old = self._first_file()
        if not new or old is None:
            return
        # Readers take one file's schema for the dataset: the types must be equal
        # (a null column beside a string one is as unreadable as int beside text).
        theirs, ours = ([(f.name, f.type) for f in pq.read_schema(path)] for path in (old, new[0]))
        if theirs != ours:
            self._refuse_append(ours, old, theirs)

    def _first_file(self) -> Path | None:
        """A file of the existing dataset, whose schema readers take for all of it.

        As pyarrow's dataset discovery does, files under names that start with
        ``_`` or ``.`` (another writer's ``_temporary``, hidden files) are not
        the dataset's.
        """
        if not self.path.is_dir():
            return None
        files = (
            p
            for p in sorted(self.path.rglob("*.parquet"))
            if not any(part.startswith(("_", ".")) for part in p.relative_to(self.path).parts)
        )
        return next((p for p in files if p.is_file()), None)

    def _refuse_append(self, ours: list[Any], old: Path, theirs: list[Any]) -> NoReturn:
        raise SinkError(
            f"sink.parquet: cannot append to {self.path}: the new rows' columns "
            f"({_columns(ours)}) differ from those of {old} ({_columns(theirs)}); "
            "write to another path, or use mode: overwrite"
        )

    def _merge(self, schema: pa.Schema) -> None:
        """Copy the parts' row groups, one at a time, into the single file to publish."""
        parts = self._parts()
        if parts:
            # The probed schema saw no rows (null types); the parts know better.
            schema = self._common_schema([pq.read_schema(part) for part in parts])
        options = self.options.write_options(schema)
        with pq.ParquetWriter(self._merged, schema, **options) as writer:
            for part in parts:
                source = pq.ParquetFile(part)
                for i in range(source.num_row_groups):
                    writer.write_table(source.read_row_group(i).cast(schema))


def _columns(fields: list[tuple[str, pa.DataType]]) -> str:
    return ", ".join(f"{name}: {kind}" for name, kind in fields)


def _non_empty(path: Path) -> bool:
    return path.is_file() or any(path.iterdir())
