"""The ``chunkline`` command, run as a real process in a temporary folder.

Exit codes: 0 success, 1 a run failed, 2 a usage or spec error, 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline.cli import main

N_ROWS = 200

SPEC = """\
name: tiny
source: {npy: data/x.npy, y: data/y.npy}
chunks: {rows: 25}
parallel: {n_jobs: 2}
workspace: ws
stages:
  - name: finite
    filter: finite_rows
  - name: clip
    map: clip
    params: {min: -1.0, max: 1.0}
  - name: stats
    reduce: moments
sink:
  npy: out/x.npy
  y: out/y.npy
  reductions: out/stats.json
"""

# Stage functions the specs import by name ("clistages:slow"), from PYTHONPATH.
STAGES_MODULE = """\
import time

import numpy as np


def slow(x):
    time.sleep(0.5)
    return x * 2.0


def fail_on_row_100(x):
    if np.any(x[:, 0] == 100.0):
        raise ValueError("row 100 is not allowed")
    return x
"""

# A tqdm bar looks like "pass 1:  40%|████      | 2/5 [00:00<00:00, ...]".
BAR_MARKERS = ("%|", "chunk/s", "s/chunk")


def make_x() -> np.ndarray:
    x = np.linspace(-3.0, 3.0, N_ROWS * 3).reshape(N_ROWS, 3)
    x[[3, 50, 51, 177], [0, 1, 2, 0]] = np.nan
    x[90, 2] = np.inf
    return x


def make_y() -> np.ndarray:
    return np.arange(N_ROWS, dtype=np.int64) % 3


def expected() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_x(), make_y()
    keep = np.isfinite(x).all(axis=1)
    return np.clip(x[keep], -1.0, 1.0), y[keep]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "x.npy", make_x())
    np.save(tmp_path / "data" / "y.npy", make_y())
    (tmp_path / "spec.yaml").write_text(SPEC)
    (tmp_path / "clistages.py").write_text(STAGES_MODULE)
    return tmp_path


def env_for(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), env.get("PYTHONPATH")) if p)
    env.pop("COLUMNS", None)
    return env


def chunkline(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline.cli ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env=env_for(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_spec(cwd: Path, name: str, text: str) -> str:
    (cwd / name).write_text(text)
    return name


def assert_no_bar(result: subprocess.CompletedProcess[str]) -> None:
    for marker in BAR_MARKERS:
        assert marker not in result.stdout + result.stderr, result.stderr


# ---------------------------------------------------------------- run


def test_run_writes_the_sink_and_prints_report_and_reductions(project: Path) -> None:
    result = chunkline(project, "run", "spec.yaml")
    assert result.returncode == 0, result.stderr
    x, y = expected()
    np.testing.assert_array_equal(np.load(project / "out" / "x.npy"), x)
    np.testing.assert_array_equal(np.load(project / "out" / "y.npy"), y)
    assert sorted(os.listdir(project / "out")) == ["stats.json", "x.npy", "y.npy"]
    assert list((project / "ws").iterdir()) == []
    # The report: the run, each pass and each stage.
    assert result.stdout.startswith("tiny: done in ")
    assert f"8 chunks, {N_ROWS} -> {len(x)} rows" in result.stdout
    for stage in ("finite", "clip", "stats"):
        assert stage in result.stdout
    # The reductions, as JSON, after the report; the same as in the JSON file.
    printed = json.loads(result.stdout[result.stdout.index("{") :])
    assert printed == json.loads((project / "out" / "stats.json").read_text())
    stats = printed["stats"]
    assert stats["count"] == len(x)
    np.testing.assert_allclose(stats["mean"], x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], x.std(axis=0), rtol=1e-12)
    assert stats["min"] == x.min(axis=0).tolist() and stats["max"] == x.max(axis=0).tolist()
    assert_no_bar(result)


def test_run_quiet_prints_nothing(project: Path) -> None:
    result = chunkline(project, "run", "spec.yaml", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""
    assert (project / "out" / "x.npy").exists()
    short = chunkline(project, "run", "spec.yaml", "-q")
    assert short.returncode == 0 and short.stdout == ""


def test_overrides_give_identical_outputs(project: Path) -> None:
    outputs = {}
    for args in ([], ["--n-jobs", "1"], ["--backend", "threading"], ["--chunk-rows", "7"]):
        result = chunkline(project, "run", "spec.yaml", "--quiet", "--report", "r.json", *args)
        assert result.returncode == 0, (args, result.stderr)
        report = json.loads((project / "r.json").read_text())
        outputs[" ".join(args)] = (
            (project / "out" / "x.npy").read_bytes(),
            (project / "out" / "y.npy").read_bytes(),
            json.loads((project / "out" / "stats.json").read_text()),
            report,
        )
    base_x, base_y, base_stats, base_report = outputs[""]
    for key, (x, y, stats, _) in outputs.items():
        assert x == base_x, f"x differs with {key!r}"
        assert y == base_y, f"y differs with {key!r}"
        for name in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(stats["stats"][name], base_stats["stats"][name], rtol=1e-13)
        assert stats["stats"]["count"] == base_stats["stats"]["count"]
    # The overrides did take effect.
    assert outputs["--n-jobs 1"][3]["passes"][0]["parallel"].startswith("1 worker ")
    assert "threading" in outputs["--backend threading"][3]["passes"][0]["parallel"]
    assert outputs["--chunk-rows 7"][3]["passes"][0]["chunks"] == -(-N_ROWS // 7)
    assert base_report["passes"][0]["chunks"] == 8
    # Reductions combine in chunk order: identical across n_jobs and backends.
    assert outputs["--n-jobs 1"][2] == base_stats
    assert outputs["--backend threading"][2] == base_stats


def test_report_file(project: Path) -> None:
    result = chunkline(project, "run", "spec.yaml", "--report", "reports/run.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((project / "reports" / "run.json").read_text())
    assert report["status"] == "ok" and report["name"] == "tiny"
    assert report["seconds"] > 0
    (only,) = report["passes"]
    assert only["chunks"] == 8 and only["rows_in"] == N_ROWS
    assert only["rows_out"] == len(expected()[0])
    assert [s["name"] for s in only["stages"]] == ["finite", "clip", "stats"]
    assert [s["kind"] for s in only["stages"]] == ["filter", "map", "reduce"]


def test_reductions_only_sink_in_a_new_folder(project: Path) -> None:
    # Like the .npy sink, whose folder is created, a reductions file may go to a
    # folder that does not exist yet.
    text = SPEC.replace(
        "  npy: out/x.npy\n  y: out/y.npy\n  reductions: out/stats.json\n",
        "  reductions: results/stats.json\n",
    )
    name = write_spec(project, "stats.yaml", text)
    result = chunkline(project, "run", name, "--quiet")
    assert result.returncode == 0, result.stderr
    stats = json.loads((project / "results" / "stats.json").read_text())
    assert stats["stats"]["count"] == len(expected()[0])


def test_run_through_the_installed_console_script(project: Path) -> None:
    exe = shutil.which("chunkline")
    assert exe is not None, "the chunkline console script is not on PATH"
    env = env_for(project)
    validate = subprocess.run(
        [exe, "validate", "spec.yaml"], cwd=project, env=env, capture_output=True, text=True
    )
    assert validate.returncode == 0, validate.stderr
    run = subprocess.run(
        [exe, "run", "spec.yaml", "--n-jobs", "1"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(np.load(project / "out" / "x.npy"), expected()[0])
    version = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"chunkline {pipeline.__version__}"


# ---------------------------------------------------------------- validate and explain


def test_validate_a_good_spec(project: Path) -> None:
    result = chunkline(project, "validate", "spec.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: spec.yaml is valid (3 stages, 1 pass)")
    assert not (project / "out").exists(), "validate must not write outputs"
    assert list((project / "ws").iterdir()) == []


def test_validate_counts_the_stages_and_passes_of_a_fit(project: Path) -> None:
    spec = (
        "source: {npy: data/x.npy}\nstages:\n"
        "  - name: scale\n    sklearn: sklearn.preprocessing.MaxAbsScaler\n"
        "  - name: stats\n    reduce: moments\n"
    )
    write_spec(project, "fit.yaml", spec)
    result = chunkline(project, "validate", "fit.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: fit.yaml is valid (2 stages, 2 passes)"), result.stdout


def test_validate_a_spec_error_exits_2_and_names_the_field(project: Path) -> None:
    name = write_spec(
        project,
        "bad.yaml",
        SPEC.replace("    map: clip\n", "    map: clip\n    n_jobs: four\n").replace(
            "reduce: moments", "reduce: momnets"
        ),
    )
    result = chunkline(project, "validate", name)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "spec error in bad.yaml" in result.stderr
    assert "stages[1] (clip).n_jobs: expected a positive integer or -1, got 'four'" in result.stderr
    assert (
        "stages[2] (stats).reduce: unknown reduce 'momnets' (did you mean 'moments'?)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_run_with_a_spec_error_exits_2_and_writes_nothing(project: Path) -> None:
    name = write_spec(project, "bad.yaml", SPEC.replace("stages:", "stagse:"))
    result = chunkline(project, "run", name)
    assert result.returncode == 2
    assert "stagse: unknown key (did you mean 'stages'?)" in result.stderr
    assert not (project / "out").exists()


@pytest.mark.parametrize("command", ["run", "validate", "explain"])
def test_missing_spec_file_exits_2(project: Path, command: str) -> None:
    result = chunkline(project, command, "nope.yaml")
    assert result.returncode == 2
    assert "spec file not found: nope.yaml" in result.stderr


@pytest.mark.parametrize("command", ["run", "validate", "explain"])
def test_missing_input_file_exits_1_and_names_it(project: Path, command: str) -> None:
    (project / "data" / "y.npy").unlink()
    result = chunkline(project, command, "spec.yaml")
    assert result.returncode == 1
    assert "source.y file not found: data/y.npy" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "out").exists()


def test_validate_runs_the_stages_on_the_first_rows(project: Path) -> None:
    text = SPEC.replace("params: {min: -1.0, max: 1.0}", "params: {}")
    name = write_spec(project, "s.yaml", text)
    result = chunkline(project, "validate", name)
    assert result.returncode == 1
    assert "stage 'clip' failed: ValueError: clip needs at least one of min or max" in result.stderr


def test_explain_prints_the_plan(project: Path) -> None:
    result = chunkline(project, "explain", "spec.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pipeline 'tiny'" in out
    assert "pass 1 of 1: 2 workers on loky" in out
    assert f"chunks: 8 of up to 25 rows (600 B each) over {N_ROWS} rows" in out
    assert "fused stages (one task per chunk):" in out
    for line in ("finite", "filter", "clip", "map", "stats", "reduce"):
        assert line in out
    assert "estimated peak memory:" in out
    assert not (project / "out").exists(), "explain must not write outputs"


def test_explain_with_overrides_and_several_passes(project: Path) -> None:
    text = SPEC.replace("    map: clip\n", "    map: clip\n    n_jobs: 1\n")
    name = write_spec(project, "two.yaml", text)
    result = chunkline(project, "explain", name, "--chunk-rows", "60", "--backend", "threading")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pass 1 of 3: 2 workers on threading" in out
    assert "pass 2 of 3: 1 worker on threading" in out
    assert "pass 3 of 3: 2 workers on threading" in out
    assert f"chunks: 4 of up to 60 rows (1.4 KiB each) over {N_ROWS} rows" in out
    assert "input length known after pass" in out  # after the filter, rows are unknown
    assert out.count("estimated peak memory:") == 3


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["frobnicate", "spec.yaml"], "invalid choice: 'frobnicate'", id="command"),
        pytest.param([], "the following arguments are required: COMMAND", id="no-command"),
        pytest.param(["run"], "the following arguments are required: spec", id="no-spec"),
        pytest.param(
            ["run", "spec.yaml", "--n-jobs", "four"],
            "argument --n-jobs: expected an integer or -1, got 'four'",
            id="n-jobs-four",
        ),
        pytest.param(
            ["run", "spec.yaml", "--n-jobs", "0"],
            "argument --n-jobs: expected a positive integer or -1, got 0",
            id="n-jobs-zero",
        ),
        pytest.param(
            ["run", "spec.yaml", "--backend", "lokky"],
            "argument --backend: invalid choice: 'lokky'",
            id="backend",
        ),
        pytest.param(
            ["run", "spec.yaml", "--chunk-rows", "-3"],
            "argument --chunk-rows: expected a positive integer, got -3",
            id="chunk-rows",
        ),
        pytest.param(["run", "spec.yaml", "--frobnicate"], "unrecognized arguments", id="option"),
        pytest.param(
            ["validate", "spec.yaml", "--n-jobs", "2"],
            "unrecognized arguments",
            id="validate-n-jobs",
        ),
    ],
)
def test_usage_errors_exit_2(project: Path, args: list[str], message: str) -> None:
    result = chunkline(project, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("usage: chunkline")
    assert not (project / "out").exists()


@pytest.mark.parametrize("command", [None, "run", "validate", "explain"])
def test_help(project: Path, command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    result = chunkline(project, *args)
    assert result.returncode == 0
    usage = "usage: chunkline" + ("" if command is None else f" {command}")
    assert result.stdout.startswith(usage)
    if command is None:
        for name in ("run", "validate", "explain", "Exit codes"):
            assert name in result.stdout
    if command in ("run", "explain"):
        for option in ("--n-jobs", "--backend", "--chunk-rows"):
            assert option in result.stdout
    if command == "run":
        assert "--quiet" in result.stdout and "--report" in result.stdout


def test_version(project: Path) -> None:
    result = chunkline(project, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chunkline {pipeline.__version__}"


# ---------------------------------------------------------------- failed runs


FAIL_SPEC = """\
name: failing
source: {npy: data/rows.npy}
chunks: {rows: 25}
parallel: {n_jobs: 2}
workspace: ws
stages:
  - name: negate
    map: numpy:negative
  - name: shift
    map: clistages:fail_on_row_100
  - name: stats
    reduce: moments
