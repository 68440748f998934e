"""A local Hugging Face hub: an HTTP server answering the routes ``huggingface_hub`` calls (model info, the
file tree, ``resolve`` with the commit and ETag headers it reads), serving model folders as repositories."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalHub:
    def __init__(self, repositories: dict[str, Path]) -> None:
        self.repositories = dict(repositories)
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def files(self, repo: str) -> list[str]:
        root = self.repositories[repo]
        return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())

    def downloads(self) -> list[str]:
        """The files fetched (GET of ``resolve``), as ``repo/path``."""
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    def __enter__(self) -> LocalHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _answer(self, head: bool) -> None:
            hub.requests.append((self.command, self.path))
            path = self.path.split("?", 1)[0]
            tree = re.match(r"^/api/models/([^/]+/[^/]+)/tree/[^/]+$", path)
            info = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?$", path)
            resolve = re.match(r"^/([^/]+/[^/]+)/resolve/[^/]+/(.+)$", path)
            repo = (tree or info or resolve).group(1) if (tree or info or resolve) else None
            if repo not in hub.repositories:
                return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
            root = hub.repositories[repo]
            if tree:
                entries = [_entry(root, f) for f in hub.files(repo)]
                return self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, head)
            if info:
                siblings = [{"rfilename": f, "size": (root / f).stat().st_size} for f in hub.files(repo)]
                body = {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings, "private": False}
                return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
            file = root / resolve.group(2)
            if not file.is_file():
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            data = file.read_bytes()
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            return self._send(200, data, {"X-Repo-Commit": COMMIT, "ETag": etag}, head)

    return Handler


def _entry(root: Path, name: str) -> dict[str, object]:
    data = (root / name).read_bytes()
    return {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
