"""The operator's policy for URLs that requests name (``data_url``): what may be read, and how much.

Nothing in a request can widen it: the protocols, prefixes, the local data root, whether private network
addresses may be reached, the size cap, the time-out and the storage options (credentials, endpoints) all
come from the settings. A refused URL is a 403 raised before any connection is made.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

from v2serve.errors import Forbidden
from v2serve.settings import DataSettings


class DataPolicy:
    def __init__(self, settings: DataSettings) -> None:
        self.settings = settings
        self._root = Path(settings.data_root).resolve() if settings.data_root else None

    def check(self, url: str) -> tuple[str, str]:
        """``(protocol, path)`` of an allowed URL; Forbidden naming the reason otherwise."""
        protocol, path = split_url(url)
        if protocol not in self.settings.protocols:
            allowed = ", ".join(self.settings.protocols) or "none"
            raise Forbidden(f"data_url protocol {protocol!r} is not allowed here (allowed: {allowed})")
        if self.settings.allowed_prefixes and not any(url.startswith(p) for p in self.settings.allowed_prefixes):
            raise Forbidden(f"data_url {url!r} is outside the allowed prefixes")
        if protocol == "file":
            self._check_local(path)
        elif protocol in ("http", "https"):
            self._check_host(url)
        return protocol, path

    def _check_local(self, path: str) -> None:
        if self._root is None:
            raise Forbidden("local data_url paths are not allowed: no data root is configured")
        resolved = Path(path).resolve()  # follows symlinks and '..', so neither can escape the root
        if not resolved.is_relative_to(self._root):
            raise Forbidden(f"data_url path {path!r} is outside the data root")

    def _check_host(self, url: str) -> None:
        host = urlsplit(url).hostname
        if not host:
            raise Forbidden(f"data_url {url!r} names no host")
        if self.settings.allow_private_addresses:
            return
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError as exc:
            raise Forbidden(f"data_url host {host!r} does not resolve: {exc}") from None
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not ip.is_global:
                raise Forbidden(
                    f"data_url host {host!r} resolves to the non-public address {ip}; "
                    "private, loopback and link-local addresses are refused unless allowed explicitly"
                )


def split_url(url: str) -> tuple[str, str]:
    """``(protocol, path)``; a bare path is ``file``."""
    if "://" not in url:
        return "file", url
    protocol, _, rest = url.partition("://")
    protocol = protocol.lower()
    if protocol == "file":
        return "file", rest
    return protocol, url
