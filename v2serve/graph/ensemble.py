"""A voting ensemble: a model whose prediction combines its member models' predictions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from v2serve.errors import InferenceError
from v2serve.models.base import Model, RequestContext, Tensors
from v2serve.models.outputs import as_output_dict
from v2serve.models.registry import ModelEntry

VoteType = Literal["classification", "regression"]


class VotingEnsemble(Model):
    """Runs every member on the request concurrently and combines their outputs, output by output.

    ``classification``: each row takes the label with the highest total member weight (ties go to the label
    seen first). ``regression``: the weighted mean. Members stay addressable on their own; the ensemble's
    metadata is its first member's.
    """

    def __init__(
        self,
        name: str,
        members: Sequence[ModelEntry],
        vote_type: VoteType = "classification",
        weights: dict[str, float] | None = None,
        version: str | None = None,
        resolve: Callable[[str, str | None], ModelEntry] | None = None,
    ) -> None:
        super().__init__(name=name, version=version)
        if not members:
            raise ValueError(f"ensemble {name!r} needs at least one member")
        self.members = list(members)
        # Members are looked up again on each call when a registry is given, so that a member reloaded
        # through the repository API is the one that answers (the replaced entry is unloaded).
        self._member_keys = [(m.name, m.version) for m in self.members]
        self._resolve = resolve
        self.vote_type = vote_type
        self.weights = np.array([(weights or {}).get(m.name, 1.0) for m in self.members], dtype=np.float64)
        self.inputs = members[0].model.inputs
        self.outputs = members[0].model.outputs
        self.feature_names = members[0].model.feature_names
        self.platform = "ensemble"

    async def predict(self, inputs: Tensors, context: RequestContext) -> Any:
        members = self.members if self._resolve is None else [self._resolve(*key) for key in self._member_keys]
        for member in members:
            member.require_ready()
            member.enter()
        try:
            # Through each member's scheduler: its queue bound, deadline and batching apply here too.
            results = await asyncio.gather(*(m.scheduler.submit(inputs, context, None) for m in members))
        finally:
            for member in members:
                member.leave()
        outputs = [as_output_dict(m.model, result) for m, result in zip(members, results, strict=True)]
        names = outputs[0].keys()
        if any(out.keys() != names for out in outputs):
            raise InferenceError(f"ensemble {self.name!r}: members returned different outputs")
        combine = _vote if self.vote_type == "classification" else _mean
        return {name: combine(np.stack([out[name] for out in outputs]), self.weights) for name in names}


def _mean(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mean: np.ndarray = np.tensordot(weights, stacked.astype(np.float64), axes=1) / weights.sum()
    return mean.astype(stacked.dtype) if stacked.dtype.kind == "f" else mean


def _vote(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    labels = list(dict.fromkeys(stacked.reshape(-1).tolist()))
    shaped = weights.reshape((-1,) + (1,) * (stacked.ndim - 1))
    scores = np.stack([np.where(stacked == label, shaped, 0.0).sum(axis=0) for label in labels])
    winners = scores.argmax(axis=0)
    voted: np.ndarray = np.asarray(labels, dtype=stacked.dtype)[winners]
    return voted
