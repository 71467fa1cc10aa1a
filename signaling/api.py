"""The admin HTTP API under /api/ (docs/api.md, docs/openapi.json).

Every request carries ``Authorization: Bearer <token>``; the token's grants decide, each for
the token's ``room`` only (or for every room, with ``room: "*"``; a token naming no room acts
on none): ``roomList`` lists rooms, ``roomCreate`` creates rooms (it never deletes one),
``roomAdmin`` deletes a room and manages its participants, tracks, metadata and data messages.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from visio_sfu import SFU, Room
from visio_sfu.events import Leave

from . import protocol as proto
from .auth import Identity, TokenError, TokenVerifier, VideoGrant, printable
from .config import Config


def _error(status: int, code: str, message: str) -> web.HTTPException:
    cls = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
    }[status]
    return cls(text=json.dumps({"code": code, "message": message}), content_type="application/json")


def in_scope(grant: VideoGrant, room: str) -> bool:
    """Whether ``grant``'s room covers ``room``: the same name, or ``*`` (every room)."""
    return grant.room == "*" or (bool(grant.room) and grant.room == room)


def _denied(grant_name: str, room: str) -> web.HTTPException:
    return _error(
        403,
        "permission_denied",
        f"the token does not grant {grant_name} on room '{printable(room, 128)}'",
    )


