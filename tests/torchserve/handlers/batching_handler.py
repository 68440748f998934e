"""A batching handler: answers each request with its own value and the size of the batch it came in."""

import time

from ts.torch_handler.base_handler import BaseHandler


class BatchingHandler(BaseHandler):
    def initialize(self, context):
        self.batch_size = context.system_properties["batch_size"]
        self.initialized = True

    def handle(self, data, context):
        time.sleep(0.05)  # a model's work: long enough for the next requests to queue into a batch
        answers = []
        for index, row in enumerate(data):
            body = row.get("body")
            answers.append({"value": body, "batch": len(data), "request_id": context.get_request_id(index)})
        return answers
