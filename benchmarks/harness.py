"""Run competing implementations in fresh processes and compare them.

Each implementation is a command line. :func:`run_benchmark` runs every command
``repeat`` times, interleaved round-robin (A B C A B C ...), so that drift on a
shared machine hits every implementation alike; the only figures worth
comparing are ratios measured in the same call. Every run is a fresh process,
timed from spawn to exit, while a sampler thread follows the memory of the
whole process tree (the process and all its descendants: loky, multiprocessing
or dask workers).

Memory is reported three ways, because they disagree on memmap workloads:

- peak RSS: sum of ``VmRSS`` over the tree. It counts the pages of
  memory-mapped files, which the kernel can drop at will, so it overstates the
  cost of memmap workloads several times over.
- peak anonymous memory: sum of ``RssAnon`` over the tree (heap, temporaries,
  pickled copies). This is what a workload really costs.
- growth of ``/dev/shm``: joblib's auto-memmapping and POSIX shared memory
  live there. Those pages are not anonymous yet cannot be dropped either.

Examples
--------
From Python:

>>> import sys
>>> impls = [
...     Implementation("sleep", (sys.executable, "-c", "import time; time.sleep(0.1)")),
...     Implementation("noop", (sys.executable, "-c", "pass")),
... ]
>>> results = run_benchmark(impls, repeat=1)  # doctest: +SKIP
>>> print(format_report(results, baseline="noop"))  # doctest: +SKIP

From the shell::

    python -m benchmarks.harness --baseline noop --repeat 3 \\
        --impl "noop=python3 -c pass" \\
        --impl "sleep=python3 -c 'import time; time.sleep(0.1)'"
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "Implementation",
    "RunResult",
    "machine_details",
    "format_report",
    "run_benchmark",
    "run_once",
]

#: Bytes per megabyte in every figure the harness prints: decimal, as in
#: dask's "32MB" (32 * 10**6 bytes), so chunk sizes and memory read alike.
MB = 1_000_000

_SHM = "/dev/shm"


@dataclass(frozen=True)
class Implementation:
    """One competitor: a name and the command line that runs it once.

    Parameters
    ----------
    name : str
        Label in the report; must be unique within a benchmark.
    argv : sequence of str
        Command to execute, e.g.
        ``(sys.executable, "-m", "benchmarks.w1_map", "run", "--impl", "numpy")``.
    cwd : str or Path, optional
        Working directory of the process (``python -m`` puts it on
        ``sys.path``). Defaults to the harness's own working directory.
    env : mapping of str to str, optional
        Variables added to (not replacing) the harness's environment.
    """

    name: str
    argv: tuple[str, ...]
    cwd: str | Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Implementation.name must be a non-empty string; got ''.")
        if not self.argv:
            raise ValueError(f"Implementation {self.name!r}: argv must not be empty.")
        # Accept any sequence (a list from argparse, say) but store a tuple of
        # str, so an Implementation cannot change after it is made.
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What one run of one implementation measured.

    Attributes
    ----------
    name : str
        The implementation's name.
    round : int
        Index of the round-robin round (0-based).
    returncode : int or None
        Exit status; negative for a signal; ``None`` if the run was skipped.
    wall_s : float
        Wall time from spawn to exit of the root process, in seconds.
    user_s, sys_s : float
        CPU time of the root and every descendant it reaped (workers).
    peak_rss : int
        Highest sum of ``VmRSS`` over the process tree at one sample, bytes.
    peak_anon : int
        Highest sum of ``RssAnon`` over the process tree at one sample, bytes.
    shm_growth : int
        Highest growth of ``/dev/shm`` usage over its value at spawn, bytes.
    max_procs : int
        Most processes seen alive in the tree at one sample.
    samples : int
        How many memory samples were taken.
    timed_out : bool
        Whether the run was killed for exceeding the timeout (a failure,
        whatever its exit status).
    stderr_tail : str
        Last lines of stderr (and stdout) when the run failed.
    note : str
        Anything odd: timeout, processes left behind, skipped.
    """

    name: str
    round: int
    returncode: int | None
    wall_s: float = float("nan")
    user_s: float = float("nan")
    sys_s: float = float("nan")
    peak_rss: int = 0
    peak_anon: int = 0
    shm_growth: int = 0
    max_procs: int = 0
    samples: int = 0
    timed_out: bool = False
    stderr_tail: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run completed with exit status 0 (and in time)."""
        return self.returncode == 0 and not self.timed_out


# --------------------------------------------------------------------------
# Memory sampling
# --------------------------------------------------------------------------


def _read_status(pid: int) -> tuple[int, int] | None:
    """Return ``(VmRSS, RssAnon)`` of a process in bytes, or None if it is gone.

    psutil exposes RSS but not RssAnon (``memory_full_info`` parses smaps,
    which is slow and reports USS, a different quantity), so read the
    kernel's own summary, which costs a few microseconds.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:  # exited between discovery and now
        return None
    rss = anon = 0
    for line in text.splitlines():
        if line.startswith(b"VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith(b"RssAnon:"):
            anon = int(line.split()[1]) * 1024
    return rss, anon


def _shm_used() -> int:
    """Bytes in use on /dev/shm (0 where it does not exist)."""
    try:
        st = os.statvfs(_SHM)
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _scan_processes() -> list[tuple[int, int, int]]:
    """``(pid, ppid, session id)`` of every process on the machine.

    Read from ``/proc/PID/stat`` directly: psutil's ``children(recursive=True)``
    does the same scan but costs twice as much and knows no session ids.
    """
    table = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited during the scan
            continue
        # The command name may contain spaces and parentheses: split after
        # the last ')'; then come state, ppid, pgrp, session.
        fields = stat[stat.rindex(b")") + 2 :].split()
        table.append((int(entry), int(fields[1]), int(fields[3])))
    return table


class _TreeSampler(threading.Thread):
    """Follow the memory of a process tree until told to stop.

    The tree is every process in the root's session (the root is started
    with ``start_new_session``, and its descendants inherit the session even
    when their parent exits and they are re-parented to init), plus any
    descendant, by parent links, that started a session of its own. Every
    process ever seen is remembered, so that processes outliving the root
    can be counted and cleaned up.

    Discovery scans every process on the machine, about 1 ms here; doing it
    only every ``discover_every`` samples keeps the sampler from stealing a
    noticeable share of a 2-core machine, at the price of missing the first
    ~100 ms of a process's life (or all of a process shorter than that).
    """

    def __init__(self, pid: int, interval: float, discover_every: int) -> None:
        super().__init__(name=f"tree-sampler-{pid}", daemon=True)
        self.root_pid = pid
        self.interval = interval
        self.discover_every = max(1, discover_every)
        self.known: dict[int, psutil.Process] = {pid: psutil.Process(pid)}
        # Pids whose process has been seen gone; never sampled again, so a
        # recycled pid cannot add a stranger's memory.
        self.gone: set[int] = set()
        self.peak_rss = 0
        self.peak_anon = 0
        self.max_procs = 0
        self.samples = 0
        self.shm_start = _shm_used()
        self.shm_peak = self.shm_start
        self._stop_event = threading.Event()
        # The main thread also calls discover() and alive() (after a timeout,
        # at exit), while this thread samples.
        self._lock = threading.Lock()

    def discover(self) -> None:
        """Add the processes of the root's session and their descendants."""
        table = _scan_processes()
        children: dict[int, list[int]] = {}
        for pid, ppid, _ in table:
            children.setdefault(ppid, []).append(pid)
        with self._lock:
            members = set(self.known) - self.gone
        members.update(pid for pid, _, sid in table if sid == self.root_pid)
        stack = list(members)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in members:
                    members.add(child)
                    stack.append(child)
        new = {}
        for pid in members - self.known.keys():
            with contextlib.suppress(psutil.Error):
                new[pid] = psutil.Process(pid)
        with self._lock:
            for pid, proc in new.items():
                self.known.setdefault(pid, proc)

    def alive(self) -> list[psutil.Process]:
        """Known processes still running (psutil guards against PID reuse)."""
        with self._lock:
            known = list(self.known.values())
        procs = []
        for proc in known:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    procs.append(proc)
        return procs

    def sample(self) -> None:
        """Take one sample of the tree's memory and of /dev/shm."""
        rss = anon = procs = 0
        with self._lock:
            pids = list(self.known.keys() - self.gone)
        for pid in pids:
            status = _read_status(pid)
            if status is None:
                with self._lock:
                    self.gone.add(pid)
                continue
            rss += status[0]
            anon += status[1]
            procs += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_anon = max(self.peak_anon, anon)
        self.max_procs = max(self.max_procs, procs)
        self.shm_peak = max(self.shm_peak, _shm_used())
        self.samples += 1

    def run(self) -> None:
        tick = 0
        while not self._stop_event.is_set():
            if tick % self.discover_every == 0:
                self.discover()
            self.sample()
            tick += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread to finish."""
        self._stop_event.set()
        self.join()


def _kill_tree(proc: subprocess.Popen[bytes], sampler: _TreeSampler) -> None:
    """SIGKILL the root and every live process of its tree, then reap them.

    All of them were started by this run. The root is killed and reaped
    through ``Popen``, which must stay the one to wait for it (else its exit
    status is lost).
    """
    sampler.discover()
    proc.kill()
    others = [p for p in sampler.alive() if p.pid != proc.pid]
    for other in others:
        with contextlib.suppress(psutil.Error):
            other.kill()
    proc.wait()
    psutil.wait_procs(others, timeout=5)


def _tail(path: Path, lines: int) -> str:
    """Last ``lines`` lines of a text file, decoded leniently."""
    text = path.read_bytes()[-64_000:].decode("utf-8", errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def run_once(
    impl: Implementation,
    *,
    round: int = 0,
    interval: float = 0.02,
    discover_every: int = 5,
    timeout: float | None = None,
    grace: float = 10.0,
    tail_lines: int = 15,
) -> RunResult:
    """Run one implementation once in a fresh process and measure it.

    Parameters
    ----------
    impl : Implementation
        What to run.
    round : int, default 0
        Round number, recorded in the result.
    interval : float, default 0.02
        Seconds between memory samples.
    discover_every : int, default 5
        Look for new descendants every this many samples.
    timeout : float, optional
        Kill the tree and report a failure after this many seconds.
    grace : float, default 10.0
        After the root exits, how long its descendants may take to exit
        before they are killed and the run is flagged.
    tail_lines : int, default 15
        Lines of output kept for a failed run.

    Returns
    -------
    RunResult
        Measurements; ``ok`` is False for a nonzero exit or a timeout.
    """
    env = {**os.environ, **impl.env}
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        # Output goes to files, not pipes: a chatty child can never block on
        # a full pipe, and the harness does no reading while timing.
        out_path = Path(tmp) / "output"
        with out_path.open("wb") as out_file:
            # RUSAGE_CHILDREN accumulates every reaped descendant of this
            # harness; runs are sequential, so the delta is this run's tree.
            usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.Popen(
                impl.argv,
                cwd=impl.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C at the terminal reaches the harness
                # only, which then kills the run's tree itself (below).
                start_new_session=True,
            )
            sampler = _TreeSampler(proc.pid, interval, discover_every)
            sampler.start()
            notes: list[str] = []
            timed_out = False
            try:
                try:
                    returncode: int = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_tree(proc, sampler)
                    returncode = proc.returncode
                    timed_out = True
                    notes.append(f"timed out after {timeout:g} s")
                wall = time.perf_counter() - start
                # Descendants may outlive the root briefly (loky workers
                # noticing their parent is gone). Keep sampling them, then
                # kill whatever is left so no run leaks into the next one.
                sampler.discover()
                deadline = time.monotonic() + grace
                while (left := sampler.alive()) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if left:
                    for leftover in left:
                        with contextlib.suppress(psutil.Error):
                            leftover.kill()
                    psutil.wait_procs(left, timeout=5)
                    notes.append(f"killed {len(left)} process(es) left running")
            except BaseException:
                # Ctrl-C or a harness bug: never leave the run's tree behind.
                _kill_tree(proc, sampler)
                raise
            finally:
                sampler.stop()
            usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        tail = _tail(out_path, tail_lines) if returncode != 0 or notes else ""

    return RunResult(
        name=impl.name,
        round=round,
        returncode=returncode,
        wall_s=wall,
        user_s=usage_after.ru_utime - usage_before.ru_utime,
        sys_s=usage_after.ru_stime - usage_before.ru_stime,
        peak_rss=sampler.peak_rss,
        peak_anon=sampler.peak_anon,
        shm_growth=sampler.shm_peak - sampler.shm_start,
        max_procs=sampler.max_procs,
        samples=sampler.samples,
        timed_out=timed_out,
        stderr_tail=tail,
        note="; ".join(notes),
    )


def run_benchmark(
    impls: Sequence[Implementation],
    *,
    repeat: int = 3,
    timeout: float | None = None,
    interval: float = 0.02,
    skip_after_failure: bool = True,
    progress: bool = True,
) -> list[RunResult]:
    """Run every implementation ``repeat`` times, interleaved round-robin.

    Parameters
    ----------
    impls : sequence of Implementation
        Competitors, in the order they run within a round.
    repeat : int, default 3
        Number of rounds.
    skip_after_failure : bool, default True
        Once an implementation fails, skip its later runs (recorded with
        ``returncode=None``) rather than pay for the same failure again.
    progress : bool, default True
        Print one line per run to stderr.
    timeout : float, optional
        Seconds before a run is killed and reported as failed.
    interval : float, default 0.02
        Seconds between memory samples.

    Returns
    -------
    list of RunResult
        One per (round, implementation), in execution order.
    """
    names = [impl.name for impl in impls]
    if len(set(names)) != len(names):
        raise ValueError(f"implementation names must be unique; got {names}.")
    if repeat < 1:
        raise ValueError(f"repeat must be a positive integer; got {repeat}.")
    results: list[RunResult] = []
    failed: set[str] = set()
    for rnd in range(repeat):
        for impl in impls:
            if skip_after_failure and impl.name in failed:
                result = RunResult(name=impl.name, round=rnd, returncode=None, note="skipped")
            else:
                result = run_once(impl, round=rnd, timeout=timeout, interval=interval)
                if not result.ok:
                    failed.add(impl.name)
            results.append(result)
            if progress:
                print(_progress_line(result, rnd, repeat), file=sys.stderr, flush=True)
    return results


def _progress_line(result: RunResult, rnd: int, repeat: int) -> str:
    """One human line about a finished run."""
    head = f"[{rnd + 1}/{repeat}] {result.name:<14}"
    if result.returncode is None:
        return f"{head} skipped (failed earlier)"
    if not result.ok:
        return f"{head} FAILED (exit {result.returncode}) {result.note}".rstrip()
    return (
        f"{head} {result.wall_s:7.2f} s  anon {result.peak_anon / MB:7.0f} MB  "
        f"rss {result.peak_rss / MB:7.0f} MB  shm +{result.shm_growth / MB:.0f} MB"
        + (f"  ({result.note})" if result.note else "")
    )


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def _cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or the platform's best guess."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    """Installed version of a distribution, without importing it."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _load_line(when: str) -> str:
    """Load average as text; above nproc means the runs competed for CPU."""
    return (
        "Load average (1, 5, 15 min) "
        + when
        + ": "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )


def machine_details() -> str:
    """One line describing the machine and the software versions.

    Versions are read from the harness's interpreter's metadata; they are the
    ones the implementations use when they run ``sys.executable``.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        f"{_cpu_model()}, nproc {usable or os.cpu_count()}, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"numpy {_version('numpy')}, joblib {_version('joblib')}, "
        f"load average {load}, {now}"
    )


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def format_report(
    results: Sequence[RunResult],
    *,
    baseline: str,
    title: str = "",
    machine: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Summarize runs as a markdown report: machine line, table, failures.

    Wall and CPU times are medians over the successful runs; memory columns
    are the worst (highest) peak over them, since the worst case is what
    runs out of memory.

    Parameters
    ----------
    results : sequence of RunResult
        Output of :func:`run_benchmark`.
    baseline : str
        Name of the implementation the ratio column divides by.
    title : str, optional
        Heading of the report.
    machine : str, optional
        Machine line; :func:`machine_details` now by default. Pass the one
        taken before the runs, so that its load average tells how busy the
        machine was when they started (the one at the end is added below).
    notes : sequence of str, optional
        Extra lines printed under the table.

    Returns
    -------
    str
        Markdown text ending with a newline.
    """
    order: list[str] = []
    by_name: dict[str, list[RunResult]] = {}
    for result in results:
        if result.name not in by_name:
            order.append(result.name)
        by_name.setdefault(result.name, []).append(result)
    if baseline not in by_name:
        raise ValueError(f"baseline {baseline!r} is not one of the implementations {order}.")

    def median_wall(name: str) -> float | None:
        ok = [r.wall_s for r in by_name[name] if r.ok]
        return statistics.median(ok) if ok else None

    base = median_wall(baseline)
    header = [
        "implementation",
        "runs ok",
        "median wall s",
        f"ratio to {baseline}",
        "min wall s",
        "max wall s",
        "user s",
        "sys s",
        "peak RSS MB",
        "peak anon MB",
        "/dev/shm growth MB",
        "max procs",
    ]
    rows = []
    for name in order:
        runs = by_name[name]
        ok = [r for r in runs if r.ok]
        attempted = [r for r in runs if r.returncode is not None]
        count = f"{len(ok)}/{len(runs)}" + (
            "" if len(attempted) == len(runs) else " (rest skipped)"
        )
        if not ok:
            rows.append([name, count, "FAILED"] + ["—"] * (len(header) - 3))
            continue
        walls = [r.wall_s for r in ok]
        med = statistics.median(walls)
        ratio = "—" if base is None else _fmt(med / base)
        rows.append(
            [
                name,
                count,
                _fmt(med),
                ratio,
                _fmt(min(walls)),
                _fmt(max(walls)),
                _fmt(statistics.median(r.user_s for r in ok)),
                _fmt(statistics.median(r.sys_s for r in ok)),
                _fmt(max(r.peak_rss for r in ok) / MB, 0),
                _fmt(max(r.peak_anon for r in ok) / MB, 0),
                _fmt(max(r.shm_growth for r in ok) / MB, 0),
                str(max(r.max_procs for r in ok)),
            ]
        )

    lines = []
    if title:
        lines += [f"## {title}", ""]
    lines += [f"Machine: {machine if machine is not None else machine_details()}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    rounds = max((r.round for r in results), default=0) + 1
    lines.append(
        f"{rounds} interleaved round(s), a fresh process per run; MB = 10^6 bytes; "
        "memory summed over the process tree; anon = RssAnon, the memory that counts "
        "(RSS includes memory-mapped file pages)."
    )
    lines.append(_load_line("at the end"))
    lines += list(notes)
    failures = [r for r in results if r.returncode is not None and (not r.ok or r.note)]
    if failures:
        lines += ["", "### Failures and warnings", ""]
        for r in failures:
            what = "ok" if r.ok else f"exit {r.returncode}"
            lines.append(
                f"- `{r.name}` round {r.round + 1}: {what}" + (f", {r.note}" if r.note else "")
            )
            if not r.ok and not r.stderr_tail:
                lines.append("  (it printed nothing)")
            if r.stderr_tail:
                lines += [
                    "",
                    "  ```",
                    *("  " + ln for ln in r.stderr_tail.splitlines()),
                    "  ```",
                    "",
                ]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _parse_impl(text: str) -> Implementation:
    """Parse ``NAME=COMMAND LINE`` (shell-quoted) into an Implementation."""
    name, sep, command = text.partition("=")
    if not sep or not name or not command.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND, got {text!r}")
    return Implementation(name.strip(), tuple(shlex.split(command)))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see ``python -m benchmarks.harness --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness",
        description="Time command lines in fresh processes, interleaved, with tree memory.",
    )
    parser.add_argument(
        "--impl",
        action="append",
        type=_parse_impl,
        required=True,
        metavar="NAME=COMMAND",
        help="an implementation (repeatable); the command is split like a shell would",
    )
    parser.add_argument(
        "--baseline", help="implementation for the ratio column (default: the first)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds before a run is killed"
    )
    parser.add_argument("--title", default="", help="heading of the report")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)

    baseline = args.baseline or args.impl[0].name
    machine = machine_details()
    results = run_benchmark(args.impl, repeat=args.repeat, timeout=args.timeout)
    report = format_report(results, baseline=baseline, title=args.title, machine=machine)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
