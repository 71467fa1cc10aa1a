"""LiveKit's RoomService (signaling/livekit_api.py) with workers and nodes: its requests name
their room in the body, not the path, so the front reads it there and relays the request to the
room's owner as it does the admin API's (docs/cluster.md); ListRooms asks every worker and node
and merges their answers."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from livekit.protocol import room as lkroom

from ..app import VERIFIER
from ..auth import TokenError
from ..livekit_api import CONTENT_TYPES, PREFIX, REQUESTS, TwirpError, decode, encode
from .backend import Handler

if TYPE_CHECKING:
    from .front import Front

logger = logging.getLogger(__name__)


async def route(
    front: Front, request: web.Request, handler: Handler, hop: str | None
) -> web.StreamResponse:
    """A RoomService call: to the process owning its room; anything this process can answer
    by itself (a bad route, a body that does not decode, a missing grant) it answers."""
    method = request.path[len(PREFIX) :]
    encoding = CONTENT_TYPES.get(request.content_type.lower())
    if request.method != "POST" or method not in REQUESTS or encoding is None:
        return await handler(request)
    try:
        message = decode(REQUESTS[method], await request.read(), encoding)
    except (TwirpError, web.HTTPRequestEntityTooLarge):
        return await handler(request)
    if method == "ListRooms":
        return await _list_rooms(front, request, handler, hop, encoding)
    if method == "CreateRoom":
        name = message.name  # type: ignore[attr-defined]
        auth = request.headers.get("Authorization", "")
        try:
            ident = await request.app[VERIFIER].verify_async(auth[7:].strip(), require_join=False)
        except TokenError:
            return await handler(request)
        grant = ident.grant
        if not name or not grant.room_create or grant.room not in ("", "*", name):
            return await handler(request)  # refused here: no room is placed for it
        return await front.route_room(request, handler, hop, name, create=True)
    room = message.room  # type: ignore[attr-defined]
    if not room:
        return await handler(request)
    return await front.route_room(request, handler, hop, room, create=False)


async def _list_rooms(
    front: Front, request: web.Request, handler: Handler, hop: str | None, encoding: str
) -> web.StreamResponse:
    """This process's answer (it checks the token) with every worker's and node's rooms."""
    own = await handler(request)
    if own.status != 200 or not isinstance(own, web.Response) or own.body is None:
        return own
    merged = lkroom.ListRoomsResponse()
    if front.pool is None:  # a front with workers holds no room itself
        merged.rooms.extend(_decoded(bytes(own.body), encoding).rooms)
    body = await request.read()
    assert front.http is not None
    http: aiohttp.ClientSession = front.http

    async def one(url: str, headers: dict[str, str]) -> None:
        try:
            async with http.post(
                url + request.path, data=body, headers=headers, timeout=aiohttp.ClientTimeout(5)
            ) as answer:
                data = await answer.read()
                if answer.status == 200:
                    merged.rooms.extend(_decoded(data, encoding).rooms)
                    return
                logger.warning("ListRooms: %s answered %s", url, answer.status)
        except (aiohttp.ClientError, OSError, TimeoutError, TwirpError) as exc:
            logger.warning("ListRooms: %s unreachable (%s)", url, type(exc).__name__)

    targets = await front.listing_targets(hop)
    await asyncio.gather(*(one(t.url, front._headers(t, request)) for t in targets))
    merged.rooms.sort(key=lambda r: r.name)
    return encode(merged, encoding)


def _decoded(data: bytes, encoding: str) -> lkroom.ListRoomsResponse:
    message = decode(lkroom.ListRoomsResponse, data, encoding)
    assert isinstance(message, lkroom.ListRoomsResponse)
    return message
