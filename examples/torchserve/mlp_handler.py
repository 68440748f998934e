"""A TorchServe handler, written as TorchServe's custom-service document writes one: a BaseHandler on a
TorchScript MLP, one JSON row of numbers per request (``{"data": [...]}`` or the body itself), its scores
back. v2serve serves the archive built from it unchanged:

    torch-model-archiver --model-name mlp --version 1.0 --handler mlp_handler.py --serialized-file mlp.pt
    v2serve serve mlp.mar          # curl localhost:8080/predictions/mlp -H 'Content-Type: application/json' -d '[...]'

The tests (tests/torchserve) and benchmarks/torchserve.py build their archives from this file.
"""

import json

import torch
from ts.torch_handler.base_handler import BaseHandler


class MLPHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for row in data:
            value = row.get("data") or row.get("body")
            if isinstance(value, (bytes, bytearray)):
                value = json.loads(value)
            rows.append(value)
        return torch.tensor(rows, dtype=torch.float32)

    def inference(self, data, *args, **kwargs):
        with torch.inference_mode():
            return self.model(data)

    def postprocess(self, data):
        return data.tolist()
