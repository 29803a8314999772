"""SSRF: which addresses a remote source may reach, checked after DNS and on every redirect."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

import pytest
from starlette.types import Receive, Scope, Send

from cdn_common.errors import BadRequest, Forbidden
from edge.origin_client import Fetcher
from edge.routes import RemoteSource
from edge.security.netguard import ForbiddenAddress, public_address
from tests.images import jpeg
from tests.servers import ServerThread

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # CGNAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),  # AWS metadata over IPv6
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:169.254.169.254", False),
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo of 127.0.0.1
    ],
)
def test_public_address(address: str, public: bool) -> None:
    assert public_address(ipaddress.ip_address(address)) is public


async def image_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = jpeg()
    if scope["path"].startswith("/redirect"):
        target = scope["query_string"].decode()
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [(b"location", target.encode())],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"image/jpeg"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def image_server():  # type: ignore[no-untyped-def]
    with ServerThread(image_app) as server:
        yield server


def only_127_0_0_1(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return str(address) == "127.0.0.1"


async def fetch(fetcher: Fetcher, url: str, host: str) -> bytes:
    source = RemoteSource(url, host)
    fetched = await fetcher.fetch(source, max_bytes=10_000_000, deadline=time.monotonic() + 10)
    return fetched.body


@pytest.mark.parametrize(
    ("host", "refusal"),
    [
        ("localhost", ForbiddenAddress),
        ("127.0.0.1", ForbiddenAddress),
        ("2130706433", ForbiddenAddress),  # decimal spelling of 127.0.0.1
        ("0x7f000001", ForbiddenAddress),
        ("0177.0.0.1", BadRequest),  # octal: httpx refuses to parse it at all
        ("[::1]", ForbiddenAddress),
        ("[::ffff:127.0.0.1]", ForbiddenAddress),
    ],
)
async def test_loopback_in_any_spelling_is_refused(
    image_server: ServerThread, host: str, refusal: type[Exception]
) -> None:
    fetcher = Fetcher("http://unused", allowed_hosts=(host.strip("[]"),))
    with pytest.raises(refusal):
        await fetch(fetcher, f"http://{host}:{image_server.port}/a.jpg", host.strip("[]"))
    await fetcher.close()


async def test_allowed_address_is_fetched(image_server: ServerThread) -> None:
    fetcher = Fetcher(
        "http://unused", allowed_hosts=("127.0.0.1",), remote_address_check=only_127_0_0_1
    )
    assert await fetch(fetcher, f"{image_server.url}/a.jpg", "127.0.0.1") == jpeg()
    await fetcher.close()


async def test_redirect_to_a_forbidden_address_is_refused(image_server: ServerThread) -> None:
    fetcher = Fetcher(
        "http://unused",
        allowed_hosts=("127.0.0.1", "127.0.0.2"),
        remote_address_check=only_127_0_0_1,
    )
    target = f"http://127.0.0.2:{image_server.port}/a.jpg"
    with pytest.raises(ForbiddenAddress):
        await fetch(fetcher, f"{image_server.url}/redirect?{target}", "127.0.0.1")
    await fetcher.close()


async def test_redirect_to_a_host_not_allowed_is_refused(image_server: ServerThread) -> None:
    fetcher = Fetcher(
        "http://unused", allowed_hosts=("127.0.0.1",), remote_address_check=only_127_0_0_1
    )
    target = f"http://elsewhere.invalid:{image_server.port}/a.jpg"
    with pytest.raises(Forbidden):
        await fetch(fetcher, f"{image_server.url}/redirect?{target}", "127.0.0.1")
    await fetcher.close()


@pytest.mark.parametrize(
    "answers",
    [
        ["100.64.12.1"],  # CGNAT
        ["10.1.2.3"],
        ["169.254.169.254"],
        ["0.0.0.0"],
        ["::ffff:10.0.0.1"],  # IPv4-mapped private
        ["64:ff9b::a9fe:a9fe"],  # NAT64 of the metadata address
        ["93.184.215.14", "127.0.0.1"],  # one private answer among public ones
    ],
)
async def test_a_hostname_that_resolves_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, answers: list[str]
) -> None:
    # DNS for a made-up name cannot be served here, so the resolver is replaced: the
    # guard must judge what the name resolves to, whatever the name looks like
    await _resolve_to(monkeypatch, lambda: answers)
    fetcher = Fetcher("http://unused", allowed_hosts=("images.example",))
    with pytest.raises(ForbiddenAddress):
        await fetch(fetcher, "http://images.example/a.jpg", "images.example")
    await fetcher.close()


async def test_dns_rebinding_between_requests_is_refused(
    monkeypatch: pytest.MonkeyPatch, image_server: ServerThread
) -> None:
    # first answer: the (allowed) test server; second: the metadata address
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    await _resolve_to(monkeypatch, lambda: next(answers))
    fetcher = Fetcher(
        "http://unused",
        allowed_hosts=("images.example",),
        remote_address_check=lambda ip: public_address(ip) or str(ip) == "127.0.0.1",
    )
    url = f"http://images.example:{image_server.port}/a.jpg"
    assert await fetch(fetcher, url, "images.example") == jpeg()
    await fetcher.close()  # a new connection, so the name is resolved again
    fetcher = Fetcher(
        "http://unused",
        allowed_hosts=("images.example",),
        remote_address_check=lambda ip: public_address(ip) or str(ip) == "127.0.0.1",
    )
    with pytest.raises(ForbiddenAddress):
        await fetch(fetcher, url, "images.example")
    await fetcher.close()


async def _resolve_to(monkeypatch: pytest.MonkeyPatch, answers: Callable[[], list[str]]) -> None:
    import asyncio
    import socket

    loop = asyncio.get_running_loop()

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        infos: list[tuple[object, ...]] = []
        for address in answers():
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            infos.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return infos

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
