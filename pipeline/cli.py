"""The ``chunkline`` command: run, validate or explain a spec file.

Exit codes: 0 success, 1 the run failed (bad input data, a stage error, an
output that could not be written), 2 a usage or spec error (nothing ran, but
for checks that need the fitted model, such as output names only it can count),
130 interrupted with Ctrl-C, 143 stopped with SIGTERM and 129 with SIGHUP (as
a scheduler or a closed terminal stops a job). When interrupted, the workspace
is removed and outputs are left untouched; further signals are ignored until
that is done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import __version__
from .chunking import counted
from .errors import ChunklineError, SpecError, StageError
from .pipeline import Pipeline, load_spec
from .signals import STOP_SIGNALS
from .sinks import atomic_write_json, to_jsonable
from .stage import BACKENDS

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _n_jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or -1, got {text!r}") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or -1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chunkline",
        description="Run declarative chunked array pipelines in parallel.",
        epilog="Exit codes: 0 success, 1 run failed, 2 usage or spec error, 130 interrupted "
        "(Ctrl-C), 143 stopped (SIGTERM), 129 hung up (SIGHUP).",
    )
    parser.add_argument("--version", action="version", version=f"chunkline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def scheduler(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            help="run on the dask.distributed cluster of this scheduler (implies --backend "
            "dask); default: $DASK_SCHEDULER_ADDRESS when the backend is dask",
        )

    def overrides(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("spec", type=Path, help="pipeline spec file (.yaml, .yml or .toml)")
        sub.add_argument(
            "--n-jobs",
            type=_n_jobs,
            metavar="N",
            help="workers (-1: all cores); overrides the spec",
        )
        sub.add_argument("--backend", choices=BACKENDS, help="joblib backend; overrides the spec")
        scheduler(sub)
        sub.add_argument(
            "--chunk-rows",
            type=_positive_int,
            metavar="N",
            help="rows per chunk; overrides the spec",
        )

    run = commands.add_parser("run", help="run a pipeline", description="Run a pipeline spec.")
    overrides(run)
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    run.add_argument("--report", type=Path, metavar="PATH", help="write the run report as JSON")

    validate = commands.add_parser(
        "validate",
        help="check a spec, its input files and its stages without running it",
        description="Check the spec, the input files and every stage (on a few rows).",
    )
    validate.add_argument("spec", type=Path, help="pipeline spec file (.yaml, .yml or .toml)")
    scheduler(validate)

    explain = commands.add_parser(
        "explain",
        help="print the plan: passes, fused stages, chunks, files, memory",
        description="Print the compiled plan of a spec without running it.",
    )
    overrides(explain)
    return parser


def _load(args: argparse.Namespace) -> Pipeline:
    pipeline = load_spec(args.spec)
    chunk_rows = getattr(args, "chunk_rows", None)
    if chunk_rows is not None:
        pipeline = pipeline.with_settings(
            chunks={"rows": chunk_rows, "overlap": pipeline.chunks.overlap}
        )
    return pipeline


def _command(args: argparse.Namespace) -> int:
    pipeline = _load(args)
    backend = getattr(args, "backend", None) or ("dask" if args.scheduler else None)
    if args.scheduler and backend != "dask":
        raise SpecError.at("--scheduler", f"names a dask cluster, but --backend is {backend}")
    with _cluster(args.scheduler, _uses_dask(pipeline, backend)):
        return _on_backend(args, pipeline, backend)


def _uses_dask(pipeline: Pipeline, backend: str | None) -> bool:
    chosen = [backend or pipeline.backend, *(stage.backend for stage in pipeline.stages)]
    return "dask" in chosen


@contextlib.contextmanager
def _cluster(address: str | None, uses_dask: bool) -> Iterator[None]:
    """A dask Client for the command when the pipeline runs on dask and a scheduler is known.

    Without one, the run stops before any work with a message saying how to
    give one (see :data:`pipeline.parallel.NO_CLUSTER`).
    """
    if not uses_dask:
        yield
        return
    try:
        import dask
        import distributed
    except ImportError:
        raise SpecError.at(
            "backend", "dask needs dask.distributed: pip install 'chunkline[dask]'"
        ) from None
    address = address or dask.config.get("scheduler-address", None)
    if address is None:
        yield
        return
    try:
        client = distributed.Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        # Exit code 1, not 2: a scheduler down now may be up at the next try.
        raise ChunklineError(f"cannot reach the dask scheduler at {address}: {exc}") from None
    with client:
        yield


def _on_backend(args: argparse.Namespace, pipeline: Pipeline, backend: str | None) -> int:
    if args.command == "validate":
        plan = pipeline.plan(backend=backend)
        pipeline.sink.check_writable()  # as a run checks it first (mode: error, ...)
        print(
            f"ok: {args.spec} is valid ({counted(len(pipeline.stages), 'stage')}, "
            f"{counted(len(plan.passes), 'pass', 'passes')})"
        )
        print(plan.schemas())
        return EXIT_OK
    settings = {"n_jobs": args.n_jobs, "backend": backend}
    if args.command == "explain":
        print(pipeline.explain(**settings))
        return EXIT_OK
    result = pipeline.run(**settings, progress=False if args.quiet else None)
    try:
        if args.report is not None:
            atomic_write_json(args.report, {"status": "ok", **result.report.to_dict()})
        if not args.quiet:
            print(result.report.format())
            if result.reductions:
                print(json.dumps(to_jsonable(result.reductions), indent=2))
    except KeyboardInterrupt as exc:
        exc.committed = True  # type: ignore[attr-defined]  # the run is done
        raise
    return EXIT_OK


def _traceback_of(exc: ChunklineError) -> str:
    """The traceback worth showing under a failed run's message, or "".

    A stage's own error shows where it was raised, down to the user's code:
    a worker process's formatted traceback, or this process's exception
    formatted the same way. chunkline's checks of the data (``data_error``)
    and its other errors say everything in their message.
    """
    cause = exc.__cause__
    if cause is None or not isinstance(exc, StageError) or exc.data_error:
        return ""
    if isinstance(cause, BaseException) and cause.__traceback__ is not None:
        return "".join(traceback.format_exception(cause)).rstrip()
    return str(cause).rstrip()


class _Stopped(KeyboardInterrupt):
    """A stop signal, raised where the run is, so that it cleans up as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    # Cleaning up must finish: a second Ctrl-C would leave staged files behind.
    for each in STOP_SIGNALS:
        if signal.getsignal(each) is _stop:
            signal.signal(each, signal.SIG_IGN)
    raise _Stopped(signum)


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`_Stopped` (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal ignored already (nohup's SIGHUP, SIGINT for `cmd &`) stays ignored.
    previous = {
        each: signal.signal(each, _stop)
        for each in STOP_SIGNALS
        if signal.getsignal(each) is not signal.SIG_IGN
    }
    stopped = False
    try:
        yield
    except KeyboardInterrupt:
        stopped = True  # signals stay ignored: the command is ending anyway
        raise
    finally:
        if not stopped:
            for each, handler in previous.items():
                signal.signal(each, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chunkline`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        with _stop_signals_interrupt():
            return _command(args)
    except SpecError as exc:
        print(f"chunkline: spec error in {args.spec}:\n{exc}", file=sys.stderr)
        return _failed(args, "spec error", exc, EXIT_USAGE)
    except ChunklineError as exc:
        print(f"chunkline: {args.command} failed: {exc}", file=sys.stderr)
        details = _traceback_of(exc)
        if details:
            print(f"\ncaused by:\n{details}", file=sys.stderr)
        return _failed(args, "failed", exc, EXIT_FAILED)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        what = (
            "interrupted"
            if signum == signal.SIGINT
            else f"stopped by {signal.Signals(signum).name}"
        )
        # A stop held back while the outputs moved into place comes after them.
        committed = bool(getattr(exc, "committed", False))
        outputs = "all outputs written" if committed else "outputs left untouched"
        print(f"chunkline: {what}; {outputs}", file=sys.stderr)
        return _failed(args, what, None, 128 + signum, committed=committed)


def _failed(
    args: argparse.Namespace,
    status: str,
    exc: Exception | None,
    code: int,
    *,
    committed: bool = False,
) -> int:
    """Write ``--report`` for a run that did not succeed (a nightly job reports those too).

    ``committed``: stopped only once every output was in place.
    """
    path = getattr(args, "report", None)
    if path is not None:
        report: dict[str, object] = {"status": status, "exit_code": code, "committed": committed}
        if exc is not None:
            report["error"] = str(exc)
        if isinstance(exc, StageError):
            report.update(stage=exc.stage, chunk=exc.chunk)
        try:
            atomic_write_json(path, report)
        except OSError as error:
            print(f"chunkline: cannot write the report {path}: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
