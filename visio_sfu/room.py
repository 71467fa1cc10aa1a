"""Room: the participants of one meeting and who receives which track.

Every participant who may subscribe receives every other participant's tracks (unless it
unsubscribes). The room tells everyone about joins, leaves and track changes (typed events,
events.py), runs the adaptation timer (layer selection, active speaker, dynacast) and the RTCP
timer for all its connections, and closes itself after staying empty for ``empty_timeout``
seconds. ``attach``/``detach`` move a live participant between rooms without touching its
connections (breakout rooms). A locked room (``set_locked``) takes no newcomer. A participant
whose client dropped may be kept for a while (``suspend``) and given back to the client when it
reconnects (``resume``), the others seeing no leave and no join.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .allocator import allocate, dynacast
from .errors import PermissionDenied, RoomClosed, RoomFull, RoomLocked
from .events import (
    ActiveSpeakerChanged,
    ConnectionFailed,
    DataReceived,
    Event,
    LayersWanted,
    Leave,
    LifecycleEvent,
    Moved,
    ParticipantEntered,
    ParticipantExited,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    RoomFinished,
    RoomInfo,
    RoomStarted,
    RoomUpdated,
    TrackAdded,
    TrackMuted,
    TrackPublished,
    TrackRemoved,
    TrackUnpublished,
)
from .participant import Participant, Permissions, new_sid
from .publisher import Publisher
from .speaker import SpeakerDetector
from .stats import DropReason, Stats, drop_totals
from .transport import PeerTransport
from .twcc_responder import FEEDBACK_INTERVAL

__all__ = ["Room", "RoomClosed", "RoomFull", "RoomLocked"]

logger = logging.getLogger(__name__)

RTCP_INTERVAL = 1.0
ADAPT_INTERVAL = 0.25  # layer selection, active speaker, dynacast
AUDIO_STALE = 0.5  # an audio track that sent nothing for this long is silent


class Room:
    """One meeting."""

    def __init__(
        self,
        name: str,
        empty_timeout: float = 20.0,
        max_participants: int = 0,
        metadata: str = "",
        on_closed: Callable[[Room], None] | None = None,
        max_tracks: int = 16,
        notify: Callable[[LifecycleEvent], None] | None = None,
        stats: Stats | None = None,
        transport_factory: Callable[..., PeerTransport] = PeerTransport,
    ) -> None:
        self.name = name
        self.counters = stats or Stats()  # shared with the SFU and every track
        self.sid = new_sid("RM")
        self.metadata = metadata
        self.empty_timeout = empty_timeout
        self.max_participants = max_participants
        self.max_tracks = max_tracks
        self._notify_cb = notify
        self._transport_factory = transport_factory
        self.participants: dict[str, Participant] = {}  # sid -> Participant
        self.created_at = time.time()
        self._on_closed = on_closed
        self._empty_handle: asyncio.TimerHandle | None = None
        self._rtcp_task: asyncio.Task | None = None
        self._adapt_task: asyncio.Task | None = None
        self._feedback_task: asyncio.Task | None = None
        self.speakers = SpeakerDetector()
        self.active_speaker: str | None = None
        self._removals: set[asyncio.Task] = set()
        #: called with every track published in this room (and every track already here when
        #: added with watch_tracks): where a recorder or a transcriber attaches its sinks
        self.track_watchers: list[Callable[[Participant, Publisher], None]] = []
        self.locked = False  # newcomers are refused (set_locked)
        #: participants whose client dropped, kept until resumed or until their grace ends
        self._suspended: dict[str, asyncio.TimerHandle] = {}
        #: an empty room stays open while kept (keep_open): a meeting whose participants are
        #: all in breakout rooms, a breakout room nobody is in yet
        self.kept = False
        self.closed = False
        self._arm_empty_timer()

    def info(self) -> RoomInfo:
        """The room as its participants see it."""
        return RoomInfo(self.name, self.sid, self.metadata, self.locked)

    def notify(self, event: LifecycleEvent) -> None:
        """Report a lifecycle event to the SFU's listeners (webhooks); never raises."""
        if self._notify_cb is not None:
            try:
                self._notify_cb(event)
            except Exception:
                logger.exception("event listener failed for %s", event.name)

    def describe(self) -> dict:
        """The room as the admin API shows it."""
        return {
            "name": self.name,
            "sid": self.sid,
            "metadata": self.metadata,
            "participants": len(self.participants),
            "empty_timeout": self.empty_timeout,
            "max_participants": self.max_participants,
            "created_at": int(self.created_at),
            "locked": self.locked,
        }

    def set_metadata(self, metadata: str) -> None:
        """Change the room's metadata and tell everyone."""
        self.metadata = metadata
        self.broadcast(RoomUpdated(self.info()))

    def set_locked(self, locked: bool) -> None:
        """Lock the room (``join`` refuses newcomers, raising RoomLocked, unless told to let
        them in: a host) or unlock it; everyone is told (RoomUpdated)."""
        if self.locked != locked:
            self.locked = locked
            self.broadcast(RoomUpdated(self.info()))

    def keep_open(self, keep: bool) -> None:
        """Keep this room open while it is empty (breakout rooms: the main room while everyone
        is in a sub-room), or stop: an empty room then closes after ``empty_timeout``."""
        self.kept = keep
        if keep:
            self._cancel_empty_timer()
        elif not self.participants and not self.closed:
            self._arm_empty_timer()

    # -- membership ----------------------------------------------------------------------
    async def join(
        self,
        identity: str,
        name: str = "",
        metadata: str = "",
        permissions: Permissions | None = None,
        emit: Callable[[Event], None] | None = None,
        bypass_lock: bool = False,
        data_channels: bool = False,
        auto_subscribe: bool = True,
        single_pc: bool = False,
        ends_with_connection: bool = False,
        fixed_sections: bool = False,
    ) -> Participant:
        """Add a new participant; an older session with the same identity is replaced.
        ``data_channels``, ``auto_subscribe``, ``single_pc``, ``ends_with_connection``,
        ``fixed_sections``: see Participant.

        A locked room refuses newcomers (RoomLocked) unless ``bypass_lock`` (a host); someone
        already in the room, coming back from another window, is no newcomer."""
        if self.closed:
            raise RoomClosed(self.name)
        old = self.by_identity(identity)
        if self.locked and old is None and not bypass_lock:
            raise RoomLocked(f"room {self.name} is locked")
        if old is not None:
            old.emit(Leave("replaced"))
            await self.remove(old, "replaced")
        self._check_room_for_one_more()
        p = Participant(
            identity,
            name,
            metadata,
            permissions,
            emit,
            stats=self.counters,
            max_tracks=self.max_tracks,
            transport_factory=self._transport_factory,
            data_channels=data_channels,
            auto_subscribe=auto_subscribe,
            single_pc=single_pc,
            ends_with_connection=ends_with_connection,
            fixed_sections=fixed_sections,
        )
        self.attach(p)
        return p

    def _check_room_for_one_more(self) -> None:
        if self.closed:
            raise RoomClosed(self.name)
        if self.max_participants and len(self.participants) >= self.max_participants:
            raise RoomFull(f"room {self.name} is full ({self.max_participants} participants)")

    def attach(self, p: Participant) -> None:
        """Bring a participant into this room: new or moved from another one (detached from
        it first), with its connections and published tracks as they are. The others see it
        join and receive its tracks; it receives theirs. A moved participant is told where it
        is now (``Moved``)."""
        self._check_room_for_one_more()
        if p.closed:
            raise ValueError(f"participant {p.sid} has left: it cannot be attached")
        if p.listener is not None:
            raise ValueError(f"participant {p.sid} is in another room: detach it first")
        moved, p.attached_once = p.attached_once, True
        self.participants[p.sid] = p
        p.listener = self._on_participant_event
        p.room_name = self.name
        self._cancel_empty_timer()
        if self._rtcp_task is None:
            self._rtcp_task = asyncio.ensure_future(self._rtcp_loop())
            self._adapt_task = asyncio.ensure_future(self._adapt_loop())
            self._feedback_task = asyncio.ensure_future(self._feedback_loop())
        if not p.permissions.hidden:
            self.broadcast(ParticipantJoined(p.info()), exclude=p)
        for track in p.tracks.values():  # a moved participant brings its tracks
            self.notify(TrackAdded(self.info(), p.ref(), track.info()))
            self._subscribe_others(p, track)
            self._tell_watchers(p, track)
        self.subscribe_to_others(p)
        if moved:
            p.emit(Moved(self.info(), tuple(o.info() for o in self.visible(exclude=p))))
        logger.info("room %s: %s joined (%d present)", self.name, p.sid, len(self.participants))
        self.notify(ParticipantEntered(self.info(), p.ref()))

    def detach(self, p: Participant, reason: str = "moved") -> Participant:
        """Take a participant out of this room without closing it (to attach it elsewhere):
        the others stop receiving its tracks and see it leave; it stops receiving theirs."""
        if self.participants.pop(p.sid, None) is None:
            raise KeyError(p.sid)
        p.listener = None
        p.room_name = None
        for track in p.tracks.values():
            self._unsubscribe_all(track)
            # sinks other than subscribers' (a recorder, a transcriber) belong to this room
            for sink in track.sinks:
                if sink not in track.downtracks:
                    track.detach(sink)
                    sink.close()
            self.notify(TrackRemoved(self.info(), p.ref(), track.info()))
        if p.subscriber is not None:
            for sid in list(p.subscriber.downtracks):
                p.subscriber.remove(sid)
        self._left(p, reason)
        return p

    def subscribe_to_others(self, p: Participant) -> None:
        """Have ``p`` receive every track the others publish (that their owners let it)."""
        if p.subscriber is None or not p.auto_subscribe:
            return
        for other in self.participants.values():
            if other is not p:
                for track in other.tracks.values():
                    if other.allows(p.identity, track.sid):
                        p.subscriber.add(track)

    def by_identity(self, identity: str) -> Participant | None:
        """The participant with this identity, if present."""
        return next((p for p in self.participants.values() if p.identity == identity), None)

    async def remove(self, participant: Participant, reason: str = "left") -> None:
        """Remove a participant, release what it held and tell the others."""
        if self.participants.pop(participant.sid, None) is None:
            return
        handle = self._suspended.pop(participant.sid, None)
        if handle is not None:
            handle.cancel()
        participant.listener = None
        for track in list(participant.tracks.values()):
            self._unsubscribe_all(track)
            self.notify(TrackRemoved(self.info(), participant.ref(), track.info()))
        await participant.close()
        self._left(participant, reason)

    def _left(self, p: Participant, reason: str) -> None:
        if not p.permissions.hidden:
            self.broadcast(ParticipantLeft(p.sid, p.identity, reason))
        logger.info("room %s: %s left (%s)", self.name, p.sid, reason)
        self.notify(ParticipantExited(self.info(), p.ref(), reason))
        if not self.participants and not self.kept:
            self._arm_empty_timer()

    # -- a client that dropped and comes back ---------------------------------------------
    def suspend(self, p: Participant, grace: float, reason: str = "disconnected") -> None:
        """``p``'s client is gone without leaving (its connection dropped) and may come back
        within ``grace`` seconds (``resume``). Meanwhile ``p`` stays as it is: the others see
        no change, events for it are dropped, a failure of its old connections is ignored.
        Not back in time: removed with ``reason``."""
        if self.participants.get(p.sid) is not p or self.closed:
            return
        old = self._suspended.pop(p.sid, None)
        if old is not None:
            old.cancel()
        p.suspended = True
        loop = asyncio.get_running_loop()
        self._suspended[p.sid] = loop.call_later(grace, self._suspension_over, p, reason)
        logger.info("room %s: %s suspended for %gs", self.name, p.sid, grace)

    def is_suspended(self, p: Participant) -> bool:
        """Whether ``p`` waits for its client to come back (``suspend``)."""
        return p.sid in self._suspended

    def _suspension_over(self, p: Participant, reason: str) -> None:
        self._suspended.pop(p.sid, None)
        if self.participants.get(p.sid) is p:
            task = asyncio.ensure_future(self.remove(p, reason))
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    async def resume(self, p: Participant, emit: Callable[[Event], None]) -> None:
        """Give ``p`` to a client that reconnected: suspended, or taking over from a connection
        the server has not yet found dead. Same sid; the others see no leave and no join.
        ``p``'s old connections are replaced by fresh ones (Participant.reconnect): the tracks
        it published are unpublished (its client publishes them again) and a fresh subscribe
        connection carries the room's tracks, its first offer following this call. KeyError if
        ``p`` is not in this room."""
        if self.participants.get(p.sid) is not p:
            raise KeyError(p.sid)
        handle = self._suspended.pop(p.sid, None)
        if handle is not None:
            handle.cancel()
        await p.reconnect(emit, lambda: self._tracks_for(p))
        if self.participants.get(p.sid) is not p:  # removed while its connections were replaced
            raise KeyError(p.sid)
        logger.info("room %s: %s resumed", self.name, p.sid)

    def resume_signaling(self, p: Participant, emit: Callable[[Event], None]) -> None:
        """Give ``p`` to a client whose signaling connection came back while its peer
        connections stayed up (LiveKit's resume): same sid, same connections and tracks; the
        others see nothing. KeyError if ``p`` is not in this room."""
        if self.participants.get(p.sid) is not p:
            raise KeyError(p.sid)
        handle = self._suspended.pop(p.sid, None)
        if handle is not None:
            handle.cancel()
        p.rebind(emit)
        logger.info("room %s: %s resumed its signaling", self.name, p.sid)

    def schedule_removal(self, participant: Participant, reason: str) -> None:
        """Remove a participant from a synchronous callback (ICE failure)."""
        if participant.sid not in self.participants:
            return
        participant.emit(Leave(reason))
        task = asyncio.ensure_future(self.remove(participant, reason))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    # -- what participants report --------------------------------------------------------
    def _on_participant_event(self, p: Participant, event: Event) -> None:
        if isinstance(event, TrackPublished):
            track = p.tracks.get(event.track.sid)
            if track is not None:
                self.notify(TrackAdded(self.info(), p.ref(), event.track))
                self.broadcast(event, exclude=p)
                self._subscribe_others(p, track)
                self._tell_watchers(p, track)
        elif isinstance(event, TrackUnpublished):
            self._unsubscribe_sid(event.track_sid)
            self.broadcast(event, exclude=p)
            if event.track is not None:
                self.notify(TrackRemoved(self.info(), p.ref(), event.track))
        elif isinstance(event, TrackMuted | ParticipantUpdated):
            if not p.permissions.hidden:
                self.broadcast(event, exclude=p)
        elif isinstance(event, ConnectionFailed):
            if p.sid not in self._suspended:  # else its grace decides
                self.schedule_removal(p, event.reason)

    def watch_tracks(self, watcher: Callable[[Participant, Publisher], None]) -> None:
        """Call ``watcher`` for every track published in this room, those already published
        first; remove it from ``track_watchers`` to stop."""
        self.track_watchers.append(watcher)
        for p in list(self.participants.values()):
            for track in list(p.tracks.values()):
                try:
                    watcher(p, track)
                except Exception:
                    logger.exception("room %s: track watcher failed", self.name)

    def _tell_watchers(self, owner: Participant, track: Publisher) -> None:
        for watcher in list(self.track_watchers):
            try:
                watcher(owner, track)
            except Exception:
                logger.exception("room %s: track watcher failed", self.name)

    def _subscribe_others(self, owner: Participant, track: Publisher) -> None:
        for other in self.participants.values():
            if (
                other is not owner
                and other.subscriber is not None
                and other.auto_subscribe
                and owner.allows(other.identity, track.sid)
            ):
                try:
                    other.subscriber.add(track)
                except Exception:  # one subscriber's trouble must not fail the publish
                    logger.exception(
                        "room %s: %s could not receive %s", self.name, other.sid, track.sid
                    )

    def apply_receivers(self, owner: Participant) -> None:
        """``owner.receivers`` changed: those no longer allowed stop receiving its tracks,
        those allowed again (and subscribing by themselves) receive them."""
        for other in self.participants.values():
            if other is owner or other.subscriber is None:
                continue
            for track in owner.tracks.values():
                if not owner.allows(other.identity, track.sid):
                    other.subscriber.remove(track.sid)
                elif other.auto_subscribe and track.sid not in other.subscriber.downtracks:
                    other.subscriber.add(track)

    def _unsubscribe_all(self, track: Publisher) -> None:
        self._unsubscribe_sid(track.sid)

    def _unsubscribe_sid(self, track_sid: str) -> None:
        for other in self.participants.values():
            if other.subscriber is not None:
                other.subscriber.remove(track_sid)

    # -- tracks --------------------------------------------------------------------------
    def set_subscribed(self, p: Participant, track_sid: str, subscribed: bool) -> None:
        """``p`` receives (or stops receiving) another participant's track of this room."""
        if p.subscriber is None:
            raise PermissionDenied("not allowed to subscribe")
        track = self.find_track(track_sid)
        if track is None or track.participant_sid == p.sid:
            raise KeyError(track_sid)
        owner = self.participants.get(track.participant_sid)
        if subscribed and owner is not None and not owner.allows(p.identity, track_sid):
            raise PermissionDenied(f"{owner.identity} does not let you receive {track_sid}")
        if subscribed:
            p.subscriber.add(track)
        else:
            p.subscriber.remove(track_sid)

    async def restart_subscriber(self, p: Participant) -> None:
        """Give ``p`` a fresh subscriber connection with what it receives now (see
        Participant.restart_subscriber)."""
        await p.restart_subscriber(lambda: self._tracks_for(p))

    def _tracks_for(self, p: Participant) -> list[Publisher]:
        """The tracks ``p`` may receive: every other participant's."""
        return [t for o in self.participants.values() if o is not p for t in o.tracks.values()]

    def visible(self, exclude: Participant | None = None) -> list[Participant]:
        """The participants others may see (not hidden), but ``exclude``."""
        return [
            p for p in self.participants.values() if p is not exclude and not p.permissions.hidden
        ]

    def find_track(self, sid: str) -> Publisher | None:
        """A published track of this room by its sid."""
        for p in self.participants.values():
            if sid in p.tracks:
                return p.tracks[sid]
        return None

    def tracks(self) -> list[Publisher]:
        """Every published track in the room."""
        return [t for p in self.participants.values() for t in p.tracks.values()]

    # -- data ----------------------------------------------------------------------------
    def send_data(
        self,
        sender: Participant | None,
        topic: str,
        payload: Any,
        to: list[str] | None = None,
        reliable: bool = True,
        encoded: tuple[str, bytes] | None = None,
        encoded_only: bool = False,
    ) -> int:
        """Deliver a data message to the others (or the identities in ``to``); returns count.
        ``reliable``, ``encoded``, ``encoded_only``: see DataReceived."""
        event = DataReceived(
            sender.ref() if sender is not None else None,
            topic,
            payload,
            int(time.time() * 1000),
            reliable,
            encoded,
            encoded_only,
        )
        count = 0
        for p in self.participants.values():
            if p is sender or (to and p.identity not in to):
                continue
            p.emit(event)
            count += 1
        return count

    def broadcast(self, event: Event, exclude: Participant | None = None) -> None:
        """Send an event to every participant but ``exclude``."""
        for p in list(self.participants.values()):
            if p is not exclude:
                p.emit(event)

    # -- timers and teardown -------------------------------------------------------------
    async def _rtcp_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(RTCP_INTERVAL)
            now = time.monotonic()
            for p in list(self.participants.values()):
                try:
                    if p.subscriber is not None:
                        p.subscriber.send_reports(now)
                    p.send_publisher_feedback()
                except Exception:
                    logger.exception("RTCP timer failed for %s", p.sid)

    async def _feedback_loop(self) -> None:
        """Transport-cc feedback to the publishers that negotiated it (TwccResponder)."""
        while not self.closed:
            await asyncio.sleep(FEEDBACK_INTERVAL)
            for p in list(self.participants.values()):
                try:
                    p.publishing.send_transport_feedback()
                except Exception:
                    logger.exception("transport-cc feedback failed for %s", p.sid)

    async def _adapt_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(ADAPT_INTERVAL)
            try:
                self.adapt(time.monotonic())
            except Exception:
                logger.exception("room %s: adaptation failed", self.name)

    def adapt(self, now: float) -> None:
        """One round: layer bitrates, active speaker, layer selection, dynacast."""
        tracks = self.tracks()
        for track in tracks:
            track.update_rates(now)
        audio = [t for t in tracks if t.kind == "audio" and t.audio_level_id]
        levels = np.array(
            [
                127 if t.muted or now - t.layers[0].last_packet > AUDIO_STALE else t.audio_level
                for t in audio
            ],
            dtype=np.float64,
        )
        voice = np.array([t.voice for t in audio], dtype=bool)
        speaking = self.speakers.update([t.sid for t in audio], levels, voice)
        owner = next((t.participant_sid for t in audio if t.sid == speaking), None)
        if owner != self.active_speaker:
            self.active_speaker = owner
            self.broadcast(ActiveSpeakerChanged(owner))
        allocate(list(self.participants.values()), owner, now)
        for p in list(self.participants.values()):
            if p.subscriber is not None:
                p.subscriber.probe(now)
        for track in tracks:
            rids = dynacast(track, now)
            publisher = self.participants.get(track.participant_sid)
            if rids is not None and publisher is not None:
                publisher.emit(LayersWanted(track.sid, tuple(rids)))

    def _arm_empty_timer(self) -> None:
        self._cancel_empty_timer()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._empty_handle = loop.call_later(self.empty_timeout, self._empty_expired)

    def _cancel_empty_timer(self) -> None:
        if self._empty_handle is not None:
            self._empty_handle.cancel()
            self._empty_handle = None

    def _empty_expired(self) -> None:
        self._empty_handle = None
        if not self.participants and not self.closed and not self.kept:
            task = asyncio.ensure_future(self.close())
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    def started(self) -> None:
        """Tell the SFU's listeners this room exists (the SFU calls it once)."""
        self.notify(RoomStarted(self.info()))

    async def close(self, reason: str = "room_closed") -> None:
        """Disconnect everyone and stop the room's timers."""
        if self.closed:
            return
        self.closed = True
        self._cancel_empty_timer()
        for p in list(self.participants.values()):
            p.emit(Leave(reason))
            await self.remove(p, reason)
        self._cancel_empty_timer()
        for task in (self._rtcp_task, self._adapt_task, self._feedback_task):
            if task is not None:
                task.cancel()
        self._rtcp_task = self._adapt_task = self._feedback_task = None
        logger.info("room %s closed", self.name)
        self.notify(RoomFinished(self.info()))
        if self._on_closed is not None:
            self._on_closed(self)

    def stats(self) -> dict:
        """Counters for this room: participants, tracks, packets in and out, drops by reason."""
        tracks = self.tracks()
        downtracks = [dt for t in tracks for dt in t.downtracks]
        drops = drop_totals(*(t.drops for t in tracks), *(dt.drops for dt in downtracks))
        drops[DropReason.UNKNOWN_SSRC.label] += sum(
            p.publishing.router.unknown for p in self.participants.values()
        )
        return {
            "name": self.name,
            "sid": self.sid,
            "participants": len(self.participants),
            "tracks": len(tracks),
            "downtracks": len(downtracks),
            "packets_in": sum(t.packets for t in tracks),
            "bytes_in": sum(t.bytes for t in tracks),
            "keyframes_in": sum(t.keyframes for t in tracks),
            "packets_out": sum(dt.packets for dt in downtracks),
            "bytes_out": sum(dt.bytes for dt in downtracks),
            "retransmits": sum(dt.retransmits for dt in downtracks),
            "nacks": sum(dt.nacks for dt in downtracks),
            "keyframe_requests": sum(t.keyframe_requests for t in tracks),
            "layer_switches": sum(dt.switches for dt in downtracks),
            "layer_starts": sum(dt.forwarder.starts for dt in downtracks),
            "nacks_out": sum(t.nacks_out for t in tracks),
            "repaired": sum(t.repaired for t in tracks),
            "twcc_feedback_out": sum(
                p.publishing.twcc_feedbacks for p in self.participants.values()
            ),
            "drops": drops,
        }

    def bandwidths(self) -> list[dict]:
        """Per subscriber: the bandwidth the allocator uses (send-side estimate from
        transport-cc feedback, else REMB) and the estimator's figures."""
        out = []
        for p in self.participants.values():
            sub = p.subscriber
            if sub is None:
                continue
            est = sub.estimator
            out.append(
                {
                    "room": self.name,
                    "subscriber": p.sid,
                    "source": "twcc" if sub.twcc_feedbacks else "remb",
                    "bandwidth": sub.bandwidth,
                    "feedbacks": sub.twcc_feedbacks,
                    "overuses": est.overuses,
                    "wanted": sub.wanted_bitrate,
                    "probes": est.probes,
                    "probes_succeeded": est.probes_succeeded,
                    "probe_packets": sub.probe_packets,
                    "loss": est.loss_fraction,
                }
            )
        return out

    def layers(self) -> list[dict]:
        """Per video DownTrack: the layer forwarded, the layer chosen, the switches made."""
        return [
            {"room": self.name, **dt.layer_info()}
            for t in self.tracks()
            if t.kind == "video"
            for dt in t.downtracks
        ]
