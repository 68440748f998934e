"""A model's declared tensors, indexed once so that requests do not rebuild the index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from v2serve.protocol.types import TensorSpec


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """What a request is checked against: the model's ``name``, its ``inputs`` by name (empty: the model
    declares none and takes what it is given), its declared inputs in order, each declared output's datatype
    by name, and the ``feature_names`` that order dict rows (``infer_dict``)."""

    name: str
    inputs: dict[str, TensorSpec]
    input_list: tuple[TensorSpec, ...]
    output_datatypes: dict[str, str]
    feature_names: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        name: str,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        feature_names: Sequence[str] | None = None,
    ) -> ModelSchema:
        return cls(
            name,
            {spec.name: spec for spec in inputs},
            tuple(inputs),
            {spec.name: spec.datatype for spec in outputs},
            tuple(feature_names or ()),
        )
