"""A handler that streams, as TorchServe's streaming example does."""

from ts.handler_utils.utils import send_intermediate_predict_response
from ts.torch_handler.base_handler import BaseHandler


class StreamingHandler(BaseHandler):
    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        words = str(data[0].get("body") or "").split()
        for word in words[:-1]:
            send_intermediate_predict_response(
                [word + " "], context.request_ids, "Intermediate Prediction success", 200, context
            )
        return [words[-1] if words else ""]
