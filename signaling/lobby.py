"""The waiting room of owned rooms (docs/protocol.md, "Waiting room").

Someone the room's policy does not let in directly (signaling/identity.py: a guest in a
``trusted`` room, anyone not invited to a ``restricted`` one) opens the WebSocket
``/lobby/{slug}`` and knocks with their name. The room's hosts, in the meeting, receive
``lobby`` events over their own signaling socket and answer with ``lobby_admit`` or
``lobby_deny`` (one person, or everyone waiting). The waiting person hears the decision at
once: ``admitted`` carries their media token (none is minted before), ``denied`` says how long
before they may knock again: each denial doubles that wait (per room, per signed-in user or
per address for guests), so a denied person cannot knock in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from visio_sfu import SFU

from .protocol import ProtocolError, Reply, short_str
from .session import Session, register_handler

if TYPE_CHECKING:
    from .identity import Identity

logger = logging.getLogger(__name__)

WAIT_LIMIT = 15 * 60  # seconds someone may wait before the lobby gives up
MAX_WAITING = 100  # people waiting per room
MAX_RETRY_AFTER = 3600  # the longest wait after denials
KNOCK_TIMEOUT = 10  # seconds a lobby socket has to knock
ADDRESS_DENIALS = 3  # guests denied from one address before the address itself waits


@dataclass
class Waiter:
    """Someone waiting: shown to hosts by id and name."""

    id: str
    name: str
    identity: str
    signed_in: bool
    #: what denials are counted against: (room, the person: signed-in user, else the guest's
    #: cookie, else the address) and, for guests, (room, their address)
    keys: tuple[tuple[str, str], ...]
    since_ms: int
    #: sends the decision and closes the socket (the socket's own handler keeps reading it)
    deliver: Callable[[str], Awaitable[None]] | None = None
    delivery: asyncio.Task | None = None

    def decide(self, decision: str) -> None:
        """Tell them (once): 'admitted', 'denied' or 'timeout'."""
        if self.delivery is None and self.deliver is not None:
            self.delivery = asyncio.ensure_future(self.deliver(decision))

    def to_json(self) -> dict:
        """What hosts see."""
        return {
            "id": self.id,
            "name": self.name,
            "signed_in": self.signed_in,
            "since": self.since_ms,
        }


@dataclass
class Denials:
    """How often someone was denied in a room, and until when they may not knock."""

    count: int = 0
    until: float = 0.0


class Lobby:
    """The waiting rooms of one server."""

    def __init__(self, ident: Identity, sfu: SFU, sessions: weakref.WeakSet) -> None:
        self.ident = ident
        self.sfu = sfu
        self.sessions = sessions
        self.waiting: dict[str, dict[str, Waiter]] = {}  # room slug -> id -> waiter
        self.denials: dict[tuple[str, str], Denials] = {}

    def queue(self, slug: str) -> list[dict]:
        """Who waits for ``slug``, first come first."""
        return [w.to_json() for w in self.waiting.get(slug, {}).values()]

    def hosts(self, slug: str) -> list[Session]:
        """The host sessions in the meeting ``slug``."""
        out = []
        for session in list(self.sessions):
            p = session.participant
            if p is not None and p.room_name == slug and session.identity.grant.is_host:
                out.append(session)
        return out

    def notify(self, slug: str, knock: Waiter | None = None) -> None:
        """Tell the room's hosts who waits (``knock``: who just arrived: a sound is played)."""
        event: dict = {"type": "lobby", "room": slug, "waiting": self.queue(slug)}
        if knock is not None:
            event["knock"] = knock.to_json()
        for session in self.hosts(slug):
            session.send(event)

    def retry_after(self, keys: tuple[tuple[str, str], ...]) -> int:
        """Seconds before someone known by ``keys`` may knock again (0: now)."""
        now = time.monotonic()
        left = max((self.denials[k].until - now for k in keys if k in self.denials), default=0)
        return max(0, int(left + 0.999))

    def deny(self, waiter: Waiter) -> int:
        """Record a denial; the seconds before this person's next knock. The person's wait
        doubles at each denial; an address (guests behind one NAT or proxy share it) is held
        back too once ADDRESS_DENIALS of its guests were denied: clearing one's cookies does
        not make a loop either."""
        retry = self.ident.settings.lobby_retry_after
        now = time.monotonic()
        wait = 0
        for i, key in enumerate(waiter.keys):
            found = self.denials.setdefault(key, Denials())
            found.count += 1
            if i == 0:
                wait = min(retry * 2 ** (found.count - 1), MAX_RETRY_AFTER)
                found.until = now + wait
            elif found.count >= ADDRESS_DENIALS:
                held = min(retry * 2 ** (found.count - ADDRESS_DENIALS), MAX_RETRY_AFTER)
                found.until = now + held
        if len(self.denials) > 100_000:  # forget the oldest that may knock again
            for key in [k for k, d in self.denials.items() if d.until < now][:50_000]:
                del self.denials[key]
        return wait

    def decide(self, slug: str, ids: list[str] | None, admit: bool) -> list[str]:
        """Admit or deny the waiters ``ids`` (None: all) of ``slug``; the ids decided."""
        room = self.waiting.get(slug, {})
        chosen = list(room) if ids is None else [i for i in ids if i in room]
        for wid in chosen:
            waiter = room.pop(wid)
            waiter.decide("admitted" if admit else "denied")
        if not room:
            self.waiting.pop(slug, None)
        if chosen:
            self.notify(slug)
        return chosen


