"""The command line and ``bench`` flow that every workload module shares.

A workload module (``w1_map``, ``w3_parquet``, ...) knows three things: how to
make its input, how each implementation does the work once, and how to compare
two outputs. It describes them in a :class:`Workload`; everything around them is
the same for every workload and lives here, so that a fix to the flow (say, to
how the data folder is cleaned up) reaches all of them at once:

- the ``make``, ``run``, ``verify`` and ``bench`` subcommands, with the same
  options and defaults everywhere, plus whatever a workload adds;
- ``run``: one implementation once, in this process, deleting its output;
- ``verify``: the baseline and each implementation in fresh ``run``
  processes, outputs kept just long enough to be compared;
- ``bench``: a free-space check, a fresh data folder, the harness over every
  implementation, the report, and the folder deleted whatever happens (failure,
  Ctrl-C, ``kill``).

A workload module ends with::

    if __name__ == "__main__":
        from benchmarks import w1_map

        sys.exit(w1_map.WORKLOAD.main())

It re-enters through the importable module rather than ``__main__``: the
implementations' functions then pickle by reference as
``benchmarks.w1_map.<name>`` (what loky workers and chunkline expect) instead
of by value from ``__main__``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from benchmarks.harness import MB, Implementation, format_report, machine_details, run_benchmark

#: ``python -m benchmarks...`` needs the repository root on sys.path (it is
#: the working directory of every run), and chunkline's ``pipeline`` package
#: lives there too.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Free space ``bench`` asks for beyond what the workload says it needs.
DISK_SLACK = 100 * MB

#: What an implementation is called with: ``(in_path, out_path, *, n_jobs=...,
#: <chunk keyword>=...)``. The chunk keyword is the workload's own
#: (:attr:`ChunkOption.keyword`); modules type their implementations with
#: :class:`BytesRunner` or :class:`RowsRunner`.
Runner = Callable[..., None]
#: Value of a chunk option: as written (``"32MB"``) or parsed (a row count).
ChunkValue = str | int


class BytesRunner(Protocol):
    """An implementation of a workload chunked in bytes (``--chunk-bytes``).

    It reads ``in_path`` and writes ``out_path`` (a file, or a folder).
    """

    def __call__(
        self, in_path: Path, out_path: Path, /, *, chunk_bytes: str | None, n_jobs: int
    ) -> None: ...


class RowsRunner(Protocol):
    """An implementation of a workload chunked in rows (``--chunk-rows``), as BytesRunner."""

    def __call__(
        self, in_path: Path, out_path: Path, /, *, chunk_rows: int | None, n_jobs: int
    ) -> None: ...


class MakeInput(Protocol):
    """Writes the input into ``out_dir`` (created if needed) and returns its path.

    It also receives the workload's :attr:`Workload.make_options`, as keywords.
    """

    def __call__(self, out_dir: Path, rows: int, *, seed: int) -> Path: ...


def positive_int(text: str) -> int:
    """argparse type for counts: a clear error up front rather than a traceback later."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def check_chunkline() -> None:
    """Exit with a clear message if chunkline's packages cannot be imported.

    Called by the chunkline implementations before they import from
    ``pipeline`` and ``stages``, which live in the repository root.
    """
    try:
        import pipeline  # noqa: F401
        import stages  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"chunkline is not importable ({exc}); `import pipeline, stages` must work from "
            f"{REPO_ROOT}."
        ) from exc


def sync_to_disk(path: Path) -> None:
    """fsync a freshly made input, so that the kernel is not still writing it
    back to disk while the first implementations are being timed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dest(flag: str) -> str:
    """argparse's dest of an option: ``--chunk-rows`` -> ``chunk_rows``."""
    return flag.removeprefix("--").replace("-", "_")


@dataclass(frozen=True, kw_only=True)
class ChunkOption:
    """A workload's chunk-size option (``--chunk-bytes``, ``--chunk-rows``).

    Workloads measure chunks differently (bytes of an array, rows of a table),
    so the flag is theirs. Its value, None when not given, reaches every
    implementation as :attr:`keyword` and is passed on to ``run`` processes
    as ``str(value)``.
    """

    flag: str
    type: Callable[[str], ChunkValue]
    help: str

    @property
    def keyword(self) -> str:
        """``--chunk-bytes`` -> ``chunk_bytes``: argparse's dest and the runners' keyword."""
        return _dest(self.flag)


