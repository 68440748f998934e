"""Which network addresses a data_url may reach: public ones only, unless the operator allows private ones.

Python's ``is_global`` looks at an IPv6 address alone, so it calls ``::127.0.0.1`` (IPv4-compatible), the
NAT64 ``64:ff9b::10.0.0.1`` and the 6to4 ``2002:a00:1::`` global although each of them reaches a private
IPv4 address. The IPv4 address embedded in such an address is checked as well.

A host that ends in a number is an IPv4 address in some spelling (``2130706433``, ``0177.0.0.1``,
``127.1``, ``0x7f.1``): browsers and some HTTP clients read it so (the WHATWG URL standard), others refuse it.
It is read here as the standard reads it, so that the policy decides, not whichever parser sees it next.
"""

from __future__ import annotations

import ipaddress

from v2serve.errors import Forbidden

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names literally (``10.0.0.1``, ``[::1]``, ``2130706433``), or None for a name.

    Forbidden for a host that ends in a number but is no IPv4 address (``1.2.3.4.5``, ``0x1g``, ``256.1.1.1``).
    """
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return None
    return _whatwg_ipv4(host)


def _whatwg_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The WHATWG URL standard's IPv4 parser: up to four dot-separated numbers, each decimal, octal (a
    leading 0) or hexadecimal (0x); the last fills the bytes the others leave."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not _is_number(parts[-1]):
        return None  # a name (``example.com``, ``1.2.3.example``)
    numbers = [_ipv4_number(host, part) for part in parts] if len(parts) <= 4 else None
    if numbers is None or any(number > 255 for number in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise Forbidden(f"data_url host {host!r} ends in a number but is not an IPv4 address")
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _is_number(part: str) -> bool:
    if part.isascii() and part.isdigit():
        return True
    return part[:2].lower() == "0x" and all(c in "0123456789abcdefABCDEF" for c in part[2:])


def _ipv4_number(host: str, part: str) -> int:
    if part == "":
        raise Forbidden(f"data_url host {host!r} ends in a number but is not an IPv4 address")
    radix = 10
    if part[:2].lower() == "0x":
        part, radix = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        part, radix = part[1:], 8
    if part == "":
        return 0  # "0x" alone
    try:
        if not part.isascii() or not part.isalnum():
            raise ValueError(part)
        return int(part, radix)
    except ValueError:
        raise Forbidden(f"data_url host {host!r} ends in a number but is not an IPv4 address") from None


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
