"""Ids for requests that came without one."""

from __future__ import annotations

import os


def new_request_id() -> str:
    """32 random hex digits, as ``uuid.uuid4().hex`` writes an id, at a fifth of its cost (no UUID object is
    built): an id names a request in answers and logs, so it needs to be unique, not to be a UUID."""
    return os.urandom(16).hex()
