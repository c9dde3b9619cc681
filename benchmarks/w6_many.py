"""Workload W6: eight HistGradientBoosting models fitted on one array, the best kept.

The input is ``x.npy``, a float64 array of ``rows x 20`` standard normal
features (2M rows = 320 MB), and ``y.npy``, a nonlinear target
(:func:`target`). The candidates are ``HistGradientBoostingRegressor(
max_iter=30, random_state=0)`` over ``learning_rate`` in {0.05, 0.2} x
``max_leaf_nodes`` in {15, 31, 63, 127}. Every implementation does what
chunkline's ``train_many`` does: fit each candidate on the first 80% of the
rows, score it (R^2, ``estimator.score``) on the last 20%, and keep the
best; it writes the eight scores as ``scores.json``:

============= ========================================================
sequential    a loop over the candidates, each fit using every core
              (OpenMP threads); the baseline
joblib        ``Parallel(n_jobs=2)`` over the candidates; the in-memory
              arrays auto-memmapped to the workers (joblib's default)
joblib-copies the same with ``max_nbytes=None``: every task pickles copies
chunkline     chunkline's ``TrainMany`` stage, ``n_jobs=2``
============= ========================================================

Commands (from the repository root; every workload shares them, see
:mod:`benchmarks.workload`)::

    python -m benchmarks.w6_many bench --rows 2000000 --repeat 3
    python -m benchmarks.w6_many make --rows 200000 --out /tmp/w6
    python -m benchmarks.w6_many run --impl joblib --data /tmp/w6
    python -m benchmarks.w6_many verify --data /tmp/w6
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.arrays import DTYPE, describe_array, write_normal, write_npy
from benchmarks.harness import MB
from benchmarks.workload import (
    ChunkOption,
    RowsRunner,
    Workload,
    check_chunkline,
    positive_int,
)

N_FEATURES = 20
INPUT_NAME = "x.npy"
TARGET_NAME = "y.npy"
SCORES_NAME = "scores.json"
BASELINE = "sequential"
ESTIMATOR = "sklearn.ensemble.HistGradientBoostingRegressor"
PARAMS: dict[str, Any] = {"max_iter": 30, "random_state": 0}
GRID: dict[str, list[Any]] = {"learning_rate": [0.05, 0.2], "max_leaf_nodes": [15, 31, 63, 127]}
#: Share of the rows, at the end, that every candidate is scored on.
HOLDOUT = 0.2
#: Scores may differ by the rounding of OpenMP reductions over other thread counts.
SCORE_ATOL = 1e-9


def target(x: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The regression target: interactions, a sine and a threshold, plus noise."""
    return (
        np.sin(2.0 * x[:, 0])
        + x[:, 1] * x[:, 2]
        + 0.5 * x[:, 3] ** 2
        + np.where(x[:, 4] > 0.5, 1.0, 0.0)
        + 0.3 * noise
    )


def make_input(out_dir: Path, rows: int, *, seed: int = 0) -> Path:
    """Write ``out_dir/x.npy`` and ``out_dir/y.npy``, block by block; returns ``x.npy``."""
    path = write_normal(out_dir / INPUT_NAME, rows, N_FEATURES, seed=seed)
    x = np.load(path, mmap_mode="r")
    rng = np.random.default_rng([seed, 1])  # another stream than the rows'

    def fill(block: np.ndarray, start: int) -> None:
        block[:] = target(x[start : start + len(block)], rng.standard_normal(len(block)))

    write_npy(out_dir / TARGET_NAME, (rows,), fill)
    return path


# --------------------------------------------------------------------------
# The work every implementation does
# --------------------------------------------------------------------------


def candidates() -> list[dict[str, Any]]:
    """The grid's settings, in chunkline's order (scikit-learn's ``ParameterGrid``)."""
    from sklearn.model_selection import ParameterGrid

    return list(ParameterGrid(GRID))


