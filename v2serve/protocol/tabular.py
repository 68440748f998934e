"""Dict rows to the columns of a tabular model's single input, in the order of its feature_names."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from v2serve.errors import InvalidRequest
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import TensorSpec


def tabular_schema(schema: ModelSchema) -> tuple[TensorSpec, list[str]]:
    if not schema.feature_names or len(schema.input_list) != 1:
        raise InvalidRequest(
            f"model {schema.name!r} does not declare feature_names and a single input, so infer_dict "
            "cannot order dict rows; use infer"
        )
    return schema.input_list[0], list(schema.feature_names)


def ordered_rows(rows: list[Any], features: list[str]) -> list[Any]:
    getter = itemgetter(*features)
    ordered = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidRequest(f"infer_dict row {index} must be an object of feature values")
        if len(row) != len(features) or not all(name in row for name in features):
            missing = [name for name in features if name not in row]
            extra = [name for name in row if name not in features]
            raise InvalidRequest(
                f"infer_dict row {index} lacks features {missing} / has unknown features {extra}; "
                f"the model's features are {features}"
            )
        values = getter(row)
        ordered.append(list(values) if len(features) > 1 else [values])
    return ordered
