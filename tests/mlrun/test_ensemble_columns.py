"""MLRun's VotingEnsemble over members that answer their predictions under a key (prediction_col_name), and
its members running at once, as MLRun's ParallelRun runs them."""

from __future__ import annotations

import threading

from v2serve import Graph
from v2serve.models.mlrun import V2ModelServer  # MLRun: from mlrun.serving import V2ModelServer


class ColumnAnswer(V2ModelServer):
    """Answers {"prediction": [...]}: each point's first value plus the class argument ``offset``."""

    def load(self):
        pass

    def predict(self, body: dict):
        offset = self.get_param("offset", 0)
        return {"prediction": [point[0] + offset for point in body["inputs"]], "extra": "kept out of the vote"}


class RowAnswer(V2ModelServer):
    """Answers one object a row: [{"label": ...}, ...]."""

    def load(self):
        pass

    def predict(self, body: dict):
        return [{"label": point[0], "score": 0.5} for point in body["inputs"]]


BARRIER = threading.Barrier(2, timeout=10)


class WaitsForTheOther(V2ModelServer):
    """Answers only once the other member is predicting too: members run one after another would time out."""

    def load(self):
        pass

    def predict(self, body: dict):
        BARRIER.wait()
        return [1 for _ in body["inputs"]]


def test_members_answering_a_prediction_column_are_voted_on_it():
    graph = Graph()
    vote = graph.add_ensemble("vote", vote_type="classification")
    vote.add_model("a", ColumnAnswer).add_model("b", ColumnAnswer).add_model("c", ColumnAnswer, offset=1)
    with graph.to_mock_server() as server:
        answer = server.test("/v2/models/vote/infer", body={"inputs": [[1], [5]]})
    assert answer["model_name"] == "vote" and answer["outputs"] == {"prediction": [1, 5]}
    assert "timestamp" not in answer  # MLRun's vote carries none


def test_members_answering_one_object_a_row_are_voted_on_the_named_column():
    graph = Graph()
    vote = graph.add_ensemble("vote", vote_type="regression", prediction_col_name="label")
    vote.add_model("a", RowAnswer).add_model("b", RowAnswer)
    with graph.to_mock_server() as server:
        answer = server.test("/v2/models/vote/infer", body={"inputs": [[2.0], [4.0]]})
        missing = Graph()
        missing.add_ensemble("vote", prediction_col_name="nope").add_model("a", RowAnswer)
    assert answer["outputs"] == [{"label": 2.0}, {"label": 4.0}]
    with missing.to_mock_server() as server:
        refused = server.test("/v2/models/vote/infer", body={"inputs": [[2.0]]}, silent=True, get_body=False)
    assert refused.status_code == 500 and "prediction_col_name 'nope'" in refused.json()["error"]


def test_members_run_at_once():
    graph = Graph()
    graph.add_ensemble("vote").add_model("a", WaitsForTheOther).add_model("b", WaitsForTheOther)
    with graph.to_mock_server() as server:
        answer = server.test("/v2/models/vote/infer", body={"inputs": [[1], [2]]})
    assert answer["outputs"] == [1, 1]
