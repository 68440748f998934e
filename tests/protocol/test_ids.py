"""Request ids made for requests that came without one."""

from __future__ import annotations

import string

from v2serve.protocol.ids import new_request_id


def test_an_id_is_32_hex_digits_and_never_repeats():
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(one) == 32 and set(one) <= set(string.hexdigits.lower()) for one in ids)
