"""Participant: one person in a room: identity, grants and its two connections.

The publish connection (publish.py) carries what the participant sends, the subscribe
connection (subscribe.py) what it receives. A Participant does not know its Room: it reports
what happens to it (a track published, muted, a failed connection) as typed events to its
``listener``, which the Room it is attached to sets; so a live participant can be detached from
one room and attached to another without touching its connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from .errors import PermissionDenied, RestartRefused, TransportError
from .events import (
    ConnectionFailed,
    DataReceived,
    Event,
    ParticipantInfo,
    ParticipantRef,
    ParticipantUpdated,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)
from .publish import SOURCES, PublishConnection, TrackRequest, new_sid
from .publisher import Publisher
from .sdp import answer_transport_cc, keep_rid_extensions
from .stats import Stats
from .subscribe import SubscribeConnection
from .transport import PeerTransport

logger = logging.getLogger(__name__)

__all__ = [
    "SOURCES",
    "QUALITIES",
    "Participant",
    "PermissionDenied",
    "Permissions",
    "RestartRefused",
    "TrackRequest",
    "new_sid",
]

QUALITIES = ("low", "medium", "high")
#: the data channels the server opens on a subscribe connection: (label, reliable)
DATA_CHANNELS = (("_reliable", True), ("_lossy", False))
MAX_RESTARTS = 5  # subscriber connection restarts a participant may ask for ...
RESTART_WINDOW = 60.0  # ... in this many seconds


@dataclass
class Permissions:
    """What a participant may do, from its access token."""

    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    hidden: bool = False  # not shown to others (recorders, observers); may not publish
    can_publish_sources: tuple[str, ...] | None = None  # None: any source

    def may_publish(self, source: str | None = None) -> bool:
        """Whether publishing (a track of ``source``) is allowed."""
        if not self.can_publish or self.hidden:
            return False
        return (
            source is None
            or self.can_publish_sources is None
            or (source in self.can_publish_sources)
        )


Listener = Callable[["Participant", Event], None]


class Participant:
    """A participant: identity, grants, published tracks and the two connections."""

    #: every Participant object still in memory, for leak checks
    alive: weakref.WeakSet[Participant] = weakref.WeakSet()

    def __init__(
        self,
        identity: str,
        name: str = "",
        metadata: str = "",
        permissions: Permissions | None = None,
        emit: Callable[[Event], None] | None = None,
        stats: Stats | None = None,
        max_tracks: int = 16,
        transport_factory: Callable[..., PeerTransport] = PeerTransport,
        data_channels: bool = False,
        auto_subscribe: bool = True,
        single_pc: bool = False,
        ends_with_connection: bool = False,
        fixed_sections: bool = False,
    ) -> None:
        """``data_channels``: the client speaks over SCTP data channels (LiveKit's clients):
        its subscribe connection carries the server's ``_reliable`` and ``_lossy`` channels
        from its first offer, and what the client sends on any channel goes to ``on_data``.
        ``auto_subscribe``: receive the others' tracks without asking (else only those asked
        for, Room.set_subscribed: LiveKit's autoSubscribe off).
        ``single_pc``: one peer connection carries what the client sends and what it
        receives (LiveKit's ``/rtc/v1``): the client makes every offer (``single_offer``),
        with receive-only sections the answer fills; the data channels are the client's.
        ``ends_with_connection``: the client has no signaling channel whose end is its leaving
        (WHIP, WHEP): its connection closing (DTLS close) is, as a failed one is for all.
        ``fixed_sections`` (``single_pc``): the client offers once (WHEP): see
        SubscribeConnection; ``reanswer`` places the tracks that come later."""
        self.sid = new_sid("PA")
        self.identity = identity
        self.name = name
        self.metadata = metadata
        #: the application's key/value attributes (LiveKit's participant attributes)
        self.attributes: dict[str, str] = {}
        self.joined_at = time.time()  # when this participant object was made (its join)
        self.permissions = permissions or Permissions()
        self._emit = emit
        self.stats = stats or Stats()
        self._transport_factory = transport_factory
        #: where this participant reports what happens to it (set by the Room it is in)
        self.listener: Listener | None = None
        self.attached_once = False  # attached to a room before: a later attach is a move
        self.room_name: str | None = None  # the room it is in (set by the room)
        #: its client is gone for now (Room.suspend): events for it are dropped
        self.suspended = False
        self.data_channels = data_channels
        self.auto_subscribe = auto_subscribe
        #: who may receive this participant's tracks: ``(identity, track sid) -> allowed``;
        #: None lets everyone (LiveKit's subscription permissions; Room.apply_receivers)
        self.receivers: Callable[[str, str], bool] | None = None
        #: ``(label, message)`` for each data-channel message from the client (set by its
        #: signaling session, which knows the message format)
        self.on_data: Callable[[str, bytes], None] | None = None
        #: the one peer connection of a ``single_pc`` participant (else None)
        self.single: PeerTransport | None = None
        self.ends_with_connection = ends_with_connection
        self.fixed_sections = fixed_sections
        if single_pc:
            extra = {"on_data": self._data} if data_channels else {}
            self.single = transport_factory(
                on_rtcp=self._single_rtcp, on_state=self._single_state, **extra
            )
        self.publishing = self._new_publishing(max_tracks)
        self.subscriber: SubscribeConnection | None = None
        if self.permissions.can_subscribe:
            self.subscriber = self._new_subscriber()
        self._restarts: list[float] = []
        self._closing: set[asyncio.Task] = set()  # old connections closing in the background
        self.closed = False
        Participant.alive.add(self)

    def _new_publishing(self, max_tracks: int) -> PublishConnection:
        return PublishConnection(
            self.sid,
            self.permissions.may_publish,
            self.stats,
            max_tracks,
            on_published=lambda track: self._tell(TrackPublished(self.sid, track.info())),
            on_unpublished=lambda track: self._tell(
                TrackUnpublished(self.sid, track.sid, track.info())
            ),
            on_failed=self._failed,
            transport_factory=self._transport_factory,
            on_data=self._data if self.data_channels else None,
            transport=self.single,
            ends_with_connection=self.ends_with_connection,
        )

    def _new_subscriber(self, first_offer: int = 1) -> SubscribeConnection:
        return SubscribeConnection(
            self.sid,
            self.emit,
            self._failed,
            first_offer=first_offer,
            transport_factory=self._transport_factory,
            data_channels=DATA_CHANNELS if self.data_channels and self.single is None else (),
            on_data=self._data if self.data_channels else None,
            transport=self.single,
            fixed_sections=self.fixed_sections,
        )

    # -- one peer connection (single_pc) -----------------------------------------------------
    def _single_rtcp(self, data: bytes) -> None:
        """RTCP on the one connection: sender reports concern what the client publishes,
        feedback (NACK, PLI, receiver reports, transport-cc, REMB) what it receives; each side
        reads what is its own."""
        self.publishing.handle_rtcp(data)
        if self.subscriber is not None:
            self.subscriber.handle_rtcp(data)

    def _single_state(self, state: str) -> None:
        if state == "closed" and self.ends_with_connection and not self.closed:
            self._failed("closed")
        elif self.subscriber is not None:
            self.subscriber.handle_state(state)
        elif state == "failed":
            self._failed("ice_failed")

    async def single_offer(self, sdp: str) -> tuple[str, dict[str, str]]:
        """Answer an offer of a ``single_pc`` client: its sending sections publish tracks (as
        ``publish_offer``), its receive-only ones carry the tracks it receives. Returns the
        answer SDP and which track each receiving section carries (mid -> track sid)."""
        transport = self.single
        if transport is None:
            raise TransportError("this participant has two connections")
        if self.closed:
            raise TransportError("participant left")
        offered, prefer = self.publishing.read_offer(sdp, receiving=True)
        receiving = {m.mid for m in offered if m.kind in ("audio", "video") and not m.sending}
        slots = await transport.receive_offer(sdp, prefer)
        sub = self.subscriber
        try:
            if sub is not None:
                sub.fill(slots, receiving)
            answer = await transport.make_answer()
        except BaseException:
            if sub is not None:
                sub.unfilled()
            raise
        if self.closed:
            raise TransportError("participant left")
        answer = keep_rid_extensions(sdp, self.publishing.answered(sdp, offered, answer))
        if sub is None:
            return answer, {}
        # transport-cc in every section it receives on, those left inactive too: Chromium
        # offers no extension again that an answer once refused
        answer = answer_transport_cc(sdp, answer, receiving)
        sub.answered(answer)
        return answer, sub.mid_to_track()

    async def reanswer(self, sdp: str) -> bool:
        """Answer a ``single_pc`` client's last offer ``sdp`` again, for this side only: tracks
        waiting for a section take those that are free (a client that never offers again,
        WHEP: it keeps its sections, their SSRCs and numbering continue; what they carry
        changes). Returns whether anything was placed."""
        sub = self.subscriber
        if self.single is None or sub is None or self.closed or not sub.could_place():
            return False
        await self.single_offer(sdp)
        return True

    def allows(self, identity: str, track_sid: str) -> bool:
        """Whether the participant ``identity`` may receive this participant's track."""
        return self.receivers is None or self.receivers(identity, track_sid)

    # -- data channels -------------------------------------------------------------------
    def _data(self, label: str, data: bytes) -> None:
        handler = self.on_data
        if handler is not None and not self.closed:  # suspended too: the channels are up
            handler(label, data)

    def send_data(self, label: str, data: bytes) -> bool:
        """Send one message to this participant's client on its data channel ``label``: the
        subscribe connection's, else the publish connection's; False if neither is open."""
        if self.closed:
            return False
        sub = self.subscriber.transport if self.subscriber is not None else None
        if sub is not None and label in sub.data_labels():
            return sub.send_data(label, data)
        pub = self.publishing.transport
        if pub is not None and label in pub.data_labels():
            return pub.send_data(label, data)
        return False

    @property
    def tracks(self) -> dict[str, Publisher]:
        """The tracks this participant publishes, by sid."""
        return self.publishing.tracks

    def info(self) -> ParticipantInfo:
        """The participant as others see it."""
        return ParticipantInfo(
            self.sid,
            self.identity,
            self.name,
            self.metadata,
            tuple(t.info() for t in self.tracks.values()),
            dict(self.attributes),
        )

    def ref(self) -> ParticipantRef:
        """Who this is, in short."""
        return ParticipantRef(self.sid, self.identity, self.name)

    def emit(self, event: Event) -> None:
        """Send an event to this participant's client (the signaling session); never raises.
        While suspended, only data for a client with data channels goes out (they outlive
        its signaling connection)."""
        if self.suspended and not (self.data_channels and isinstance(event, DataReceived)):
            return
        if self._emit is not None and not self.closed:
            try:
                self._emit(event)
            except Exception:
                logger.exception("event listener of %s failed", self.sid)

    def _tell(self, event: Event) -> None:
        """Report to the room this participant is in."""
        if self.listener is not None and not self.closed:
            self.listener(self, event)

    def _failed(self, reason: str) -> None:
        self._tell(ConnectionFailed(self.sid, reason))

    # -- publishing ----------------------------------------------------------------------
    def add_track(
        self,
        cid: str,
        kind: str,
        source: str = "",
        name: str = "",
        width: int = 0,
        height: int = 0,
        muted: bool = False,
        codec: str = "",
    ) -> TrackRequest:
        """Announce a track the next publisher offer will carry (matched by msid = cid);
        ``muted``: it is published muted (a client republishing a muted microphone after a
        reconnection: nobody ever receives it unmuted); ``codec``: the MIME type it should be
        sent in (``video/VP9``) when the offer has it."""
        return self.publishing.add_track(cid, kind, source, name, width, height, muted, codec)

    async def publish_offer(self, sdp: str) -> str:
        """Negotiate the publish connection from the client's offer; returns the answer SDP."""
        answer = await self.publishing.offer(sdp)
        if self.closed:
            raise TransportError("participant left")
        return answer

    def unpublish(self, track_sid: str, by_server: bool = False) -> Publisher:
        """Stop publishing a track; every subscriber is told.

        ``by_server``: a host or administrator did it; the participant's own client is told
        (TrackUnpublished with its own sid), so that it stops sending and says so."""
        track = self.publishing.unpublish(track_sid)
        if by_server:
            self.emit(TrackUnpublished(self.sid, track.sid))
        return track

    def set_muted(self, track_sid: str, muted: bool, by_server: bool = False) -> Publisher:
        """Mute or unmute one of this participant's tracks (muted media is not forwarded).

        ``by_server``: a host or administrator did it; the participant's own client is told.
        """
        track = self.tracks.get(track_sid)
        if track is None:
            raise KeyError(track_sid)
        if track.set_muted(muted):
            event = TrackMuted(self.sid, track.sid, muted)
            self._tell(event)
            if by_server:
                self.emit(event)
        return track

    def update(
        self,
        name: str | None = None,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """Change name, metadata or attributes (merged: a key set to "" is removed); everyone
        (this participant included) is told."""
        if name is not None:
            self.name = name
        if metadata is not None:
            self.metadata = metadata
        if attributes:
            merged = {**self.attributes, **attributes}
            self.attributes = {k: v for k, v in merged.items() if v != ""}
        event = ParticipantUpdated(self.info())
        self.emit(event)
        self._tell(event)

    def send_publisher_feedback(self) -> None:
        """Receiver report and REMB to the publisher, so that its sender can adapt."""
        self.publishing.send_feedback()

    # -- subscription control -------------------------------------------------------------
    def set_track_settings(
        self,
        track_sid: str,
        visible: bool | None = None,
        max_height: int | None = None,
        quality: str | None = None,
        max_fps: float | None = None,
    ) -> None:
        """Adaptive stream and quality choice for a received track: shown or not, at what
        height at most, which quality at most (low, medium, high), at what frame rate at most
        (0: any; VP9 SVC only: its temporal layers)."""
        dt = self.subscriber.downtracks.get(track_sid) if self.subscriber else None
        if dt is None:
            raise KeyError(track_sid)
        if visible is not None:
            dt.visible = visible
        if max_height is not None:
            dt.max_height = max_height
        if quality is not None:
            dt.max_layer = min(QUALITIES.index(quality), dt.top_layer)
        if max_fps is not None:
            dt.max_fps = max(float(max_fps), 0.0)

    def restart_ice(self) -> None:
        """Restart ICE on the subscribe connection (the client's network changed): its next
        offer, made now, carries new credentials; the session, its tracks and their settings
        stay, and media resumes on the new path as soon as checks nominate it. (The client
        restarts the publish connection's ICE itself, with an offer.)

        Raises PermissionDenied for a participant who may not subscribe, TransportError if it
        left or the client makes the offers on this connection."""
        if self.subscriber is None:
            raise PermissionDenied("not allowed to subscribe")
        if self.closed:
            raise TransportError("participant left")
        self.subscriber.restart_ice()

    async def restart_subscriber(self, available: Callable[[], list[Publisher]]) -> None:
        """Replace the subscribe connection with a fresh one that carries the same tracks,
        with the same settings; its first offer follows. For a client that could not apply an
        offer: it discards its connection and answers the new one, and media comes back.

        ``available``: the tracks it may receive now (the room's others'); those it had are
        kept with their settings, those published meanwhile are added. The old connection is
        closed first; the new one is made and given its tracks with no wait in between, so
        that a caller who answers the client right after this returns is sure its answer goes
        out before the new connection's first offer.

        Raises TransportError if the participant left, RestartRefused beyond ``MAX_RESTARTS``
        in ``RESTART_WINDOW`` seconds: a client that keeps failing must not make the server
        renegotiate without end.
        """
        old = self.subscriber
        if old is None:
            raise PermissionDenied("not allowed to subscribe")
        if self.closed:
            raise TransportError("participant left")
        if self.single is not None:
            raise TransportError("one peer connection: the client renegotiates it itself")
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
        if len(self._restarts) >= MAX_RESTARTS:
            raise RestartRefused(
                f"at most {MAX_RESTARTS} subscriber restarts in {RESTART_WINDOW:.0f} s"
            )
        self._restarts.append(now)
        await self._replace_subscriber(old, available)

    async def _replace_subscriber(
        self, old: SubscribeConnection, available: Callable[[], list[Publisher]]
    ) -> None:
        kept = {
            dt.track.sid: (dt.visible, dt.max_height, dt.max_layer, dt.max_fps)
            for dt in old.downtracks.values()
        }
        # nothing is awaited from here on: no track can be published, nor the participant
        # moved to another room, between the old connection's end and the new one's start
        old.abandon()  # sends nothing more; its transport is closed in the background
        new = self._new_subscriber(first_offer=old.offers_made + 1)
        new.remb_bitrate = old.remb_bitrate  # the path did not change: keep its estimate
        self.subscriber = new
        for track in available():
            if track.sid in kept:  # (one it had unsubscribed from stays unsubscribed)
                dt = new.add(track)
                dt.visible, dt.max_height, dt.max_layer, dt.max_fps = kept[track.sid]
        task = asyncio.ensure_future(old.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        logger.info("participant %s: subscriber connection restarted", self.sid)

    def rebind(self, emit: Callable[[Event], None]) -> None:
        """Serve a new signaling connection of this participant whose peer connections are
        still up (LiveKit's resume): events go to ``emit`` from now on; connections, tracks
        and subscriptions stay as they are."""
        if self.closed:
            raise TransportError("participant left")
        self._emit = emit
        self.suspended = False

    async def reconnect(
        self, emit: Callable[[Event], None], available: Callable[[], list[Publisher]]
    ) -> None:
        """Serve a new client connection of this participant (its old one dropped): events go
        to ``emit`` from now on, and both peer connections are replaced by fresh ones. What it
        published went with the old connection: those tracks are unpublished (the room is
        told) and the client publishes them again. The fresh subscribe connection carries the
        tracks of ``available`` with the settings they had; its first offer follows this call
        (nothing is awaited after it is made, as in ``restart_subscriber``)."""
        if self.closed:
            raise TransportError("participant left")
        if self.single is not None:
            raise TransportError("one peer connection: rejoin, or resume (rebind)")
        self.suspended = True  # nothing of the old connections reaches the new client
        old = self.publishing
        for sid in list(old.tracks):
            self.publishing.unpublish(sid)
        self.publishing = self._new_publishing(old.max_tracks)
        await old.close()
        if self.subscriber is not None:
            await self._replace_subscriber(self.subscriber, available)
        if self.closed:
            raise TransportError("participant left")
        self._emit = emit
        self.suspended = False

    # -- trickle and teardown ------------------------------------------------------------
    async def restart_ice_with(
        self, target: str, ufrag: str, pwd: str
    ) -> tuple[str, str, list[str]]:
        """Restart ICE on the ``target`` connection ("publisher" or "subscriber"; a
        ``single_pc`` participant's one) with the client's new credentials given out of band
        (WHIP and WHEP: a PATCH, RFC 9725 section 4.4.1); returns ours and our candidates
        (PeerTransport.restart_with). TransportError if that connection is not up."""
        transport: PeerTransport | None
        if self.single is not None:
            transport = self.single
        elif target == "publisher":
            transport = self.publishing.transport
        elif target == "subscriber":
            transport = self.subscriber.transport if self.subscriber is not None else None
        else:
            raise ValueError("target must be 'publisher' or 'subscriber'")
        if transport is None or self.closed:
            raise TransportError("no connection to restart")
        return await transport.restart_with(ufrag, pwd)

    async def add_ice_candidate(self, target: str, candidate: dict | None) -> None:
        """A trickled client candidate for the publisher or subscriber connection (the one
        connection of a ``single_pc`` participant, whichever the target)."""
        if self.single is not None:
            if target not in ("publisher", "subscriber"):
                raise ValueError("target must be 'publisher' or 'subscriber'")
            await self.single.add_ice_candidate(candidate)
            return
        if target == "publisher":
            await self.publishing.add_ice_candidate(candidate)
        elif target == "subscriber":
            if self.subscriber is None:
                raise PermissionDenied("not allowed to subscribe")
            await self.subscriber.add_ice_candidate(candidate)
        else:
            raise ValueError("target must be 'publisher' or 'subscriber'")

    async def close(self) -> None:
        """Release everything: tracks, DownTracks, both connections."""
        if self.closed:
            return
        self.closed = True
        self.listener = None
        # every counter is handed to the totals before the first wait, so that /metrics never
        # sees them dip while the transports close
        if self.subscriber is not None:
            self.subscriber.abandon()
        await self.publishing.close()  # its tracks retire before it awaits its transport
        if self.subscriber is not None:
            await self.subscriber.close()
        if self.single is not None:
            await self.single.close()  # (closed already if it had a subscriber)
        for task in list(self._closing):
            await task
