"""Pre- and post-processing steps of the flow example."""

from typing import Any

FEATURES = 4


def rows_to_request(body: dict[str, Any]) -> dict[str, Any]:
    """{"rows": [[sepal_length, sepal_width, petal_length, petal_width], ...], "unit": "cm" | "mm"} to a v2
    request for the classifier, in centimetres."""
    rows = body["rows"]
    scale = 0.1 if body.get("unit", "cm") == "mm" else 1.0
    data = [value * scale for row in rows for value in row]
    return {
        "id": body.get("id"),
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [len(rows), FEATURES], "data": data}],
    }


def to_labels(response: dict[str, Any]) -> dict[str, Any]:
    """The classifier's v2 response as species with the probability of each."""
    outputs = {output["name"]: output for output in response["outputs"]}
    species = outputs["species"]["data"]
    probabilities = outputs["probabilities"]["data"]
    per_row = len(probabilities) // max(len(species), 1)
    confidence = [round(max(probabilities[i * per_row : (i + 1) * per_row]), 4) for i in range(len(species))]
    return {"id": response["id"], "species": species, "confidence": confidence}
