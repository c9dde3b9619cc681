"""User functions for the table examples; a spec names them as ``mymodule:derive``.

chunkline puts a spec file's folder on ``sys.path`` when it loads the spec, so
a module beside the spec is importable, also in the worker processes.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def derive(table: pa.Table) -> pa.Table:
    """Add ``e = a * b + log1p(|d|)``: pyarrow.Table -> pyarrow.Table, same rows."""
    e = pc.add(pc.multiply(table["a"], table["b"]), pc.log1p(pc.abs(table["d"])))
    return table.append_column("e", e)
