"""Relaying a WebSocket or an HTTP request to the process that owns its room.

Only signaling goes through here (JSON or protobuf frames, admin requests): media flows
between the client and the owner directly. When the owner's socket ends without a close code
of its own (the process died, the node is draining), the client's socket is closed with 1012
(service restart): clients reconnect, and the room is found again, possibly elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
from aiohttp import WSMsgType, web

logger = logging.getLogger(__name__)

RECONNECT = 1012  # "service restart": reconnect (RFC 6455 registry)
#: codes a server sets itself; anything else from upstream (1006: no close frame) means the
#: owning process is gone
_OWN_CODES = range(4000, 5000)


def _where(url: str) -> str:
    """A URL without its query string: an access token travels there, and logs never show one."""
    return url.split("?", 1)[0]


class Unreachable(Exception):
    """The owning process did not answer (refused, reset, timed out)."""


def _close_code(upstream: aiohttp.ClientWebSocketResponse) -> tuple[int, bytes]:
    code = upstream.close_code
    if code is not None and (code in _OWN_CODES or code == 1000):
        return code, b""
    return RECONNECT, b"reconnect"


async def relay_websocket(
    request: web.Request,
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    connect_timeout: float = 15.0,  # a refusal (a dead process) comes at once; a busy one may
    # take seconds to answer an upgrade: waiting beats closing on its participants
    max_msg_size: int = 4 * 1024 * 1024,
) -> web.StreamResponse:
    """Open ``url`` (a ws:// URL with the same path and query) and relay frames both ways
    until either side closes. Unreachable if the upstream does not answer: the caller may
    place the room again and retry. An HTTP refusal (401, 403, 429...) is passed back."""
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    try:
        upstream = await asyncio.wait_for(
            http.ws_connect(
                url, headers=headers, protocols=protocols, max_msg_size=0, autoping=True
            ),
            connect_timeout,
        )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (502, 503, 504):
            raise Unreachable(f"{_where(url)}: HTTP {exc.status}") from None
        return web.json_response(
            {"code": "refused", "message": f"refused by the room's server (HTTP {exc.status})"},
            status=exc.status,
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unreachable(f"{_where(url)}: {type(exc).__name__}") from None
    ws = web.WebSocketResponse(
        max_msg_size=max_msg_size,  # the owner applies its own limit; this bounds the relay
        heartbeat=None,
        protocols=[upstream.protocol] if upstream.protocol else (),
    )
    if not ws.can_prepare(request).ok:
        await upstream.close()
        return web.json_response(
            {"code": "bad_request", "message": "expected a WebSocket upgrade"}, status=400
        )
    await ws.prepare(request)

    async def down() -> None:  # owner -> client
        async for msg in upstream:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            else:
                break

    async def up() -> None:  # client -> owner
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await upstream.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            else:
                break

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.info("relay to %s ended: %r", _where(url), task.exception())
    finally:
        for task in tasks:
            task.cancel()
        client_left = tasks[1].done() and not tasks[0].done()
        if client_left or ws.closed:
            with contextlib.suppress(Exception):
                await upstream.close()
        else:
            code, message = _close_code(upstream)
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await ws.close(code=code, message=message)
    return ws


#: response headers relay_http passes on (a WHIP/WHEP session's URL, its ICE servers, ...)
RELAYED_HEADERS = (
    "Location",
    "ETag",
    "Link",
    "Accept-Post",
    "Accept-Patch",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
)


async def relay_http(
    request: web.Request,
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout: float = 15.0,
) -> web.Response:
    """Send the same request to ``url`` and return its answer; Unreachable if it fails."""
    if body is None and request.body_exists:
        body = await request.read()
    try:
        async with http.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as answer:
            data = await answer.read()
            response = web.Response(
                body=data,
                status=answer.status,
                content_type=answer.content_type,
                charset=answer.charset,
            )
            for name in RELAYED_HEADERS:  # what a WHIP/WHEP answer says beside its body
                for value in answer.headers.getall(name, ()):
                    response.headers.add(name, value)
            return response
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unreachable(f"{_where(url)}: {type(exc).__name__}") from None


async def fetch_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    timeout: float = 5.0,
    body: object = None,
) -> tuple[int, object]:
    """(status, decoded JSON or None) of a request; Unreachable if it fails."""
    try:
        async with http.request(
            method, url, headers=headers, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as answer:
            text = await answer.text()
            try:
                return answer.status, json.loads(text)
            except ValueError:
                return answer.status, None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unreachable(f"{_where(url)}: {type(exc).__name__}") from None
