"""Which network addresses a data_url may reach: public ones only, unless the operator allows private ones.

Python's ``is_global`` looks at an IPv6 address alone, so it calls ``::127.0.0.1`` (IPv4-compatible), the
NAT64 ``64:ff9b::10.0.0.1`` and the 6to4 ``2002:a00:1::`` global although each of them reaches a private
IPv4 address. The IPv4 address embedded in such an address is checked as well.
"""

from __future__ import annotations

import ipaddress

from v2serve.errors import Forbidden

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names literally (``10.0.0.1``, ``[::1]``), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` and every IPv4 address it carries are global unicast addresses."""
    if not address.is_global or address.is_multicast:
        return False
    return all(embedded.is_global for embedded in _embedded_ipv4(address))


def refuse_unless_public(host: str, address: IPAddress) -> None:
    if not is_public(address):
        raise Forbidden(
            f"data_url host {host!r} is the non-public address {address}; "
            "private, loopback and link-local addresses are refused unless allowed explicitly"
        )


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if isinstance(address, ipaddress.IPv4Address):
        return []
    embedded = []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if address in _IPV4_COMPATIBLE or any(address in network for network in _NAT64):
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded
