"""LiveKit's server API: RoomService over Twirp, so that LiveKit's server SDKs drive visio-sfu.

``POST /twirp/livekit.RoomService/<Method>`` with a protobuf (``application/protobuf``) or JSON
(``application/json``) body, answered in the same encoding; errors are Twirp's JSON
(``{"code", "msg"}``) with LiveKit's codes and HTTP statuses (docs/livekit.md). The request
carries ``Authorization: Bearer <token>`` whose ``video`` grant decides, as on LiveKit:

- CreateRoom needs ``roomCreate``; ListRooms ``roomList``; DeleteRoom ``roomCreate`` (LiveKit's
  rule) or ``roomAdmin`` on the room. A token naming no room acts on every room (what LiveKit's
  SDKs send); one naming a room, only on it; ``*`` is every room.
- every other method needs ``roomAdmin`` on the request's room (or ``*``).

The core is driven through its public API (``visio_sfu`` Room and Participant), as the admin
API (signaling/api.py) does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import models as lk
from livekit.protocol import room as lkroom

from visio_sfu import SFU, Room
from visio_sfu.events import Leave
from visio_sfu.participant import Participant

from .api import in_scope
from .auth import Identity, TokenError, TokenVerifier, display_name, printable
from .config import Config
from .livekit import convert
from .livekit_models import SOURCE_NAMES, permission_proto

logger = logging.getLogger(__name__)

PREFIX = "/twirp/livekit.RoomService/"
#: the largest request body read (a SendData's payload is further held to max_data_bytes)
MAX_BODY = 256 * 1024
MAX_METADATA = 64 * 1024
MAX_ATTRIBUTES = 64
#: Twirp's error codes and their HTTP statuses (twitchtv/twirp, errors.go)
STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}
CONTENT_TYPES = {"application/protobuf": "protobuf", "application/json": "json"}
#: each method's request message
REQUESTS: dict[str, type[Message]] = {
    "CreateRoom": lkroom.CreateRoomRequest,
    "ListRooms": lkroom.ListRoomsRequest,
    "DeleteRoom": lkroom.DeleteRoomRequest,
    "ListParticipants": lkroom.ListParticipantsRequest,
    "GetParticipant": lkroom.RoomParticipantIdentity,
    "RemoveParticipant": lkroom.RoomParticipantIdentity,
    "MutePublishedTrack": lkroom.MuteRoomTrackRequest,
    "UpdateParticipant": lkroom.UpdateParticipantRequest,
    "UpdateSubscriptions": lkroom.UpdateSubscriptionsRequest,
    "UpdateRoomMetadata": lkroom.UpdateRoomMetadataRequest,
    "SendData": lkroom.SendDataRequest,
}


def decode(cls: type[Message], body: bytes, encoding: str) -> Message:
    """A request message from its protobuf or JSON body; TwirpError malformed if it is not."""
    message = cls()
    try:
        if encoding == "json":
            json_format.Parse(body.decode("utf-8") or "{}", message)
        else:
            message.ParseFromString(body)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError, RecursionError) as exc:
        what = "json" if encoding == "json" else "protobuf"
        detail = printable(str(exc), 120)
        raise TwirpError(
            "malformed", f"the {what} request could not be decoded: {detail}"
        ) from None
    return message


def encode(reply: Message, encoding: str) -> web.Response:
    """A reply in the request's encoding."""
    if encoding == "json":
        text = json_format.MessageToJson(reply, preserving_proto_field_name=True, indent=None)
        return web.Response(text=text, content_type="application/json")
    return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")


class TwirpError(Exception):
    """An error answered in Twirp's JSON form."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = printable(msg, 300)

    def response(self) -> web.Response:
        """The HTTP response: Twirp's status for the code, ``{"code", "msg"}``."""
        body = json.dumps({"code": self.code, "msg": self.msg}).encode()
        # exactly application/json, no charset: livekit-server-sdk reads the code and message
        # only when the Content-Type is that string (as Twirp's Go server writes it)
        return web.Response(
            body=body, status=STATUS[self.code], headers={"Content-Type": "application/json"}
        )


