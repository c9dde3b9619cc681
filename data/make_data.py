"""Regenerate the sample data in this folder (deterministic: seeded RNG).

    python data/make_data.py

features.npy  50,000 x 8 float64 sensor-like readings, about 1% of them NaN
              (missing), so that cleaning stages have something to do.
targets.npy   50,000 int64 class labels (0, 1, 2) aligned with features.npy.
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def main() -> None:
    rng = np.random.default_rng(20261125)
    n, d = 50_000, 8
    scales = np.array([1.0, 2.0, 5.0, 10.0, 0.5, 1.0, 3.0, 100.0])
    offsets = np.array([0.0, 1.0, -2.0, 50.0, 0.0, 10.0, 0.0, 1000.0])
    x = rng.normal(size=(n, d)) * scales + offsets
    x[rng.random((n, d)) < 0.01] = np.nan
    y = (np.nan_to_num(x[:, 0]) > 0).astype(np.int64) + (np.nan_to_num(x[:, 1]) > 2)
    np.save(HERE / "features.npy", x)
    np.save(HERE / "targets.npy", y)


if __name__ == "__main__":
    main()
