"""The core's own cost per request, without HTTP: add_sub Events straight into a ModelServer.

.venv/bin/python benchmarks/inprocess.py            # best of 7 x 10,000 requests, in µs
.venv/bin/python benchmarks/inprocess.py --profile  # and cProfile's top 25 by own time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "servers"))

import workloads  # noqa: E402
from v2serve_models import AddSub  # noqa: E402

from v2serve.event import Event  # noqa: E402
from v2serve.protocol.body import Body  # noqa: E402
from v2serve.server import ModelServer  # noqa: E402
from v2serve.settings import Settings  # noqa: E402


async def main(profile: bool) -> None:
    server = ModelServer([AddSub(name="add_sub")], Settings(models=[]))
    await server.start()
    body = workloads.add_sub().body
    headers = {"content-type": "application/json"}

    async def one() -> None:
        event = Event(Body.of(body, headers), "/v2/models/add_sub/infer", "POST", headers)
        reply = await server.handle(event)
        assert reply.status == 200, reply.body

    for _ in range(2_000):
        await one()
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(10_000):
            await one()
        best = min(best, (time.perf_counter() - started) / 10_000)
    print(f"add_sub in-process: {best * 1e6:.1f} µs per request (best of 7 x 10,000)")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(10_000):
            await one()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="store_true")
    asyncio.run(main(parser.parse_args().profile))
