"""Workload W2: fit a StandardScaler over a whole ``.npy``, then transform it.

The input is a float64 array of ``rows x 8`` (16M rows = 1.02 GB) whose
columns have other means and scales than 0 and 1 (so that scaling changes
every value); the output is the standardized array, written as a new
``.npy``. The fit is exact: per-chunk statistics merged, or all rows at once.
The implementations are what a user would otherwise write, plus chunkline:

========== ===========================================================
sklearn    ``np.load`` the whole array, ``StandardScaler().fit_transform``,
           ``np.save`` (the baseline)
joblib     two passes of loky workers over row chunks: per-chunk count,
           mean and sum of squared deviations merged in the parent, then
           ``(x - mean) / std`` written into a shared output memmap (NumPy
           only: it gives no fitted StandardScaler)
joblib-scaler
           the same two passes, plus a fitted StandardScaler made from the
           merged moments: what chunkline gives, so it pays the same
           scikit-learn import
joblib-scaler-overlap
           the same, importing scikit-learn while the workers run the
           first pass
joblib-sklearn
           what a user writes for a fitted StandardScaler: ``partial_fit`` on
           each memmapped chunk in the parent, then loky workers write
           ``scaler.transform(rows)`` into a shared output memmap
chunkline-1, chunkline-2
           chunkline's ``Estimator(StandardScaler, fit="merge")`` with
           ``n_jobs=1`` and ``n_jobs=2``
========== ===========================================================

Commands (from the repository root; every workload shares them, see
:mod:`benchmarks.workload`)::

    python -m benchmarks.w2_scale bench --rows 16000000 --repeat 3
    python -m benchmarks.w2_scale make --rows 2000000 --out /tmp/w2
    python -m benchmarks.w2_scale run --impl joblib --data /tmp/w2
    python -m benchmarks.w2_scale verify --data /tmp/w2
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.arrays import (
    CHUNK_BYTES_OPTION,
    DEFAULT_CHUNK_BYTES,
    chunk_bounds,
    compare_npy,
    describe_array,
    describe_made,
    disk_needed,
    joblib_map_rows,
    write_normal,
)
from benchmarks.workload import BytesRunner, Workload, check_chunkline

N_COLS = 8
INPUT_NAME = "input.npy"
BASELINE = "sklearn"
#: Column scales and means of the input: from 0.25 to 16, means from -3 to
#: +4 standard deviations, so that centring and scaling both matter.
SCALES = np.geomspace(0.25, 16.0, N_COLS)
MEANS = SCALES * np.arange(-3.0, N_COLS - 3.0)
#: Outputs differ by rounding in the fitted mean and scale. Measured at 2M
#: rows against long-double statistics, scikit-learn's in-memory mean was
#: off by up to 2e-13 scale units (its row-by-row sum's error grows with the
#: rows), chunkline's merged one by 4e-15: ATOL leaves room for 16M rows.
RTOL = 1e-12
ATOL = 1e-10

#: A chunk's moments: row count, column means, column sums of squared deviations.
Moments = tuple[int, np.ndarray, np.ndarray]


def make_input(out_dir: Path, rows: int, *, seed: int = 0) -> Path:
    """Write ``out_dir/input.npy``: ``rows x 8`` normal float64, columns ``MEANS + SCALES * z``.

    Block by block, fsynced (:func:`benchmarks.arrays.write_normal`).
    """
    return write_normal(
        out_dir / INPUT_NAME, rows, N_COLS, seed=seed, mix=np.diag(SCALES), shift=MEANS
    )


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` and writes ``out_path``; none
# fsyncs it (the run deletes it right away).
# --------------------------------------------------------------------------


def run_sklearn(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Baseline: what a user writes in memory."""
    from sklearn.preprocessing import StandardScaler

    np.save(out_path, StandardScaler().fit_transform(np.load(in_path)))


def chunk_moments(in_path: str, start: int, stop: int) -> Moments:
    """One task of the first pass: count, mean and sum of squared deviations of some rows."""
    x = np.load(in_path, mmap_mode="r")[start:stop]
    mean = x.mean(axis=0)
    return len(x), mean, ((x - mean) ** 2).sum(axis=0)


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan et al.'s pairwise update: the moments of the rows of ``a`` and ``b`` together.

    Examples
    --------
    >>> x = np.arange(10.0)[:, None]
    >>> parts = [(len(p), p.mean(0), ((p - p.mean(0)) ** 2).sum(0)) for p in (x[:3], x[3:])]
    >>> n, mean, m2 = merge_moments(*parts)
    >>> n, mean.tolist(), (m2 / n).tolist() == x.var(0).tolist()
    (10, [4.5], True)
    """
    (na, mean_a, m2_a), (nb, mean_b, m2_b) = a, b
    n = na + nb
    delta = mean_b - mean_a
    return n, mean_a + delta * (nb / n), m2_a + m2_b + delta**2 * (na * nb / n)


def standardize(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - mean) / scale``: the second pass, as StandardScaler.transform computes it."""
    return (x - mean) / scale