@dataclass(frozen=True, kw_only=True)
class MakeOption:
    """An option of ``make`` and ``bench`` that shapes the input (``--train-rows``).

    Its value reaches :attr:`Workload.make_input` as :attr:`keyword`.
    """

    flag: str
    type: Callable[[str], Any]
    default: Any
    help: str

    @property
    def keyword(self) -> str:
        """``--train-rows`` -> ``train_rows``: argparse's dest and make_input's keyword."""
        return _dest(self.flag)


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What a workload module tells the shared command line about itself.

    Attributes
    ----------
    module : str
        Importable name (``benchmarks.w1_map``): ``run`` processes are
        ``python -m MODULE run ...``.
    description : str
        First line of ``--help``.
    key, title, task : str
        ``w1``, ``W1 map``, ``.npy -> .npy``: the data folder is
        ``chunkline-KEY-*``, the report is titled ``TITLE: <input>, TASK``.
    implementations : mapping of str to Runner
        Name -> function, in the order they run within a round.
    baseline : str
        The implementation the others are compared and timed against.
    input_name : str
        File the input is written to inside the data folder; implementations
        are given its path.
    other_inputs : tuple of str
        Other files ``make`` writes beside it (a model, a target), which
        implementations find next to the input; ``run`` checks them too.
    output_name : str
        What ``run --impl NAME`` writes inside the data folder, with
        ``{name}`` for NAME; a trailing ``/`` means a folder (a dataset),
        which must not exist before the run, lest old part files mix in.
    make_input : MakeInput
        Writes the input (and the other inputs).
    make_options : tuple of MakeOption
        Options of ``make`` and ``bench`` passed on to ``make_input``.
    describe_input : callable
        ``rows -> "16,000,000 x 8 float64 (1024 MB)"``, for ``bench``.
    describe_made : callable
        ``(path, rows) -> "wrote PATH (N MB)"``, what ``make`` prints.
    disk_needed : callable
        ``(rows, check) -> bytes`` the data folder may hold at once: the input
        plus one output (two with ``--check``, which keeps the baseline's).
    compare_outputs : callable
        ``(actual, expected) -> None`` if they agree, else what differs first.
    compared : str
        How outputs are compared, for the report.
    chunk_option : ChunkOption
        The chunk-size option of ``run``, ``verify`` and ``bench``.
    n_jobs_help : str
        Help of ``--n-jobs``: which implementations it affects.
    rows_default : int
        Default of ``bench --rows``, the full size.
    rows_help : str
        Help of ``bench --rows``.
    notes : callable
        ``(args, input path) -> lines`` under the report's table: how the
        implementations were configured.
    add_commands : callable, optional
        Adds the workload's own subcommands (listed before ``bench``); each
        sets ``func`` (``Namespace -> exit code``) as the shared ones do.
    """

    module: str
    description: str
    key: str
    title: str
    task: str
    implementations: Mapping[str, Runner]
    baseline: str
    input_name: str
    output_name: str
    make_input: MakeInput
    describe_input: Callable[[int], str]
    describe_made: Callable[[Path, int], str]
    disk_needed: Callable[[int, bool], int]
    compare_outputs: Callable[[Path, Path], str | None]
    compared: str
    chunk_option: ChunkOption
    n_jobs_help: str
    rows_default: int
    rows_help: str
    notes: Callable[[argparse.Namespace, Path], list[str]]
    add_commands: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None = (
        None
    )
    other_inputs: tuple[str, ...] = ()
    make_options: tuple[MakeOption, ...] = ()

    # ----------------------------------------------------------------------
    # Running and comparing implementations
    # ----------------------------------------------------------------------

    def output_path(self, data: Path, name: str) -> Path:
        """Where implementation ``name`` writes inside the data folder."""
        return data / self.output_name.format(name=name)

    def run_argv(
        self, name: str, data: Path, chunk: ChunkValue | None, n_jobs: int, *, keep: bool = False
    ) -> list[str]:
        """Command line that runs one implementation once in a fresh process."""
        argv = [sys.executable, "-m", self.module, "run", "--impl", name]
        argv += ["--data", str(data), "--n-jobs", str(n_jobs)]
        if chunk is not None:
            argv += [self.chunk_option.flag, str(chunk)]
        if keep:
            argv.append("--keep")
        return argv

    def _run_kept(self, name: str, data: Path, chunk: ChunkValue | None, n_jobs: int) -> str | None:
        """Run one implementation in a fresh process, keeping its output.

        Returns None on success, else the last line of its stderr.
        """
        proc = subprocess.run(
            self.run_argv(name, data, chunk, n_jobs, keep=True),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            return None
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"run failed (exit {proc.returncode}): {last}"

    def verify(
        self, data: Path, names: Sequence[str], *, chunk: ChunkValue | None, n_jobs: int
    ) -> dict[str, str]:
        """Run the baseline and each implementation, then compare their outputs.

        Each implementation runs in its own process, as in the benchmark, and
        keeps its output just long enough to be compared.

        Returns
        -------
        dict
            Implementation name -> ``"ok"`` or what went wrong.
        """
        expected = self.output_path(data, self.baseline)
        try:
            failure = self._run_kept(self.baseline, data, chunk, n_jobs)
            if failure:
                return {self.baseline: failure}
            outcome: dict[str, str] = {}
            for name in names:
                if name == self.baseline:
                    continue
                actual = self.output_path(data, name)
                try:
                    failure = self._run_kept(name, data, chunk, n_jobs)
                    outcome[name] = failure or self.compare_outputs(actual, expected) or "ok"
                finally:
                    _remove(actual)
            return outcome
        finally:
            _remove(expected)

    # ----------------------------------------------------------------------
    # Subcommands
    # ----------------------------------------------------------------------

    def _make(self, args: argparse.Namespace, out_dir: Path) -> Path:
        """Write the input into ``out_dir`` with the options of ``make``/``bench``."""
        options = {o.keyword: getattr(args, o.keyword) for o in self.make_options}
        return self.make_input(out_dir, args.rows, seed=args.seed, **options)

    def _cmd_make(self, args: argparse.Namespace) -> int:
        path = self._make(args, args.out)
        print(self.describe_made(path, args.rows))
        return 0

    def _cmd_run(self, args: argparse.Namespace) -> int:
        in_path = args.data / self.input_name
        out = self.output_path(args.data, args.impl)
        for name in (self.input_name, *self.other_inputs):
            if not (args.data / name).exists():
                print(
                    f"error: {args.data / name} does not exist; create it with "
                    f"`make --out {args.data}`.",
                    file=sys.stderr,
                )
                return 2
        if self.output_name.endswith("/") and out.exists():
            print(f"error: {out} exists; delete it first.", file=sys.stderr)
            return 2
        chunk = {self.chunk_option.keyword: getattr(args, self.chunk_option.keyword)}
        try:
            self.implementations[args.impl](in_path, out, n_jobs=args.n_jobs, **chunk)
        finally:
            if not args.keep:
                _remove(out)
        return 0

    def _cmd_verify(self, args: argparse.Namespace) -> int:
        names = args.impl or list(self.implementations)
        chunk = getattr(args, self.chunk_option.keyword)
        outcome = self.verify(args.data, names, chunk=chunk, n_jobs=args.n_jobs)
        # At least 14 wide, as the first workloads printed it.
        width = max(14, 1 + max(map(len, self.implementations)))
        for name, what in outcome.items():
            print(f"{name:<{width}} {what}")
        return 0 if all(what == "ok" for what in outcome.values()) else 1

    def _cmd_bench(self, args: argparse.Namespace) -> int:
        names = args.impl or list(self.implementations)
        if self.baseline not in names:
            names = [self.baseline, *names]
        chunk = getattr(args, self.chunk_option.keyword)
        needed = self.disk_needed(args.rows, args.check) + DISK_SLACK
        free = shutil.disk_usage(args.tmp_dir).free
        if free < needed:
            print(
                f"error: {args.tmp_dir} has {free / MB:.0f} MB free; "
                f"the benchmark needs {needed / MB:.0f} MB.",
                file=sys.stderr,
            )
            return 2

        # Only here: `run` may fork Pool workers, which must keep the default
        # SIGTERM behaviour that Pool.terminate() relies on.
        signal.signal(signal.SIGTERM, _raise_on_sigterm)
        # Taken before anything runs: its load average is the machine's own.
        machine = machine_details()
        data = Path(tempfile.mkdtemp(prefix=f"chunkline-{self.key}-", dir=args.tmp_dir))
        try:
            described = self.describe_input(args.rows)
            print(f"making {described} in {data}", file=sys.stderr)
            in_path = self._make(args, data)
            notes = self.notes(args, in_path)
            if args.check:
                outcome = self.verify(data, names, chunk=chunk, n_jobs=args.n_jobs)
                notes += ["", f"Outputs compared with {self.baseline}'s ({self.compared}):"]
                notes += [f"- {name}: {what}" for name, what in outcome.items()]
            impls = [
                Implementation(
                    name, tuple(self.run_argv(name, data, chunk, args.n_jobs)), cwd=REPO_ROOT
                )
                for name in names
            ]
            results = run_benchmark(impls, repeat=args.repeat, timeout=args.timeout)
            report = format_report(
                results,
                baseline=self.baseline,
                machine=machine,
                title=f"{self.title}: {described}, {self.task}",
                notes=notes,
            )
            print(report)
            if args.out:
                args.out.write_text(report)
            return 0 if all(r.ok for r in results) else 1
        finally:
            shutil.rmtree(data, ignore_errors=True)

    # ----------------------------------------------------------------------
    # Command line
    # ----------------------------------------------------------------------

    def _add_make_options(self, p: argparse.ArgumentParser) -> None:
        """The workload's own options of ``make`` and ``bench``."""
        for option in self.make_options:
            p.add_argument(option.flag, type=option.type, default=option.default, help=option.help)

    def _add_run_options(self, p: argparse.ArgumentParser) -> None:
        """Options of ``run`` that ``verify`` and ``bench`` pass on to it."""
        option = self.chunk_option
        p.add_argument(option.flag, type=option.type, help=option.help)
        p.add_argument("--n-jobs", type=positive_int, default=2, help=self.n_jobs_help)

    def build_parser(self) -> argparse.ArgumentParser:
        """The command-line parser (one subcommand per action)."""
        parser = argparse.ArgumentParser(
            prog=f"python -m {self.module}", description=self.description
        )
        sub = parser.add_subparsers(dest="command", required=True)
        impls = list(self.implementations)
        data_help = f"directory holding {self.input_name}"

        p = sub.add_parser("make", help=f"create DIR/{self.input_name}")
        p.add_argument("--rows", type=positive_int, required=True)
        p.add_argument(
            "--out", type=Path, required=True, help=f"directory to write {self.input_name} into"
        )
        p.add_argument("--seed", type=int, default=0)
        self._add_make_options(p)
        p.set_defaults(func=self._cmd_make)

        output = self.output_name.format(name="NAME")
        p = sub.add_parser(
            "run", help=f"run one implementation once (writes, then deletes, DIR/{output})"
        )
        p.add_argument("--impl", required=True, choices=impls)
        p.add_argument("--data", type=Path, required=True, help=data_help)
        p.add_argument("--keep", action="store_true", help="keep the output (for verify)")
        self._add_run_options(p)
        p.set_defaults(func=self._cmd_run)

        p = sub.add_parser(
            "verify", help=f"compare implementations' outputs with {self.baseline}'s"
        )
        p.add_argument("--data", type=Path, required=True, help=data_help)
        p.add_argument("--impl", action="append", choices=impls, help="repeatable; default all")
        self._add_run_options(p)
        p.set_defaults(func=self._cmd_verify)

        if self.add_commands is not None:
            self.add_commands(sub)

        p = sub.add_parser(
            "bench", help="make data in a temporary folder, time every implementation, delete it"
        )
        p.add_argument("--rows", type=positive_int, default=self.rows_default, help=self.rows_help)
        p.add_argument(
            "--repeat", type=positive_int, default=3, help="interleaved rounds (default 3)"
        )
        p.add_argument("--impl", action="append", choices=impls, help="repeatable; default all")
        p.add_argument(
            "--check",
            action="store_true",
            help=f"first verify every output against {self.baseline}'s",
        )
        p.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            help="seconds before a run is killed (default 600)",
        )
        p.add_argument(
            "--tmp-dir",
            type=Path,
            default=Path("/tmp"),
            help="parent of the data folder (default /tmp)",
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", type=Path, help="also write the markdown report to this file")
        self._add_make_options(p)
        self._add_run_options(p)
        p.set_defaults(func=self._cmd_bench)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Entry point of ``python -m MODULE``."""
        args = self.build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        try:
            return func(args)
        except KeyboardInterrupt:
            # The `finally` blocks have already deleted outputs and data.
            print("interrupted", file=sys.stderr)
            return 130


def _remove(path: Path) -> None:
    """Delete an output, a file or a dataset folder, if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    # Turn `kill PID` into an exception so that `finally` blocks delete the
    # data folder, as Ctrl-C (KeyboardInterrupt) already does.
    raise SystemExit(128 + signum)
