"""chunkline: declarative chunked array pipelines, run in parallel with joblib.

Declare a source, stages and a sink once (in Python or in a YAML/TOML spec),
and chunkline splits the data into chunks, runs the stages in worker
processes that read and write memory-mapped files directly, and merges the
results.

>>> import numpy as np
>>> from pipeline import Map, Pipeline
>>> Pipeline(np.ones((4, 2)), [Map(np.negative)], n_jobs=1).run().output.sum()
np.float64(-8.0)
"""

from __future__ import annotations

from .chunking import Chunk, ChunkSpec, parse_bytes, plan_chunks
from .datasets import TableSource
from .errors import (
    ChunklineError,
    DataError,
    SinkError,
    SourceError,
    SpecError,
    SpecIssue,
    StageError,
)
from .fitting import TrainingChunk
from .parquet import ParquetOptions
from .pipeline import Pipeline, RunResult, load_spec
from .plan import PassPlan, Plan
from .report import FitReport, PassReport, RunReport, StageReport
from .sinks import Sink
from .sources import ArraySource
from .stage import (
    CallableReduction,
    Filter,
    Fit,
    FitSchedule,
    Fitted,
    Map,
    Reduce,
    Reduction,
    Stage,
)

__version__ = "0.1.0"

__all__ = [
    "ArraySource",
    "CallableReduction",
    "Chunk",
    "ChunkSpec",
    "ChunklineError",
    "DataError",
    "Filter",
    "Fit",
    "FitReport",
    "FitSchedule",
    "Fitted",
    "Map",
    "ParquetOptions",
    "PassPlan",
    "PassReport",
    "Pipeline",
    "Plan",
    "Reduce",
    "Reduction",
    "RunReport",
    "RunResult",
    "Sink",
    "SinkError",
    "SourceError",
    "SpecError",
    "SpecIssue",
    "Stage",
    "StageError",
    "StageReport",
    "TableSource",
    "TrainingChunk",
    "__version__",
    "load_spec",
    "parse_bytes",
    "plan_chunks",
]
