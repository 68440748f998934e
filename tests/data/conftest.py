from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest


class FileServer:
    """A local HTTP server with files in memory that records every request it receives."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        """Paths answered with a 302 to another location, with a body of their own."""
        self.requests: list[tuple[str, str]] = []
        self.protected: dict[str, tuple[str, str]] = {}
        """Paths answered 401 unless the request carries this header (name, value)."""
        self.headers: list[dict[str, str]] = []
        """The headers of each request, in the order of ``requests`` (lower-case names)."""
        files, redirects, requests, protected = self.files, self.redirects, self.requests, self.protected
        seen_headers = self.headers

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                requests.append((self.command, self.path))
                seen_headers.append({name.lower(): value for name, value in self.headers.items()})
                if self.path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.send_header("Content-Length", "13")
                    self.end_headers()
                    if with_body:
                        self.wfile.write(b"redirect body")
                    return
                needed = protected.get(self.path)
                if needed is not None and self.headers.get(needed[0]) != needed[1]:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def file_server():
    server = FileServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def s3(moto_endpoint):
    """moto's S3 with a bucket; yields (endpoint, boto3 client)."""
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="v2serve-data")
    return moto_endpoint, client


def s3_options(endpoint: str) -> dict:
    return {"endpoint_url": endpoint, "key": "test", "secret": "test", "client_kwargs": {"region_name": "us-east-1"}}
