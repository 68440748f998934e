"""Reading a ``data_url`` under the policy: size known before reading, capped while reading, timed out."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from v2serve.data.policy import DataPolicy
from v2serve.errors import DeadlineExceeded, InvalidRequest, NotFound, PayloadTooLarge, V2ServeError


class DataFetcher:
    def __init__(self, policy: DataPolicy, executor: Executor) -> None:
        self.policy = policy
        self._executor = executor

    async def read(self, url: Any) -> bytes:
        if not isinstance(url, str) or not url:
            raise InvalidRequest("data_url must be a non-empty string")
        protocol, path = self.policy.check(url)
        loop = asyncio.get_running_loop()
        reading = loop.run_in_executor(self._executor, self._read, protocol, path, url)
        try:
            return await asyncio.wait_for(reading, self.policy.settings.timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"reading data_url {url!r} took longer than {self.policy.settings.timeout_s:g} s"
            ) from None

    def _read(self, protocol: str, path: str, url: str) -> bytes:
        import fsspec

        limit = self.policy.settings.max_bytes
        options = dict(self.policy.settings.storage_options.get(protocol, {}))
        if protocol in ("http", "https"):
            # A redirect could lead past the address check to an internal host.
            options.setdefault("allow_redirects", False)
        try:
            fs = fsspec.filesystem(protocol, **options)
            size = fs.size(path)
            if size is not None and size > limit:
                raise PayloadTooLarge(f"data_url {url!r} holds {size} bytes, over the limit of {limit}")
            with fs.open(path, "rb") as stream:
                data: bytes = stream.read(limit + 1)
        except V2ServeError:
            raise
        except FileNotFoundError:
            raise NotFound(f"data_url {url!r} does not exist") from None
        except Exception as exc:
            raise InvalidRequest(f"cannot read data_url {url!r}: {type(exc).__name__}: {exc}") from None
        if len(data) > limit:
            raise PayloadTooLarge(f"data_url {url!r} holds more than the limit of {limit} bytes")
        return data
