"""The deployment files in deploy/: each parses, is checked against the schema of its kind where one is
available offline (the Kubernetes client's models: a field they do not know would be dropped on a round
trip), and agrees with the code it starts (routes, settings, extras, the Nuclio handler)."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import yaml
from kubernetes import client

from v2serve.server import ModelServer
from v2serve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KINDS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def round_trip(document: dict, model: str) -> dict:
    api = client.ApiClient()
    return api.sanitize_for_serialization(api._ApiClient__deserialize(document, model))


def routed(path: str) -> bool:
    table = ModelServer([], Settings(models=[])).dispatcher.table
    route, _ = table.resolve("GET", path)
    return route is not None


@pytest.mark.parametrize("name", ["deployment.yaml", "kafka-consumer.yaml"])
def test_kubernetes_manifests_match_their_schemas(name):
    for document in documents(DEPLOY / "kubernetes" / name):
        model = KINDS[(document["apiVersion"], document["kind"])]
        assert round_trip(document, model) == document, f"{document['kind']} has fields its schema lacks"


def container_probes_are_served(container: dict) -> None:
    for probe in ("livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert path in ("/v2/health/live", "/v2/health/ready") and routed(path)
    assert "0.0.0.0" in container["args"], "inside a container the server must bind beyond loopback"


def test_the_deployment_binds_beyond_loopback_probes_served_routes_and_is_scraped():
    deployment, service, autoscaler = documents(DEPLOY / "kubernetes" / "deployment.yaml")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container_probes_are_served(container)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_kafka_consumers_form_one_group_through_real_settings(monkeypatch):
    [deployment] = documents(DEPLOY / "kubernetes" / "kafka-consumer.yaml")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["v2serve", "consume"] and deployment["spec"]["replicas"] > 1
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    kafka = Settings().kafka
    assert kafka.group_id == "v2serve" and kafka.input_topics == ["v2serve-input"]
    assert kafka.bootstrap_servers == "kafka.kafka.svc:9092"


def test_the_inference_service_is_a_v2_custom_predictor():
    [service] = documents(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    [container] = service["spec"]["predictor"]["containers"]
    assert round_trip(container, "V1Container") == container  # a predictor container is a Kubernetes container
    container_probes_are_served(container)
    assert container["resources"]["limits"] and container["resources"]["requests"]


def test_the_nuclio_function_runs_the_graph_handler_on_http_and_kafka():
    import v2serve.nuclio

    [function] = documents(DEPLOY / "nuclio" / "function.yaml")
    assert (function["apiVersion"], function["kind"]) == ("nuclio.io/v1", "NuclioFunction")
    spec = function["spec"]
    module, _, name = spec["handler"].partition(":")
    assert module == "v2serve.nuclio" and callable(getattr(v2serve.nuclio, name))
    assert callable(v2serve.nuclio.init_context)
    kinds = {trigger["kind"] for trigger in spec["triggers"].values()}
    assert kinds == {"http", "kafka-cluster"}
    kafka = next(t for t in spec["triggers"].values() if t["kind"] == "kafka-cluster")["attributes"]
    assert kafka["topics"] and kafka["brokers"] and kafka["consumerGroup"]
    models = next(v["value"] for v in spec["env"] if v["name"] == "V2SERVE_MODELS")
    assert yaml.safe_load(models) == ["/opt/graph/graph.yaml"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_the_dockerfiles_run_as_non_root_bind_beyond_loopback_and_check_health(name):
    text = (DEPLOY / name).read_text().replace("\\\n", " ")
    instructions = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    by_kind: dict[str, list[str]] = {}
    for kind, rest in instructions:
        by_kind.setdefault(kind, []).append(rest)
    assert by_kind["USER"] == ["10001"]
    assert "/v2/health/ready" in by_kind["HEALTHCHECK"][0] and routed("/v2/health/ready")
    assert '"--host", "0.0.0.0"' in by_kind["CMD"][0] and by_kind["ENTRYPOINT"] == ['["v2serve", "serve"]']
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    installed = [rest for rest in by_kind["RUN"] if "pip install" in rest and '".[' in rest]
    [wanted] = [rest.split('".[', 1)[1].split("]", 1)[0].split(",") for rest in installed]
    assert set(wanted) <= extras, f"{name} installs extras pyproject.toml lacks: {set(wanted) - extras}"
