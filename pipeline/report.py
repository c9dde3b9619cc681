"""What a run did: time, rows and memory per pass and per stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .chunking import counted

__all__ = ["FitReport", "PassReport", "RunReport", "StageReport"]


@dataclass(frozen=True, kw_only=True)
class StageReport:
    """Time spent in one stage, summed over chunks and workers."""

    name: str
    kind: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class PassReport:
    """One pass: its chunks, rows in and out, wall time and worker memory."""

    index: int
    parallel: str
    chunks: int
    rows_in: int
    rows_out: int
    bytes_in: int
    seconds: float
    worker_peak_rss: int
    stages: tuple[StageReport, ...]


@dataclass(frozen=True, kw_only=True)
class FitReport:
    """One fit, done in the parent after its pass: how and how long."""

    name: str
    strategy: str
    seconds: float
    chunks: int
    epochs: int = 1
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class RunReport:
    """A whole run, as printed by the CLI and written by ``--report``."""

    name: str
    seconds: float
    passes: tuple[PassReport, ...]
    fits: tuple[FitReport, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return asdict(self)

    def format(self) -> str:
        """A short human summary."""
        lines = [f"{self.name}: done in {self.seconds:.2f} s"]
        for p in self.passes:
            rate = p.bytes_in / max(p.seconds, 1e-9) / 1e6
            lines.append(
                f"  pass {p.index + 1}: {counted(p.chunks, 'chunk')}, "
                f"{p.rows_in} -> {p.rows_out} rows, "
                f"{p.seconds:.2f} s ({rate:,.0f} MB/s), {p.parallel}, "
                f"worker peak RSS {p.worker_peak_rss / 2**20:,.0f} MiB"
            )
            for s in p.stages:
                lines.append(f"    {s.name:<16} {s.kind:<7} {s.seconds:8.2f} s (all workers)")
        for f in self.fits:
            epochs = f", {f.epochs} epochs" if f.epochs > 1 else ""
            detail = f"; {f.detail}" if f.detail else ""
            lines.append(
                f"  fit {f.name}: {f.strategy} over {counted(f.chunks, 'chunk')}{epochs}, "
                f"{f.seconds:.2f} s in the parent{detail}"
            )
        return "\n".join(lines)
