"""LiveKitSession: one LiveKit client (SDK) on one WebSocket of binary protobuf frames.

Reads ``SignalRequest`` messages, drives the SFU through the same public API as the JSON
session (signaling/session.py), and writes the SFU's events as ``SignalResponse`` messages;
data packets travel on SCTP data channels (visio_sfu's ``data_channels``). LiveKit has no error
reply: a request that cannot be served is logged and dropped (docs/livekit.md), and a client
that keeps sending garbage is disconnected. Handlers refuse bad input with ProtocolError,
PermissionDenied or TransportError (logged at INFO); any other exception is a server bug,
logged at ERROR with its traceback (the request is dropped all the same).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections import Counter
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import models, rtc

from visio_sfu import (
    SFU,
    Participant,
    PermissionDenied,
    Permissions,
    RoomClosed,
    RoomFull,
    RoomLocked,
    TransportError,
)
from visio_sfu import events as ev
from visio_sfu.room import Room

from .. import turn
from ..auth import Identity, display_name
from ..config import Config
from ..limits import MessageBudget
from ..protocol import ProtocolError
from ..session import JOIN_GUARDS
from . import convert

logger = logging.getLogger(__name__)

PING_INTERVAL = 10  # seconds between the clients' pings (JoinResponse.ping_interval)
QUALITY_INTERVAL = 5.0  # seconds between connection quality updates
MAX_BAD_FRAMES = 20  # undecodable frames a client may send before it is disconnected
OUTBOX_LIMIT = 1024
MAX_STREAMS = 32  # text streams a sender may have open at once (chunks kept for JSON readers)
_DONE = object()
#: the last ParticipantInfo.version sent for each participant, to any client: one counter per
#: participant shared by every session, so a client that resumes on a new session (or sees a
#: participant that resumed) gets versions above those it holds (livekit-client drops an
#: update whose version is below the one it has)
_VERSIONS: weakref.WeakKeyDictionary[Participant, int] = weakref.WeakKeyDictionary()
#: the version of a departure (state DISCONNECTED): the last one, nothing follows it
GONE_VERSION = 2**32 - 1  # (ParticipantInfo.version is a uint32)
#: LiveKit's codec names (AddTrackRequest.simulcast_codecs) as MIME subtypes
VIDEO_CODECS = {"vp8": "VP8", "vp9": "VP9", "h264": "H264", "av1": "AV1"}


class JoinRefused(Exception):
    """The join cannot be served: ``reason`` is a visio-sfu reason (convert.REASONS)."""

    def __init__(self, message: str, reason: str = "join_failure") -> None:
        super().__init__(message)
        self.reason = reason


class LiveKitSession:
    """Drives one participant from one LiveKit WebSocket (two peer connections, ``/rtc``)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        identity: Identity,
        sfu: SFU,
        config: Config,
        auto_subscribe: bool = True,
        single_pc: bool = False,
    ) -> None:
        """``single_pc``: LiveKit's ``/rtc/v1``: one peer connection, the client makes every
        offer (``on_offer`` answers with ``mid_to_track_id``) and is asked to offer again
        (``media_sections_requirement``) when it must receive a track."""
        self.ws = ws
        self.identity = identity
        self.sfu = sfu
        self.config = config
        self.auto_subscribe = auto_subscribe
        self.single_pc = single_pc
        self.participant: Participant | None = None
        #: the participant whose data channels this session serves: kept after the socket
        #: closes, while the participant waits for a resume (its channels stay up)
        self._data_of: Participant | None = None
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._quality: asyncio.Task | None = None
        self._closing = False
        self._going_away = False  # the server is stopping (going_away)
        self._ended = False  # the end of the output (_DONE) is queued
        self._joined_sent = False
        self._held: list[Any] = []  # events before the JoinResponse went out
        self._versions: dict[str, int] = {}  # participant sid -> last version sent (if gone)
        self._sequence: dict[str, int] = {}  # sender sid -> last sequence of our packets
        self._streams: dict[str, list] = {}  # text stream id -> [topic, chunks] (JSON view)
        self._speaker: str | None = None
        self._bad_frames = 0
        self._budget = MessageBudget(config.message_rate)
        self.close_reason = "disconnected"
        self.sent: Counter[str] = Counter()  # SignalResponses written, by kind
        self.received: Counter[str] = Counter()  # SignalRequests read, by kind

    # -- joining -------------------------------------------------------------------------
    async def join(self) -> None:
        """Join the token's room as a new participant; JoinRefused if that cannot be."""
        ident = self.identity
        grant = ident.grant
        room = self.sfu.room(grant.room)
        if room is None:
            if not (self.config.auto_create_rooms or grant.room_create):
                raise JoinRefused(f"room {grant.room!r} does not exist")
            if self.config.max_rooms and len(self.sfu.rooms) >= self.config.max_rooms:
                raise JoinRefused("the server has reached its room limit")
            room = self.sfu.get_or_create_room(grant.room)
        for guard in JOIN_GUARDS:  # the features' rules (a breakout room is entered by a move)
            try:
                guard(self, room)  # type: ignore[arg-type]  # they read .sfu, .identity
            except ProtocolError as exc:
                raise JoinRefused(exc.message) from None
        perms = Permissions(
            can_publish=grant.can_publish,
            can_subscribe=grant.can_subscribe,
            can_publish_data=grant.can_publish_data,
            hidden=grant.hidden,
            can_publish_sources=grant.can_publish_sources,
        )
        try:
            p = await room.join(
                ident.identity,
                ident.name or ident.identity,
                ident.metadata,
                perms,
                emit=self.emit,
                bypass_lock=grant.is_host,
                data_channels=True,
                auto_subscribe=self.auto_subscribe,
                single_pc=self.single_pc,
            )
        except (RoomFull, RoomClosed, RoomLocked) as exc:
            raise JoinRefused(str(exc) or type(exc).__name__) from None
        p.attributes = dict(ident.attributes)
        self.participant = self._data_of = p
        p.on_data = self._on_data
        self._send_join(room, p)
        if p.subscriber is not None and not self.single_pc:
            p.subscriber.offer()  # the client waits for it (subscriber_primary)

    def resume(self, room: Room, p: Participant) -> None:
        """Serve ``p`` again: its client's WebSocket dropped, its peer connections did not."""
        room.resume_signaling(p, self.emit)
        self.participant = self._data_of = p
        p.on_data = self._on_data
        self._joined_sent = True
        self.send(
            rtc.SignalResponse(
                reconnect=rtc.ReconnectResponse(
                    client_configuration=models.ClientConfiguration(),
                    # livekit-client takes its ICE servers from here again: none would
                    # leave a client that needs the relay without it after a blip
                    ice_servers=self._ice_servers(p.identity),
                )
            )
        )
        # what it missed while away: everyone as they are now, and an offer left unanswered
        self.send(rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=self._everyone())))
        if p.subscriber is not None and not self.single_pc:
            pending = p.subscriber.pending_offer()
            if pending is not None:
                self._send_offer(pending[0], pending[1])

    def _send_join(self, room: Room, p: Participant) -> None:
        join = rtc.JoinResponse(
            room=convert.room(
                room.info(), room.created_at, len(room.participants), room.empty_timeout
            ),
            participant=self._info_of(p),
            other_participants=[self._info(o.info(), o) for o in room.visible(p)],
            server_version=convert.SERVER_VERSION,
            server_info=convert.server_info(),
            # one connection (v1): the client's publisher connection is the primary one
            subscriber_primary=p.subscriber is not None and not self.single_pc,
            ping_interval=PING_INTERVAL,
            ping_timeout=max(int(self.config.ping_timeout), PING_INTERVAL + 5),
            client_configuration=models.ClientConfiguration(),
            ice_servers=self._ice_servers(p.identity),
        )
        self.send(rtc.SignalResponse(join=join))
        self._joined_sent = True
        for item in self._held:
            self._outbox.put_nowait(item)
        self._held.clear()

    def _ice_servers(self, identity: str) -> list[rtc.ICEServer]:
        """The STUN and TURN servers for this participant (signaling/turn.py), as LiveKit's
        messages carry them."""
        return [rtc.ICEServer(**s) for s in turn.ice_servers_of(self.config, identity)]

    # -- participants as LiveKit describes them -------------------------------------------
    def _version(self, sid: str, p: Participant | None = None) -> int:
        """The next version of ``p``'s ParticipantInfo: above every one sent for it before, to
        any client, so across resumes (``sid`` alone: one no longer in the room, counted here)."""
        if p is None:
            v = self._versions.get(sid, 0) + 1
        else:
            v = max(_VERSIONS.get(p, 0), self._versions.get(sid, 0)) + 1
        v = min(v, GONE_VERSION - 1)  # a uint32, and below the departure's
        if p is not None:
            _VERSIONS[p] = v
        self._versions[sid] = v
        return v

    def _room(self) -> Room | None:
        p = self.participant
        return self.sfu.room(p.room_name) if p is not None and p.room_name else None

    def _info(
        self, info: ev.ParticipantInfo, p: Participant | None = None
    ) -> models.ParticipantInfo:
        if p is None:
            room = self._room()
            p = room.participants.get(info.sid) if room is not None else None
        perm = None
        attributes = None
        joined = 0.0
        if p is not None:
            perm = convert.permission_proto(p.permissions)
            perm.can_update_metadata = p is self.participant and self._can_update()
            attributes = p.attributes
            joined = p.joined_at
        version = self._version(info.sid, p)
        return convert.participant_info(info, version, joined, attributes, perm)

    def _can_update(self) -> bool:
        return self.identity.grant.can_update_own_metadata

    def _info_of(self, p: Participant) -> models.ParticipantInfo:
        return self._info(p.info(), p)

    def _everyone(self) -> list[models.ParticipantInfo]:
        room = self._room()
        p = self.participant
        if room is None or p is None:
            return []
        return [self._info_of(p)] + [self._info(o.info(), o) for o in room.visible(p)]

    def _update_for(self, sid: str) -> rtc.SignalResponse | None:
        room = self._room()
        other = room.participants.get(sid) if room is not None else None
        if other is None:
            return None
        return rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[self._info_of(other)]))

    # -- output ----------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        """An SFU event for this client: data goes out on a data channel now; the rest is
        queued and written as a SignalResponse (converted when written, so that it describes
        the room as it is then)."""
        if isinstance(event, ev.DataReceived):
            self._deliver_data(event)
            return
        if not self._joined_sent:
            self._held.append(event)
            return
        self._queue(event)

    def send(self, message: rtc.SignalResponse) -> None:
        """Queue a SignalResponse (never blocks)."""
        self._queue(message)

    def _queue(self, item: Any) -> None:
        if self._closing:
            return
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            logger.warning("livekit session %s: client does not read; closing", self._who())
            self._closing = self._ended = True
            self._outbox.put_nowait(_DONE)
            return
        self._outbox.put_nowait(item)

    def _convert(self, event: Any) -> list[rtc.SignalResponse]:
        p = self.participant
        if isinstance(event, rtc.SignalResponse):
            return [event]
        if p is None:
            return []
        out: list[rtc.SignalResponse] = []
        match event:
            case ev.SubscriberOffer(offer_id, sdp, _tracks):
                return [self._offer_message(offer_id, sdp)]
            case ev.SectionsWanted(audios, videos):
                logger.info(
                    "livekit session %s: media_sections_requirement %d audio, %d video",
                    self._who(),
                    audios,
                    videos,
                )
                return [
                    rtc.SignalResponse(
                        media_sections_requirement=rtc.MediaSectionsRequirement(
                            num_audios=audios, num_videos=videos
                        )
                    )
                ]
            case ev.ParticipantJoined(info) | ev.ParticipantUpdated(info):
                return [
                    rtc.SignalResponse(
                        update=rtc.ParticipantUpdate(participants=[self._info(info)])
                    )
                ]
            case ev.ParticipantLeft(sid, identity, reason):
                gone = models.ParticipantInfo(
                    sid=sid,
                    identity=identity,
                    state=models.ParticipantInfo.State.DISCONNECTED,
                    version=GONE_VERSION,
                    disconnect_reason=convert.REASONS.get(reason, 0),
                )
                self._versions.pop(sid, None)
                return [rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[gone]))]
            case ev.TrackPublished(sid, _track) | ev.TrackUnpublished(sid, _track, _):
                if isinstance(event, ev.TrackUnpublished) and sid == p.sid:
                    out.append(
                        rtc.SignalResponse(
                            track_unpublished=rtc.TrackUnpublishedResponse(
                                track_sid=event.track_sid
                            )
                        )
                    )
                update = self._update_for(sid)
                return out + ([update] if update is not None else [])
            case ev.TrackMuted(sid, track_sid, muted):
                if sid == p.sid:  # a host or administrator did it
                    out.append(
                        rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track_sid, muted=muted))
                    )
                update = self._update_for(sid)
                return out + ([update] if update is not None else [])
            case ev.ActiveSpeakerChanged(sid):
                return [self._speakers(sid)]
            case ev.LayersWanted(track_sid, rids):
                return self._qualities(track_sid, rids)
            case ev.RoomUpdated(info):
                room = self._room()
                created = room.created_at if room is not None else time.time()
                count = len(room.participants) if room is not None else 0
                return [
                    rtc.SignalResponse(
                        room_update=rtc.RoomUpdate(
                            room=convert.room(info, created, count, self.config.empty_timeout)
                        )
                    )
                ]
            case ev.Moved(_room, _participants):
                return [
                    rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=self._everyone()))
                ]
            case ev.Leave(reason):
                self._closing = True
                self.close_reason = reason
                return [self._leave(reason)]
            case ev.NegotiationFailed(offer_id, message):
                logger.info(
                    "livekit session %s: answer to %s refused: %s",
                    self._who(),
                    offer_id,
                    message[:200],
                )
        return []

    def _leave(self, reason: str) -> rtc.SignalResponse:
        return leave_message(reason)

    def _offer_message(self, offer_id: str, sdp: str) -> rtc.SignalResponse:
        return rtc.SignalResponse(
            offer=rtc.SessionDescription(
                type="offer", sdp=convert.livekit_msid(sdp), id=convert.offer_number(offer_id)
            )
        )

    def _send_offer(self, offer_id: str, sdp: str) -> None:
        self.send(self._offer_message(offer_id, sdp))

    def _speakers(self, sid: str | None) -> rtc.SignalResponse:
        speakers = []
        previous, self._speaker = self._speaker, sid
        if previous is not None and previous != sid:
            speakers.append(models.SpeakerInfo(sid=previous, level=0.0, active=False))
        if sid is not None:
            room = self._room()
            owner = room.participants.get(sid) if room is not None else None
            level = 0.0
            if owner is not None:
                dbov = min(
                    (t.audio_level for t in owner.tracks.values() if t.kind == "audio"), default=127
                )
                level = 10 ** (-dbov / 20)
            speakers.append(models.SpeakerInfo(sid=sid, level=level, active=True))
        return rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=speakers))

    def _qualities(self, track_sid: str, rids: tuple[str, ...]) -> list[rtc.SignalResponse]:
        p = self.participant
        track = p.tracks.get(track_sid) if p is not None else None
        if track is None or not track.simulcast:
            return []
        all_rids = [layer.rid for layer in track.layers]
        qualities = [
            rtc.SubscribedQuality(quality=q, enabled=rid in rids)
            for rid, q in zip(all_rids, convert.layer_qualities(all_rids), strict=True)
        ]
        codec = track.codec.mime.split("/")[-1].lower()
        return [
            rtc.SignalResponse(
                subscribed_quality_update=rtc.SubscribedQualityUpdate(
                    track_sid=track_sid,
                    subscribed_qualities=qualities,
                    subscribed_codecs=[rtc.SubscribedCodec(codec=codec, qualities=qualities)],
                )
            )
        ]

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is _DONE:
                await self.ws.close()
                return
            try:
                messages = self._convert(item)
            except Exception:
                logger.exception(
                    "livekit session %s: could not convert %r", self._who(), type(item)
                )
                continue
            for message in messages:
                try:
                    await self.ws.send_bytes(message.SerializeToString())
                except (ConnectionError, RuntimeError):
                    return
                kind = message.WhichOneof("message") or ""
                self.sent[kind] += 1
                if kind == "leave":
                    await self.ws.close()
                    return

    async def _quality_loop(self) -> None:
        """Connection quality of everyone in the room, from the loss their subscribers report
        (receiver reports of each forwarded stream) every QUALITY_INTERVAL seconds."""
        while not self._closing:
            await asyncio.sleep(QUALITY_INTERVAL)
            room = self._room()
            if room is None:
                continue
            updates = []
            for other in room.visible():
                loss = 0.0
                if other.subscriber is not None:
                    losses = [dt.fraction_lost / 256 for dt in other.subscriber.downtracks.values()]
                    loss = max(losses, default=0.0)
                if loss < 0.02:
                    quality, score = models.ConnectionQuality.EXCELLENT, 5.0 - 50 * loss
                elif loss < 0.1:
                    quality, score = models.ConnectionQuality.GOOD, 4.0 - 10 * loss
                else:
                    quality, score = models.ConnectionQuality.POOR, max(2.0 - 2 * loss, 1.0)
                updates.append(
                    rtc.ConnectionQualityInfo(
                        participant_sid=other.sid, quality=quality, score=score
                    )
                )
            self.send(
                rtc.SignalResponse(connection_quality=rtc.ConnectionQualityUpdate(updates=updates))
            )

    def _who(self) -> str:
        return self.participant.sid if self.participant else f"<{self.identity.identity}>"

    # -- data packets -----------------------------------------------------------------------
    def _on_data(self, label: str, data: bytes) -> None:
        """A DataPacket from this client on one of its data channels: checked, stamped with
        who sent it, and given to the room (the others' clients, either protocol)."""
        p = self._data_of  # (also while the WebSocket is down: the data channels are up)
        room = self.sfu.room(p.room_name) if p is not None and p.room_name else None
        if p is None or room is None or label not in ("_reliable", "_lossy"):
            return  # _data_track (LiveKit's data tracks) is not supported
        if not p.permissions.can_publish_data:
            logger.info("livekit session %s: data refused (no canPublishData)", self._who())
            return
        if len(data) > self.config.max_data_bytes:
            logger.info(
                "livekit session %s: data packet of %d bytes dropped", self._who(), len(data)
            )
            return
        packet = convert.read_data_packet(data)
        if packet is None:
            return
        kind = packet.WhichOneof("value")
        if kind is None:
            return
        to = list(packet.destination_identities)
        packet.participant_identity = p.identity
        packet.participant_sid = p.sid
        if kind == "user":
            packet.user.participant_identity = p.identity
            packet.user.participant_sid = p.sid
            to = to or list(packet.user.destination_identities)
        reliable = label == "_reliable"
        view = convert.json_view(packet)
        if view is None:
            view = self._stream_view(packet)
        topic, payload = view if view is not None else ("", None)
        room.send_data(
            p,
            topic,
            payload,
            to or None,
            reliable=reliable,
            encoded=("livekit", packet.SerializeToString()),
            encoded_only=view is None,
        )

    def _stream_view(self, packet: models.DataPacket) -> tuple[str, object] | None:
        """Text streams on ``lk.chat`` sent in chunks: kept until their trailer, then the
        whole text for JSON readers."""
        kind = packet.WhichOneof("value")
        if kind == "stream_header":
            header = packet.stream_header
            if header.topic == convert.LK_CHAT_TOPIC and header.HasField("text_header"):
                if len(self._streams) >= MAX_STREAMS:
                    self._streams.pop(next(iter(self._streams)))
                self._streams[header.stream_id] = [0, [], header.compression]
        elif kind == "stream_chunk":
            entry = self._streams.get(packet.stream_chunk.stream_id)
            if entry is not None:
                entry[0] += len(packet.stream_chunk.content)
                if entry[0] > 4 * self.config.max_data_bytes:
                    del self._streams[packet.stream_chunk.stream_id]
                else:
                    entry[1].append(packet.stream_chunk.content)
        elif kind == "stream_trailer":
            entry = self._streams.pop(packet.stream_trailer.stream_id, None)
            if entry is not None:
                data = convert.inflate(b"".join(entry[1]), entry[2], 4 * self.config.max_data_bytes)
                if data is None:
                    return None
                text = data.decode("utf-8", "replace")
                return convert.CHAT_TOPIC, {"text": text, "id": packet.stream_trailer.stream_id}
        return None

    def _deliver_data(self, event: ev.DataReceived) -> None:
        """Send another participant's data message to this client as DataPackets."""
        p = self._data_of
        if p is None:
            return
        label = "_reliable" if event.reliable else "_lossy"
        if event.encoded is not None and event.encoded[0] == "livekit":
            p.send_data(label, event.encoded[1])
            return
        if event.encoded_only:
            return
        sid = event.sender.sid if event.sender is not None else ""
        for packet in convert.packets_for_json_data(
            event.sender, event.topic, event.payload, event.timestamp_ms
        ):
            seq = self._sequence.get(sid, 0) + 1
            self._sequence[sid] = seq
            packet.sequence = seq
            packet.participant_sid = sid
            p.send_data(label, packet.SerializeToString())

    # -- input -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve the socket until it closes; then the participant is suspended (it may resume)
        or removed."""
        self._writer = asyncio.ensure_future(self._write_loop())
        self._quality = asyncio.ensure_future(self._quality_loop())
        silent = False
        try:
            while not self._closing:
                try:
                    msg = await self.ws.receive(timeout=self.config.ping_timeout)
                except TimeoutError:
                    silent = True
                    break
                if msg.type == WSMsgType.BINARY:
                    request = self._parse(msg.data)
                    kind = request.WhichOneof("message") if request is not None else None
                    # ICE candidates come in bursts (one per address, port and m-section: the
                    # Rust SDK sends forty a connection): they have a budget of their own
                    bucket = self._budget.bucket(kind)
                    left = bucket.take()
                    if left <= -bucket.burst:  # a flood: disconnected
                        logger.warning(
                            "livekit session %s: flooding; disconnected (requests so far: %s)",
                            self._who(),
                            dict(self.received.most_common(8)),
                        )
                        self.close_reason = "bad_input"
                        break
                    if left < 0 or request is None:
                        continue  # over the message rate: dropped
                    if await self.dispatch(request) == "leave":
                        self.close_reason = "left"
                        break
                elif msg.type == WSMsgType.TEXT:
                    self._bad_frame("a text frame")
                else:  # CLOSE, CLOSING, CLOSED, ERROR (a frame too large among them)
                    break
        finally:
            await self.close(self.close_reason, keep=not silent)

    def _bad_frame(self, what: str) -> None:
        self._bad_frames += 1
        if self._bad_frames <= 3:
            logger.info("livekit session %s: %s dropped", self._who(), what)
        if self._bad_frames >= MAX_BAD_FRAMES:
            logger.warning("livekit session %s: too many bad frames; disconnected", self._who())
            self._closing = True
            self.close_reason = "bad_input"  # removed, not kept for a resume

    def _parse(self, data: bytes) -> rtc.SignalRequest | None:
        """The SignalRequest in a frame; None (a bad frame counted) if it is not one."""
        request = rtc.SignalRequest()
        try:
            request.ParseFromString(data)
        except DecodeError:
            self._bad_frame("an undecodable frame")
            return None
        return request

    async def handle(self, data: bytes) -> str | None:
        """Handle one SignalRequest frame; returns which request it was."""
        request = self._parse(data)
        return None if request is None else await self.dispatch(request)

    async def dispatch(self, request: rtc.SignalRequest) -> str | None:
        """Handle one parsed SignalRequest; returns which request it was."""
        kind = request.WhichOneof("message")
        self.received[kind or "?"] += 1
        handler = HANDLERS.get(kind or "")
        if handler is None:
            return kind  # not supported: ignored, as LiveKit has no error reply
        try:
            await handler(self, getattr(request, kind))
        except REFUSALS as exc:
            logger.info("livekit session %s: %s refused: %s", self._who(), kind, str(exc)[:300])
        except Exception:
            logger.exception("livekit session %s: %s failed", self._who(), kind)
        return kind

    def _p(self) -> Participant:
        if self.participant is None:
            raise PermissionDenied("not joined")
        return self.participant

    async def on_offer(self, req: rtc.SessionDescription) -> None:
        p = self._p()
        mids: dict[str, str] = {}
        if self.single_pc:  # its one connection: what it sends and what it receives
            answer, mids = await p.single_offer(req.sdp)
            answer = convert.livekit_msid(answer)
        else:
            answer = await p.publish_offer(req.sdp)
        self.send(rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[self._info_of(p)])))
        self.send(
            rtc.SignalResponse(
                answer=rtc.SessionDescription(
                    type="answer", sdp=answer, id=req.id, mid_to_track_id=mids
                )
            )
        )

    async def on_offer_safely(self, req: rtc.SessionDescription) -> None:
        """``on_offer`` for the offer of a v1 join request: a refused offer is logged (the
        client gets no answer and gives up on its connection), as ``handle`` does."""
        try:
            await self.on_offer(req)
        except REFUSALS as exc:
            logger.info("livekit session %s: join offer refused: %s", self._who(), str(exc)[:300])
        except Exception:
            logger.exception("livekit session %s: join offer failed", self._who())

    async def on_answer(self, req: rtc.SessionDescription) -> None:
        p = self._p()
        if self.single_pc:
            raise PermissionDenied("one peer connection: the server makes no offer to answer")
        if p.subscriber is None:
            raise PermissionDenied("not allowed to subscribe")
        p.subscriber.on_answer(f"s{req.id}" if req.id else None, req.sdp)

    async def on_trickle(self, req: rtc.TrickleRequest) -> None:
        p = self._p()
        try:
            init = json.loads(req.candidateInit)
        except (ValueError, RecursionError):
            raise ProtocolError("bad_request", "candidateInit is not JSON") from None
        if not isinstance(init, dict):
            raise ProtocolError("bad_request", "candidateInit is not an object")
        target = "subscriber" if req.target == rtc.SignalTarget.SUBSCRIBER else "publisher"
        if target == "publisher" and p.publishing.transport is None:
            return  # before the first offer: learnt from connectivity checks instead
        await p.add_ice_candidate(target, init)

    async def on_add_track(self, req: rtc.AddTrackRequest) -> None:
        p = self._p()
        kind = "video" if req.type == models.TrackType.VIDEO else "audio"
        source = convert.source_name(req.source, kind)
        # the codec it wants to publish in (the first of simulcast_codecs; the others are
        # backup codecs): put first in our answer, as LiveKit's server does (VP9 SVC needs it)
        codec = next((c.codec for c in req.simulcast_codecs if c.codec), "").lower()
        mime = f"{kind}/{VIDEO_CODECS[codec]}" if kind == "video" and codec in VIDEO_CODECS else ""
        try:  # (ValueError: the library's refusal of a source or of one track too many)
            t = p.add_track(
                req.cid, kind, source, req.name[:128], req.width, req.height, req.muted, codec=mime
            )
        except ValueError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        layers = [layer for layer in req.layers if layer.quality != models.VideoQuality.OFF]
        info = models.TrackInfo(
            sid=t.sid,
            type=req.type,
            name=t.name,
            muted=req.muted,
            width=req.width,
            height=req.height,
            simulcast=len(layers) > 1,
            source=req.source,
            layers=layers,
            mime_type=mime,
            disable_dtx=req.disable_dtx,
            stereo=req.stereo,
            audio_features=req.audio_features,
        )
        self.send(
            rtc.SignalResponse(track_published=rtc.TrackPublishedResponse(cid=req.cid, track=info))
        )

    async def on_mute(self, req: rtc.MuteTrackRequest) -> None:
        p = self._p()
        if req.sid not in p.tracks:
            raise ProtocolError("not_found", f"no track {req.sid[:64]!r} of yours")
        p.set_muted(req.sid, req.muted)
        self.send(rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[self._info_of(p)])))

    async def on_subscription(self, req: rtc.UpdateSubscription) -> None:
        p = self._p()
        room = self._room()
        if room is None:
            return
        sids = list(req.track_sids) + [s for pt in req.participant_tracks for s in pt.track_sids]
        for sid in sids[:64]:
            track = room.find_track(sid)
            if track is None or track.participant_sid == p.sid:
                logger.info("livekit session %s: no track %r to subscribe", self._who(), sid[:64])
                continue
            room.set_subscribed(p, sid, req.subscribe)

    async def on_track_setting(self, req: rtc.UpdateTrackSettings) -> None:
        p = self._p()
        quality = convert.QUALITY_NAMES.get(req.quality) if not req.width else None
        received = p.subscriber.downtracks if p.subscriber is not None else {}
        for sid in list(req.track_sids)[:64]:
            if sid not in received:
                continue  # not received (yet): LiveKit's clients send it early
            p.set_track_settings(
                sid,
                visible=not req.disabled,
                max_height=req.height if req.height else 0,
                quality=quality or "high",
                max_fps=req.fps,
            )

    async def on_leave(self, req: rtc.LeaveRequest) -> None:
        return None

    async def on_ping(self, req: int) -> None:
        self.send(rtc.SignalResponse(pong=convert.now_ms()))

    async def on_ping_req(self, req: rtc.Ping) -> None:
        self.send(
            rtc.SignalResponse(
                pong_resp=rtc.Pong(last_ping_timestamp=req.timestamp, timestamp=convert.now_ms())
            )
        )

    async def on_update_metadata(self, req: rtc.UpdateParticipantMetadata) -> None:
        p = self._p()
        if not self.identity.grant.can_update_own_metadata:
            if req.request_id:
                self.send(
                    rtc.SignalResponse(
                        request_response=rtc.RequestResponse(
                            request_id=req.request_id,
                            reason=rtc.RequestResponse.Reason.NOT_ALLOWED,
                            message="the token does not grant canUpdateOwnMetadata",
                        )
                    )
                )
            return
        attributes = {k[:128]: v[:1024] for k, v in list(req.attributes.items())[:64]}
        p.update(
            name=display_name(req.name[:128]) or None,
            metadata=req.metadata[:4096] or None,
            attributes=attributes or None,
        )
        if req.request_id:
            self.send(
                rtc.SignalResponse(request_response=rtc.RequestResponse(request_id=req.request_id))
            )

    async def on_subscription_permission(self, req: rtc.SubscriptionPermission) -> None:
        """Who may receive this participant's tracks: everyone, or the identities listed
        (all their tracks, or the track sids given); the others stop receiving them."""
        p = self._p()
        room = self._room()
        if req.all_participants:
            p.receivers = None
        else:
            allowed: dict[str, set[str] | None] = {}
            for perm in list(req.track_permissions)[:256]:
                who = perm.participant_identity or next(
                    (
                        o.identity
                        for o in (room.participants.values() if room else ())
                        if o.sid == perm.participant_sid
                    ),
                    "",
                )
                if who:
                    allowed[who] = None if perm.all_tracks else set(perm.track_sids)

            def receivers(identity: str, track_sid: str) -> bool:
                tracks = allowed.get(identity, set())
                return tracks is None or track_sid in tracks

            p.receivers = receivers
        if room is not None:
            room.apply_receivers(p)

    async def on_accepted(self, req: object) -> None:
        """sync_state, accepted without effect: after a resume the server's connections are
        the ones the client describes."""
        return None

    # -- teardown ------------------------------------------------------------------------------
    def going_away(self) -> None:
        """The server is stopping: what is queued is written, then a leave (SERVER_SHUTDOWN,
        action RECONNECT: the SDK joins again, on this server once it is back), and nothing
        more: not the others leaving as the server removes them one by one. ``close`` then
        removes the participant."""
        if self._going_away:
            return
        self._going_away = True
        self._closing = True  # nothing more is queued
        if not self._ended:
            self._ended = True
            self._outbox.put_nowait(
                leave_message("server_shutdown", action=rtc.LeaveRequest.Action.RECONNECT)
            )
            self._outbox.put_nowait(_DONE)

    async def close(self, reason: str = "disconnected", keep: bool = True) -> None:
        """Stop; a participant whose socket dropped (``reason`` disconnected) is suspended for
        the resume grace, else removed."""
        if self._going_away:
            reason, keep = "server_shutdown", False  # nobody will resume it here
        self._closing = True
        p, self.participant = self.participant, None
        if self._quality is not None:
            self._quality.cancel()
        if p is not None:
            room = self.sfu.room(p.room_name) if p.room_name else None
            grace = self.config.resume_grace
            if (
                reason == "disconnected"
                and keep
                and grace > 0
                and room is not None
                and room.participants.get(p.sid) is p
            ):
                room.suspend(p, grace)  # its data channels go on meanwhile (on_data kept)
            else:
                p.on_data = None
                self._data_of = None
                if room is not None:
                    await room.remove(p, reason)
                await p.close()
        if self._writer is not None and not self._writer.done():
            if not self._ended:  # (going_away may have queued its leave and the end)
                self._ended = True
                if reason not in ("disconnected", "left"):  # the server's doing: say why
                    self._outbox.put_nowait(leave_message(reason))
                self._outbox.put_nowait(_DONE)
            try:
                await asyncio.wait_for(self._writer, 2)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
        if not self.ws.closed:
            await self.ws.close()


def leave_message(
    reason: str, action: int = rtc.LeaveRequest.Action.DISCONNECT
) -> rtc.SignalResponse:
    """A server-side leave: ``reason`` a visio-sfu reason (convert.REASONS)."""
    return rtc.SignalResponse(
        leave=rtc.LeaveRequest(
            # what SDKs from before ``action`` read: reconnect when the action says so
            can_reconnect=action == rtc.LeaveRequest.Action.RECONNECT,
            reason=convert.REASONS.get(reason, models.DisconnectReason.UNKNOWN_REASON),
            action=action,
        )
    )


#: what a handler raises to refuse a request (logged at INFO; anything else is a bug: ERROR)
REFUSALS = (ProtocolError, PermissionDenied, TransportError)

HANDLERS: dict[str, Any] = {
    "offer": LiveKitSession.on_offer,
    "answer": LiveKitSession.on_answer,
    "trickle": LiveKitSession.on_trickle,
    "add_track": LiveKitSession.on_add_track,
    "mute": LiveKitSession.on_mute,
    "subscription": LiveKitSession.on_subscription,
    "track_setting": LiveKitSession.on_track_setting,
    "leave": LiveKitSession.on_leave,
    "ping": LiveKitSession.on_ping,
    "ping_req": LiveKitSession.on_ping_req,
    "update_metadata": LiveKitSession.on_update_metadata,
    "subscription_permission": LiveKitSession.on_subscription_permission,
    "sync_state": LiveKitSession.on_accepted,
}


def release(session: LiveKitSession, p: Participant) -> None:
    """Another connection resumed ``p``: ``session`` lets go of it without removing it."""
    if session.participant is p:
        session.participant = None
    if session._data_of is p:
        session._data_of = None
    if not session._closing:
        session._closing = session._ended = True
        session._outbox.put_nowait(_DONE)
