"""The operator's policy for URLs that requests name (``data_url``): what may be read, and how much.

Nothing in a request can widen it: the protocols, prefixes, the local data root, whether private network
addresses may be reached, the size cap, the time-out and the storage options (credentials, endpoints) all
come from the settings. A refused URL is a 403 raised before any connection is made.

Prefixes are compared with normalised locations, never with the raw string: a local path after ``..`` and
symlinks are resolved, a URL after percent-decoding, with any ``.`` or ``..`` segment refused outright (a
server or object store may resolve them after the check). Host names are checked again when the connection
is made, against the very addresses it connects to (see ``addresses.py``), so no second DNS answer can lead
somewhere the check did not see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from v2serve.data.addresses import literal_address, refuse_unless_public
from v2serve.errors import Forbidden
from v2serve.settings import DataSettings

_SEGMENT_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True, slots=True)
class Location:
    """Where an allowed data_url points: ``path`` is what the protocol's reader is given (a resolved local
    path for ``file``, the URL otherwise)."""

    protocol: str
    path: str


class DataPolicy:
    def __init__(self, settings: DataSettings) -> None:
        self.settings = settings
        self._root = Path(settings.data_root).resolve() if settings.data_root else None
        self._prefixes = [_normalised_prefix(prefix) for prefix in settings.allowed_prefixes]

    def check(self, url: str) -> Location:
        """The location of an allowed URL; Forbidden naming the reason otherwise."""
        protocol, path = split_url(url)
        if protocol not in self.settings.protocols:
            allowed = ", ".join(self.settings.protocols) or "none"
            raise Forbidden(f"data_url protocol {protocol!r} is not allowed here (allowed: {allowed})")
        if protocol == "file":
            location = Location("file", self._local_path(path))
            normalised: _Normalised = ("file", "", location.path)
        else:
            parts = _split(url)
            _refuse_dot_segments(url, parts)
            normalised = _normalised_url(parts)
            location = Location(protocol, url)
            if protocol in ("http", "https"):
                self._check_host(url, parts)
        if self._prefixes and not any(_under(normalised, prefix) for prefix in self._prefixes):
            raise Forbidden(f"data_url {url!r} is outside the allowed prefixes")
        return location

    def _local_path(self, path: str) -> str:
        if self._root is None:
            raise Forbidden("local data_url paths are not allowed: no data root is configured")
        resolved = Path(path).resolve()  # follows symlinks and '..', so neither can escape the root
        if not resolved.is_relative_to(self._root):
            raise Forbidden(f"data_url path {path!r} is outside the data root")
        return str(resolved)

    def _check_host(self, url: str, parts: SplitResult) -> None:
        host = parts.hostname
        if not host:
            raise Forbidden(f"data_url {url!r} names no host")
        # A literal address is connected to as it is, with no resolution: check it here. Names are checked
        # when they are resolved for the connection.
        address = literal_address(host)
        if address is None:
            return
        if not self.settings.allow_private_addresses:
            refuse_unless_public(host, address)
        if address.version == 4 and host != str(address):
            # HTTP clients disagree on these spellings: the one that is connected to is the one checked.
            raise Forbidden(f"data_url host {host!r} spells the IPv4 address {address} in a non-standard way")


def split_url(url: str) -> tuple[str, str]:
    """``(protocol, path)``; a bare path is ``file``."""
    if "://" not in url:
        return "file", url
    protocol, _, rest = url.partition("://")
    protocol = protocol.lower()
    if protocol == "file":
        return "file", rest
    return protocol, url


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port that is not a number in range)
    except ValueError as exc:
        raise Forbidden(f"data_url {url!r} is not a valid URL: {exc}") from None
    return parts


def _refuse_dot_segments(url: str, parts: SplitResult) -> None:
    decoded = unquote(parts.path)
    if any(segment in (".", "..") for segment in _SEGMENT_SEPARATORS.split(decoded)):
        raise Forbidden(f"data_url {url!r} has a '.' or '..' segment; name the object directly")


_Normalised = tuple[str, str, str]
"""(scheme, host[:port] with any user, decoded path): a location as the prefixes are compared with it."""


def _normalised_url(parts: SplitResult) -> _Normalised:
    host = (parts.hostname or "").lower()
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    if parts.username is not None:
        netloc = f"{parts.username}@{netloc}"  # never equal to a prefix without the same user
    return parts.scheme.lower(), netloc, unquote(parts.path)


def _normalised_prefix(prefix: str) -> _Normalised:
    protocol, path = split_url(prefix)
    if protocol == "file":
        resolved = str(Path(path).resolve())
        # A prefix ending in a separator means "inside this folder"; resolve() would drop it.
        return "file", "", resolved + "/" if path.endswith(("/", "\\")) and resolved != "/" else resolved
    return _normalised_url(_split(prefix))


def _under(location: _Normalised, prefix: _Normalised) -> bool:
    """Same scheme, same host, and the path starts with the prefix's path (a string prefix, so that
    ``s3://bucket/data-`` allows ``s3://bucket/data-2024.npy``)."""
    return location[:2] == prefix[:2] and location[2].startswith(prefix[2])
