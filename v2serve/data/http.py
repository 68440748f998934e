"""Reading http(s) data_urls with aiohttp (the client fsspec's HTTP filesystem itself uses), on the event loop.

fsspec's HTTP filesystem treats any answer below 400 as data (the body of a 302 would be read as the
request's input), reads a whole response where a range was asked, and has no way to check the address it
connects to. Here, instead:

- the connection goes to exactly the addresses that were checked: the resolver refuses a name that resolves
  to any non-public address (unless the operator allows private ones), and aiohttp connects to what the
  resolver returned, so a second, different DNS answer (rebinding) is never used;
- a redirect is an error (502), as is any other status but 2xx (404 is a 404);
- the body is read up to the size cap and no further, undecoded (no ``Content-Encoding`` expansion);
- the read is a coroutine, so a deadline cancels it and frees its connection: no thread waits on a server
  that never answers.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from typing import Any

from v2serve.data.addresses import refuse_unless_public
from v2serve.errors import InvalidRequest, NotFound, PayloadTooLarge, UpstreamError

_CHUNK = 64 * 1024


class HttpReader:
    """One aiohttp session per event loop, closed with ``close``."""

    def __init__(self, allow_private_addresses: bool) -> None:
        self._allow_private = allow_private_addresses
        self._session: Any = None
        self.propagate: Callable[[dict[str, str]], None] | None = None
        """Adds the request's trace context to the headers sent (tracing sets it)."""

    async def read(self, url: str, limit: int, headers: Mapping[str, str] | None = None) -> bytes:
        session = self._open_session()
        import aiohttp

        sent = {**(headers or {}), "accept-encoding": "identity"}
        if self.propagate is not None:
            self.propagate(sent)
        try:
            async with session.get(url, allow_redirects=False, headers=sent) as response:
                _check_status(url, response)
                if response.content_length is not None and response.content_length > limit:
                    raise PayloadTooLarge(
                        f"data_url {url!r} holds {response.content_length} bytes, over the limit of {limit}"
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise PayloadTooLarge(f"data_url {url!r} holds more than the limit of {limit} bytes")
                return bytes(data)
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot read data_url {url!r}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open_session(self) -> Any:
        if self._session is None:
            try:
                import aiohttp
            except ImportError:
                raise InvalidRequest("http(s) data_urls need aiohttp: pip install 'v2serve[data]'") from None
            resolver = None if self._allow_private else _public_address_resolver()
            connector = aiohttp.TCPConnector(resolver=resolver)
            # trust_env=False: no proxy from the environment stands between the check and the connection.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)
        return self._session


def _check_status(url: str, response: Any) -> None:
    status = response.status
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        raise UpstreamError(
            f"data_url {url!r} answered {status}, a redirect to {location!r}; redirects are not followed: "
            "name the final location"
        )
    if status == 404:
        raise NotFound(f"data_url {url!r} does not exist")
    raise UpstreamError(f"data_url {url!r} answered {status}")


def _public_address_resolver() -> Any:
    """aiohttp's threaded resolver, refusing a name if any of its addresses is not public (built here, not at
    import, so that importing v2serve never imports aiohttp)."""
    from aiohttp.abc import AbstractResolver, ResolveResult
    from aiohttp.resolver import ThreadedResolver

    class PublicAddressResolver(AbstractResolver):
        def __init__(self) -> None:
            self._inner = ThreadedResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            results = await self._inner.resolve(host, port, family)
            for result in results:
                refuse_unless_public(host, ipaddress.ip_address(result["host"]))
            return results

        async def close(self) -> None:
            await self._inner.close()

    return PublicAddressResolver()
