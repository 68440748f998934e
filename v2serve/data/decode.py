"""Turning the bytes of a ``data_url`` into the v2 inputs of a request, by the URL's file type.

- ``.npy``: one tensor with the file's dtype and shape (cast to the model's declared input datatype);
- ``.json``: an object holding v2 ``inputs``, a list of v2 inputs, or a nested list for the single input;
- ``.csv`` (with a header row) and ``.parquet``: tabular rows ordered into the model's feature schema, as
  ``infer_dict`` does;
- anything else: one BYTES element holding the raw content.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from v2serve.errors import InvalidRequest
from v2serve.protocol.datatypes import DATATYPE_TO_NUMPY, datatype_of
from v2serve.protocol.jsonio import loads
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.tabular import ordered_rows, tabular_schema

Input = dict[str, Any]


def inputs_from_data(url: str, raw: bytes, schema: ModelSchema) -> list[Input]:
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    if suffix == ".npy":
        return [_tensor(schema, _load_npy(url, raw))]
    if suffix == ".json":
        return _from_json(url, loads(raw), schema)
    if suffix == ".csv":
        return [_tabular(schema, list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))))]
    if suffix == ".parquet":
        return [_tabular(schema, _parquet_rows(raw))]
    content = np.empty(1, dtype=object)
    content[0] = raw
    return [{"name": _single_input_name(schema), "datatype": "BYTES", "shape": [1], "data": content}]


def _load_npy(url: str, raw: bytes) -> np.ndarray:
    """The array of a .npy file, viewed in place; its header's shape is checked against the bytes present
    before anything is allocated (np.load would allocate what the header claims first)."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise InvalidRequest(f"data_url {url!r} is not a plain .npy array: {exc}") from None
    if dtype.hasobject:
        raise InvalidRequest(
            f"data_url {url!r} is not a plain .npy array: it holds Python objects, which are never unpickled"
        )
    count = math.prod(shape)
    present = len(raw) - stream.tell()
    if count * dtype.itemsize != present:
        raise InvalidRequest(
            f"data_url {url!r} declares shape {list(shape)} of {dtype}, {count * dtype.itemsize} bytes, "
            f"but holds {present}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran_order else "C")


def _from_json(url: str, document: Any, schema: ModelSchema) -> list[Input]:
    if isinstance(document, dict) and isinstance(document.get("inputs"), list):
        return list(document["inputs"])
    if isinstance(document, list) and document and all(isinstance(item, dict) and "name" in item for item in document):
        return document
    if isinstance(document, list):
        try:
            return [_tensor(schema, np.asarray(document))]
        except ValueError:
            raise InvalidRequest(f"data_url {url!r} holds a ragged nested list") from None
    raise InvalidRequest(f"data_url {url!r} must hold v2 inputs or a nested list of values")


def _tensor(schema: ModelSchema, array: np.ndarray) -> Input:
    name = _single_input_name(schema)
    spec = schema.inputs.get(name)
    if spec is not None and spec.datatype != "BYTES" and array.dtype.kind in "biuf":
        array = array.astype(DATATYPE_TO_NUMPY[spec.datatype], copy=False)
    try:
        datatype = spec.datatype if spec is not None else datatype_of(array)
    except TypeError as exc:
        raise InvalidRequest(f"data_url array: {exc}") from None
    return {"name": name, "datatype": datatype, "shape": [int(d) for d in array.shape], "data": array}


def _tabular(schema: ModelSchema, rows: list[dict[str, Any]]) -> Input:
    spec, features = tabular_schema(schema)
    ordered = ordered_rows(rows, features)
    try:
        # CSV values arrive as text: numpy parses them into the input's dtype in one pass.
        array = np.asarray(ordered, dtype=DATATYPE_TO_NUMPY[spec.datatype])
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"data_url rows do not fit input {spec.name!r} ({spec.datatype}): {exc}") from None
    return {"name": spec.name, "datatype": spec.datatype, "shape": [len(ordered), len(features)], "data": array}


def _parquet_rows(raw: bytes) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise InvalidRequest("reading .parquet data_urls needs pyarrow: pip install 'v2serve[data]'") from None
    rows: list[dict[str, Any]] = parquet.read_table(io.BytesIO(raw)).to_pylist()
    return rows


def _single_input_name(schema: ModelSchema) -> str:
    if len(schema.input_list) > 1:
        raise InvalidRequest(
            f"model {schema.name!r} has {len(schema.input_list)} inputs: a data_url file of this type "
            "fills one; use a .json file of v2 inputs"
        )
    return schema.input_list[0].name if schema.input_list else "input0"