class AdminAPI:
    """Handlers of the admin API, bound to one SFU."""

    def __init__(self, sfu: SFU, verifier: TokenVerifier, config: Config) -> None:
        self.sfu = sfu
        self.verifier = verifier
        self.config = config

    def routes(self) -> list[web.RouteDef]:
        """The API's routes."""
        return [
            web.get("/api/rooms", self.list_rooms),
            web.post("/api/rooms", self.create_room),
            web.delete("/api/rooms/{room}", self.delete_room),
            web.patch("/api/rooms/{room}", self.update_room),
            web.get("/api/rooms/{room}/participants", self.list_participants),
            web.delete("/api/rooms/{room}/participants/{identity}", self.remove_participant),
            web.patch("/api/rooms/{room}/participants/{identity}", self.update_participant),
            web.post("/api/rooms/{room}/participants/{identity}/mute", self.mute_track),
            web.post("/api/rooms/{room}/participants/{identity}/unpublish", self.unpublish_track),
            web.post("/api/rooms/{room}/mute", self.mute_all),
            web.post("/api/rooms/{room}/data", self.send_data),
        ]

    # -- helpers -------------------------------------------------------------------------------
    async def _auth(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise _error(401, "invalid_token", "Authorization: Bearer <token> is required")
        try:
            return await self.verifier.verify_async(header[7:].strip(), require_join=False)
        except TokenError as exc:
            raise _error(401, exc.code, str(exc)) from None

    async def _admin(self, request: web.Request) -> tuple[Identity, Room]:
        """The token, and the room it may administer (roomAdmin on that room or on ``*``)."""
        ident = await self._auth(request)
        name = request.match_info["room"]
        if not ident.grant.room_admin or not in_scope(ident.grant, name):
            raise _denied("roomAdmin", name)
        room = self.sfu.room(name)
        if room is None:
            raise _error(404, "not_found", f"no room '{printable(name, 128)}'")
        return ident, room

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_length and request.content_length > 64 * 1024:
            raise _error(400, "bad_request", "body larger than 64 KiB")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _error(400, "bad_request", "body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _error(400, "bad_request", "body must be a JSON object")
        return body

    @staticmethod
    def _field(body: dict, name: str, kind: type, default: Any = None, limit: int = 4096) -> Any:
        value = body.get(name, default)
        if value is default:
            return value
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise _error(400, "bad_request", f"field '{name}' must be a {kind.__name__}")
        if isinstance(value, str) and len(value) > limit:
            raise _error(400, "bad_request", f"field '{name}' is too long")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise _error(400, "bad_request", f"field '{name}' must not be negative")
        return value

    @staticmethod
    def _participant(room: Room, identity: str):
        p = room.by_identity(identity)
        if p is None:
            raise _error(
                404,
                "not_found",
                f"no participant '{printable(identity, 128)}' in room '{printable(room.name)}'",
            )
        return p

    # -- rooms ---------------------------------------------------------------------------------
    async def list_rooms(self, request: web.Request) -> web.Response:
        """GET /api/rooms"""
        ident = await self._auth(request)
        grant = ident.grant
        if not grant.room_list or not grant.room:
            raise _error(
                403,
                "permission_denied",
                "the token does not grant roomList (on its room, or on every room with '*')",
            )
        rooms = [r.describe() for r in self.sfu.rooms.values() if in_scope(grant, r.name)]
        return web.json_response({"rooms": rooms})

    async def create_room(self, request: web.Request) -> web.Response:
        """POST /api/rooms {name, empty_timeout?, max_participants?, metadata?}"""
        ident = await self._auth(request)
        if not ident.grant.room_create:
            raise _error(403, "permission_denied", "the token does not grant roomCreate")
        body = await self._body(request)
        name = self._field(body, "name", str, limit=128)
        if not name:
            raise _error(400, "bad_request", "field 'name' is required")
        if not in_scope(ident.grant, name):
            raise _denied("roomCreate", name)
        if self.sfu.room(name) is not None:
            raise _error(409, "exists", f"room '{printable(name, 128)}' exists")
        if self.config.max_rooms and len(self.sfu.rooms) >= self.config.max_rooms:
            raise _error(409, "room_limit", "the server has reached its room limit")
        empty_timeout = self._field(body, "empty_timeout", int | float)
        room = self.sfu.get_or_create_room(
            name,
            empty_timeout=float(empty_timeout) if empty_timeout else None,
            max_participants=self._field(body, "max_participants", int),
            metadata=self._field(body, "metadata", str, ""),
        )
        return web.json_response(room.describe(), status=201)

    async def delete_room(self, request: web.Request) -> web.Response:
        """DELETE /api/rooms/{room}: everyone in it is disconnected. Needs roomAdmin on the
        room (roomCreate is not enough: creating is not deleting)."""
        _ident, room = await self._admin(request)
        if not await self.sfu.delete_room(room.name):
            raise _error(404, "not_found", f"no room '{printable(room.name, 128)}'")
        return web.json_response({"deleted": room.name})

    async def update_room(self, request: web.Request) -> web.Response:
        """PATCH /api/rooms/{room} {metadata?, locked?}"""
        _ident, room = await self._admin(request)
        body = await self._body(request)
        metadata = self._field(body, "metadata", str, None)
        locked = self._field(body, "locked", bool, None)
        if metadata is not None:
            room.set_metadata(metadata)
        if locked is not None:
            room.set_locked(locked)  # newcomers refused while locked; hosts may still join
        return web.json_response(room.describe())

    # -- participants --------------------------------------------------------------------------
    async def list_participants(self, request: web.Request) -> web.Response:
        """GET /api/rooms/{room}/participants"""
        _ident, room = await self._admin(request)
        out = [
            {**proto.participant_info(p.info()), "permissions": proto.permissions(p.permissions)}
            for p in room.participants.values()
        ]
        return web.json_response({"participants": out})

    async def remove_participant(self, request: web.Request) -> web.Response:
        """DELETE /api/rooms/{room}/participants/{identity}"""
        _ident, room = await self._admin(request)
        p = self._participant(room, request.match_info["identity"])
        p.emit(Leave("removed"))
        await room.remove(p, "removed")
        return web.json_response({"removed": p.identity})

    async def update_participant(self, request: web.Request) -> web.Response:
        """PATCH /api/rooms/{room}/participants/{identity} {name?, metadata?}"""
        _ident, room = await self._admin(request)
        p = self._participant(room, request.match_info["identity"])
        body = await self._body(request)
        p.update(
            name=self._field(body, "name", str, None, limit=128),
            metadata=self._field(body, "metadata", str, None),
        )
        return web.json_response(proto.participant_info(p.info()))

    async def mute_track(self, request: web.Request) -> web.Response:
        """POST /api/rooms/{room}/participants/{identity}/mute {track, muted}"""
        _ident, room = await self._admin(request)
        p = self._participant(room, request.match_info["identity"])
        body = await self._body(request)
        sid = self._field(body, "track", str, limit=64)
        muted = self._field(body, "muted", bool, True)
        try:
            track = p.set_muted(sid, muted, by_server=True)
        except KeyError:
            raise _error(
                404, "not_found", f"no track '{printable(sid, 64)}' of '{printable(p.identity)}'"
            ) from None
        return web.json_response(proto.track_info(track.info()))

    async def unpublish_track(self, request: web.Request) -> web.Response:
        """POST /api/rooms/{room}/participants/{identity}/unpublish {track}: stop a camera or
        a screen share; its owner is told (track_unpublished) and stops sending it."""
        _ident, room = await self._admin(request)
        p = self._participant(room, request.match_info["identity"])
        body = await self._body(request)
        sid = self._field(body, "track", str, limit=64)
        try:
            track = p.unpublish(sid, by_server=True)
        except KeyError:
            raise _error(
                404, "not_found", f"no track '{printable(sid, 64)}' of '{printable(p.identity)}'"
            ) from None
        return web.json_response(proto.track_info(track.info()))

    async def mute_all(self, request: web.Request) -> web.Response:
        """POST /api/rooms/{room}/mute {source?}: mute every participant's tracks of a source
        (microphone unless said); each participant is told (track_muted)."""
        _ident, room = await self._admin(request)
        body = await self._body(request)
        source = self._field(body, "source", str, "microphone", limit=32)
        muted = []
        for p in list(room.participants.values()):
            for track in list(p.tracks.values()):
                if track.source == source and not track.muted:
                    p.set_muted(track.sid, True, by_server=True)
                    muted.append(track.sid)
        return web.json_response({"muted": muted})

    async def send_data(self, request: web.Request) -> web.Response:
        """POST /api/rooms/{room}/data {topic?, payload, to?}"""
        _ident, room = await self._admin(request)
        body = await self._body(request)
        if "payload" not in body:
            raise _error(400, "bad_request", "field 'payload' is required")
        if len(json.dumps(body["payload"])) > self.config.max_data_bytes:
            raise _error(400, "bad_request", f"payload larger than {self.config.max_data_bytes}")
        to = body.get("to")
        if to is not None and (not isinstance(to, list) or not all(isinstance(x, str) for x in to)):
            raise _error(400, "bad_request", "field 'to' must be a list of identities")
        count = room.send_data(
            None, self._field(body, "topic", str, "", limit=64), body["payload"], to
        )
        return web.json_response({"delivered": count})
