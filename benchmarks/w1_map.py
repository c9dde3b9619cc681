"""Workload W1: an elementwise, CPU-heavy map from one ``.npy`` to another.

The input is a float64 array of ``rows x 8`` (16M rows = 1.02 GB), the output
has the same shape, and every element goes through :func:`w1_formula`. The
implementations are what a user would otherwise write, plus chunkline:

========== ===========================================================
numpy      one process, a loop over memmapped chunks (the baseline)
joblib     loky workers read their rows from the input memmap and write
           into a shared, preallocated output memmap
pool       ``multiprocessing.Pool`` pickling every chunk both ways
dask       ``from_array(memmap)`` + ``map_blocks`` + ``store``, threads
chunkline-1, chunkline-2
           chunkline's Python API with ``n_jobs=1`` and ``n_jobs=2``
========== ===========================================================

Commands (from the repository root)::

    python -m benchmarks.w1_map bench --rows 16000000 --repeat 3
    python -m benchmarks.w1_map make --rows 2000000 --out /tmp/w1
    python -m benchmarks.w1_map run --impl joblib --data /tmp/w1
    python -m benchmarks.w1_map verify --data /tmp/w1
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.lib.format import open_memmap

from benchmarks.harness import MB, Implementation, format_report, machine_details, run_benchmark

N_COLS = 8
DTYPE = np.dtype(np.float64)
INPUT_NAME = "input.npy"
BASELINE = "numpy"
#: Chunk size of the non-chunkline implementations, as in the issue's
#: reference figures; chunkline uses its own default unless told otherwise.
DEFAULT_CHUNK_BYTES = "32MB"
#: ``python -m benchmarks...`` needs the repository root on sys.path, and
#: chunkline's ``pipeline`` package lives there too.
REPO_ROOT = Path(__file__).resolve().parent.parent


def w1_formula(x: np.ndarray) -> np.ndarray:
    """The W1 map: ``sqrt(|x|) * log1p(|x|) + sin(x)``, elementwise.

    Written as a user would write it (temporaries and all): the workload is
    this expression, not a tuned kernel.

    Examples
    --------
    >>> w1_formula(np.array([0.0, -1.0])).round(6).tolist()
    [0.0, -0.148324]
    """
    return np.sqrt(np.abs(x)) * np.log1p(np.abs(x)) + np.sin(x)


# --------------------------------------------------------------------------
# Chunking helpers
# --------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def parse_bytes(text: str | int) -> int:
    """Turn ``"32MB"``, ``"1.5GiB"`` or ``4096`` into a number of bytes.

    Decimal units are powers of 1000 and binary ones powers of 1024, as in
    dask's ``parse_bytes``.

    Examples
    --------
    >>> parse_bytes("32MB"), parse_bytes("1 KiB"), parse_bytes(7)
    (32000000, 1024, 7)
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            raise ValueError(f"chunk size must look like '32MB', '64MiB' or 4096; got {text!r}.")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"chunk size must be positive; got {text!r}.")
    return value


def chunk_bounds(n_rows: int, chunk_bytes: str | int, row_bytes: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of about ``chunk_bytes`` each, covering all rows.

    Examples
    --------
    >>> chunk_bounds(10, 32, 8)
    [(0, 4), (4, 8), (8, 10)]
    """
    rows = max(1, parse_bytes(chunk_bytes) // row_bytes)
    return [(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows)]


# --------------------------------------------------------------------------
# Input data
# --------------------------------------------------------------------------


def make_input(out_dir: Path, rows: int, *, seed: int = 0, block_rows: int = 1_000_000) -> Path:
    """Write ``out_dir/input.npy``: ``rows x 8`` standard normal float64.

    Generated block by block straight into a memmap, so making 1 GB needs
    ~64 MB of memory, and fsynced, so that the kernel is not still writing
    it back to disk while the first implementations are being timed.

    Parameters
    ----------
    out_dir : Path
        Existing or new directory.
    rows : int
        Number of rows.
    seed : int, default 0
        Seed of the generator; the same seed gives the same file.
    block_rows : int, default 1_000_000
        Rows generated at a time.

    Returns
    -------
    Path
        The input file.
    """
    if rows <= 0:
        raise ValueError(f"--rows must be a positive integer; got {rows}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / INPUT_NAME
    rng = np.random.default_rng(seed)
    data = open_memmap(path, mode="w+", dtype=DTYPE, shape=(rows, N_COLS))
    for start in range(0, rows, block_rows):
        # ``out=`` fills the mapped pages in place: no temporary block.
        rng.standard_normal(dtype=DTYPE, out=data[start : start + block_rows])
    data.flush()
    del data
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


# --------------------------------------------------------------------------
# Implementations. Each reads ``in_path`` and writes ``out_path``. None of
# them fsyncs its output: the run deletes it right away, so flushing it to
# disk would only measure the disk.
# --------------------------------------------------------------------------


class Runner(Protocol):
    """How every implementation is called: read ``in_path``, write ``out_path``."""

    def __call__(
        self, in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int
    ) -> None: ...


def _input_meta(in_path: Path) -> tuple[tuple[int, ...], np.dtype]:
    x = np.load(in_path, mmap_mode="r")
    return x.shape, x.dtype


def run_numpy(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Baseline: a single-process loop over memmapped chunks."""
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    for start, stop in chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes):
        out[start:stop] = w1_formula(x[start:stop])
    del out


