"""scikit-learn models over chunks, from Python: fit, save, apply later, search.

Run from the repository root:  python examples/models.py
"""

import numpy as np
from sklearn.decomposition import IncrementalPCA
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

from pipeline import Pipeline
from stages import ChunkedEstimator, Estimator, TrainMany

SOURCE = {"npy": "data/customers.npy", "y": "data/churned.npy"}

# 1. Scale (exact merge of per-chunk statistics), reduce to 5 components
#    (partial_fit, chunk by chunk in order) and train a classifier
#    (partial_fit); keep the models.
train = Pipeline(
    SOURCE,
    [
        StandardScaler(),  # an estimator object: fit: auto (here merge)
        Estimator(IncrementalPCA(n_components=5), name="pca"),
        Estimator(
            SGDClassifier(loss="log_loss", random_state=0), apply="predict_proba", name="clf"
        ),
    ],
    sink={"models": "out/py_models/"},
    chunks=5_000,
    n_jobs=2,
)
print(train.explain())
result = train.run()
print(result.report.format())
print("classes:", result.models["clf"].classes_.tolist())

# 2. Later, apply the saved models without refitting them. With skops
#    installed (pip install -e '.[models]'), each model is also saved as
#    .skops, which loads without running arbitrary code: model="....skops".
apply = Pipeline(
    "data/customers.npy",
    [
        Estimator(model="out/py_models/StandardScaler.joblib"),
        Estimator(model="out/py_models/pca.joblib", name="pca"),
        Estimator(model="out/py_models/clf.joblib", apply="predict_proba", name="clf"),
    ],
    sink="out/py_proba.npy",
    chunks=5_000,
)
proba = apply.run().output
print(f"churn probability of the first customer: {proba[0, 1]:.3f}")

# 3. A small grid search on one memory-mapped copy of the scaled data.
search = Pipeline(
    SOURCE,
    [
        StandardScaler(),
        TrainMany("sklearn.linear_model.LogisticRegression", grid={"C": [0.01, 1.0]}, name="lr"),
    ],
    n_jobs=2,
).run(output=False)
for trial in search.trials["lr"]:
    print(f"C={trial['C']}: accuracy {trial['score']:.3f}{' (best)' if trial['best'] else ''}")

# 4. The same as a scikit-learn estimator: chunked, parallel fit and predict.
model = ChunkedEstimator(StandardScaler(), chunk_rows=5_000, n_jobs=2)
X = np.load("data/customers.npy")
print("scaled means:", model.fit(X).transform(X).mean(axis=0).round(12)[:3])
