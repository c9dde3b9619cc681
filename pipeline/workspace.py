"""The run's private temporary folder: spilled inputs, intermediates, filter parts.

It is removed when the run ends, whether it succeeded, failed or was
interrupted (Ctrl-C), because :class:`Workspace` is used as a context manager
around the whole run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from .signals import stops_held_back

__all__ = ["Workspace"]


class Workspace:
    """A temporary folder, created under ``root`` (default: the system temp dir).

    Examples
    --------
    >>> with Workspace() as ws:
    ...     p = ws.path("x.npy")
    >>> os.path.exists(os.path.dirname(p))
    False
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="chunkline-", dir=root))

    def path(self, name: str) -> str:
        """Absolute path of a file (or folder) ``name`` inside the workspace."""
        return str(self.dir / name)

    def folder(self, name: str) -> str:
        """Create and return a sub-folder ``name``."""
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def cleanup(self) -> None:
        """Delete the workspace and everything in it, even if a stop comes meanwhile."""
        with stops_held_back():
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
