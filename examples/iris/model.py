"""A small tabular classifier with a named-feature schema, to show infer_dict.

A nearest-centroid classifier over the iris measurements; the centroids are the per-species means of
Fisher's iris data set. ``infer_dict`` rows such as ``{"petal_length": 1.4, "sepal_width": 3.5, ...}``
are ordered into the columns of FEATURES, whatever order their keys come in.
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
    outputs = [TensorSpec("species", "BYTES", [-1]), TensorSpec("probabilities", "FP32", [-1, 3])]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = inputs["features"]
        distances = np.linalg.norm(rows[:, None, :] - CENTROIDS[None, :, :], axis=-1)
        scores = np.exp(-distances)
        probabilities = (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)
        return {"species": SPECIES[distances.argmin(axis=1)], "probabilities": probabilities}
