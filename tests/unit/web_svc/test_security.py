"""The Guard's answers to a page request, with a small ASGI app behind it (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from web_svc.security import CONTENT_SECURITY_POLICY, Guard, csrf_token

EDGE_TOKEN = "the-edge-token"


async def _answer(
    guard_options: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope)
        seen.update(address=request.state.address, browser_id=request.state.browser_id, csrf=csrf_token(request))
        await PlainTextResponse("ok")(scope, receive, send)

    guard = Guard(app, edge_token=EDGE_TOKEN, csrf_key=b"k" * 32, **guard_options)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": headers,
        "client": ("10.0.0.9", 5000),
        "query_string": b"",
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await guard(scope, receive, send)
    answered: dict[str, list[str]] = {}
    for name, value in sent[0]["headers"]:
        answered.setdefault(name.decode(), []).append(value.decode())
    return answered, seen


def test_a_new_browser_gets_an_http_only_lax_cookie_and_every_page_its_headers() -> None:
    answered, seen = asyncio.run(_answer({"secure_cookies": False}, []))

    (cookie,) = answered["set-cookie"]
    assert cookie.startswith(f"browser={seen['browser_id']};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert answered["content-security-policy"] == [CONTENT_SECURITY_POLICY]
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert answered["x-frame-options"] == ["DENY"] and answered["cache-control"] == ["private, no-cache"]


def test_under_tls_the_cookie_is_secure_and_host_prefixed() -> None:
    answered, _ = asyncio.run(_answer({"secure_cookies": True}, []))

    (cookie,) = answered["set-cookie"]
    assert cookie.startswith("__Host-browser=") and cookie.endswith("; Secure") and "Path=/;" in cookie


def test_a_known_browser_keeps_its_cookie_and_its_csrf_token() -> None:
    browser_id = "A" * 43
    headers = [(b"cookie", f"browser={browser_id}".encode())]
    answered, seen = asyncio.run(_answer({"secure_cookies": False}, headers))
    _, again = asyncio.run(_answer({"secure_cookies": False}, headers))
    _, other = asyncio.run(_answer({"secure_cookies": False}, [(b"cookie", f"browser={'B' * 43}".encode())]))

    assert "set-cookie" not in answered and seen["browser_id"] == browser_id
    assert seen["csrf"] == again["csrf"] != other["csrf"]


def test_the_client_address_is_the_edges_word_only_with_the_edges_token() -> None:
    claimed = [(b"x-envoy-external-address", b"203.0.113.7")]
    _, from_edge = asyncio.run(_answer({"secure_cookies": False}, [*claimed, (b"x-mesh-edge", EDGE_TOKEN.encode())]))
    _, forged = asyncio.run(_answer({"secure_cookies": False}, [*claimed, (b"x-mesh-edge", b"a guess")]))
    _, bare = asyncio.run(_answer({"secure_cookies": False}, claimed))

    assert from_edge["address"] == "203.0.113.7"
    assert forged["address"] == bare["address"] == "10.0.0.9"
