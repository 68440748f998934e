"""A model's declared tensors, indexed once so that requests do not rebuild the index."""

from __future__ import annotations

from dataclasses import dataclass

from v2serve.models.base import Model
from v2serve.protocol.types import TensorSpec


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """``inputs`` by name (empty: the model declares none and takes what it is given) and each declared
    output's datatype by name."""

    inputs: dict[str, TensorSpec]
    output_datatypes: dict[str, str]

    @classmethod
    def of(cls, model: Model) -> ModelSchema:
        return cls(
            {spec.name: spec for spec in model.inputs},
            {spec.name: spec.datatype for spec in model.outputs},
        )
