"""Room: the participants of one meeting and who receives which track.

Every participant who may subscribe receives every other participant's tracks. The room tells
everyone about joins, leaves and track changes, runs one RTCP timer for all its connections,
and closes itself after staying empty for ``empty_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .allocator import allocate, dynacast
from .delay import DelayHistogram
from .participant import Participant, Permissions, new_sid
from .speaker import SpeakerDetector

if TYPE_CHECKING:
    from .publisher import Publisher

logger = logging.getLogger(__name__)

RTCP_INTERVAL = 1.0
ADAPT_INTERVAL = 0.25  # layer selection, active speaker, dynacast
AUDIO_STALE = 0.5  # an audio track that sent nothing for this long is silent


class RoomFull(Exception):
    """The room has reached its participant limit."""


class RoomClosed(Exception):
    """The room is closing and takes no one in."""


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
        notify: Callable[[str, dict], None] | None = None,
        forwarding_delay: DelayHistogram | None = None,
        retired: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.forwarding_delay = forwarding_delay or DelayHistogram()
        self.retired = retired if retired is not None else {}  # counters of closed tracks
        self.sid = new_sid("RM")
        self.metadata = metadata
        self.empty_timeout = empty_timeout
        self.max_participants = max_participants
        self.max_tracks = max_tracks
        self._notify_cb = notify
        self.participants: dict[str, Participant] = {}  # sid -> Participant
        self.created_at = time.time()
        self._on_closed = on_closed
        self._empty_handle: asyncio.TimerHandle | None = None
        self._rtcp_task: asyncio.Task | None = None
        self._adapt_task: asyncio.Task | None = None
        self.speakers = SpeakerDetector()
        self.active_speaker: str | None = None
        self._removals: set[asyncio.Task] = set()
        self.closed = False
        self._arm_empty_timer()

    def info(self) -> dict:
        """The room as the protocol describes it."""
        return {"name": self.name, "sid": self.sid, "metadata": self.metadata}

    def notify(self, event: str, **data: object) -> None:
        """Report a lifecycle event (room_started, participant_joined, ...) to the SFU's
        listeners (webhooks); never raises into the caller."""
        if self._notify_cb is not None:
            try:
                self._notify_cb(event, {"room": self.info(), **data})
            except Exception:
                logger.exception("event listener failed for %s", event)

    def describe(self) -> dict:
        """The room as the admin API shows it."""
        return {
            **self.info(),
            "participants": len(self.participants),
            "empty_timeout": self.empty_timeout,
            "max_participants": self.max_participants,
            "created_at": int(self.created_at),
        }

    def set_metadata(self, metadata: str) -> None:
        """Change the room's metadata and tell everyone."""
        self.metadata = metadata
        self.broadcast({"type": "room_updated", "room": self.info()})

    # -- membership ----------------------------------------------------------------------
    async def join(
        self,
        identity: str,
        name: str = "",
        metadata: str = "",
        permissions: Permissions | None = None,
        emit: Callable[[dict], None] | None = None,
    ) -> Participant:
        """Add a participant; an older session with the same identity is replaced."""
        if self.closed:
            raise RoomClosed(self.name)
        old = self.by_identity(identity)
        if old is not None:
            old.emit({"type": "leave", "reason": "replaced"})
            await self.remove(old, "replaced")
        if self.max_participants and len(self.participants) >= self.max_participants:
            raise RoomFull(f"room {self.name} is full ({self.max_participants} participants)")
        if self.closed:
            raise RoomClosed(self.name)
        p = Participant(self, identity, name, metadata, permissions, emit)
        self.participants[p.sid] = p
        self._cancel_empty_timer()
        if self._rtcp_task is None:
            self._rtcp_task = asyncio.ensure_future(self._rtcp_loop())
            self._adapt_task = asyncio.ensure_future(self._adapt_loop())
        if not p.permissions.hidden:
            self.broadcast({"type": "participant_joined", "participant": p.info()}, exclude=p)
        self.subscribe_to_others(p)
        logger.info("room %s: %s joined (%d present)", self.name, p.sid, len(self.participants))
        self.notify("participant_joined", participant=_public(p))
        return p

    def subscribe_to_others(self, p: Participant) -> None:
        """Have ``p`` receive every track the others publish (on joining)."""
        if p.subscriber is None:
            return
        for other in self.participants.values():
            if other is not p:
                for track in other.tracks.values():
                    p.subscriber.add(track)

    def by_identity(self, identity: str) -> Participant | None:
        """The participant with this identity, if present."""
        return next((p for p in self.participants.values() if p.identity == identity), None)

    async def remove(self, participant: Participant, reason: str = "left") -> None:
        """Remove a participant, release what it held and tell the others."""
        if self.participants.pop(participant.sid, None) is None:
            return
        for track in list(participant.tracks.values()):
            self._unsubscribe_all(track)
            self.notify("track_unpublished", participant=_public(participant), track=track.info())
        await participant.close()
        if not participant.permissions.hidden:
            self.broadcast(
                {
                    "type": "participant_left",
                    "participant": {"sid": participant.sid, "identity": participant.identity},
                    "reason": reason,
                }
            )
        logger.info("room %s: %s left (%s)", self.name, participant.sid, reason)
        self.notify("participant_left", participant=_public(participant), reason=reason)
        if not self.participants:
            self._arm_empty_timer()

    def schedule_removal(self, participant: Participant, reason: str) -> None:
        """Remove a participant from a synchronous callback (ICE failure)."""
        if participant.sid not in self.participants:
            return
        participant.emit({"type": "leave", "reason": reason})
        task = asyncio.ensure_future(self.remove(participant, reason))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    # -- tracks --------------------------------------------------------------------------
    def track_published(self, participant: Participant, track: Publisher) -> None:
        """A participant published a track: everyone else receives it."""
        self.notify("track_published", participant=_public(participant), track=track.info())
        self.broadcast(
            {"type": "track_published", "participant": participant.sid, "track": track.info()},
            exclude=participant,
        )
        for other in self.participants.values():
            if other is not participant and other.subscriber is not None:
                other.subscriber.add(track)

    def track_unpublished(self, participant: Participant, track: Publisher) -> None:
        """A track went away: every subscriber drops it."""
        self.notify("track_unpublished", participant=_public(participant), track=track.info())
        self._unsubscribe_all(track)
        self.broadcast(
            {"type": "track_unpublished", "participant": participant.sid, "track": track.sid},
            exclude=participant,
        )

    def track_muted(self, participant: Participant, track: Publisher) -> None:
        """Tell everyone a track's mute state changed."""
        self.broadcast(
            {
                "type": "track_muted",
                "participant": participant.sid,
                "track": track.sid,
                "muted": track.muted,
            },
            exclude=participant,
        )

    def _unsubscribe_all(self, track: Publisher) -> None:
        for other in self.participants.values():
            if other.subscriber is not None:
                other.subscriber.remove(track.sid)

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
        payload: object,
        to: list[str] | None = None,
    ) -> int:
        """Deliver a data message to the others (or the identities in ``to``); returns count."""
        msg = {
            "type": "data",
            "from": (
                {"sid": sender.sid, "identity": sender.identity, "name": sender.name}
                if sender is not None
                else None
            ),
            "topic": topic,
            "payload": payload,
            "ts": int(time.time() * 1000),
        }
        count = 0
        for p in self.participants.values():
            if p is sender or (to and p.identity not in to):
                continue
            p.emit(msg)
            count += 1
        return count

    def broadcast(self, event: dict, exclude: Participant | None = None) -> None:
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
            self.broadcast({"type": "active_speaker", "participant": owner})
        allocate(list(self.participants.values()), owner, now)
        for track in tracks:
            rids = dynacast(track, now)
            publisher = self.participants.get(track.participant_sid)
            if rids is not None and publisher is not None:
                publisher.emit({"type": "layers", "track": track.sid, "active": rids})

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
        if not self.participants and not self.closed:
            task = asyncio.ensure_future(self.close())
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    async def close(self, reason: str = "room_closed") -> None:
        """Disconnect everyone and stop the room's timers."""
        if self.closed:
            return
        self.closed = True
        self._cancel_empty_timer()
        for p in list(self.participants.values()):
            p.emit({"type": "leave", "reason": reason})
            await self.remove(p, reason)
        self._cancel_empty_timer()
        for task in (self._rtcp_task, self._adapt_task):
            if task is not None:
                task.cancel()
        self._rtcp_task = self._adapt_task = None
        logger.info("room %s closed", self.name)
        self.notify("room_finished")
        if self._on_closed is not None:
            self._on_closed(self)

    def stats(self) -> dict:
        """Counters for this room: participants, tracks, packets in and out."""
        tracks = self.tracks()
        downtracks = [dt for t in tracks for dt in t.downtracks]
        return {
            "name": self.name,
            "sid": self.sid,
            "participants": len(self.participants),
            "tracks": len(tracks),
            "downtracks": len(downtracks),
            "packets_in": sum(t.packets for t in tracks),
            "bytes_in": sum(t.bytes for t in tracks),
            "packets_out": sum(dt.packets for dt in downtracks),
            "bytes_out": sum(dt.bytes for dt in downtracks),
            "retransmits": sum(dt.retransmits for dt in downtracks),
            "nacks": sum(dt.nacks for dt in downtracks),
            "keyframe_requests": sum(t.keyframe_requests for t in tracks),
            "dropped": sum(t.dropped for t in tracks) + sum(dt.dropped for dt in downtracks),
            "layer_switches": sum(dt.switches for dt in downtracks),
        }

    def layers(self) -> list[dict]:
        """Per video DownTrack: the layer forwarded, the layer chosen, the switches made."""
        return [
            {"room": self.name, **dt.layer_info()}
            for t in self.tracks()
            if t.kind == "video"
            for dt in t.downtracks
        ]


def _public(p: Participant) -> dict:
    return {"sid": p.sid, "identity": p.identity, "name": p.name}
