"""A voting ensemble: a model whose prediction combines its member models' predictions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from v2serve.engine.outputs import as_output_dict
from v2serve.engine.registry import ModelEntry
from v2serve.errors import InferenceError
from v2serve.models.base import Model, RequestContext, Tensors

VoteType = Literal["classification", "regression"]


class VotingEnsemble(Model):
    """Runs every member on the request concurrently and combines their outputs, output by output.

    ``classification``: each row takes the label with the highest total member weight (a tie goes to the
    smallest label, as MLRun's argmax over class numbers does). ``regression``: the weighted mean. Without
    a ``vote_type``, each output is voted as MLRun infers it: classification when every member answers
    integers (or labels), regression when they answer floats.

    ``weights`` are keyed by route key (``name``, or ``name:version`` for a versioned member) and
    normalised to sum to 1; a member the dict leaves out weighs 0 (MLRun's rule), and no dict at all weighs
    every member the same. Members stay addressable on their own; the ensemble's metadata is its first
    member's.
    """

    def __init__(
        self,
        name: str,
        members: Sequence[ModelEntry],
        vote_type: VoteType | None = None,
        weights: dict[str, float] | None = None,
        version: str | None = None,
        resolve: Callable[[str, str | None], ModelEntry] | None = None,
        prediction_col_name: str | None = None,
        *,
        always_by_col_name: bool = False,
        one_by_one: bool = False,
    ) -> None:
        super().__init__(name=name, version=version)
        self.prediction_col_name = prediction_col_name or "prediction"
        self.always_by_col_name = always_by_col_name
        """MLRun's ``format_response_with_col_name_flag``: the vote answered as ``{col: [...]}``."""
        self.one_by_one = one_by_one
        """MLRun's ``executor_type="array"``: members run one after another."""
        if not members:
            raise ValueError(f"ensemble {name!r} needs at least one member")
        self.members = list(members)
        # Members are looked up again on each call when a registry is given, so that a member reloaded
        # through the repository API is the one that answers (the replaced entry is unloaded).
        self._member_keys = [(m.name, m.version) for m in self.members]
        self._resolve = resolve
        self.vote_type = vote_type
        self.weights = _normalised_weights(name, [route_key(m) for m in self.members], weights)
        self.inputs = members[0].model.inputs
        self.outputs = members[0].model.outputs
        self.feature_names = members[0].model.feature_names
        self.platform = "ensemble"
        kinds = {m.model.takes_documents for m in self.members}
        if len(kinds) > 1:
            raise ValueError(f"ensemble {name!r} mixes MLRun-style models with tensor models; use one kind")
        self.takes_documents = kinds.pop()
        # MLRun-style members run at once on threads of the ensemble's own (MLRun's ParallelRun, threads by
        # default); the executor starts its threads only when first used.
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(len(self.members), thread_name_prefix=f"v2serve-{name}")
            if self.takes_documents
            else None
        )

    async def predict(self, inputs: Tensors, context: RequestContext) -> Any:
        members = self.members if self._resolve is None else [self._resolve(*key) for key in self._member_keys]
        with contextlib.ExitStack() as stack:
            # Each member's request is accounted as any other of its requests (in flight, status, duration).
            calls = [stack.enter_context(member.serving("infer")) for member in members]
            for member in members:
                member.require_ready()
            # Through each member's scheduler: its queue bound, deadline and batching apply here too.
            if self.one_by_one:
                results = [await m.scheduler.submit(inputs, context, None) for m in members]
            else:
                results = await asyncio.gather(*(m.scheduler.submit(inputs, context, None) for m in members))
            for call in calls:
                call.status = 200
        outputs = [as_output_dict(m.model, result) for m, result in zip(members, results, strict=True)]
        names = outputs[0].keys()
        if any(out.keys() != names for out in outputs):
            raise InferenceError(f"ensemble {self.name!r}: members returned different outputs")
        voted = {}
        for name in names:
            stacked = np.stack([out[name] for out in outputs])
            vote_type = self.vote_type or ("regression" if stacked.dtype.kind in "fc" else "classification")
            voted[name] = (_vote if vote_type == "classification" else _mean)(stacked, self.weights)
        return voted

    def _predictions(self, member: ModelEntry, answer: Any) -> tuple[Any, str]:
        if not isinstance(answer, dict) or "outputs" not in answer:
            raise InferenceError(f"ensemble {self.name!r}: member {member.name!r} answered no 'outputs'")
        return _column(self.name, member.name, answer["outputs"], self.prediction_col_name)

    def mlrun_metadata(self) -> dict[str, Any]:
        """As MLRun's VotingEnsemble answers ``GET /v2/models/<ensemble>``: its name, and the inputs and
        outputs of its first member that has them."""
        metadata: dict[str, Any] = {"name": self.name, "model_endpoint_uid": "", "inputs": [], "outputs": []}
        for member in self.members:
            describe = getattr(member.model, "mlrun_metadata", None)
            if describe is None:
                continue
            own = describe()
            metadata["inputs"] = metadata["inputs"] or own["inputs"]
            metadata["outputs"] = metadata["outputs"] or own["outputs"]
        return metadata

    def unload(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def serve_document(self, operation: str, body: Any, event_id: str | None) -> Any:
        """The vote of MLRun-style members (they take documents): each member's ``outputs``, one
        prediction per data point, voted point by point; answered in MLRun's shape."""
        members = self.members if self._resolve is None else [self._resolve(*key) for key in self._member_keys]
        for member in members:
            member.require_ready()
        assert self._pool is not None  # an ensemble of MLRun-style members has one
        if self.one_by_one:
            answers = [member.model.serve_document(operation, body, event_id) for member in members]  # type: ignore[attr-defined]
        else:
            futures = [
                self._pool.submit(member.model.serve_document, operation, body, event_id)  # type: ignore[attr-defined]
                for member in members
            ]
            answers = [future.result() for future in futures]
        columns = [self._predictions(member, answer) for member, answer in zip(members, answers, strict=True)]
        shape = columns[0][1]
        try:
            predictions = np.array([column for column, _ in columns], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InferenceError(
                f"ensemble {self.name!r}: members answered no numeric outputs to vote on: {exc}"
            ) from None
        integral = bool(np.all(np.mod(predictions, 1) == 0))
        vote_type = self.vote_type or ("classification" if integral else "regression")
        if vote_type == "classification":
            votes = _vote(predictions.astype(np.int64), self.weights).tolist()
        else:
            votes = _mean(predictions, self.weights).tolist()
        outputs: Any = votes
        col = self.prediction_col_name
        if shape == "column" or self.always_by_col_name:
            outputs = {col: votes}
        elif shape == "rows":
            outputs = [{col: vote} for vote in votes]
        response = dict(answers[0])
        response.pop("timestamp", None)  # MLRun's vote carries none: it is no single member's answer
        response.update({"model_name": self.name, "outputs": outputs})
        if self.version:
            response["model_version"] = self.version
        else:
            response.pop("model_version", None)
        return response


def _column(name: str, member: str, outputs: Any, col: str) -> tuple[Any, str]:
    """A member's predictions, and the shape they came in: a list (``list``), an object holding them under
    ``col`` (``column``), or one object a row (``rows``)."""
    if isinstance(outputs, dict):
        if col not in outputs:
            raise InferenceError(
                f"ensemble {name!r}: prediction_col_name {col!r} is not in member {member!r}'s outputs "
                f"({sorted(outputs)})"
            )
        return outputs[col], "column"
    if isinstance(outputs, list) and outputs and all(isinstance(row, dict) for row in outputs):
        missing = [i for i, row in enumerate(outputs) if col not in row]
        if missing:
            raise InferenceError(
                f"ensemble {name!r}: prediction_col_name {col!r} is not in member {member!r}'s rows {missing}"
            )
        return [row[col] for row in outputs], "rows"
    return outputs, "list"


def route_key(entry: ModelEntry) -> str:
    """How a graph's routes name a member: ``name``, or ``name:version``."""
    return entry.name if entry.version is None else f"{entry.name}:{entry.version}"


def _normalised_weights(name: str, keys: list[str], weights: dict[str, float] | None) -> np.ndarray:
    if weights is None:
        return np.full(len(keys), 1 / len(keys))
    unknown = sorted(set(weights) - set(keys))
    if unknown:
        raise ValueError(f"ensemble {name!r}: weights name {unknown}, which are not its routes {keys}")
    raw = np.array([float(weights.get(key, 0.0)) for key in keys])
    if (raw < 0).any() or raw.sum() <= 0:
        raise ValueError(f"ensemble {name!r}: weights must be non-negative with a positive sum, got {weights}")
    normalised: np.ndarray = raw / raw.sum()
    return normalised


def _mean(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    mean: np.ndarray = np.tensordot(weights, stacked.astype(np.float64), axes=1)
    return mean.astype(stacked.dtype) if stacked.dtype.kind == "f" else mean


def _vote(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    labels = sorted(set(stacked.reshape(-1).tolist()))  # argmax keeps the first: a tie goes to the smallest
    shaped = weights.reshape((-1,) + (1,) * (stacked.ndim - 1))
    scores = np.stack([np.where(stacked == label, shaped, 0.0).sum(axis=0) for label in labels])
    winners = scores.argmax(axis=0)
    voted: np.ndarray = np.asarray(labels, dtype=stacked.dtype)[winners]
    return voted
