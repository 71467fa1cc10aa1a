"""What every process of a deployment answers: internal requests (X-Visio-Internal) are
trusted for the client's address, and GET /internal/load says what this process carries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..app import CONFIG, SFU_KEY
from . import internal
from .load import LoadMeter

HOP = web.RequestKey("visio_hop", object)  # the internal hop ("node", "worker") or None
KEY = web.AppKey("cluster_key", str)
METER = web.AppKey("load_meter", LoadMeter)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def trust_internal(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark an internal request; its client's address is the one the first process saw."""
    hop = internal.hop_of(request, request.app[KEY])
    if hop is not None:
        remote = request.headers.get(internal.FORWARDED_FOR) or request.remote
        request = request.clone(remote=remote)
    request[HOP] = hop
    return await handler(request)


async def load_handler(request: web.Request) -> web.Response:
    """GET /internal/load (internal requests only): rooms, participants, packets/s."""
    if request.get(HOP) is None:
        raise web.HTTPNotFound()
    return web.json_response(request.app[METER].sample())


async def evict_handler(request: web.Request) -> web.Response:
    """POST /internal/evict {room} (internal requests only): close a room here, whose
    placement another node holds now (its participants reconnect to that node)."""
    if request.get(HOP) is None:
        raise web.HTTPNotFound()
    body = await request.json()
    room = body.get("room") if isinstance(body, dict) else None
    if not isinstance(room, str):
        raise web.HTTPBadRequest()
    closed = await request.app[SFU_KEY].delete_room(room)
    return web.json_response({"closed": closed})


def install_backend(app: web.Application) -> None:
    """Make ``app`` (built by create_app) answer internal requests."""
    app[KEY] = internal.cluster_key(app[CONFIG])
    app[METER] = LoadMeter(app[SFU_KEY])
    app.middlewares.insert(0, trust_internal)
    app.router.add_get("/internal/load", load_handler)
    app.router.add_post("/internal/evict", evict_handler)
