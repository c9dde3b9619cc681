"""Running stages on a few rows: maps and filters checked, and the probe.

Before any data is processed, every stage runs on the first few rows of its
input (a *probe*; an empty table for table sources, whose data the parent
never reads). That tells the output's dtype and row shape after each stage,
so outputs can be preallocated, and a stage that does not fit its input
fails early, with its name. Workers run maps and filters through the same
checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blocks import Data, Meta, as_mask, as_rows, meta_of, num_rows, take
from .datasets import TableRef
from .errors import SpecError, StageError
from .fitting import Feed, PendingApply
from .sources import OpenedSource
from .stage import Stage

__all__ = ["PROBE_ROWS", "Probe", "apply_map", "filter_mask", "probe_stages", "sample_of"]

#: Rows the probe runs every stage on.
PROBE_ROWS = 16


def _as_rows(value: object, rows: int, what: str) -> Data:
    """Check a stage result has ``rows`` rows; return it as an array or a table."""
    data = as_rows(value)
    if isinstance(data, np.ndarray) and data.ndim == 0:
        raise ValueError(f"returned a scalar for {rows} input rows; {what}")
    if num_rows(data) != rows:
        raise ValueError(f"returned {num_rows(data)} rows for {rows} input rows; {what}")
    return data


def apply_map(stage: Stage, data: Data) -> Data:
    """Run a map stage and check that it kept the rows."""
    return _as_rows(
        stage.call(data),  # type: ignore[attr-defined]
        num_rows(data),
        "a map must return one row per input row (use a filter to drop rows)",
    )


def filter_mask(stage: Stage, data: Data) -> np.ndarray:
    """Run a filter stage and check that it returned a boolean row mask."""
    mask = _as_rows(
        as_mask(stage.call(data)),  # type: ignore[attr-defined]
        num_rows(data),
        "a filter must return a boolean mask with one value per row",
    )
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 1:
        kind = (
            f"{mask.dtype} values of shape {mask.shape}"
            if isinstance(mask, np.ndarray)
            else "a table"
        )
        raise ValueError(
            f"returned {kind}; a filter must return a 1-D boolean mask with one value per row"
        )
    return mask


@dataclass(frozen=True)
class Probe:
    """A few rows (and their ``y``) as they look at some point of the pipeline."""

    data: Data
    y: Any = None


def probe_stages(
    stages: Sequence[Stage], sample: Data, y: Any = None
) -> tuple[Meta, tuple[Meta | None, ...], Probe | None]:
    """Run the stages on ``sample`` rows; the input meta, the meta after each, the rows.

    After a :class:`PendingApply` (a model not fitted yet) nothing more is
    known: its meta and every later one are ``None``, as are the rows.

    Raises
    ------
    StageError
        Naming the first stage that fails on the sample or returns the wrong rows.
    SpecError
        When a stage finds its parameters do not fit the data (e.g. a column
        that does not exist): reported as a mistake in the spec.
    """
    data: Data | None = sample
    metas: list[Meta | None] = []
    for stage in stages:
        if data is None or isinstance(stage, PendingApply):
            data = None
            metas.append(None)
            continue
        try:
            if stage.kind == "map":
                data = apply_map(stage, data)
            elif stage.kind == "filter":
                mask = filter_mask(stage, data)
                data = take(data, mask)
                y = None if y is None else y[mask]
            elif stage.kind == "feed":
                assert isinstance(stage, Feed)
                _, X, y_train = stage.observe(data, y, 0, 0)
                if stage.writes:
                    data, y = as_rows(X), y_train
            else:
                stage.reduction.chunk(data)  # type: ignore[attr-defined]
        except SpecError as exc:
            raise exc.prefixed(f"stage {stage.name!r}") from None
        except Exception as exc:
            raise StageError.caused_by(
                exc,
                stage.name,
                where=f" (while checking the stage on {_sample_description(sample)})",
            ) from exc
        metas.append(meta_of(data))
    return meta_of(sample), tuple(metas), None if data is None else Probe(data, y)


def _sample_description(sample: Data) -> str:
    if num_rows(sample) == 0:
        return f"an empty sample of {meta_of(sample).describe()}"
    return f"the first {num_rows(sample)} rows of {meta_of(sample).describe()} data"


def sample_of(opened: OpenedSource | TableRef) -> Probe:
    """Rows to probe the stages on: the first few of an array (and y); an empty table.

    Tables are probed on no rows at all: the parent never reads table data.
    """
    if isinstance(opened, TableRef):
        return Probe(opened.empty())
    rows = min(opened.x.n_rows, PROBE_ROWS)
    y = None if opened.y is None else np.asarray(opened.y.read(0, rows))
    return Probe(np.asarray(opened.x.read(0, rows)), y)
