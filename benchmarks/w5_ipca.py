"""Workload W5: StandardScaler, then IncrementalPCA(10) fitted chunk by chunk, on a ``.npy``.

The input is a float64 array of ``rows x 50`` (4M rows = 1.6 GB) of
correlated columns (standard normal rows times a fixed mixing matrix whose
scales fall from 10 to 0.1, plus column means), so that the ten principal
components are well separated. Every implementation standardizes the
columns (an exact fit), fits ``IncrementalPCA(n_components=10)`` on batches
of the same ``CHUNK_ROWS`` consecutive rows, in order, and writes the
``rows x 10`` projection as a new ``.npy``. The implementations:

=========== ===========================================================
sklearn     in memory: ``np.load``, ``StandardScaler().fit_transform``,
            ``IncrementalPCA(10, batch_size=CHUNK_ROWS).fit``, then
            ``transform`` (the baseline)
loop        a hand-written loop over memmapped chunks of ``CHUNK_ROWS``:
            ``scaler.partial_fit`` per chunk; ``ipca.partial_fit`` of each
            scaled chunk; ``transform`` into an output memmap
chunkline-2 chunkline's ``Estimator(StandardScaler, fit="merge")`` then
            ``Estimator(IncrementalPCA, fit="partial_fit")``, ``n_jobs=2``,
            ``chunks={"rows": CHUNK_ROWS}``
=========== ===========================================================

Commands (from the repository root; every workload shares them, see
:mod:`benchmarks.workload`)::

    python -m benchmarks.w5_ipca bench --rows 4000000 --repeat 3
    python -m benchmarks.w5_ipca make --rows 400000 --out /tmp/w5
    python -m benchmarks.w5_ipca run --impl loop --data /tmp/w5
    python -m benchmarks.w5_ipca verify --data /tmp/w5
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from benchmarks.arrays import (
    DTYPE,
    compare_npy,
    describe_array,
    describe_made,
    disk_needed,
    row_bounds,
    write_normal,
)
from benchmarks.workload import (
    ChunkOption,
    RowsRunner,
    Workload,
    check_chunkline,
    positive_int,
)

N_FEATURES = 50
N_COMPONENTS = 10
INPUT_NAME = "input.npy"
BASELINE = "sklearn"
#: Rows per partial_fit batch, the same in every implementation: IncrementalPCA
#: depends on the batches, so only equal batches give comparable outputs.
CHUNK_ROWS = 50_000
#: Outputs differ by the rounding of the scalers' fitted statistics (merged,
#: incremental or in memory), carried through every partial_fit.
RTOL = ATOL = 1e-8


def mixing(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The input's mixing matrix (scales 10 to 0.1 along random directions) and column means."""
    rng = np.random.default_rng([seed, 1])  # another stream than the rows'
    rotation, _ = np.linalg.qr(rng.standard_normal((N_FEATURES, N_FEATURES)))
    scales = np.geomspace(10.0, 0.1, N_FEATURES)
    return scales[:, None] * rotation, rng.normal(0.0, 3.0, N_FEATURES)


