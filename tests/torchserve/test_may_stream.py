"""Reading a handler's code at load for ``send_intermediate_predict_response``, under bounds."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from v2serve.models.torchserve import handler
from v2serve.models.torchserve.handler import may_stream


def test_a_file_that_names_the_call_makes_the_handler_streaming(tmp_path):
    (tmp_path / "handler.py").write_text("def handle(data, context):\n    return data\n")
    assert may_stream(tmp_path, []) is False
    (tmp_path / "helpers").mkdir()
    helper = "from ts.handler_utils.utils import send_intermediate_predict_response\n"
    (tmp_path / "helpers" / "send.py").write_text(helper)
    assert may_stream(tmp_path, []) is True


def test_code_too_large_to_read_counts_as_streaming_and_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(handler, "_MAX_SCANNED_BYTES", 1000)
    (tmp_path / "big.py").write_bytes(b"#" * 2000)
    assert may_stream(tmp_path, []) is True


def test_a_fifo_named_like_code_is_skipped_not_read(tmp_path):
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)  # reading it would block the load for ever
    (tmp_path / "handler.py").write_text("def handle(data, context):\n    return data\n")
    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(may_stream, tmp_path, [])
        try:
            assert checked.result(timeout=10) is False
        finally:
            if not checked.done():  # it blocked: a writer lets it go, so that the test fails rather than hangs
                with open(fifo, "wb"):
                    pass
