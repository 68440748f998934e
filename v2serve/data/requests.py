"""A request's ``data_url``: the inputs it names, read under the data policy before the request is decoded.

``{"data_url": "s3://bucket/rows.parquet", ...}`` in place of ``inputs`` (any other field kept) is read
through the DataFetcher and turned into the model's inputs; a request that names none is left as it is,
its JSON parsed once for both this check and its decoding. A model that takes documents (MLRun's classes)
gets the file as MLRun's router gives it: ``inputs`` holding one file object of its bytes.
"""

from __future__ import annotations

import io
from typing import Any

from v2serve.data.decode import inputs_from_data
from v2serve.data.fetch import DataFetcher
from v2serve.errors import Forbidden
from v2serve.protocol.body import Body
from v2serve.protocol.decode import request_document
from v2serve.protocol.schema import ModelSchema


async def with_data_url(body: Body, operation: str, schema: ModelSchema, data: DataFetcher | None) -> tuple[Body, str]:
    """The body with the inputs its ``data_url`` names in place of the URL, and the operation that now runs
    (the file's rows are already ordered: infer_dict is plain infer); a body naming no data_url as it is."""
    if not body.names_data_url():
        return body, operation
    document = request_document(body)
    if data is None:
        raise Forbidden("data_url is not enabled on this server")
    url = document["data_url"]
    inputs = inputs_from_data(url, await data.read(url), schema)
    rest = {key: value for key, value in document.items() if key != "data_url"}
    return Body.decoded({**rest, "inputs": inputs}), "explain" if operation == "explain" else "infer"


async def document_with_data_url(document: Any, data: DataFetcher | None) -> Any:
    """A document (a model that takes documents) with the file its ``data_url`` names in place of the URL,
    as MLRun's router passes it: ``inputs`` is a list of one file object (``io.BytesIO``) of its bytes,
    whatever its type; the document's other fields are kept. A document naming none as it is."""
    if type(document) is not dict or "data_url" not in document:
        return document
    if data is None:
        raise Forbidden("data_url is not enabled on this server")
    raw = await data.read(document["data_url"])
    rest = {key: value for key, value in document.items() if key != "data_url"}
    return {**rest, "inputs": [io.BytesIO(raw)]}
