"""Dotted paths into a JSON body (``a.b``), as MLRun's ``input_path`` and ``result_path`` name them."""

from __future__ import annotations

from typing import Any

from v2serve.errors import InvalidRequest


def get_path(body: Any, path: str, where: str) -> Any:
    """``body["a"]["b"]`` for ``path`` "a.b"; InvalidRequest naming ``where`` when the body lacks it."""
    value = body
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise InvalidRequest(f"{where}: the body has no {path!r}")
        value = value[key]
    return value


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Write ``value`` at ``path`` into ``body``; the objects on the way are copied (or made), so that a
    body shared with another step is not changed under it."""
    *parents, last = path.split(".")
    target = body
    for key in parents:
        child = target.get(key)
        target[key] = child = dict(child) if isinstance(child, dict) else {}
        target = child
    target[last] = value