def _denied() -> TwirpError:
    # LiveKit answers every missing grant this way (twirpAuthError(ErrPermissionDenied))
    return TwirpError("unauthenticated", "permissions denied")


Handler = Callable[[Identity, Any], Awaitable[Message]]


class RoomService:
    """LiveKit's RoomService, bound to one SFU."""

    def __init__(self, sfu: SFU, verifier: TokenVerifier, config: Config) -> None:
        self.sfu = sfu
        self.verifier = verifier
        self.config = config
        #: method name -> (request message class, handler)
        handlers: dict[str, Handler] = {
            "CreateRoom": self.create_room,
            "ListRooms": self.list_rooms,
            "DeleteRoom": self.delete_room,
            "ListParticipants": self.list_participants,
            "GetParticipant": self.get_participant,
            "RemoveParticipant": self.remove_participant,
            "MutePublishedTrack": self.mute_published_track,
            "UpdateParticipant": self.update_participant,
            "UpdateSubscriptions": self.update_subscriptions,
            "UpdateRoomMetadata": self.update_room_metadata,
            "SendData": self.send_data,
        }
        self.methods = {name: (REQUESTS[name], fn) for name, fn in handlers.items()}

    def routes(self) -> list[web.RouteDef]:
        """The service's route: every method under one path (Twirp answers bad routes)."""
        return [web.route("*", PREFIX + "{method}", self.handle)]

    # -- Twirp ---------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.Response:
        """One Twirp call: token, route, body, grants, then the method."""
        try:
            ident = await self._auth(request)
            name = request.match_info["method"]
            if request.method != "POST":
                raise TwirpError("bad_route", f"unsupported method {request.method} (only POST)")
            entry = self.methods.get(name)
            if entry is None:
                raise TwirpError("bad_route", f"no handler for path {PREFIX}{printable(name, 64)}")
            mime = request.content_type.lower()
            encoding = CONTENT_TYPES.get(mime)
            if encoding is None:
                raise TwirpError("bad_route", f"unexpected Content-Type: {printable(mime, 64)}")
            message = await self._read(request, entry[0], encoding)
            reply = await entry[1](ident, message)
        except TwirpError as exc:
            return exc.response()
        return encode(reply, encoding)

    async def _auth(self, request: web.Request) -> Identity | None:
        """The request's token, verified (401 unauthenticated if it is not valid); None when
        there is none (every method then answers "permissions denied", as LiveKit does)."""
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        if not header.startswith("Bearer "):
            raise TwirpError(
                "unauthenticated", "invalid authorization header. Must start with Bearer "
            )
        try:
            return await self.verifier.verify_async(header[7:].strip(), require_join=False)
        except TokenError as exc:
            raise TwirpError("unauthenticated", f"invalid token: {exc}") from None

    @staticmethod
    async def _read(request: web.Request, cls: type[Message], encoding: str) -> Message:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise TwirpError("malformed", f"request body larger than {MAX_BODY} bytes")
        try:
            body = await request.read()  # cached: a cluster front may have read it already
        except web.HTTPRequestEntityTooLarge:
            body = b"x" * (MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise TwirpError("malformed", f"request body larger than {MAX_BODY} bytes")
        return decode(cls, body, encoding)

    # -- grants and lookups --------------------------------------------------------------------
    @staticmethod
    def _may(ident: Identity | None, flag: str, room: str) -> bool:
        """``flag`` granted for ``room``: a token naming no room (what LiveKit's SDKs send for
        roomCreate and roomList) covers every room."""
        if ident is None or not getattr(ident.grant, flag):
            return False
        return not ident.grant.room or in_scope(ident.grant, room)

    def _admin(self, ident: Identity | None, name: str) -> Room:
        """The room ``name`` if the token has roomAdmin on it (or on ``*``)."""
        if ident is None or not ident.grant.room_admin or not in_scope(ident.grant, name):
            raise _denied()
        return self._room(name)

    def _room(self, name: str) -> Room:
        room = self.sfu.room(name)
        if room is None:
            raise TwirpError("not_found", "room not found")
        return room

    @staticmethod
    def _participant(room: Room, identity: str) -> Participant:
        p = room.by_identity(identity)
        if p is None:
            raise TwirpError("not_found", "participant not found")
        return p

    # -- rooms ---------------------------------------------------------------------------------
    async def create_room(self, ident: Identity | None, req: Any) -> Message:
        """CreateRoom: a room (the existing one if it is already there, as on LiveKit)."""
        if not req.name or not self._may(ident, "room_create", req.name):
            if not req.name and ident is not None and ident.grant.room_create:
                raise TwirpError("invalid_argument", "room name is required")
            raise _denied()
        if len(req.name) > 128 or not req.name.isprintable():
            raise TwirpError("invalid_argument", "room name must be 1 to 128 printable characters")
        if len(req.metadata) > MAX_METADATA:
            raise TwirpError("invalid_argument", "metadata size exceeds limits")
        room = self.sfu.room(req.name)
        if room is None:
            if self.config.max_rooms and len(self.sfu.rooms) >= self.config.max_rooms:
                raise TwirpError("resource_exhausted", "the server has reached its room limit")
            room = self.sfu.get_or_create_room(
                req.name,
                empty_timeout=float(req.empty_timeout) if req.empty_timeout else None,
                max_participants=req.max_participants or None,
                metadata=req.metadata,
            )
        return room_proto(room)

    async def list_rooms(self, ident: Identity | None, req: Any) -> Message:
        """ListRooms: every room the token's roomList covers, or those of ``names``."""
        if ident is None or not ident.grant.room_list:
            raise _denied()
        names = set(req.names)
        rooms = [
            room_proto(r)
            for r in list(self.sfu.rooms.values())
            if (not names or r.name in names) and self._may(ident, "room_list", r.name)
        ]
        return lkroom.ListRoomsResponse(rooms=rooms)

    async def delete_room(self, ident: Identity | None, req: Any) -> Message:
        """DeleteRoom: everyone in it is disconnected (reason room_deleted)."""
        allowed = self._may(ident, "room_create", req.room) or (
            ident is not None and ident.grant.room_admin and in_scope(ident.grant, req.room)
        )
        if not allowed:
            raise _denied()
        if not req.room or not await self.sfu.delete_room(req.room):
            raise TwirpError("not_found", "room not found")
        return lkroom.DeleteRoomResponse()

    async def update_room_metadata(self, ident: Identity | None, req: Any) -> Message:
        """UpdateRoomMetadata: everyone in the room is told."""
        if len(req.metadata) > MAX_METADATA:
            raise TwirpError("invalid_argument", "metadata size exceeds limits")
        room = self._admin(ident, req.room)
        room.set_metadata(req.metadata)
        return room_proto(room)

    # -- participants --------------------------------------------------------------------------
    async def list_participants(self, ident: Identity | None, req: Any) -> Message:
        """ListParticipants: everyone in the room (hidden ones too, as on LiveKit)."""
        room = self._admin(ident, req.room)
        people = [participant_proto(p) for p in list(room.participants.values())]
        return lkroom.ListParticipantsResponse(participants=people)

    async def get_participant(self, ident: Identity | None, req: Any) -> Message:
        """GetParticipant: one participant by identity."""
        p = self._participant(self._admin(ident, req.room), req.identity)
        return participant_proto(p)

    async def remove_participant(self, ident: Identity | None, req: Any) -> Message:
        """RemoveParticipant: disconnected with reason removed (it may join again)."""
        room = self._admin(ident, req.room)
        p = self._participant(room, req.identity)
        p.emit(Leave("removed"))
        await room.remove(p, "removed")
        return lkroom.RemoveParticipantResponse()

    async def mute_published_track(self, ident: Identity | None, req: Any) -> Message:
        """MutePublishedTrack: the track's owner and everyone else are told."""
        p = self._participant(self._admin(ident, req.room), req.identity)
        try:
            track = p.set_muted(req.track_sid, req.muted, by_server=True)
        except KeyError:
            raise TwirpError("not_found", "track not found") from None
        return lkroom.MuteRoomTrackResponse(track=convert.track_info(track.info()))

    async def update_participant(self, ident: Identity | None, req: Any) -> Message:
        """UpdateParticipant: name, metadata, attributes (merged; "" removes a key) and
        permission (publishing revoked: its tracks are unpublished; a source no longer allowed:
        those tracks are)."""
        if len(req.metadata) > MAX_METADATA:
            raise TwirpError("invalid_argument", "metadata size exceeds limits")
        if len(req.name) > 128:
            raise TwirpError("invalid_argument", "name longer than 128 characters")
        attributes = dict(req.attributes)
        if (
            len(attributes) > MAX_ATTRIBUTES
            or sum(len(k) + len(v) for k, v in attributes.items()) > MAX_METADATA
        ):
            raise TwirpError("invalid_argument", "attributes size exceeds limits")
        p = self._participant(self._admin(ident, req.room), req.identity)
        if req.HasField("permission"):
            self._set_permission(p, req.permission)
        p.update(
            name=display_name(req.name) or None,
            metadata=req.metadata or None,
            attributes=attributes,
        )
        return participant_proto(p)

    @staticmethod
    def _set_permission(p: Participant, perm: lk.ParticipantPermission) -> None:
        if perm.can_subscribe != p.permissions.can_subscribe:
            # visio-sfu makes a participant's subscribe connection when it joins, from its
            # token: it cannot be given or taken later
            raise TwirpError(
                "failed_precondition", "can_subscribe cannot change while the participant is in"
            )
        sources = tuple(SOURCE_NAMES[s] for s in perm.can_publish_sources if s in SOURCE_NAMES)
        p.permissions.can_publish = perm.can_publish
        p.permissions.can_publish_data = perm.can_publish_data
        p.permissions.can_publish_sources = sources or None
        p.permissions.hidden = perm.hidden
        for track in list(p.tracks.values()):
            if not p.permissions.may_publish(track.source or None):
                p.unpublish(track.sid, by_server=True)

    async def update_subscriptions(self, ident: Identity | None, req: Any) -> Message:
        """UpdateSubscriptions: subscribe the participant to tracks, or unsubscribe it."""
        room = self._admin(ident, req.room)
        p = self._participant(room, req.identity)
        sids = list(req.track_sids) + [s for pt in req.participant_tracks for s in pt.track_sids]
        for sid in sids:
            if room.find_track(sid) is not None:
                room.set_subscribed(p, sid, req.subscribe)
        return lkroom.UpdateSubscriptionsResponse()

    async def send_data(self, ident: Identity | None, req: Any) -> Message:
        """SendData: a data message from the server to the room, or to some participants."""
        room = self._admin(ident, req.room)
        if len(req.data) > self.config.max_data_bytes:
            raise TwirpError(
                "invalid_argument", f"data larger than {self.config.max_data_bytes} bytes"
            )
        if len(req.topic) > 64:
            raise TwirpError("invalid_argument", "topic longer than 64 characters")
        to = list(req.destination_identities)
        for sid in req.destination_sids:
            target = room.participants.get(sid)
            if target is not None:
                to.append(target.identity)
        if (req.destination_identities or req.destination_sids) and not to:
            return lkroom.SendDataResponse()  # nobody of those is here: delivered to no one
        data = bytes(req.data)
        packet = lk.DataPacket(
            kind=req.kind,
            destination_identities=to,
            user=lk.UserPacket(payload=data, topic=req.topic, destination_identities=to),
        )
        room.send_data(
            None,
            req.topic,
            convert.payload_view(req.topic, data),  # for clients of the JSON protocol
            to or None,
            reliable=req.kind == lk.DataPacket.Kind.RELIABLE,
            encoded=("livekit", packet.SerializeToString()),  # LiveKit clients: as it is
        )
        return lkroom.SendDataResponse()


def participant_proto(p: Participant) -> lk.ParticipantInfo:
    """A live participant as ``livekit.ParticipantInfo``, with its permission."""
    return convert.participant_info(p.info(), 1, p.joined_at, perm=permission_proto(p.permissions))


def room_proto(room: Room) -> lk.Room:
    """A live room as ``livekit.Room``."""
    participants = list(room.participants.values())
    out = convert.room(room.info(), room.created_at, len(participants), room.empty_timeout)
    out.max_participants = room.max_participants
    out.num_publishers = sum(1 for p in participants if p.tracks)
    return out