def joblib_passes(
    in_path: Path,
    out_path: Path,
    chunk_bytes: str | None,
    n_jobs: int,
    during_first_pass: Callable[[], object] | None = None,
) -> Moments:
    """Hand-written two-pass joblib: moments merged in the parent, then a shared output memmap.

    ``during_first_pass`` runs in the parent while the workers compute the
    moments. Returns the merged moments (count, mean, sum of squared deviations).
    """
    from joblib import Parallel, delayed

    x = np.load(in_path, mmap_mode="r")
    bounds = chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes)
    parts = Parallel(
        n_jobs=n_jobs,
        backend="loky",
        return_as="list" if during_first_pass is None else "generator",
    )(delayed(chunk_moments)(str(in_path), start, stop) for start, stop in bounds)
    if during_first_pass is not None:
        during_first_pass()
    n, mean, m2 = functools.reduce(merge_moments, parts)
    scale = np.sqrt(m2 / n)
    # A zero variance is centred, not divided by zero. (StandardScaler also treats
    # a variance within rounding of zero as constant; W2's columns have none.)
    scale[scale == 0.0] = 1.0
    transform = functools.partial(standardize, mean=mean, scale=scale)
    joblib_map_rows(transform, in_path, out_path, bounds, n_jobs=n_jobs)
    return n, mean, m2


def run_joblib(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """The NumPy-only two passes (:func:`joblib_passes`); no fitted model."""
    joblib_passes(in_path, out_path, chunk_bytes, n_jobs)


def run_joblib_scaler(
    in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int, overlap: bool
) -> None:
    """The NumPy-only script, made to give what chunkline gives: a fitted StandardScaler.

    Its attributes are set from the merged moments, as a user would who
    wants the model without scikit-learn's serial ``partial_fit``. With
    ``overlap``, scikit-learn is imported while the workers run the first
    pass, rather than first.
    """

    def import_scaler() -> type:
        from sklearn.preprocessing import StandardScaler

        return StandardScaler

    if not overlap:
        import_scaler()
    during = import_scaler if overlap else None
    n, mean, m2 = joblib_passes(in_path, out_path, chunk_bytes, n_jobs, during)
    scaler = import_scaler()()
    scaler.n_features_in_ = len(mean)
    scaler.n_samples_seen_ = np.float64(n)  # scikit-learn's type for it
    scaler.mean_ = mean
    scaler.var_ = m2 / n
    scaler.scale_ = np.where(scaler.var_ == 0.0, 1.0, np.sqrt(scaler.var_))


def run_joblib_sklearn(
    in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int
) -> None:
    """Hand-written joblib around scikit-learn: fit by partial_fit, transform in workers."""
    from sklearn.preprocessing import StandardScaler

    x = np.load(in_path, mmap_mode="r")
    bounds = chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes)
    scaler = StandardScaler()
    for start, stop in bounds:
        scaler.partial_fit(x[start:stop])
    joblib_map_rows(scaler.transform, in_path, out_path, bounds, n_jobs=n_jobs)


def run_chunkline(
    in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int, workers: int
) -> None:
    """chunkline with ``workers`` jobs (``n_jobs`` is ignored); None: its default chunk size."""
    check_chunkline()
    from pipeline import Pipeline
    from stages import Estimator

    Pipeline(
        source=str(in_path),
        stages=[Estimator("sklearn.preprocessing.StandardScaler", fit="merge", name="scale")],
        sink=str(out_path),
        n_jobs=workers,
        chunks=None if chunk_bytes is None else {"bytes": chunk_bytes},
    ).run(progress=False)


IMPLEMENTATIONS: dict[str, BytesRunner] = {
    "sklearn": run_sklearn,
    "joblib": run_joblib,
    "joblib-scaler": functools.partial(run_joblib_scaler, overlap=False),
    "joblib-scaler-overlap": functools.partial(run_joblib_scaler, overlap=True),
    "joblib-sklearn": run_joblib_sklearn,
    "chunkline-1": functools.partial(run_chunkline, workers=1),
    "chunkline-2": functools.partial(run_chunkline, workers=2),
}


# --------------------------------------------------------------------------
# The workload, for the shared command line (benchmarks.workload)
# --------------------------------------------------------------------------


def _notes(args: argparse.Namespace, in_path: Path) -> list[str]:
    """How the implementations were configured, under the report's table."""
    chunking = (
        f"chunks {args.chunk_bytes} for joblib and chunkline"
        if args.chunk_bytes
        else f"joblib chunks {DEFAULT_CHUNK_BYTES}, chunkline its default chunk size"
    )
    return [
        f"Workload: W2 StandardScaler fit + transform; sklearn: the whole array in memory; "
        f"{chunking}; joblib: n_jobs {args.n_jobs}, both passes; joblib-scaler: the same, plus "
        "a StandardScaler built from the merged moments; joblib-sklearn: "
        f"partial_fit in the parent, transform on n_jobs {args.n_jobs}; chunkline-K: "
        "n_jobs K, fit='merge'."
    ]


WORKLOAD = Workload(
    module="benchmarks.w2_scale",
    description=__doc__.split("\n")[0],
    key="w2",
    title="W2 scale",
    task="StandardScaler fit (exact) + transform, .npy -> .npy",
    implementations=IMPLEMENTATIONS,
    baseline=BASELINE,
    input_name=INPUT_NAME,
    output_name="out-{name}.npy",
    make_input=make_input,
    describe_input=functools.partial(describe_array, cols=N_COLS),
    describe_made=describe_made,
    disk_needed=functools.partial(disk_needed, in_cols=N_COLS, out_cols=N_COLS),
    compare_outputs=functools.partial(compare_npy, rtol=RTOL, atol=ATOL),
    compared=f"np.isclose per chunk, rtol {RTOL:g}, atol {ATOL:g}",
    chunk_option=CHUNK_BYTES_OPTION,
    n_jobs_help="workers of joblib (default 2)",
    rows_default=16_000_000,
    rows_help="rows of 8 float64 (default 16M = 1 GB)",
    notes=_notes,
)


if __name__ == "__main__":
    # Through the importable module, so that functions pickle by reference
    # (see benchmarks.workload).
    from benchmarks import w2_scale

    sys.exit(w2_scale.WORKLOAD.main())