def holdout_start(n_rows: int) -> int:
    """First scored row: the last ``HOLDOUT`` of the rows, rounded as chunkline rounds.

    >>> holdout_start(100), holdout_start(11)
    (80, 9)
    """
    return n_rows - max(1, round(n_rows * HOLDOUT))


def fit_and_score(setting: dict[str, Any], x: np.ndarray, y: np.ndarray) -> float:
    """Fit one candidate on the first rows, return its R^2 on the held-out rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    cut = holdout_start(len(x))
    model = HistGradientBoostingRegressor(**PARAMS, **setting).fit(x[:cut], y[:cut])
    return float(model.score(x[cut:], y[cut:]))


def write_scores(out_dir: Path, settings: list[dict[str, Any]], scores: list[float]) -> None:
    """``out_dir/scores.json``: each candidate's setting and score, and the best one's index."""
    best = max(range(len(scores)), key=scores.__getitem__)  # the first of equals, as chunkline
    out_dir.mkdir(exist_ok=True)
    records = [{**s, "score": score} for s, score in zip(settings, scores, strict=True)]
    (out_dir / SCORES_NAME).write_text(json.dumps({"candidates": records, "best": best}, indent=1))


def _load(in_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` in memory, as a user holds them."""
    return np.load(in_path), np.load(in_path.with_name(TARGET_NAME))


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` (and ``y.npy`` beside it) and
# writes the folder ``out_dir`` (which does not exist yet).
# --------------------------------------------------------------------------


def run_sequential(in_path: Path, out_dir: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """Baseline: one candidate after the other, each with every core (OpenMP)."""
    x, y = _load(in_path)
    settings = candidates()
    write_scores(out_dir, settings, [fit_and_score(s, x, y) for s in settings])


def run_joblib(
    in_path: Path,
    out_dir: Path,
    *,
    chunk_rows: int | None,
    n_jobs: int,
    max_nbytes: str | None = "1M",
) -> None:
    """``n_jobs`` candidates at a time in loky workers (joblib caps each at cores / n_jobs threads).

    ``max_nbytes="1M"`` is joblib's default: larger arrays are memmapped to
    the workers; ``None`` pickles them to every task.
    """
    from joblib import Parallel, delayed

    x, y = _load(in_path)
    settings = candidates()
    scores = Parallel(n_jobs=n_jobs, max_nbytes=max_nbytes)(
        delayed(fit_and_score)(s, x, y) for s in settings
    )
    write_scores(out_dir, settings, scores)


def run_chunkline(in_path: Path, out_dir: Path, *, chunk_rows: int | None, n_jobs: int) -> None:
    """chunkline's ``TrainMany`` with ``n_jobs`` jobs; the best model kept in memory.

    Like the other implementations, it writes only the scores: no model files
    (saving them, with skops, costs an import of about 1.4 s on its own).
    """
    check_chunkline()
    from pipeline import Pipeline
    from stages import TrainMany

    # One pass that checks the rows, then the fits; with output=False the best
    # model is not applied to the rows (see `chunkline explain`).
    result = Pipeline(
        {"npy": str(in_path), "y": str(in_path.with_name(TARGET_NAME))},
        [TrainMany(ESTIMATOR, params=PARAMS, grid=GRID, name="hgb")],
        n_jobs=n_jobs,
        chunks=None if chunk_rows is None else {"rows": chunk_rows},
    ).run(progress=False, output=False)
    trials = result.trials["hgb"]
    settings = [{k: t[k] for k in GRID} for t in trials]
    if settings != candidates():
        raise RuntimeError(f"chunkline tried {settings}, expected {candidates()}")
    write_scores(out_dir, settings, [t["score"] for t in trials])


IMPLEMENTATIONS: dict[str, RowsRunner] = {
    "sequential": run_sequential,
    "joblib": run_joblib,
    "joblib-copies": functools.partial(run_joblib, max_nbytes=None),
    "chunkline": run_chunkline,
}


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def compare_scores(actual: Path, expected: Path) -> str | None:
    """Same candidates in the same order, scores within ``SCORE_ATOL``, the same best.

    Returns
    -------
    str or None
        None if they agree, else what differs (with the largest difference).
    """
    try:
        got = json.loads((actual / SCORES_NAME).read_text())
    except (OSError, ValueError) as exc:
        return f"cannot read {SCORES_NAME}: {exc}"
    want = json.loads((expected / SCORES_NAME).read_text())
    settings = [{k: c[k] for k in GRID} for c in got["candidates"]]
    if settings != [{k: c[k] for k in GRID} for c in want["candidates"]]:
        return f"other candidates: {settings}"
    pairs = zip(got["candidates"], want["candidates"], strict=True)
    diffs = [abs(a["score"] - b["score"]) for a, b in pairs]
    worst = max(diffs)
    if worst > SCORE_ATOL:
        return f"scores differ by up to {worst:.3g} (candidate {diffs.index(worst)})"
    if got["best"] != want["best"]:
        return f"best is candidate {got['best']}, expected {want['best']}"
    return None


# --------------------------------------------------------------------------
# The workload, for the shared command line (benchmarks.workload)
# --------------------------------------------------------------------------


def _describe_input(rows: int) -> str:
    return f"{describe_array(rows, N_FEATURES)} + y"


def _describe_made(path: Path, rows: int) -> str:
    y = path.with_name(TARGET_NAME)
    return f"wrote {path} ({path.stat().st_size / MB:.0f} MB) and {y} ({y.stat().st_size:,} bytes)"


def _disk_needed(rows: int, check: bool) -> int:
    """x and y; outputs are a few kB, plus chunkline's saved model (a few MB)."""
    return rows * (N_FEATURES + 1) * DTYPE.itemsize + 50 * MB


def _notes(args: argparse.Namespace, in_path: Path) -> list[str]:
    """How the implementations were configured, under the report's table."""
    n = np.load(in_path, mmap_mode="r").shape[0]
    params = ", ".join(f"{k}={v}" for k, v in PARAMS.items())
    grid = " x ".join(f"{k} {v}" for k, v in GRID.items())
    chunks = "" if args.chunk_rows is None else f", chunks={{'rows': {args.chunk_rows}}}"
    return [
        f"Workload: W6, HistGradientBoostingRegressor({params}) over {grid}, each fitted on "
        f"rows [0, {holdout_start(n):,}) and scored (R^2) on the rest; sequential: OpenMP "
        f"threads of every core; joblib and joblib-copies: n_jobs {args.n_jobs} (loky caps "
        f"each worker's threads at cores / n_jobs); chunkline: n_jobs {args.n_jobs}, its own "
        f"choice of models x threads{chunks}."
    ]


WORKLOAD = Workload(
    module="benchmarks.w6_many",
    description=__doc__.split("\n")[0],
    key="w6",
    title="W6 many models",
    task="8 HistGradientBoostingRegressor fits, holdout R^2, the best kept",
    implementations=IMPLEMENTATIONS,
    baseline=BASELINE,
    input_name=INPUT_NAME,
    other_inputs=(TARGET_NAME,),
    output_name="out-{name}/",
    make_input=make_input,
    describe_input=_describe_input,
    describe_made=_describe_made,
    disk_needed=_disk_needed,
    compare_outputs=compare_scores,
    compared=f"same candidates, scores within {SCORE_ATOL:g}, same best",
    chunk_option=ChunkOption(
        flag="--chunk-rows",
        type=positive_int,
        help="chunkline's chunks when it reads the rows (default: its own); the others "
        "fit whole arrays",
    ),
    n_jobs_help="workers of joblib, joblib-copies and chunkline (default 2)",
    rows_default=2_000_000,
    rows_help="rows of 20 float64 (default 2M = 320 MB)",
    notes=_notes,
)


if __name__ == "__main__":
    # Through the importable module, so that functions pickle by reference
    # (see benchmarks.workload).
    from benchmarks import w6_many

    sys.exit(w6_many.WORKLOAD.main())