sink: {npy: out/x.npy, reductions: out/stats.json}
"""


def test_stage_failure_exits_1_and_names_stage_and_chunk(project: Path) -> None:
    rows = np.zeros((N_ROWS, 3))
    rows[:, 0] = -np.arange(N_ROWS)  # negated by the first stage: row i holds i
    np.save(project / "data" / "rows.npy", rows)
    write_spec(project, "fail.yaml", FAIL_SPEC)
    (project / "out").mkdir()
    (project / "out" / "x.npy").write_bytes(b"previous output")
    result = chunkline(project, "run", "fail.yaml")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        "chunkline: run failed: stage 'shift' failed on chunk 4 (rows 100-125): "
        "ValueError: row 100 is not allowed"
    ), result.stderr
    assert "caused by:" in result.stderr and "fail_on_row_100" in result.stderr
    assert (project / "out" / "x.npy").read_bytes() == b"previous output"
    assert sorted(os.listdir(project / "out")) == ["x.npy"]
    assert list((project / "ws").iterdir()) == []


NAN_SPEC = """\
source: {npy: data/nan.npy, y: data/y.npy}
chunks: {rows: 25}
stages:
  - name: nb
    sklearn: sklearn.naive_bayes.GaussianNB
sink: {npy: out/p.npy}
"""


@pytest.mark.parametrize("backend", ["loky", "sequential"])
def test_bad_data_is_one_line_and_user_code_errors_show_their_traceback(
    project: Path, backend: str
) -> None:
    # chunkline's own checks of the rows say everything in their message; a
    # user's function failing gets its traceback, from a worker or not.
    x = np.ones((N_ROWS, 3))
    x[60, 1] = np.nan  # past the rows that validation checks: a worker finds it
    np.save(project / "data" / "nan.npy", x)
    write_spec(project, "nan.yaml", NAN_SPEC)
    result = chunkline(project, "run", "nan.yaml", "--backend", backend, "--n-jobs", "2")
    assert result.returncode == 1, result.stderr
    assert re.fullmatch(
        r"chunkline: run failed: stage 'nb' failed on chunk \d+ \(rows \d+-\d+\): Input X "
        r"contains \d NaN value\(s\) in column \d; GaussianNB does not accept missing "
        r"values: [^\n]+\n",
        result.stderr,
    ), result.stderr
    np.save(project / "data" / "rows.npy", -np.arange(N_ROWS * 3.0).reshape(N_ROWS, 3) / 3)
    write_spec(project, "fail.yaml", FAIL_SPEC)
    result = chunkline(project, "run", "fail.yaml", "--backend", backend)
    assert result.returncode == 1, result.stderr
    message, details = result.stderr.split("\n\ncaused by:\n")
    assert "ValueError: row 100 is not allowed" in message
    assert "Traceback (most recent call last)" in details, details
    assert "in fail_on_row_100" in details and "ValueError: row 100 is not allowed" in details


def test_sink_that_cannot_be_written_exits_1_without_a_traceback(project: Path) -> None:
    (project / "out" / "x.npy").mkdir(parents=True)
    result = chunkline(project, "run", "spec.yaml")
    assert result.returncode == 1
    assert result.stderr.startswith("chunkline: run failed: "), result.stderr
    assert "out/x.npy" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(project / "out")) == ["x.npy"]
    assert list((project / "ws").iterdir()) == []


# ---------------------------------------------------------------- progress bar


def test_no_progress_bar_when_stdout_is_not_a_tty(project: Path) -> None:
    result = chunkline(project, "run", "spec.yaml", "--chunk-rows", "5")
    assert result.returncode == 0, result.stderr
    assert_no_bar(result)
    assert result.stderr == ""


def run_on_a_tty(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run with stdout on a pseudo-terminal; return exit code, terminal text, stderr."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=cwd,
            env=env_for(cwd),
            stdout=terminal,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # the terminal closed
                break
            if not data:
                break
            chunks.append(data)
        stderr = proc.stderr.read() if proc.stderr else ""
        code = proc.wait(timeout=120)
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    return code, b"".join(chunks).decode(errors="replace"), stderr


def test_progress_bar_on_a_tty_unless_quiet(project: Path) -> None:
    code, _, stderr = run_on_a_tty(project, "run", "spec.yaml", "--chunk-rows", "50")
    assert code == 0, stderr
    assert "pass 1" in stderr and "4/4" in stderr
    code, terminal, stderr = run_on_a_tty(project, "run", "spec.yaml", "--quiet")
    assert code == 0, stderr
    assert terminal == "" and stderr == ""


# ---------------------------------------------------------------- Ctrl-C

SLOW_SPEC = """\
name: slow
source: {npy: data/x.npy}
chunks: {rows: 5}
parallel: {n_jobs: 2}
workspace: ws
stages:
  - name: slow
    map: clistages:slow
