"""Regenerate the sample data in this folder (deterministic: seeded RNG).

    python data/make_data.py

features.npy  50,000 x 8 float64 sensor-like readings, about 1% of them NaN
              (missing), so that cleaning stages have something to do.
targets.npy   50,000 int64 class labels (0, 1, 2) aligned with features.npy.
events/       a Parquet dataset of 30,000 events, hive-partitioned by day
              (day=1..3), two files per day, row groups of 2,500 rows: id (int64),
              a, b, c, d (float64, a few nulls in c) and cat (string, 5 values).
customers.npy 20,000 x 12 float64 customer features on different scales, no
              missing values: for the scikit-learn examples.
churned.npy   20,000 int64 labels (1 = churned) aligned with customers.npy,
              drawn from a logistic model of a few of the features.
"""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
    make_events(rng)
    make_customers(np.random.default_rng(20261201))


def make_customers(rng: np.random.Generator) -> None:
    n, d = 20_000, 12
    scales = np.array([1.0, 5.0, 0.1, 20.0, 2.0, 1.0, 50.0, 3.0, 1.0, 0.5, 10.0, 1.0])
    x = rng.normal(size=(n, d)) * scales + rng.normal(scale=10, size=d)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    logit = 1.5 * z[:, 0] - 2.0 * z[:, 3] + z[:, 5] * z[:, 6] - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    np.save(HERE / "customers.npy", x)
    np.save(HERE / "churned.npy", y)


def make_events(rng: np.random.Generator) -> None:
    folder = HERE / "events"
    shutil.rmtree(folder, ignore_errors=True)
    cats = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
    next_id = 0
    for day in (1, 2, 3):
        (folder / f"day={day}").mkdir(parents=True)
        for part in range(2):
            n = 5_000
            c = rng.normal(size=n)
            table = pa.table(
                {
                    "id": np.arange(next_id, next_id + n, dtype=np.int64),
                    "a": rng.normal(size=n),
                    "b": rng.uniform(0, 10, size=n),
                    "c": pa.array(c, mask=rng.random(n) < 0.02),
                    "d": rng.normal(scale=100, size=n),
                    "cat": cats[rng.integers(0, len(cats), size=n)],
                }
            )
            path = folder / f"day={day}" / f"part-{part}.parquet"
            pq.write_table(table, path, row_group_size=2_500)
            next_id += n


if __name__ == "__main__":
    main()
