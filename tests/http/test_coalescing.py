"""The coalescing transport under uvicorn's writes: a lone response's head goes out with its body in one
write, writes made while other requests are in flight wait for the loop's turn, and nothing is lost or
reordered. A recording transport stands in for the socket (the HTTP suites run it under real uvicorn)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import serve_in_thread
from tests.fixtures import SumModel
from v2serve.http.connections import _CoalescingTransport

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7

    def is_closing(self) -> bool:
        return self.closed


async def turn() -> None:
    """Let the loop run what is ready (the transport's call_soon) and come back."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def coalescing(in_flight: int) -> tuple[_CoalescingTransport, Recording]:
    sink = Recording()
    tasks = {object() for _ in range(in_flight)}
    return _CoalescingTransport(sink, asyncio.get_running_loop(), tasks), sink  # type: ignore[arg-type]


async def test_a_lone_responses_head_goes_out_with_its_body_at_once():
    transport, sink = coalescing(in_flight=1)
    transport.write(HEAD)
    assert sink.writes == [] and transport.get_write_buffer_size() == 7 + len(HEAD)
    transport.write(b"{}")
    assert sink.writes == [HEAD + b"{}"]  # before the loop turns: no latency added
    await turn()
    assert sink.writes == [HEAD + b"{}"]


async def test_a_head_with_no_body_after_it_goes_when_its_response_completes():
    transport, sink = coalescing(in_flight=1)
    transport.write(HEAD.replace(b"200 OK", b"204 No Content"))
    await turn()
    assert sink.writes == []  # no loop turn is spent on a lone response
    transport.send_lone_head()
    assert sink.writes == [HEAD.replace(b"200 OK", b"204 No Content")]


async def test_writes_held_for_the_loops_turn_do_not_go_when_a_response_completes():
    transport, sink = coalescing(in_flight=3)
    transport.write(HEAD)
    transport.send_lone_head()
    assert sink.writes == []
    await turn()
    assert sink.writes == [HEAD]


async def test_a_lone_write_that_is_no_head_is_not_held():
    transport, sink = coalescing(in_flight=1)
    transport.write(b"5\r\nhello\r\n")  # a chunk of a streamed body
    assert sink.writes == [b"5\r\nhello\r\n"]


async def test_writes_wait_for_the_loops_turn_while_other_requests_are_in_flight():
    transport, sink = coalescing(in_flight=3)
    transport.write(HEAD)
    transport.write(b"{}")
    assert sink.writes == []
    await turn()
    assert sink.writes == [HEAD + b"{}"]


async def test_held_bytes_past_the_limit_go_at_once_and_in_order():
    transport, sink = coalescing(in_flight=3)
    big = b"x" * _CoalescingTransport.FLUSH_AT
    transport.write(HEAD)
    transport.write(big)
    assert sink.writes == [HEAD + big]
    transport.write(b"tail")
    await turn()
    assert sink.writes == [HEAD + big, b"tail"]


async def test_a_close_sends_what_is_held_first():
    transport, sink = coalescing(in_flight=3)
    transport.write(HEAD)
    transport.close()
    assert sink.writes == [HEAD] and sink.closed and transport.is_closing()
    await turn()  # the turn's own send finds nothing left
    assert sink.writes == [HEAD]


@pytest.mark.parametrize("clients", [1, 16])
def test_concurrent_and_pipelined_requests_get_their_own_answers(clients):
    bodies = [{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [i]}]} for i in range(64)]

    async def ask(url: str) -> list[float]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            semaphore = asyncio.Semaphore(clients)

            async def one(body: dict) -> float:
                async with semaphore:
                    response = await client.post("/v2/models/sum/infer", json=body)
                    return float(response.json()["outputs"][0]["data"][0])

            return await asyncio.gather(*(one(body) for body in bodies))

    with serve_in_thread(SumModel(name="sum")) as url:
        assert asyncio.run(ask(url)) == [float(i) for i in range(64)]


def test_a_head_request_is_answered_by_a_real_server():
    # A head held for a body that never comes would go only when the connection closes: the keep-alive time-out
    # is set beyond the client's, so that such a server fails here rather than answering late.
    server = serve_in_thread(SumModel(name="sum"), http={"keep_alive_timeout_s": 60})
    with server as url, httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(3):  # on one kept-alive connection: each head goes, nothing is left behind
            head = client.head("/v2/health/ready")
            get = client.get("/v2/health/ready")
            assert head.content == b"" and head.status_code == 405 and get.status_code == 200
