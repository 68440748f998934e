"""A newcomer's first mistakes: each start-up error is one line that says what to fix (the traceback only
with --debug), the exit code is not zero, and settings files refuse keys they do not know."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from v2serve.cli import main
from v2serve.engine.loader import models_from_target
from v2serve.graph.spec import GraphError, GraphSpec

ADD_ONE = """
import numpy as np
from v2serve import Model, TensorSpec

class AddOne(Model):
    inputs = [TensorSpec("x", "FP32", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] + 1}
"""


def start_error(*args: str) -> str:
    """What ``v2serve serve ...`` exits with (in this process: it fails before anything listens)."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", *args])
    message = str(exited.value.code)
    assert "\n" not in message, message
    return message


def model_directory(root: Path, settings: str, code: str = ADD_ONE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(code)
    (root / "model-settings.json").write_text(settings)
    return root


def test_a_target_that_does_not_exist_says_so(tmp_path):
    message = start_error(str(tmp_path / "nope"))
    assert "no such file or directory" in message and "nope" in message


def test_malformed_model_settings_name_the_file_line_and_column(tmp_path):
    folder = model_directory(tmp_path / "m", '{\n  "implementation": "model.py:AddOne",\n  "args": {,}\n}')
    message = start_error(str(folder))
    assert f"{folder / 'model-settings.json'}:3:" in message and "malformed JSON" in message


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"implementation": "model.py:AddOne", "agrs": {}}, "unknown key 'agrs'; did you mean 'args'?"),
        ({"implementation": "model.py:AddOne", "max_batch_size": 8}, "'max_batch_size' goes under 'args'"),
        (
            {"implementation": "model.py:AddOne", "args": {"max_batch_sise": 8}},
            "unexpected keyword argument 'max_batch_sise'; did you mean 'max_batch_size'?",
        ),
    ],
)
def test_unknown_keys_in_model_settings_are_refused_with_the_closest_valid_one(tmp_path, settings, expected):
    folder = model_directory(tmp_path / "m", json.dumps(settings))
    with pytest.raises(ValueError, match=r"model-settings\.json") as refused:
        models_from_target(str(folder))
    assert expected in str(refused.value)
    assert expected in start_error(str(folder))


def test_a_malformed_graph_file_names_the_file_line_and_column(tmp_path):
    graph = tmp_path / "graph.yaml"
    graph.write_text("topology: flow\nsteps:\n  - name: a\n    kind: [task\n")
    message = start_error(str(graph))
    assert f"{graph}:" in message and "malformed YAML" in message
    line = int(message.split(f"{graph}:", 1)[1].split(":", 1)[0])
    assert line in (4, 5)  # the unclosed bracket, or the end of the file where YAML noticed it


def test_an_unknown_key_in_a_graph_file_is_refused_with_the_closest_valid_one(tmp_path):
    graph = tmp_path / "graph.yaml"
    graph.write_text("topology: flow\nsteps:\n  - name: a\n    clas_name: x.py:A\n    kind: model\ndefualt_route: a\n")
    with pytest.raises(GraphError) as refused:
        GraphSpec.from_file(graph)
    message = str(refused.value)
    assert "unknown key 'steps[0].clas_name'; did you mean 'class_name'?" in message
    assert "unknown key 'defualt_route'; did you mean 'default_route'?" in message
    assert "did you mean 'class_name'?" in start_error(str(graph))


def test_a_missing_stream_extra_names_the_extra(monkeypatch):
    from v2serve.settings import KafkaSettings, Settings
    from v2serve.streams.consumers import workers_from_settings

    monkeypatch.setitem(sys.modules, "aiokafka", None)  # as if it were not installed: importing it fails
    settings = Settings(models=[], kafka=KafkaSettings(bootstrap_servers="localhost:9092", input_topics=["in"]))
    with pytest.raises(ImportError, match=r"pip install 'v2serve\[kafka\]'"):
        workers_from_settings(lambda event: None, settings)


def test_the_command_line_exits_non_zero_with_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "v2serve", "serve", str(tmp_path / "nope")]
    plain = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0
    assert "Traceback" not in plain.stderr and "no such file or directory" in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=60)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_module_in_the_current_directory_is_served_as_uvicorn_would(tmp_path):
    """Through the installed ``v2serve`` script, whose own folder (not the current one) starts sys.path."""
    (tmp_path / "my_module.py").write_text(ADD_ONE)
    script = Path(sys.executable).parent / "v2serve"
    port = free_port()
    command = [str(script), "serve", "my_module:AddOne", "--port", str(port)]
    log = tmp_path / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
    try:
        body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}
        for _ in range(600):
            assert process.poll() is None, log.read_text()
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/v2/models/add_one/infer", json=body, timeout=10)
                break
            except httpx.TransportError:
                threading.Event().wait(0.1)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2.0, 3.0]
    finally:
        process.terminate()
        process.wait(15)


def test_an_invalid_setting_from_the_environment_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("V2SERVE_HTTP__PORT", "eighty")
    message = start_error("examples")
    assert "invalid settings: http.port:" in message and "integer" in message
