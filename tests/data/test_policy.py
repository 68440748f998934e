"""The data_url policy holds against the encodings an attacker would try: '..' and percent-encoding past a
prefix, IPv6 spellings of private IPv4 addresses, DNS answers that change between check and connection, and
redirects. Every refusal happens before the target sees a request."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tests.conftest import serve_in_process
from tests.fixtures import EchoModel
from v2serve.data.addresses import is_public
from v2serve.data.policy import DataPolicy
from v2serve.errors import Forbidden
from v2serve.settings import DataSettings

pytestmark = pytest.mark.anyio


def echo_settings(**data) -> dict:
    return {"data": DataSettings(**({"protocols": ["file", "http"]} | data))}


async def read(client, url: str):
    return await client.post("/v2/models/echo/infer", json={"data_url": url})


# ---- 2. prefixes compare normalised locations


async def test_a_local_prefix_cannot_be_left_with_dot_dot(tmp_path):
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "ok.txt").write_bytes(b"public")
    (tmp_path / "private.txt").write_bytes(b"secret")
    settings = echo_settings(data_root=str(tmp_path), allowed_prefixes=[f"{tmp_path}/public/"])
    async with serve_in_process(EchoModel(name="echo"), **settings) as client:
        escaped = await read(client, f"{tmp_path}/public/../private.txt")
        as_url = await read(client, f"file://{tmp_path}/public/../private.txt")
        allowed = await read(client, f"{tmp_path}/public/ok.txt")
    assert escaped.status_code == 403 and "outside the allowed prefixes" in escaped.json()["error"]
    assert as_url.status_code == 403
    assert "secret" not in escaped.text + as_url.text
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/public/../admin/x", "/public/%2e%2e/admin/x", "/public/%2E%2e%2fadmin/x", "/public/..%5cadmin/x", "/public/./x"],
)
async def test_an_http_prefix_cannot_be_left_with_dot_segments(file_server, path):
    file_server.files["/admin/x"] = b"admin only"
    prefix = f"{file_server.url}/public/"
    settings = echo_settings(allowed_prefixes=[prefix], allow_private_addresses=True)
    async with serve_in_process(EchoModel(name="echo"), **settings) as client:
        response = await read(client, f"{file_server.url}{path}")
    assert response.status_code == 403, response.text
    assert file_server.requests == []


async def test_an_http_prefix_still_allows_what_lies_under_it(file_server):
    file_server.files["/public/x.txt"] = b"hello"
    settings = echo_settings(allowed_prefixes=[f"{file_server.url}/public/"], allow_private_addresses=True)
    async with serve_in_process(EchoModel(name="echo"), **settings) as client:
        response = await read(client, f"{file_server.url}/public/x.txt")
        elsewhere = await read(client, f"{file_server.url}/publicity/x.txt")
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == ["hello"]
    assert elsewhere.status_code == 403


def test_prefix_hosts_compare_as_hosts_not_strings():
    policy = DataPolicy(DataSettings(protocols=["https"], allowed_prefixes=["https://data.example"]))
    for url in ("https://data.example.evil.test/x", "https://data.example@evil.test/x"):
        with pytest.raises(Forbidden):
            policy.check(url)
    policy = DataPolicy(DataSettings(protocols=["https"], allowed_prefixes=["https://Data.Example/"]))
    assert policy.check("https://data.EXAMPLE/x").protocol == "https"


# ---- 6. IPv6 spellings of private IPv4 addresses, and the DNS answer that is connected to


IPV6_SPELLINGS = [
    "[::127.0.0.1]", "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "[64:ff9b::a00:1]", "[2002:7f00:1::]", "[::1]"
]  # fmt: skip
# IPv4 spellings are read as the WHATWG URL standard reads them (browsers do), not left to the HTTP client's parser.
LOOPBACK_SPELLINGS = ["2130706433", "0177.0.0.1", "127.1", "0x7f.1", "0x7F000001", "127.0.0.1.", "0177.0.0x1"]


@pytest.mark.parametrize("host", IPV6_SPELLINGS + LOOPBACK_SPELLINGS)
async def test_other_spellings_of_private_addresses_are_refused_by_the_policy(file_server, host):
    port = file_server.url.rsplit(":", 1)[1]
    async with serve_in_process(EchoModel(name="echo"), **echo_settings()) as client:
        response = await read(client, f"http://{host}:{port}/x")
    assert response.status_code == 403 and "non-public address" in response.json()["error"]
    assert file_server.requests == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("::127.0.0.1", False),
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b:1::a00:1", False),
        ("2002:c0a8:101::1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("64:ff9b::8.8.8.8", True),
        ("2606:4700::1111", True),
        ("8.8.8.8", True),
        ("169.254.169.254", False),
    ],
)
def test_embedded_ipv4_addresses_are_checked_too(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1"])
async def test_a_non_standard_ipv4_spelling_is_refused_even_where_private_addresses_are_allowed(file_server, host):
    port = file_server.url.rsplit(":", 1)[1]
    async with serve_in_process(EchoModel(name="echo"), **echo_settings(allow_private_addresses=True)) as client:
        response = await read(client, f"http://{host}:{port}/x")
        standard = await read(client, f"http://127.0.0.1:{port}/x")
    assert response.status_code == 403 and "127.0.0.1 in a non-standard way" in response.json()["error"]
    assert standard.status_code != 403  # the dotted-quad spelling of the same address passes the policy


@pytest.mark.parametrize("host", ["256.0.0.1", "1.2.3.4.5", "1..2.3", "0x1.09", "4294967296"])
def test_a_host_ending_in_a_number_that_is_no_ipv4_address_is_refused(host):
    policy = DataPolicy(DataSettings(protocols=["http"], allow_private_addresses=True))
    with pytest.raises(Forbidden, match="not an IPv4 address"):
        policy.check(f"http://{host}/x")


@pytest.mark.parametrize(("host", "address"), [("8.8.8.8", "8.8.8.8"), ("1.2.3.example", None), ("[::1]", "::1")])
def test_names_and_standard_addresses_read_as_before(host, address):
    from v2serve.data.addresses import literal_address

    found = literal_address(host.strip("[]"))
    assert (None if found is None else str(found)) == address


async def test_a_name_resolving_to_loopback_is_refused_at_connection(file_server):
    port = file_server.url.rsplit(":", 1)[1]
    async with serve_in_process(EchoModel(name="echo"), **echo_settings()) as client:
        response = await read(client, f"http://localhost:{port}/x")
    assert response.status_code == 403 and "non-public address 127.0.0.1" in response.json()["error"]
    assert file_server.requests == []


async def test_the_connection_goes_to_the_address_that_was_checked(file_server, monkeypatch):
    """A rebinding DNS server answers a "public" address to the check and loopback to the connection. Here
    127.0.0.2 stands in for the public address (nothing listens there) and the file server on 127.0.0.1 for
    the internal target: the one resolution that is checked must be the one connected to."""
    file_server.files["/internal"] = b"internal"
    port = int(file_server.url.rsplit(":", 1)[1])
    answers = iter(["127.0.0.2", "127.0.0.1", "127.0.0.1"])
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host != "rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr("v2serve.data.addresses.is_public", lambda ip: str(ip) == "127.0.0.2")
    async with serve_in_process(EchoModel(name="echo"), **echo_settings()) as client:
        response = await read(client, f"http://rebind.test:{port}/internal")
    assert response.status_code == 502, response.text  # 127.0.0.2 refused the connection
    assert file_server.requests == []


# ---- 8. a redirect is an error, never data


async def test_a_redirect_is_a_502_and_its_body_is_not_data(file_server):
    file_server.redirects["/moved"] = "http://169.254.169.254/latest/meta-data/"
    async with serve_in_process(EchoModel(name="echo"), **echo_settings(allow_private_addresses=True)) as client:
        response = await read(client, f"{file_server.url}/moved")
    assert response.status_code == 502
    assert "redirects are not followed" in response.json()["error"] and "169.254.169.254" in response.json()["error"]
    assert file_server.requests == [("GET", "/moved")]
