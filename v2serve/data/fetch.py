"""Reading a ``data_url`` under the policy: size known before reading, capped while reading, timed out.

Reads never use the model threads. http(s) is read on the event loop (``http.py``); filesystems that fsspec
implements asynchronously (s3, gcs, ...) through their coroutines; the others (local files, memory) on
threads of their own (``threads.py``), with a budget per protocol. A deadline cancels the first two outright
and abandons the third.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from v2serve.data.http import HttpReader
from v2serve.data.policy import DataPolicy, Location
from v2serve.data.threads import BlockingReads
from v2serve.errors import DeadlineExceeded, Forbidden, InvalidRequest, NotFound, PayloadTooLarge, V2ServeError


class DataFetcher:
    def __init__(self, policy: DataPolicy) -> None:
        self.policy = policy
        self._limit = policy.settings.max_bytes
        self._http = HttpReader(policy.settings.allow_private_addresses)
        # Per protocol: a source that hangs (an FTP server, a stale mount) uses up its own budget only.
        self._threads: dict[str, BlockingReads] = {}
        self._async_filesystems: dict[tuple[str, int], Any] = {}

    async def read(self, url: Any, headers: Mapping[str, str] | None = None) -> bytes:
        """The bytes at ``url``, under the policy. ``headers`` go with an http(s) request (a token the image
        host wants, say); other protocols take none."""
        if not isinstance(url, str) or not url:
            raise InvalidRequest("data_url must be a non-empty string")
        location = self.policy.check(url)
        timeout = self.policy.settings.timeout_s
        try:
            return await asyncio.wait_for(self._read(location, url, headers or {}), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"reading data_url {url!r} took longer than {timeout:g} s") from None

    def propagate_with(self, inject: Callable[[dict[str, str]], None]) -> None:
        """Let ``inject`` add to the headers of every http(s) read (tracing: the request's trace context)."""
        self._http.propagate = inject

    async def close(self) -> None:
        await self._http.close()
        filesystems, self._async_filesystems = self._async_filesystems, {}
        for fs in filesystems.values():
            await _close_session(fs)

    async def _read(self, location: Location, url: str, headers: Mapping[str, str]) -> bytes:
        if location.protocol in ("http", "https"):
            return await self._http.read(url, self._limit, headers)
        try:
            import fsspec

            if fsspec.get_filesystem_class(location.protocol).async_impl:
                return await self._read_async(location, url)
            threads = self._threads.get(location.protocol)
            if threads is None:
                threads = self._threads[location.protocol] = BlockingReads(self.policy.settings.read_threads)
            return await threads.run(lambda: self._read_blocking(location, url))
        except V2ServeError:
            raise
        except FileNotFoundError:
            raise NotFound(f"data_url {url!r} does not exist") from None
        except Exception as exc:
            raise InvalidRequest(f"cannot read data_url {url!r}: {type(exc).__name__}: {exc}") from None

    async def _read_async(self, location: Location, url: str) -> bytes:
        fs = self._async_filesystem(location.protocol)
        self._check_info(await fs._info(location.path), url)
        data: bytes = await fs._cat_file(location.path, start=0, end=self._limit + 1)
        return self._capped(data, url)

    def _read_blocking(self, location: Location, url: str) -> bytes:
        fs = self._filesystem(location.protocol)
        self._check_info(fs.info(location.path), url)
        with fs.open(location.path, "rb") as stream:
            data: bytes = stream.read(self._limit + 1)
        return self._capped(data, url)

    def _check_info(self, info: dict[str, Any], url: str) -> None:
        # Regular files only: a FIFO or device under the data root would block its reader forever.
        if info.get("type", "file") != "file":
            raise Forbidden(f"data_url {url!r} is not a regular file")
        size = info.get("size")
        if size is not None and size > self._limit:
            raise PayloadTooLarge(f"data_url {url!r} holds {size} bytes, over the limit of {self._limit}")

    def _capped(self, data: bytes, url: str) -> bytes:
        if len(data) > self._limit:
            raise PayloadTooLarge(f"data_url {url!r} holds more than the limit of {self._limit} bytes")
        return data

    def _filesystem(self, protocol: str, **extra: Any) -> Any:
        import fsspec

        return fsspec.filesystem(protocol, **self.policy.settings.storage_options.get(protocol, {}), **extra)

    def _async_filesystem(self, protocol: str) -> Any:
        # One instance per loop (fsspec's own instance cache would hand one loop's session to another).
        key = (protocol, id(asyncio.get_running_loop()))
        fs = self._async_filesystems.get(key)
        if fs is None:
            fs = self._filesystem(protocol, asynchronous=True, skip_instance_cache=True)
            self._async_filesystems[key] = fs
        return fs


async def _close_session(fs: Any) -> None:
    """Close the client session of an fsspec filesystem used asynchronously (fsspec has no common close):
    s3fs keeps its aiobotocore client's context, gcsfs and others an aiohttp ``session``."""
    creator = getattr(fs, "_s3creator", None)
    if creator is not None:
        await creator.__aexit__(None, None, None)
        return
    session = getattr(fs, "session", None)
    if session is not None and hasattr(session, "close"):
        closing = session.close()
        if asyncio.iscoroutine(closing):
            await closing
