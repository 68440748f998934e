"""A handler that streams through a name no file of its archive spells out, as a helper package might: v2serve
cannot tell at load that it streams, and must still send everything it sends."""

import importlib

from ts.torch_handler.base_handler import BaseHandler

_send = getattr(importlib.import_module("ts.handler_utils.utils"), "send_intermediate" + "_predict_response")


class HiddenStreamingHandler(BaseHandler):
    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        words = str(data[0].get("body") or "").split()
        for word in words[:-1]:
            _send([word + " "], context.request_ids, "Intermediate Prediction success", 200, context)
        return [words[-1] if words else ""]