def _joblib_chunk(in_path: str, out_path: str, start: int, stop: int) -> int:
    """One joblib task: read rows from the input, write them to the output."""
    # Paths travel, not arrays: opening a memmap costs ~100 us, pickling a
    # 32 MB chunk costs far more.
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="r+")
    out[start:stop] = w1_formula(x[start:stop])
    return stop - start


def run_joblib(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Hand-written joblib: loky workers write into a shared output memmap."""
    from joblib import Parallel, delayed

    shape, dtype = _input_meta(in_path)
    # Preallocate (header + sparse file) so workers can open it with r+; the
    # parent's own map is dropped at once.
    open_memmap(out_path, mode="w+", dtype=dtype, shape=shape)
    bounds = chunk_bounds(shape[0], chunk_bytes or DEFAULT_CHUNK_BYTES, dtype.itemsize * shape[1])
    done = Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(_joblib_chunk)(str(in_path), str(out_path), start, stop) for start, stop in bounds
    )
    if sum(done) != shape[0]:
        raise RuntimeError(f"joblib wrote {sum(done)} rows, expected {shape[0]}.")


def run_pool(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """Naive ``multiprocessing.Pool``: chunks are pickled to workers and back."""
    x = np.load(in_path, mmap_mode="r")
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    bounds = chunk_bounds(len(x), chunk_bytes or DEFAULT_CHUNK_BYTES, x[0].nbytes)
    # np.asarray: a plain ndarray view, pickled as its bytes; a memmap slice
    # would arrive as an np.memmap backed by no file, and results would
    # come back as that subclass too.
    chunks = (np.asarray(x[start:stop]) for start, stop in bounds)
    pool = multiprocessing.Pool(n_jobs)
    try:
        for (start, stop), result in zip(bounds, pool.imap(w1_formula, chunks), strict=True):
            out[start:stop] = result
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    del out


def run_dask(in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int) -> None:
    """dask.array over the input memmap, stored into an output memmap, threads."""
    import dask.array as da

    x = np.load(in_path, mmap_mode="r")
    rows = max(1, parse_bytes(chunk_bytes or DEFAULT_CHUNK_BYTES) // x[0].nbytes)
    dx = da.from_array(x, chunks=(rows, x.shape[1]))
    dy = dx.map_blocks(w1_formula, dtype=x.dtype)
    out = open_memmap(out_path, mode="w+", dtype=x.dtype, shape=x.shape)
    # Defaults otherwise (lock=True), as a user would write it.
    da.store(dy, out, scheduler="threads", num_workers=n_jobs)
    del out


def run_chunkline(
    in_path: Path, out_path: Path, *, chunk_bytes: str | None, n_jobs: int, workers: int
) -> None:
    """chunkline's Python API with ``workers`` jobs (``n_jobs`` is ignored).

    ``chunk_bytes`` is passed through as given (chunkline parses it); None
    leaves chunkline's default chunk size.
    """
    try:
        from pipeline import Map, Pipeline
    except ImportError as exc:
        raise SystemExit(
            f"chunkline's engine is not importable ({exc}); `from pipeline import Map, Pipeline` "
            f"must work from {REPO_ROOT}."
        ) from exc
    Pipeline(
        source=str(in_path),
        stages=[Map(w1_formula, name="w1")],
        sink=str(out_path),
        n_jobs=workers,
        # None is Pipeline's own default: chunkline picks the chunk size.
        chunks=None if chunk_bytes is None else {"bytes": chunk_bytes},
    ).run()


IMPLEMENTATIONS: dict[str, Runner] = {
    "numpy": run_numpy,
    "joblib": run_joblib,
    "pool": run_pool,
    "dask": run_dask,
    "chunkline-1": functools.partial(run_chunkline, workers=1),
    "chunkline-2": functools.partial(run_chunkline, workers=2),
}


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def compare_outputs(
    actual: Path, expected: Path, *, chunk_bytes: str = DEFAULT_CHUNK_BYTES
) -> str | None:
    """Compare two ``.npy`` files bitwise, chunk by chunk.

    Returns
    -------
    str or None
        None if they are equal, else what differs first.
    """
    a = np.load(actual, mmap_mode="r")
    b = np.load(expected, mmap_mode="r")
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype}, expected {b.shape} {b.dtype}"
    for start, stop in chunk_bounds(len(a), chunk_bytes, max(1, a[0].nbytes)):
        if not np.array_equal(a[start:stop], b[start:stop]):
            bad = start + int(np.flatnonzero((a[start:stop] != b[start:stop]).any(axis=1))[0])
            return f"first difference at row {bad}"
    return None


def _run_argv(
    name: str, data: Path, chunk_bytes: str | None, n_jobs: int, *, keep: bool = False
) -> list[str]:
    """Command line that runs one implementation once in a fresh process."""
    argv = [sys.executable, "-m", "benchmarks.w1_map", "run", "--impl", name, "--data", str(data)]
    argv += ["--n-jobs", str(n_jobs)]
    if chunk_bytes is not None:
        argv += ["--chunk-bytes", chunk_bytes]
    if keep:
        argv.append("--keep")
    return argv


def _run_kept(name: str, data: Path, chunk_bytes: str | None, n_jobs: int) -> str | None:
    """Run one implementation in a fresh process, keeping its output.

    Returns None on success, else the last line of its stderr.
    """
    proc = subprocess.run(
        _run_argv(name, data, chunk_bytes, n_jobs, keep=True),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return f"run failed (exit {proc.returncode}): {last}"


def verify(
    data: Path, names: Sequence[str], *, chunk_bytes: str | None, n_jobs: int
) -> dict[str, str]:
    """Run the baseline and each implementation, then compare outputs bitwise.

    Each implementation runs in its own process, as in the benchmark, and
    keeps its output just long enough to be compared.

    Returns
    -------
    dict
        Implementation name -> ``"ok"`` or what went wrong.
    """
    expected = data / f"out-{BASELINE}.npy"
    try:
        failure = _run_kept(BASELINE, data, chunk_bytes, n_jobs)
        if failure:
            return {BASELINE: failure}
        outcome: dict[str, str] = {}
        for name in names:
            if name == BASELINE:
                continue
            actual = data / f"out-{name}.npy"
            try:
                failure = _run_kept(name, data, chunk_bytes, n_jobs)
                outcome[name] = failure or compare_outputs(actual, expected) or "ok"
            finally:
                actual.unlink(missing_ok=True)
        return outcome
    finally:
        expected.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _cmd_make(args: argparse.Namespace) -> int:
    path = make_input(args.out, args.rows, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / MB:.0f} MB)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    in_path = args.data / INPUT_NAME
    out_path = args.data / f"out-{args.impl}.npy"
    if not in_path.exists():
        print(
            f"error: {in_path} does not exist; create it with `make --out {args.data}`.",
            file=sys.stderr,
        )
        return 2
    try:
        IMPLEMENTATIONS[args.impl](
            in_path, out_path, chunk_bytes=args.chunk_bytes, n_jobs=args.n_jobs
        )
    finally:
        if not args.keep:
            out_path.unlink(missing_ok=True)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    names = args.impl or list(IMPLEMENTATIONS)
    outcome = verify(args.data, names, chunk_bytes=args.chunk_bytes, n_jobs=args.n_jobs)
    for name, what in outcome.items():
        print(f"{name:<14} {what}")
    return 0 if all(what == "ok" for what in outcome.values()) else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    names = args.impl or list(IMPLEMENTATIONS)
    if BASELINE not in names:
        names = [BASELINE, *names]
    input_bytes = args.rows * N_COLS * DTYPE.itemsize
    # Input + one output at a time (+ the baseline's kept output with --check).
    needed = input_bytes * (3 if args.check else 2) + 100 * MB
    free = shutil.disk_usage(args.tmp_dir).free
    if free < needed:
        print(
            f"error: {args.tmp_dir} has {free / MB:.0f} MB free; "
            f"the benchmark needs {needed / MB:.0f} MB.",
            file=sys.stderr,
        )
        return 2

    # Only here: `run` forks Pool workers, which must keep the default
    # SIGTERM behaviour that Pool.terminate() relies on.
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # Taken before anything runs: its load average is the machine's own.
    machine = machine_details()
    data = Path(tempfile.mkdtemp(prefix="chunkline-w1-", dir=args.tmp_dir))
    try:
        print(
            f"making {args.rows:,} x {N_COLS} float64 ({input_bytes / MB:.0f} MB) in {data}",
            file=sys.stderr,
        )
        make_input(data, args.rows, seed=args.seed)
        chunking = (
            f"chunks {args.chunk_bytes} for every implementation"
            if args.chunk_bytes
            else f"chunks {DEFAULT_CHUNK_BYTES} (chunkline: its default)"
        )
        notes = [f"Workload: W1 map, {chunking}, n_jobs {args.n_jobs} (chunkline-K: n_jobs K)."]
        if args.check:
            outcome = verify(data, names, chunk_bytes=args.chunk_bytes, n_jobs=args.n_jobs)
            notes += ["", "Outputs compared with numpy's (bitwise, np.array_equal per chunk):"]
            notes += [f"- {name}: {what}" for name, what in outcome.items()]
        impls = [
            Implementation(
                name, tuple(_run_argv(name, data, args.chunk_bytes, args.n_jobs)), cwd=REPO_ROOT
            )
            for name in names
        ]
        results = run_benchmark(impls, repeat=args.repeat, timeout=args.timeout)
        report = format_report(
            results,
            baseline=BASELINE,
            machine=machine,
            title=f"W1 map: {args.rows:,} x {N_COLS} float64 ({input_bytes / MB:.0f} MB), "
            ".npy -> .npy",
            notes=notes,
        )
        print(report)
        if args.out:
            args.out.write_text(report)
        return 0 if all(r.ok for r in results) else 1
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _chunk_size(text: str) -> str:
    """argparse type: check a chunk size early but keep it as written.

    chunkline receives the text itself and parses it its own way.
    """
    try:
        parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _raise_on_sigterm(signum: int, frame: object) -> None:
    # Turn `kill PID` into an exception so that `finally` blocks delete the
    # data folder, as Ctrl-C (KeyboardInterrupt) already does.
    raise SystemExit(128 + signum)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (one subcommand per action)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.w1_map", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--chunk-bytes",
            type=_chunk_size,
            help=f"chunk size such as 32MB (default {DEFAULT_CHUNK_BYTES}; chunkline: its own)",
        )
        p.add_argument(
            "--n-jobs", type=int, default=2, help="workers of joblib, pool and dask (default 2)"
        )

    p = sub.add_parser("make", help="create DIR/input.npy")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", type=Path, required=True, help="directory to write input.npy into")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make)

    p = sub.add_parser(
        "run", help="run one implementation once (writes, then deletes, DIR/out-NAME.npy)"
    )
    p.add_argument("--impl", required=True, choices=list(IMPLEMENTATIONS))
    p.add_argument("--data", type=Path, required=True, help="directory holding input.npy")
    p.add_argument("--keep", action="store_true", help="keep the output (for verify)")
    add_run_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("verify", help="compare implementations' outputs with numpy's, bitwise")
    p.add_argument("--data", type=Path, required=True, help="directory holding input.npy")
    p.add_argument(
        "--impl", action="append", choices=list(IMPLEMENTATIONS), help="repeatable; default all"
    )
    add_run_options(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "bench", help="make data in a temporary folder, time every implementation, delete it"
    )
    p.add_argument(
        "--rows", type=int, default=16_000_000, help="rows of 8 float64 (default 16M = 1 GB)"
    )
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--impl", action="append", choices=list(IMPLEMENTATIONS), help="repeatable; default all"
    )
    p.add_argument("--check", action="store_true", help="first verify every output against numpy's")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds before a run is killed (default 600)"
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=Path("/tmp"),
        help="parent of the data folder (default /tmp)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the markdown report to this file")
    add_run_options(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.w1_map``."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        # The `finally` blocks have already deleted outputs and data.
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Re-enter through the importable module, not __main__: functions then
    # pickle by reference as ``benchmarks.w1_map.<name>`` (what loky workers
    # and chunkline expect) instead of by value from ``__main__``.
    from benchmarks import w1_map

    sys.exit(w1_map.main())
