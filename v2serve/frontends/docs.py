"""Interactive API docs: Swagger UI at ``/v2/docs`` on the OpenAPI document the server generates (every
front-end that is on), with "try it out" against this server.

Swagger UI 5 (the first to read OpenAPI 3.1) comes from the ``swagger-ui-py`` package, whose static files are
read from disk (none of its framework code is imported): no CDN, so the page works where nothing outside the
machine is reachable. The page's links are relative, so it works behind a proxy that mounts the server under
a prefix. Only the bundle's files named here are served.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from v2serve.core.routes import Route
from v2serve.core.server_core import ServerCore
from v2serve.errors import OperationNotFound
from v2serve.event import Event, Reply

DOCS_PATH = "/v2/docs"

_ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_CACHED = {"cache-control": "public, max-age=86400"}

# Relative links: from /v2/docs, "docs/x" is /v2/docs/x, under whatever prefix a proxy adds.
_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>{title}</title>
    <link rel="stylesheet" href="docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="docs/swagger-ui-bundle.js"></script>
    <script>
      window.ui = SwaggerUIBundle({{
        url: "docs/openapi.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        tryItOutEnabled: false,
        presets: [SwaggerUIBundle.presets.apis],
      }});
    </script>
  </body>
</html>
"""


def docs_routes(core: ServerCore) -> list[Route]:
    """The docs page and the Swagger UI files it loads."""
    page = _PAGE.format(title=f"{core.info.name} API").encode()

    async def docs_page(event: Event, params: Mapping[str, str]) -> Reply:
        return Reply(200, page, "text/html; charset=utf-8")

    async def asset(event: Event, params: Mapping[str, str]) -> Reply:
        name = params["asset"]
        content_type = _ASSETS.get(name)
        if content_type is None:
            raise OperationNotFound(f"no route for GET {event.path}")
        return Reply(200, _read(name), content_type, dict(_CACHED))

    return [
        Route("GET", DOCS_PATH, docs_page, "Interactive API docs (Swagger UI)", server_level=True, documented=False),
        Route("GET", f"{DOCS_PATH}/{{asset}}", asset, "Swagger UI's files", server_level=True, documented=False),
    ]


@cache
def _read(name: str) -> bytes:
    return (_bundle_folder() / name).read_bytes()


@cache
def _bundle_folder() -> Path:
    # The package's own __init__ imports its framework handlers; only its files are wanted here.
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover  (a dependency)
        raise OperationNotFound("the docs page needs the swagger-ui-py package")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
