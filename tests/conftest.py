"""Shared fixtures: a seeded random generator and real ``.npy`` files in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
