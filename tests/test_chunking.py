"""Properties of chunk plans, chunk-size resolution, ``parse_bytes`` and ``ChunkSpec``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline import Chunk, ChunkSpec, SpecError, parse_bytes, plan_chunks
from pipeline.chunking import DEFAULT_CHUNK_BYTES, WORKING_SET_FACTOR, resolve_chunk_rows
from pipeline.spec import normalize_chunks

# --- plan_chunks ------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    n_rows=st.integers(0, 400),
    chunk_rows=st.integers(1, 500),
    overlap=st.integers(0, 60),
)
@example(n_rows=0, chunk_rows=1, overlap=0)
@example(n_rows=0, chunk_rows=10, overlap=3)
@example(n_rows=1, chunk_rows=1, overlap=0)
@example(n_rows=1, chunk_rows=1, overlap=5)
@example(n_rows=1, chunk_rows=100, overlap=2)
@example(n_rows=10, chunk_rows=10, overlap=0)
@example(n_rows=11, chunk_rows=10, overlap=10)
def test_plan_chunks_covers_every_row_once_in_order(n_rows, chunk_rows, overlap):
    chunks = plan_chunks(n_rows, chunk_rows, overlap)

    assert len(chunks) == math.ceil(n_rows / chunk_rows)
    if n_rows == 0:
        assert chunks == ()
        return
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # Contiguous and in order, from row 0 to the last row.
    assert chunks[0].start == 0
    assert chunks[-1].stop == n_rows
    for left, right in itertools.pairwise(chunks):
        assert left.stop == right.start
    # Every row is owned by exactly one chunk.
    owners = np.zeros(n_rows, dtype=int)
    for c in chunks:
        owners[c.start : c.stop] += 1
    assert (owners == 1).all()
    # Sizes: never empty, never above chunk_rows, all full except possibly the last.
    assert all(0 < c.rows <= chunk_rows for c in chunks)
    assert all(c.rows == chunk_rows for c in chunks[:-1])


@settings(max_examples=300, deadline=None)
@given(
    n_rows=st.integers(1, 400),
    chunk_rows=st.integers(1, 500),
    overlap=st.integers(0, 60),
)
@example(n_rows=1, chunk_rows=1, overlap=3)
def test_plan_chunks_halos_are_overlap_rows_clipped_to_the_array(n_rows, chunk_rows, overlap):
    for c in plan_chunks(n_rows, chunk_rows, overlap):
        assert 0 <= c.read_start <= c.start <= c.stop <= c.read_stop <= n_rows
        before, after = c.halo
        assert (before, after) == (c.start - c.read_start, c.read_stop - c.stop)
        # Exactly `overlap` rows on each side, unless the array ends first.
        assert before == min(overlap, c.start)
        assert after == min(overlap, n_rows - c.stop)


def test_plan_chunks_without_overlap_reads_only_its_own_rows():
    assert [(c.read_start, c.start, c.stop, c.read_stop) for c in plan_chunks(10, 4)] == [
        (0, 0, 4, 4),
        (4, 4, 8, 8),
        (8, 8, 10, 10),
    ]


@pytest.mark.parametrize(
    ("n_rows", "chunk_rows", "overlap"),
    [(-1, 10, 0), (10, 0, 0), (10, -2, 0), (10, 4, -1)],
)
def test_plan_chunks_rejects_bad_arguments(n_rows, chunk_rows, overlap):
    with pytest.raises(ValueError, match=r"need n_rows >= 0, chunk_rows > 0, overlap >= 0"):
        plan_chunks(n_rows, chunk_rows, overlap)


def test_chunk_rejects_inconsistent_bounds():
    with pytest.raises(ValueError, match="inconsistent chunk bounds"):
        Chunk(index=0, start=5, stop=3, read_start=0, read_stop=5)
    with pytest.raises(ValueError, match="inconsistent chunk bounds"):
        Chunk(index=0, start=2, stop=4, read_start=3, read_stop=4)


# --- resolve_chunk_rows -----------------------------------------------------------------

row_sizes = st.integers(0, 10_000)
workers = st.integers(1, 64)


@given(rows=st.integers(1, 10**9), row_nbytes=row_sizes, n_workers=workers)
def test_resolve_rows_is_taken_as_given(rows, row_nbytes, n_workers):
    assert resolve_chunk_rows(ChunkSpec(rows=rows), row_nbytes, n_workers) == rows


def _assert_largest_fitting(chunk_rows: int, budget: int, row_nbytes: int) -> None:
    row = max(1, row_nbytes)  # rows of zero bytes are counted as one byte
    assert chunk_rows >= 1
    if chunk_rows > 1:
        assert chunk_rows * row <= budget
    assert (chunk_rows + 1) * row > budget  # as many rows as fit


@given(nbytes=st.integers(1, 10**12), row_nbytes=row_sizes, n_workers=workers)
def test_resolve_bytes_gives_the_most_rows_within_the_bytes(nbytes, row_nbytes, n_workers):
    chunk_rows = resolve_chunk_rows(ChunkSpec(bytes=nbytes), row_nbytes, n_workers)
    _assert_largest_fitting(chunk_rows, nbytes, row_nbytes)


@given(memory=st.integers(1, 10**13), row_nbytes=row_sizes, n_workers=workers)
def test_resolve_memory_shares_the_budget_between_workers(memory, row_nbytes, n_workers):
    chunk_rows = resolve_chunk_rows(ChunkSpec(memory=memory), row_nbytes, n_workers)
    per_chunk = memory // (n_workers * WORKING_SET_FACTOR)
    _assert_largest_fitting(chunk_rows, per_chunk, row_nbytes)
    if chunk_rows > 1:
        total = n_workers * WORKING_SET_FACTOR * chunk_rows * max(1, row_nbytes)
        assert total <= memory


@given(row_nbytes=row_sizes, n_workers=workers)
def test_resolve_default_uses_the_default_chunk_bytes(row_nbytes, n_workers):
    chunk_rows = resolve_chunk_rows(ChunkSpec(), row_nbytes, n_workers)
    _assert_largest_fitting(chunk_rows, DEFAULT_CHUNK_BYTES, row_nbytes)


def test_resolve_gives_at_least_one_row_when_a_row_exceeds_the_budget():
    assert resolve_chunk_rows(ChunkSpec(bytes=10), 1000, 1) == 1
    assert resolve_chunk_rows(ChunkSpec(memory=10), 1000, 4) == 1
    assert resolve_chunk_rows(ChunkSpec(), DEFAULT_CHUNK_BYTES * 3, 1) == 1


def test_resolve_more_workers_means_smaller_chunks_for_a_memory_budget():
    spec = ChunkSpec(memory=2**30)
    assert resolve_chunk_rows(spec, 64, 1) == 2 * resolve_chunk_rows(spec, 64, 2)


# --- parse_bytes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64MB", 64 * 10**6),
        ("64mb", 64 * 10**6),
        ("64 MB", 64 * 10**6),
        ("  64MB  ", 64 * 10**6),
        ("1kB", 1000),
        ("1KB", 1000),
        ("1k", 1000),
        ("3M", 3 * 10**6),
        ("2G", 2 * 10**9),
        ("2GB", 2 * 10**9),
        ("1TB", 10**12),
        ("1KiB", 1024),
        ("1kib", 1024),
        ("64MiB", 64 * 2**20),
        ("2 GiB", 2 * 2**30),
        ("1.5GiB", 3 * 2**29),
        ("1TiB", 2**40),
        ("0.5kB", 500),
        (".5kB", 500),
        ("10", 10),
        ("10b", 10),
        ("10B", 10),
        (512, 512),
        (4096.0, 4096),
    ],
)
def test_parse_bytes_units(text, expected):
    assert parse_bytes(text) == expected


decimal = st.sampled_from([("kB", 10**3), ("MB", 10**6), ("GB", 10**9), ("TB", 10**12)])
binary = st.sampled_from([("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30), ("TiB", 2**40)])


@given(number=st.integers(1, 10**6), unit=st.one_of(decimal, binary), upper=st.booleans())
def test_parse_bytes_decimal_units_are_powers_of_1000_binary_of_1024(number, unit, upper):
    suffix, factor = unit
    text = f"{number}{suffix.upper() if upper else suffix.lower()}"
    assert parse_bytes(text) == number * factor


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "expected a size such as 64MB or 2GiB, got ''"),
        ("MB", "expected a size such as 64MB or 2GiB"),
        ("lots", "expected a size such as 64MB or 2GiB"),
        ("64XB", "expected a size such as 64MB or 2GiB, got '64XB'"),
        ("-1MB", "expected a size such as 64MB or 2GiB"),
        ("1.5.2MB", "expected a size such as 64MB or 2GiB"),
        ("64 M B", "expected a size such as 64MB or 2GiB"),
        ("0", "expected a positive size, got '0'"),
        ("0MB", "expected a positive size"),
        ("0.1b", "expected a positive size"),
        (0, "expected a positive size, got 0"),
        (-5, "expected a positive size, got -5"),
        (-0.5, "expected a positive size"),
        (True, "expected a size such as 64MB, got True"),
        (None, "expected a size such as 64MB, got None"),
        ([64], r"expected a size such as 64MB, got \[64\]"),
    ],
)
def test_parse_bytes_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_bytes(value)


@pytest.mark.parametrize("value", [0.5, float("inf"), float("nan")])
def test_parse_bytes_rejects_numbers_that_are_not_a_positive_byte_count(value):
    # "0.1b" is rejected as "not positive" once rounded down to 0 bytes; a float
    # below one byte, or one that is not finite, must be rejected the same way.
    with pytest.raises(ValueError, match="expected a positive size"):
        parse_bytes(value)


# --- ChunkSpec --------------------------------------------------------------------------


def test_chunk_spec_accepts_each_form():
    assert ChunkSpec().describe() == "default"
    assert ChunkSpec(rows=1000).describe() == "rows=1000"
    assert ChunkSpec(bytes=64, overlap=2).describe() == "bytes=64, overlap=2"
    assert ChunkSpec(memory=2**30).memory == 2**30


@pytest.mark.parametrize(
    ("kwargs", "given"),
    [
        ({"rows": 10, "bytes": 100}, r"\['rows', 'bytes'\]"),
        ({"rows": 10, "memory": 100}, r"\['rows', 'memory'\]"),
        ({"bytes": 10, "memory": 100}, r"\['bytes', 'memory'\]"),
        ({"rows": 1, "bytes": 2, "memory": 3}, r"\['rows', 'bytes', 'memory'\]"),
    ],
)
def test_chunk_spec_rejects_more_than_one_size(kwargs, given):
    with pytest.raises(SpecError, match=rf"^give only one of rows, bytes or memory; got {given}$"):
        ChunkSpec(**kwargs)


@pytest.mark.parametrize("key", ["rows", "bytes", "memory"])
@pytest.mark.parametrize("value", [0, -3, 1.5, "10", True, [1]])
def test_chunk_spec_rejects_a_size_that_is_not_a_positive_integer(key, value):
    with pytest.raises(SpecError, match=rf"^{key}: expected a positive integer, got "):
        ChunkSpec(**{key: value})


@pytest.mark.parametrize("value", [-1, 1.0, "2", True, None])
def test_chunk_spec_rejects_a_bad_overlap(value):
    with pytest.raises(SpecError, match=r"^overlap: expected a non-negative integer, got "):
        ChunkSpec(overlap=value)


def test_chunk_spec_error_names_the_value():
    with pytest.raises(SpecError, match=r"^rows: expected a positive integer, got -3$"):
        ChunkSpec(rows=-3)


def test_chunk_spec_is_frozen():
    spec = ChunkSpec(rows=5)
    with pytest.raises(AttributeError):
        spec.rows = 6  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ChunkSpec()),
        (100, ChunkSpec(rows=100)),
        ("1MB", ChunkSpec(bytes=10**6)),
        ({"bytes": "1KiB", "overlap": 2}, ChunkSpec(bytes=1024, overlap=2)),
        ({"memory": "2GB"}, ChunkSpec(memory=2 * 10**9)),
        ({"rows": 7, "overlap": 1}, ChunkSpec(rows=7, overlap=1)),
    ],
)
def test_normalize_chunks_gives_a_chunk_spec(value, expected):
    assert normalize_chunks(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"rows": 10, "overlapp": 1}, r"overlapp: unknown key \(did you mean 'overlap'\?\)"),
        ({"bytes": "64XB"}, r"^bytes: expected a size such as 64MB or 2GiB, got '64XB'$"),
        ({"memory": "0GB"}, r"^memory: expected a positive size"),
        ("lots", r"^bytes: expected a size such as 64MB or 2GiB, got 'lots'$"),
        (-3, r"^rows: expected a positive integer, got -3$"),
    ],
)
def test_normalize_chunks_errors_name_the_field(value, message):
    with pytest.raises(SpecError, match=message):
        normalize_chunks(value)
