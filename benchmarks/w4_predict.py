"""Workload W4: a fitted RandomForest's ``predict_proba`` over a ``.npy``, in parallel.

``make`` fits ``RandomForestClassifier(n_estimators=100, max_depth=12,
random_state=0)`` on ``--train-rows`` rows (200k by default) of 20 standard
normal features with the target ``x0 + x1 * x2 + 0.5 * noise > 0``, and
saves it with ``joblib.dump`` beside the input: a float64 array of
``rows x 20`` (4M rows = 640 MB) of other standard normal rows. Every
implementation loads the model, applies ``predict_proba`` to every input row
and writes the ``rows x 2`` probabilities as a new ``.npy``:

========== ===========================================================
sklearn-1  the model with ``n_jobs=1`` on the whole input memmap
sklearn-2  the same with ``n_jobs=2``: the forest's own threads over
           trees (the baseline)
joblib     loky workers over row chunks; each loads the model once
           (``n_jobs=1`` inside) and writes its rows into a shared output
           memmap
chunkline-2
           chunkline's ``Estimator(model=<file>, apply="predict_proba")``
           with ``n_jobs=2`` (threads over row chunks, ``n_jobs=1`` inside)
========== ===========================================================

Commands (from the repository root; every workload shares them, see
:mod:`benchmarks.workload`)::

    python -m benchmarks.w4_predict bench --rows 4000000 --repeat 3
    python -m benchmarks.w4_predict make --rows 400000 --train-rows 20000 --out /tmp/w4
    python -m benchmarks.w4_predict run --impl joblib --data /tmp/w4
    python -m benchmarks.w4_predict verify --data /tmp/w4
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.arrays import (
    compare_npy,
    describe_array,
    disk_needed,
    joblib_map_rows,
    row_bounds,
    write_normal,
)
from benchmarks.harness import MB
from benchmarks.workload import (
    ChunkOption,
    MakeOption,
    RowsRunner,
    Workload,
    check_chunkline,
    positive_int,
    sync_to_disk,
)

N_FEATURES = 20
N_CLASSES = 2
INPUT_NAME = "input.npy"
MODEL_NAME = "model.joblib"
BASELINE = "sklearn-2"
TRAIN_ROWS = 200_000
FOREST: dict[str, Any] = {"n_estimators": 100, "max_depth": 12, "random_state": 0}
#: Rows per task of ``joblib``: 32 MB of input, as the other workloads' chunks.
JOBLIB_CHUNK_ROWS = 200_000
#: ``n_jobs=2`` adds the trees' probabilities in whatever order its threads
#: finish: not bitwise reproducible, equal to the last bits.
RTOL = ATOL = 1e-12


def make_input(out_dir: Path, rows: int, *, seed: int = 0, train_rows: int = TRAIN_ROWS) -> Path:
    """Write ``out_dir/input.npy`` (rows to predict) and ``out_dir/model.joblib`` (the forest).

    The training rows come from another stream of the same seed, and are
    only ever in memory (``train_rows x 20``, 32 MB by default). The forest
    is fitted with every core (``make`` is not timed) and saved with
    ``n_jobs=None``: each implementation sets its own.
    """
    from joblib import dump
    from sklearn.ensemble import RandomForestClassifier

    path = write_normal(out_dir / INPUT_NAME, rows, N_FEATURES, seed=seed)
    rng = np.random.default_rng([seed, 1])
    x = rng.standard_normal((train_rows, N_FEATURES))
    y = x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.standard_normal(train_rows) > 0
    forest = RandomForestClassifier(**FOREST, n_jobs=-1).fit(x, y)
    forest.set_params(n_jobs=None)
    dump(forest, out_dir / MODEL_NAME)
    sync_to_disk(out_dir / MODEL_NAME)
    return path


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` and the model beside it and writes
# ``out_path``; none fsyncs it (the run deletes it right away).
# --------------------------------------------------------------------------


@functools.cache
def load_forest(model_path: str, n_jobs: int) -> Any:
    """The saved forest with ``n_jobs`` set; loaded once per process."""
    from joblib import load

    return load(model_path).set_params(n_jobs=n_jobs)


def run_sklearn(
    in_path: Path, out_path: Path, *, chunk_rows: int | None, n_jobs: int, threads: int
) -> None:
    """The forest's own ``predict_proba`` over the whole input memmap, ``threads`` jobs."""
    forest = load_forest(str(in_path.with_name(MODEL_NAME)), threads)
    np.save(out_path, forest.predict_proba(np.load(in_path, mmap_mode="r")))


def forest_proba(model_path: str, x: np.ndarray) -> np.ndarray:
    """One joblib task's work: the probabilities of some rows, one thread."""
    return load_forest(model_path, 1).predict_proba(x)