_LOBBIES: weakref.WeakKeyDictionary[SFU, Lobby] = weakref.WeakKeyDictionary()


def _lobby_of(session: Session) -> Lobby:
    lobby = _LOBBIES.get(session.sfu)
    if lobby is None:
        raise ProtocolError("not_found", "this server has no waiting rooms (no [oidc])")
    return lobby


async def lobby_socket(request: web.Request) -> web.StreamResponse:
    """GET /lobby/{slug} (WebSocket): knock, wait, hear the hosts' decision."""
    from .app import JOIN_LIMITER, SFU_KEY
    from .identity import GUEST_COOKIE, _same_origin, display_name

    slug = request.match_info["slug"]
    lobby = _LOBBIES[request.app[SFU_KEY]]
    if not _same_origin(request):
        return web.json_response({"code": "bad_origin", "message": "cross-site"}, status=403)
    if not request.app[JOIN_LIMITER].allow(request.remote or "?"):
        return web.json_response(
            {"code": "rate_limited", "message": "too many connections"}, status=429
        )
    ws = web.WebSocketResponse(max_msg_size=4096, heartbeat=20)
    if not ws.can_prepare(request).ok:
        return web.json_response({"code": "bad_request", "message": "WebSocket only"}, status=400)
    await ws.prepare(request)
    ident = lobby.ident
    waiter: Waiter | None = None
    try:
        try:
            msg = await ws.receive(timeout=KNOCK_TIMEOUT)
        except TimeoutError:
            return ws
        knock = None
        if msg.type == WSMsgType.TEXT:
            try:
                knock = msg.json()
            except ValueError:
                knock = None
        if not isinstance(knock, dict) or knock.get("type") != "knock":
            await ws.send_json({"type": "error", "code": "bad_request", "message": "knock first"})
            return ws
        assert ident.store is not None
        room = await ident.store.room(slug)
        if room is None:
            await ws.send_json({"type": "error", "code": "not_found", "message": "no such meeting"})
            return ws
        user, _ = await ident.user(request)
        name = display_name(user, knock.get("name"))
        if not name:
            await ws.send_json({"type": "error", "code": "bad_request", "message": "say your name"})
            return ws
        role = ident.role(room, user)
        info = {"slug": room.slug, "name": room.name, "access": room.access}
        identity = ident.identity_of(user)
        if role != "wait":  # may enter after all (the room changed, or signed in since)
            token = ident.media_token(room, identity, name, role == "host", bool(user))
            await ws.send_json({"type": "admitted", "token": token, "meeting": info})
            return ws
        address = (slug, f"ip:{request.remote}")
        if user is not None:
            keys: tuple[tuple[str, str], ...] = ((slug, f"user:{user.subject}"),)
        else:
            guest = ident.unsign(request.cookies.get(GUEST_COOKIE))
            keys = ((slug, f"guest:{guest}"), address) if guest else (address,)
        wait = lobby.retry_after(keys)
        if wait:
            await ws.send_json(
                {
                    "type": "error",
                    "code": "rate_limited",
                    "message": f"you were denied entry: try again in {wait} s",
                    "retry_after": wait,
                }
            )
            return ws
        queue = lobby.waiting.setdefault(slug, {})
        if len(queue) >= MAX_WAITING:
            await ws.send_json(
                {"type": "error", "code": "lobby_full", "message": "too many people waiting"}
            )
            return ws
        waiter = Waiter(
            f"W_{secrets.token_hex(6)}",
            name,
            identity,
            user is not None,
            keys,
            int(time.time() * 1000),
        )
        queue[waiter.id] = waiter
        await ws.send_json(
            {
                "type": "waiting",
                "id": waiter.id,
                "meeting": info,
                "hosts_present": bool(lobby.hosts(slug)),
            }
        )
        lobby.notify(slug, knock=waiter)

        async def deliver(decision: str) -> None:
            if decision == "admitted":
                token = ident.media_token(room, identity, name, False, bool(user))
                message = {"type": "admitted", "token": token, "meeting": info}
            elif decision == "denied":
                message = {"type": "denied", "retry_after": lobby.deny(waiter)}
            else:
                message = {"type": "timeout", "message": "nobody let you in"}
            try:
                await ws.send_json(message)
            except ConnectionError:
                return
            await ws.close()

        waiter.deliver = deliver
        timer = asyncio.get_running_loop().call_later(WAIT_LIMIT, waiter.decide, "timeout")
        try:
            async for _msg in ws:  # pings and anything else are ignored, until it closes
                pass
        finally:
            timer.cancel()
        if waiter.delivery is not None:
            await waiter.delivery
        return ws
    finally:
        if waiter is not None:
            queue = lobby.waiting.get(slug, {})
            if queue.pop(waiter.id, None) is not None:  # left, or gave up: hosts are told
                if not queue:
                    lobby.waiting.pop(slug, None)
                lobby.notify(slug)
        if not ws.closed:
            await ws.close()


