"""Shared fixtures: a seeded random generator and real ``.npy`` files in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator seeded the same way in every test, so failures reproduce."""
    return np.random.default_rng(20261125)


@pytest.fixture
def save_npy(tmp_path: Path) -> Callable[[str, np.ndarray], str]:
    """Write an array to ``tmp_path/<name>.npy`` and return the path as a string."""

    def save(name: str, array: np.ndarray) -> str:
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        return str(path)

    return save


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real dask.distributed cluster: two worker processes on loopback, one thread each."""
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    scratch = str(tmp_path_factory.mktemp("dask"))
    # Not /tmp/dask-scratch-space: the workers' folders and the locks beside them.
    with (
        dask.config.set({"temporary-directory": scratch}),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=scratch,
        ) as cluster,
    ):
        yield cluster
    assert cluster.status.name == "closed"
