"""The quickstart pipeline, declared in Python instead of YAML.

Run from the repository root:

    python examples/quickstart.py

It reads the sample data in data/, drops rows with missing values, clips and
compresses the rest in parallel, and prints per-column statistics computed in
the same pass.
"""

from __future__ import annotations

import numpy as np

from pipeline import Filter, Map, Pipeline, Reduce


def main() -> None:
    pipeline = Pipeline(
        source={"npy": "data/features.npy", "y": "data/targets.npy"},
        stages=[
            Filter("finite_rows", name="finite"),
            Map("clip", name="clip", params={"min": -1000, "max": 1000}),
            Map(np.arcsinh, name="compress"),
            Reduce("moments", name="stats"),
            # A user-defined mergeable reduction, from three callables
            # (finalize is optional): rows whose first column is negative.
            Reduce(
                chunk=lambda x: int((x[:, 0] < 0).sum()),
                combine=lambda a, b: a + b,
                name="negative_first_column",
            ),
        ],
        sink={"npy": "out/quickstart_py.npy", "y": "out/quickstart_py_targets.npy"},
        chunks={"rows": 10_000},
        n_jobs=2,
        name="quickstart-python",
    )
    print(pipeline.explain())
    result = pipeline.run()
    print(result.report.format())
    stats = result.reductions["stats"]
    print(f"kept {stats['count']} of 50000 rows; output {result.output.shape} in out/")
    print("column means:", np.round(stats["mean"], 3))
    print("rows with a negative first column:", result.reductions["negative_first_column"])


if __name__ == "__main__":
    main()
