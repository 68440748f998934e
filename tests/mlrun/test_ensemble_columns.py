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


class ListAnswer(V2ModelServer):
    """Answers a plain list: each point's first value. Member ``a`` waits (briefly) for ``b`` to start, so
    that members run at once are seen predicting together; ``most_at_once`` records how many were."""

    running: set[str] = set()
    most_at_once = 0
    b_started = threading.Event()

    def load(self):
        pass

    def predict(self, body: dict):
        ListAnswer.running.add(self.name)
        ListAnswer.most_at_once = max(ListAnswer.most_at_once, len(ListAnswer.running))
        if self.name == "b":
            ListAnswer.b_started.set()
        else:
            ListAnswer.b_started.wait(0.5)  # one after another, b cannot start: the wait runs out
            ListAnswer.most_at_once = max(ListAnswer.most_at_once, len(ListAnswer.running))
        try:
            return [point[0] for point in body["inputs"]]
        finally:
            ListAnswer.running.discard(self.name)


def test_format_response_with_col_name_flag_answers_the_vote_under_the_column():
    graph = Graph()
    vote = graph.add_ensemble("vote", vote_type="classification", format_response_with_col_name_flag=True)
    vote.add_model("a", ListAnswer).add_model("b", ListAnswer)
    with graph.to_mock_server() as server:
        assert server.test("/v2/models/vote/infer", body={"inputs": [[1], [2]]})["outputs"] == {"prediction": [1, 2]}


def test_executor_type_array_runs_the_members_one_after_another_and_thread_at_once():
    for executor_type, expected in (("array", 1), ("thread", 2)):
        ListAnswer.most_at_once = 0
        ListAnswer.b_started.clear()
        graph = Graph()
        graph.add_ensemble("vote", executor_type=executor_type).add_model("a", ListAnswer).add_model("b", ListAnswer)
        with graph.to_mock_server() as server:
            assert server.test("/v2/models/vote/infer", body={"inputs": [[3]]})["outputs"] == [3]
        assert ListAnswer.most_at_once == expected, executor_type