def run_joblib(in_path: Path, out_path: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """Hand-written joblib over row chunks into a shared output memmap."""
    n_rows = np.load(in_path, mmap_mode="r").shape[0]
    predict = functools.partial(forest_proba, str(in_path.with_name(MODEL_NAME)))
    bounds = row_bounds(n_rows, chunk_rows or JOBLIB_CHUNK_ROWS)
    joblib_map_rows(predict, in_path, out_path, bounds, n_jobs=n_jobs, out_tail=(N_CLASSES,))


def run_chunkline(
    in_path: Path, out_path: Path, *, chunk_rows: int | None, n_jobs: int, workers: int
) -> None:
    """chunkline with ``workers`` jobs (``n_jobs`` is ignored); None: its default chunk size."""
    check_chunkline()
    from pipeline import Pipeline
    from stages import Estimator

    Pipeline(
        str(in_path),
        [Estimator(model=str(in_path.with_name(MODEL_NAME)), apply="predict_proba", name="rf")],
        sink=str(out_path),
        n_jobs=workers,
        chunks=None if chunk_rows is None else {"rows": chunk_rows},
    ).run(progress=False)


IMPLEMENTATIONS: dict[str, RowsRunner] = {
    "sklearn-1": functools.partial(run_sklearn, threads=1),
    "sklearn-2": functools.partial(run_sklearn, threads=2),
    "joblib": run_joblib,
    "chunkline-2": functools.partial(run_chunkline, workers=2),
}


# --------------------------------------------------------------------------
# The workload, for the shared command line (benchmarks.workload)
# --------------------------------------------------------------------------


def _describe_made(path: Path, rows: int) -> str:
    model = path.with_name(MODEL_NAME)
    return (
        f"wrote {path} ({path.stat().st_size / MB:.0f} MB) and {model} "
        f"({model.stat().st_size / MB:.0f} MB)"
    )


def _notes(args: argparse.Namespace, in_path: Path) -> list[str]:
    """How the model was fitted and the implementations configured, under the report's table."""
    model = in_path.with_name(MODEL_NAME)
    chunking = (
        f"joblib and chunkline chunks of {args.chunk_rows:,} rows"
        if args.chunk_rows
        else f"joblib chunks of {JOBLIB_CHUNK_ROWS:,} rows, chunkline its default chunk size"
    )
    return [
        f"Workload: W4 RandomForestClassifier({', '.join(f'{k}={v}' for k, v in FOREST.items())}) "
        f"fitted on {args.train_rows:,} rows ({model.stat().st_size / MB:.0f} MB saved), "
        f"predict_proba; sklearn-K: the forest's n_jobs K over the whole memmap; {chunking}; "
        f"joblib: n_jobs {args.n_jobs} with n_jobs=1 inside; chunkline-2: n_jobs 2."
    ]


WORKLOAD = Workload(
    module="benchmarks.w4_predict",
    description=__doc__.split("\n")[0],
    key="w4",
    title="W4 predict",
    task="RandomForest predict_proba, .npy -> .npy",
    implementations=IMPLEMENTATIONS,
    baseline=BASELINE,
    input_name=INPUT_NAME,
    other_inputs=(MODEL_NAME,),
    output_name="out-{name}.npy",
    make_input=make_input,
    make_options=(
        MakeOption(
            flag="--train-rows",
            type=positive_int,
            default=TRAIN_ROWS,
            help=f"rows the forest is fitted on (default {TRAIN_ROWS:,}; fewer for a smoke run)",
        ),
    ),
    describe_input=functools.partial(describe_array, cols=N_FEATURES),
    describe_made=_describe_made,
    # The model: about 70 MB at 200k training rows.
    disk_needed=functools.partial(
        disk_needed, in_cols=N_FEATURES, out_cols=N_CLASSES, extra=200 * MB
    ),
    compare_outputs=functools.partial(compare_npy, rtol=RTOL, atol=ATOL),
    compared=f"np.isclose per chunk, rtol = atol = {RTOL:g}",
    chunk_option=ChunkOption(
        flag="--chunk-rows",
        type=positive_int,
        help=f"rows per chunk of joblib and chunkline (default: joblib {JOBLIB_CHUNK_ROWS:,}, "
        "chunkline its own)",
    ),
    n_jobs_help="workers of joblib (default 2)",
    rows_default=4_000_000,
    rows_help="rows of 20 float64 to predict (default 4M = 640 MB)",
    notes=_notes,
)


if __name__ == "__main__":
    # Through the importable module, so that functions pickle by reference
    # (see benchmarks.workload).
    from benchmarks import w4_predict

    sys.exit(w4_predict.WORKLOAD.main())
