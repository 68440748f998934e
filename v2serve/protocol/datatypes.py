"""The v2 datatypes and their numpy counterparts."""

from __future__ import annotations

import numpy as np

from v2serve.errors import InvalidRequest

# Wire order is little-endian; these are the dtypes tensors are decoded into and encoded from.
DATATYPE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    # numpy has no bfloat16: BF16 tensors are held as float32 (exact) and packed to 2 bytes on the wire.
    "BF16": np.dtype("<f4"),
    "BYTES": np.dtype(object),
}

NUMPY_KIND_TO_DATATYPE: dict[tuple[str, int], str] = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}

# Bytes per element on the wire; BYTES is variable.
WIRE_ITEMSIZE: dict[str, int] = {
    name: (2 if name == "BF16" else dtype.itemsize) for name, dtype in DATATYPE_TO_NUMPY.items() if name != "BYTES"
}

# Triton's classification extension labels BYTES tensors "STRING" in its JSON examples.
_ALIASES = {"STRING": "BYTES"}


def normalize_datatype(datatype: object) -> str:
    """The canonical name of a wire datatype, or InvalidRequest naming the supported ones."""
    if isinstance(datatype, str):
        if datatype in DATATYPE_TO_NUMPY:
            return datatype
        name = _ALIASES.get(datatype.upper(), datatype.upper())
        if name in DATATYPE_TO_NUMPY:
            return name
    supported = ", ".join(DATATYPE_TO_NUMPY)
    raise InvalidRequest(f"unsupported datatype {datatype!r}; expected one of {supported}")


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype that carries a numpy array; strings and objects travel as BYTES."""
    kind = array.dtype.kind
    if kind in "OSU":
        return "BYTES"
    datatype = NUMPY_KIND_TO_DATATYPE.get((kind, array.dtype.itemsize))
    if datatype is None:
        raise TypeError(f"numpy dtype {array.dtype} has no v2 datatype")
    return datatype