sink: {npy: out/slow.npy}
"""


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
    except ImportError:  # fall back to /proc
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
        return children + [d for c in children for d in _descendants(c)]
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_slow_run(project: Path, *, nohup: bool = False) -> subprocess.Popen[str]:
    """Start a slow run in its own process group (so a terminal's Ctrl-C can be mimicked).

    ``nohup``: started ignoring SIGHUP, as ``nohup`` starts a command.
    """
    write_spec(project, "slow.yaml", SLOW_SPEC)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "slow.yaml"],
        cwd=project,
        env=env_for(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None,
    )


def kill_if_running(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_until_running(project: Path, proc: subprocess.Popen[str]) -> list[int]:
    """Wait until chunks are being processed; return the process tree's pids."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        tmp = [n for n in os.listdir(project / "out")] if (project / "out").exists() else []
        if any(n.endswith(".tmp") for n in tmp) and len(_descendants(proc.pid)) >= 2:
            time.sleep(1.5)  # a few chunks into the run
            return _descendants(proc.pid)
        time.sleep(0.05)
    raise AssertionError("the slow run did not start")


def _assert_interrupted_cleanly(
    project: Path,
    proc: subprocess.Popen[str],
    children: list[int],
    signum: int = signal.SIGINT,
    said: str = "interrupted",
) -> None:
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, stderr
    assert f"chunkline: {said}; outputs left untouched" in stderr
    # A group-wide SIGINT can reach a loky worker while it starts up, and loky
    # then prints that worker's KeyboardInterrupt; chunkline's own process must
    # print no traceback.
    own = re.sub(
        r"Process LokyProcess-\d+:\nTraceback.*?\nKeyboardInterrupt\n", "", stderr, flags=re.S
    )
    assert "Traceback" not in own, stderr
    assert not [n for n in os.listdir(project / "out") if n.endswith(".tmp")]
    assert list((project / "ws").iterdir()) == []
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "worker processes survived Ctrl-C"


@pytest.mark.parametrize(
    ("signum", "said"),
    [
        (signal.SIGINT, "interrupted"),
        # How batch schedulers (systemd, Kubernetes, Airflow) stop a job.
        (signal.SIGTERM, "stopped by SIGTERM"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_signal_to_the_command_stops_cleanly(project: Path, signum: int, said: str) -> None:
    proc = start_slow_run(project)
    try:
        children = _wait_until_running(project, proc)
        proc.send_signal(signum)
        _assert_interrupted_cleanly(project, proc, children, signum, said)
        assert not (project / "out" / "slow.npy").exists()
    finally:
        kill_if_running(proc)


def test_a_run_started_with_nohup_outlives_its_terminal(project: Path) -> None:
    proc = start_slow_run(project, nohup=True)
    try:
        children = _wait_until_running(project, proc)
        proc.send_signal(signal.SIGHUP)  # the terminal closes
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _assert_interrupted_cleanly(project, proc, children, signal.SIGTERM, "stopped by SIGTERM")
    finally:
        kill_if_running(proc)


def test_the_command_leaves_signal_handlers_as_it_found_them(project: Path) -> None:
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)]
    assert main(["validate", str(project / "missing.yaml")]) == 2
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == handlers


def test_a_scheduler_with_another_backend_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(project / "spec.yaml")
    assert main(["run", "--backend", "loky", "--scheduler", "tcp://127.0.0.1:1", spec]) == 2
    assert "--scheduler: names a dask cluster, but --backend is loky" in capsys.readouterr().err


def test_a_second_ctrl_c_does_not_cut_the_cleanup_short(project: Path) -> None:
    # Ctrl-C pressed twice in a terminal: the second arrives while the run cleans up.
    proc = start_slow_run(project)
    try:
        children = _wait_until_running(project, proc)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        _assert_interrupted_cleanly(project, proc, children)
    finally:
        kill_if_running(proc)


def test_ctrl_c_in_a_terminal_keeps_the_previous_output(project: Path) -> None:
    # A terminal's Ctrl-C sends SIGINT to the whole foreground process group,
    # workers included; a previous output at the sink's path must survive.
    (project / "out").mkdir()
    previous = project / "out" / "slow.npy"
    np.save(previous, np.arange(5.0))
    before = previous.read_bytes()
    proc = start_slow_run(project)
    try:
        children = _wait_until_running(project, proc)
        os.killpg(proc.pid, signal.SIGINT)
        _assert_interrupted_cleanly(project, proc, children)
        assert previous.read_bytes() == before
    finally:
        kill_if_running(proc)
