"""The soak's MLRun-style model (benchmarks/soak.py): a document in, the number of its inputs out."""

from __future__ import annotations

from v2serve.models.mlrun import V2ModelServer


class DocumentLength(V2ModelServer):
    def load(self) -> None:
        pass

    def predict(self, body: dict) -> list:
        return [len(body["inputs"])]