# -- the hosts' messages (over /rtc) --------------------------------------------------------------
@dataclass(frozen=True)
class LobbyList:
    """lobby: who waits (hosts only)."""

    @classmethod
    def parse(cls, msg: dict) -> LobbyList:
        return cls()


@dataclass(frozen=True)
class LobbyDecision:
    """lobby_admit / lobby_deny: ``waiting`` (one id) or ``all``: true."""

    waiting: str
    all: bool

    @classmethod
    def parse(cls, msg: dict) -> LobbyDecision:
        everyone = msg.get("all", False)
        if not isinstance(everyone, bool):
            raise ProtocolError("bad_request", "'all' must be true or false")
        waiting = short_str(msg, "waiting", 64)
        if not everyone and not waiting:
            raise ProtocolError("bad_request", "name 'waiting' (an id) or set 'all': true")
        return cls(waiting, everyone)


def _host_room(session: Session) -> str:
    room = session._room()
    if not session.identity.grant.is_host:
        raise ProtocolError("permission_denied", "only a host may answer the waiting room")
    return room.name


async def on_lobby(session: Session, req: LobbyList) -> Reply:
    """lobby: the waiting list of the host's room."""
    lobby = _lobby_of(session)
    slug = _host_room(session)
    return Reply("lobby", {"room": slug, "waiting": lobby.queue(slug)})


async def _decide(session: Session, req: LobbyDecision, admit: bool) -> Reply:
    lobby = _lobby_of(session)
    slug = _host_room(session)
    ids = None if req.all else [req.waiting]
    decided = lobby.decide(slug, ids, admit)
    if not req.all and not decided:
        raise ProtocolError("not_found", "nobody with this id is waiting (left, or decided)")
    return Reply("lobby_decided", {"admitted" if admit else "denied": decided})


async def on_admit(session: Session, req: LobbyDecision) -> Reply:
    """lobby_admit: let them in."""
    return await _decide(session, req, True)


async def on_deny(session: Session, req: LobbyDecision) -> Reply:
    """lobby_deny: turn them away."""
    return await _decide(session, req, False)


def setup(app: web.Application, ident: Identity) -> None:
    """The lobby's socket and the hosts' messages (called by identity.setup)."""
    from .app import SESSIONS, SFU_KEY

    _LOBBIES[app[SFU_KEY]] = Lobby(ident, app[SFU_KEY], app[SESSIONS])
    app.router.add_get("/lobby/{slug}", lobby_socket)
    register_handler("lobby", on_lobby, LobbyList)
    register_handler("lobby_admit", on_admit, LobbyDecision)
    register_handler("lobby_deny", on_deny, LobbyDecision)


async def route_lobby(front: Any, request: web.Request, handler: Any, hop: str | None) -> Any:
    """With workers or a cluster (signaling/cluster/front.py): the waiting room of a meeting
    lives with the meeting, in the process that holds its room (where its hosts' sessions
    are), so the lobby socket is relayed there like /rtc, with the browser's cookies (who is
    signed in, the guest's id). The Origin is checked here, as rtc does."""
    from .app import CONFIG, JOIN_LIMITER, origin_allowed
    from .cluster.front import LOCAL
    from .cluster.node import NoNode
    from .cluster.proxy import Unreachable, relay_websocket

    slug = request.path.removeprefix("/lobby/")
    if not slug or "/" in slug or len(slug) > 128:
        return await handler(request)
    config = request.app[CONFIG]
    if not origin_allowed(request, config.allowed_origins, config.public_url):
        return web.json_response({"code": "bad_origin", "message": "cross-site"}, status=403)
    if hop is None and not request.app[JOIN_LIMITER].allow(request.remote or "?"):
        return web.json_response({"code": "rate_limited", "message": "too many"}, status=429)
    for _attempt in range(3):
        try:
            target = await front.resolve(slug, True, hop)
        except NoNode as exc:
            return web.json_response({"code": "unavailable", "message": str(exc)}, status=503)
        if target is None or target is LOCAL:
            return await handler(request)
        headers = front._headers(target, request)
        if "Cookie" in request.headers:
            headers["Cookie"] = request.headers["Cookie"]
        url = target.url.replace("http://", "ws://").replace("https://", "wss://")
        try:
            return await relay_websocket(request, front.http, url + request.path_qs, headers)
        except Unreachable:
            await front._unreachable(target)
    return web.json_response({"code": "unavailable", "message": "try again"}, status=503)