def make_input(out_dir: Path, rows: int, *, seed: int = 0) -> Path:
    """Write ``out_dir/input.npy``: ``rows x 50`` correlated normal float64, block by block."""
    mix, shift = mixing(seed)
    return write_normal(out_dir / INPUT_NAME, rows, N_FEATURES, seed=seed, mix=mix, shift=shift)


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` and writes ``out_path``; none
# fsyncs it (the run deletes it right away).
# --------------------------------------------------------------------------


def run_sklearn(in_path: Path, out_path: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """Baseline: what a user writes in memory."""
    from sklearn.decomposition import IncrementalPCA
    from sklearn.preprocessing import StandardScaler

    x = np.load(in_path)
    # Rebinding drops the raw rows once they are scaled, as a user would.
    x = StandardScaler().fit_transform(x)
    pca = IncrementalPCA(n_components=N_COMPONENTS, batch_size=chunk_rows or CHUNK_ROWS).fit(x)
    np.save(out_path, pca.transform(x))


def run_loop(in_path: Path, out_path: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """A hand-written ``partial_fit`` loop over memmapped chunks, three passes, one process."""
    from sklearn.decomposition import IncrementalPCA
    from sklearn.preprocessing import StandardScaler

    x = np.load(in_path, mmap_mode="r")
    bounds = row_bounds(len(x), chunk_rows or CHUNK_ROWS)
    scaler = StandardScaler()
    for start, stop in bounds:
        scaler.partial_fit(x[start:stop])
    pca = IncrementalPCA(n_components=N_COMPONENTS)
    for start, stop in bounds:
        pca.partial_fit(scaler.transform(x[start:stop]))
    out = open_memmap(out_path, mode="w+", dtype=DTYPE, shape=(len(x), N_COMPONENTS))
    for start, stop in bounds:
        out[start:stop] = pca.transform(scaler.transform(x[start:stop]))
    del out


def run_chunkline(
    in_path: Path, out_path: Path, *, chunk_rows: int | None, n_jobs: int, workers: int
) -> None:
    """chunkline with ``workers`` jobs (``n_jobs`` is ignored), chunks of ``CHUNK_ROWS``."""
    check_chunkline()
    from pipeline import Pipeline
    from stages import Estimator

    Pipeline(
        source=str(in_path),
        stages=[
            Estimator("sklearn.preprocessing.StandardScaler", fit="merge", name="scale"),
            Estimator(
                "sklearn.decomposition.IncrementalPCA",
                params={"n_components": N_COMPONENTS},
                fit="partial_fit",
                name="pca",
            ),
        ],
        sink=str(out_path),
        n_jobs=workers,
        chunks={"rows": chunk_rows or CHUNK_ROWS},
    ).run(progress=False)


IMPLEMENTATIONS: dict[str, RowsRunner] = {
    "sklearn": run_sklearn,
    "loop": run_loop,
    "chunkline-2": functools.partial(run_chunkline, workers=2),
}


# --------------------------------------------------------------------------
# The workload, for the shared command line (benchmarks.workload)
# --------------------------------------------------------------------------


def _notes(args: argparse.Namespace, in_path: Path) -> list[str]:
    """How the implementations were configured, under the report's table."""
    rows = args.chunk_rows or CHUNK_ROWS
    return [
        f"Workload: W5 StandardScaler -> IncrementalPCA({N_COMPONENTS}); partial_fit batches "
        f"of {rows:,} rows everywhere (sklearn: batch_size; loop: memmapped chunks; "
        "chunkline: chunks={'rows': N}); sklearn and loop: one process, NumPy's BLAS "
        "threads; chunkline-2: n_jobs 2."
    ]


WORKLOAD = Workload(
    module="benchmarks.w5_ipca",
    description=__doc__.split("\n")[0],
    key="w5",
    title="W5 IncrementalPCA",
    task=f"StandardScaler -> IncrementalPCA({N_COMPONENTS}), .npy -> .npy",
    implementations=IMPLEMENTATIONS,
    baseline=BASELINE,
    input_name=INPUT_NAME,
    output_name="out-{name}.npy",
    make_input=make_input,
    describe_input=functools.partial(describe_array, cols=N_FEATURES),
    describe_made=describe_made,
    disk_needed=functools.partial(disk_needed, in_cols=N_FEATURES, out_cols=N_COMPONENTS),
    compare_outputs=functools.partial(compare_npy, rtol=RTOL, atol=ATOL),
    compared=f"np.isclose per chunk, rtol = atol = {RTOL:g}",
    chunk_option=ChunkOption(
        flag="--chunk-rows",
        type=positive_int,
        help=f"rows per partial_fit batch, every implementation (default {CHUNK_ROWS:,})",
    ),
    n_jobs_help="not used: sklearn and loop run in one process, chunkline-2 has 2 workers",
    rows_default=4_000_000,
    rows_help="rows of 50 float64 (default 4M = 1.6 GB)",
    notes=_notes,
)


if __name__ == "__main__":
    # Through the importable module, so that functions pickle by reference
    # (see benchmarks.workload).
    from benchmarks import w5_ipca

    sys.exit(w5_ipca.WORKLOAD.main())
