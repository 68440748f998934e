"""A small tabular classifier with a named-feature schema, to show infer_dict.

A nearest-centroid classifier over the iris measurements; the centroids are the per-species means of
Fisher's iris data set. ``infer_dict`` rows such as ``{"petal_length": 1.4, "sepal_width": 3.5, ...}``
are ordered into the columns of FEATURES, whatever order their keys come in.

``use_features`` restricts the distance to some of the features, and ``labels_only`` drops the
probabilities output: the voting-ensemble example combines three such classifiers.
"""

import numpy as np

from v2serve import Model, TensorSpec

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = np.array(["setosa", "versicolor", "virginica"], dtype=object)
CENTROIDS = np.array(
    [[5.006, 3.428, 1.462, 0.246], [5.936, 2.770, 4.260, 1.326], [6.588, 2.974, 5.552, 2.026]],
    dtype=np.float32,
)


class IrisClassifier(Model):
    feature_names = FEATURES
    inputs = [TensorSpec("features", "FP32", [-1, len(FEATURES)])]

    def __init__(self, use_features: list[str] | None = None, labels_only: bool = False, **kwargs):
        super().__init__(**kwargs)
        unknown = set(use_features or []) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}")
        self.columns = [FEATURES.index(f) for f in (use_features or FEATURES)]
        self.labels_only = labels_only
        self.outputs = [TensorSpec("species", "BYTES", [-1])]
        if not labels_only:
            self.outputs.append(TensorSpec("probabilities", "FP32", [-1, 3]))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = inputs["features"][:, self.columns]
        centroids = CENTROIDS[:, self.columns]
        distances = np.linalg.norm(rows[:, None, :] - centroids[None, :, :], axis=-1)
        species = SPECIES[distances.argmin(axis=1)]
        if self.labels_only:
            return {"species": species}
        scores = np.exp(-distances)
        probabilities = (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)
        return {"species": species, "probabilities": probabilities}
