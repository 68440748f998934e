"""data_url through fsspec: each source decoded, id and parameters kept, and the policy refusing what it must
before any request reaches the target."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import serve_in_process, serve_in_thread
from tests.data.conftest import s3_options
from tests.fixtures import EchoModel, SumModel
from v2serve.engine.loader import models_from_target
from v2serve.mock import MockServer
from v2serve.server import ModelServer
from v2serve.settings import DataSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio

IRIS_ROWS = [
    {"sepal_length": 5.0, "sepal_width": 3.4, "petal_length": 1.5, "petal_width": 0.2},
    {"sepal_length": 6.6, "sepal_width": 3.0, "petal_length": 5.6, "petal_width": 2.0},
]


def iris():
    return models_from_target(str(ROOT / "examples" / "iris"))[0]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def csv_bytes(rows: list[dict]) -> bytes:
    columns = ["petal_width", "sepal_length", "petal_length", "sepal_width"]  # not the model's order
    lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def open_settings(tmp_path: Path, **data) -> dict:
    base = {"protocols": ["file", "memory", "s3", "http"], "data_root": str(tmp_path), "allow_private_addresses": True}
    return {"data": DataSettings(**(base | data))}


async def test_memory_npy_keeps_id_and_parameters(tmp_path):
    fsspec.filesystem("memory").pipe("/inputs/x.npy", npy_bytes(np.arange(6, dtype=np.float64).reshape(2, 3)))
    model = SumModel(name="sum")
    async with serve_in_process(model, **open_settings(tmp_path)) as client:
        response = await client.post(
            "/v2/models/sum/infer",
            json={"id": "m-1", "parameters": {"mode": "fast"}, "data_url": "memory://inputs/x.npy"},
        )
    body = response.json()
    assert response.status_code == 200, body
    assert body["id"] == "m-1" and body["outputs"][0]["data"] == [3.0, 12.0]


async def test_file_json_of_v2_inputs_and_raw_bytes(tmp_path):
    document = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}]}
    (tmp_path / "request.json").write_text(json.dumps(document))
    (tmp_path / "blob.bin").write_bytes(b"\x00\xffraw")
    async with serve_in_process(SumModel(name="sum"), EchoModel(name="echo"), **open_settings(tmp_path)) as client:
        summed = await client.post(
            "/v2/models/sum/infer", json={"id": "f", "data_url": f"file://{tmp_path}/request.json"}
        )
        assert summed.json()["outputs"][0]["data"] == [4.0] and summed.json()["id"] == "f"
        raw = await client.post(
            "/v2/models/echo/infer",
            json={
                "data_url": str(tmp_path / "blob.bin"),
                "outputs": [{"name": "input0", "parameters": {"binary_data": True}}],
            },
        )
        assert raw.status_code == 200
        assert raw.content.endswith(b"\x05\x00\x00\x00\x00\xffraw")  # uint32 length, then the bytes


async def test_http_csv_is_ordered_by_the_feature_schema(tmp_path, file_server):
    file_server.files["/rows.csv"] = csv_bytes(IRIS_ROWS)
    async with serve_in_process(iris(), **open_settings(tmp_path)) as client:
        for operation in ("infer", "infer_dict"):
            response = await client.post(
                f"/v2/models/iris/{operation}",
                json={"id": operation, "parameters": {"p": 1}, "data_url": f"{file_server.url}/rows.csv"},
            )
            assert response.status_code == 200, response.json()
            assert response.json()["id"] == operation
            assert response.json()["outputs"][0]["data"] == ["setosa", "virginica"]


async def test_s3_parquet_on_moto(tmp_path, s3):
    endpoint, client = s3
    client.put_object(Bucket="v2serve-data", Key="rows.parquet", Body=parquet_bytes(IRIS_ROWS))
    settings = open_settings(tmp_path, storage_options={"s3": s3_options(endpoint)})
    async with serve_in_process(iris(), **settings) as http:
        response = await http.post(
            "/v2/models/iris/infer", json={"id": "s3", "data_url": "s3://v2serve-data/rows.parquet"}
        )
    assert response.status_code == 200, response.json()
    assert response.json()["outputs"][0]["data"] == ["setosa", "virginica"] and response.json()["id"] == "s3"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc/passwd", "outside the data root"),
        ("/etc/passwd", "outside the data root"),
        ("http://169.254.169.254/latest/meta-data/", "non-public address 169.254.169.254"),
        ("LOCAL/secret.npy", "non-public address 127.0.0.1"),
        ("memory://elsewhere/x.npy", "outside the allowed prefixes"),
        ("ftp://example.com/x.npy", "protocol 'ftp' is not allowed"),
    ],
)
async def test_refused_urls_get_403_and_no_request_reaches_the_target(tmp_path, file_server, url, fragment):
    file_server.files["/secret.npy"] = npy_bytes(np.zeros((1, 2)))
    settings = {
        "data": DataSettings(
            protocols=["file", "memory", "http", "https"],
            data_root=str(tmp_path),
            allowed_prefixes=[
                f"file://{tmp_path}",
                str(tmp_path),
                "memory://allowed/",
                "http://",
                "https://",
                "file:///etc",
                "/etc",
            ],
        )
    }
    async with serve_in_process(SumModel(name="sum"), **settings) as client:
        response = await client.post("/v2/models/sum/infer", json={"data_url": url.replace("LOCAL", file_server.url)})
    assert response.status_code == 403
    assert fragment in response.json()["error"]
    assert file_server.requests == []


async def test_data_url_is_off_by_default(tmp_path):
    async with serve_in_process(SumModel(name="sum")) as client:
        response = await client.post("/v2/models/sum/infer", json={"data_url": "memory://inputs/x.npy"})
    assert response.status_code == 403


async def test_an_object_over_the_cap_gets_413_without_being_read(tmp_path, file_server):
    file_server.files["/big.npy"] = b"\0" * 10_000
    fsspec.filesystem("memory").pipe("/big/x.bin", b"\0" * 10_000)
    async with serve_in_process(EchoModel(name="echo"), **open_settings(tmp_path, max_bytes=1000)) as client:
        over_http = await client.post("/v2/models/echo/infer", json={"data_url": f"{file_server.url}/big.npy"})
        in_memory = await client.post("/v2/models/echo/infer", json={"data_url": "memory://big/x.bin"})
    assert over_http.status_code == 413 and in_memory.status_code == 413
    # Refused from the response's Content-Length, before its body is read: one GET, not a HEAD and a GET.
    assert "holds 10000 bytes, over the limit of 1000" in over_http.json()["error"]
    assert [method for method, _ in file_server.requests] == ["GET"]


async def test_missing_object_is_404_and_bad_npy_is_400(tmp_path):
    fsspec.filesystem("memory").pipe("/inputs/pickled.npy", npy_bytes(np.array([{"a": 1}], dtype=object)))
    async with serve_in_process(SumModel(name="sum"), **open_settings(tmp_path)) as client:
        missing = await client.post("/v2/models/sum/infer", json={"data_url": "memory://inputs/none.npy"})
        pickled = await client.post("/v2/models/sum/infer", json={"data_url": "memory://inputs/pickled.npy"})
    assert missing.status_code == 404
    assert pickled.status_code == 400 and "not a plain .npy" in pickled.json()["error"]


def test_same_data_url_request_over_http_and_the_mock_server(tmp_path):
    fsspec.filesystem("memory").pipe("/inputs/y.npy", npy_bytes(np.ones((2, 2), dtype=np.float32)))
    request = {"id": "same", "data_url": "memory://inputs/y.npy"}
    settings = Settings(**open_settings(tmp_path))
    import httpx

    with serve_in_thread(server=ModelServer([SumModel(name="sum")], settings)) as url:
        over_http = httpx.post(f"{url}/v2/models/sum/infer", json=request)
    with MockServer(ModelServer([SumModel(name="sum")], settings)) as mock:
        reply = mock.request("/v2/models/sum/infer", request)
    assert (over_http.status_code, over_http.content) == (reply.status, reply.body)
    assert over_http.json()["outputs"][0]["data"] == [2.0, 2.0]


@pytest.mark.parametrize("shape", [(10**12,), (10**6, 10**6), (3,)])
async def test_npy_header_claiming_more_values_than_the_file_holds_is_400_before_allocating(tmp_path, shape):
    import tracemalloc

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    fsspec.filesystem("memory").pipe("/inputs/liar.npy", header.getvalue() + b"\0" * 8)
    async with serve_in_process(SumModel(name="sum"), **open_settings(tmp_path)) as client:
        tracemalloc.start()
        try:
            response = await client.post("/v2/models/sum/infer", json={"data_url": "memory://inputs/liar.npy"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert response.status_code == 400 and "but holds 8" in response.json()["error"]
    assert peak < 2_000_000


async def test_fortran_ordered_npy_keeps_its_values(tmp_path):
    array = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    fsspec.filesystem("memory").pipe("/inputs/fortran.npy", npy_bytes(array))
    async with serve_in_process(SumModel(name="sum"), **open_settings(tmp_path)) as client:
        response = await client.post("/v2/models/sum/infer", json={"data_url": "memory://inputs/fortran.npy"})
    assert response.json()["outputs"][0]["data"] == [3.0, 12.0]
