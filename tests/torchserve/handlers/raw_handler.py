"""A handler reading raw bytes, form parts and headers, and setting its answer's status and content type."""

import base64
import hashlib
import time

from ts.utils.util import PredictionException


def _describe(value):
    if isinstance(value, (bytes, bytearray)):
        return {
            "type": "bytes",
            "sha256": hashlib.sha256(value).hexdigest(),
            "b64": base64.b64encode(value).decode()[:64],
        }
    return {"type": type(value).__name__, "value": value}


def handle(data, context):
    if data is None:
        return None
    answers = []
    for index, row in enumerate(data):
        body = row.get("body")
        if body in (b"teapot", "teapot"):
            context.set_response_status(code=418, phrase="I'm a teapot", idx=index)
            context.set_response_content_type(index, "text/x-tea")
            answers.append("short and stout")
            continue
        if body in (b"refuse", "refuse"):
            raise PredictionException("this request is refused", 422)
        if body in (b"crash", "crash"):
            raise RuntimeError("the handler crashed")
        if body in (b"sleep", "sleep"):
            time.sleep(2)  # beyond the archive's responseTimeout of 1 s
        if body in (b"png", "png"):
            context.set_response_content_type(index, "image/png")
            answers.append(b"\x89PNG\r\n\x1a\n")
            continue
        answers.append(
            {
                "parameters": {name: _describe(value) for name, value in row.items()},
                "content_type": context.get_request_header(index, "Content-Type"),
                "custom_header": context.get_request_header(index, "X-Custom"),
                "has_request_id": bool(context.get_request_id(index)),
                "model_dir_set": bool(context.system_properties.get("model_dir")),
                "batch_size": context.system_properties.get("batch_size"),
            }
        )
    return answers
