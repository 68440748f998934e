"""A module-level handle(data, context), the simplest custom handler TorchServe documents."""

VERSION = None


def handle(data, context):
    global VERSION
    if data is None:  # TorchServe initialises a function handler by calling it without data
        VERSION = context.manifest["model"].get("modelVersion")
        return None
    answers = []
    for row in data:
        body = row.get("body")
        if isinstance(body, (bytes, bytearray)):
            body = body.decode()
        answers.append({"version": VERSION, "echo": body})
    return answers
