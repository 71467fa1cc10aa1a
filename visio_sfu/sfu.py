"""The SFU: the public entry point for anyone embedding visio-sfu.

``signaling`` drives the SFU only through this API, and an ops team can do the same::

    sfu = SFU()
    room = sfu.get_or_create_room("demo")
    alice = await room.join("alice", emit=on_event)   # typed events (events.py) for alice
    answer_sdp = await alice.publish_offer(offer_sdp) # media flows to everyone else
    # on_event gets SubscriberOffer(offer_id, sdp, tracks): answer it
    alice.subscriber.on_answer(offer_id, answer_sdp)
    sfu.listeners.append(print)                       # RoomStarted, ParticipantEntered, ...
    print(sfu.stats())
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from .delay import DelayHistogram
from .events import LifecycleEvent
from .participant import Participant
from .room import Room
from .stats import RETIRED_COUNTERS, Stats, drop_totals
from .transport import PeerTransport, install

logger = logging.getLogger(__name__)


class SFU:
    """A set of rooms in one process."""

    def __init__(
        self,
        empty_timeout: float = 20.0,
        max_participants: int = 0,
        max_tracks: int = 16,
        transport_factory: Callable[..., PeerTransport] = PeerTransport,
    ) -> None:
        """``transport_factory`` makes the peer connections (tests give a fake one)."""
        install()
        self.empty_timeout = empty_timeout
        self.max_participants = max_participants
        self.max_tracks = max_tracks
        self.rooms: dict[str, Room] = {}
        self.transport_factory = transport_factory
        #: called with every LifecycleEvent (RoomStarted, ParticipantEntered, TrackAdded...):
        #: webhooks use this
        self.listeners: list[Callable[[LifecycleEvent], None]] = []
        #: shared counters: totals of closed tracks and downtracks, drops by reason, delay
        self.counters = Stats()

    @property
    def forwarding_delay(self) -> DelayHistogram:
        """How long each incoming packet is held before its copies are sent (all rooms)."""
        return self.counters.forwarding_delay

    def room(self, name: str) -> Room | None:
        """The open room with this name, if any."""
        return self.rooms.get(name)

    def get_or_create_room(
        self,
        name: str,
        empty_timeout: float | None = None,
        max_participants: int | None = None,
        metadata: str = "",
    ) -> Room:
        """The room with this name, created if it does not exist yet."""
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = Room(
                name,
                empty_timeout=self.empty_timeout if empty_timeout is None else empty_timeout,
                max_participants=(
                    self.max_participants if max_participants is None else max_participants
                ),
                metadata=metadata,
                on_closed=self._room_closed,
                max_tracks=self.max_tracks,
                notify=self._notify,
                stats=self.counters,
                transport_factory=self.transport_factory,
            )
            self.rooms[name] = room
            logger.info("room %s created", name)
            room.started()
        return room

    def _notify(self, event: LifecycleEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("SFU listener failed for %s", event.name)

    def _room_closed(self, room: Room) -> None:
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    async def delete_room(self, name: str) -> bool:
        """Close a room, disconnecting everyone in it; False if there was no such room."""
        room = self.rooms.get(name)
        if room is None:
            return False
        await room.close("room_deleted")
        return True

    def stats(self) -> dict:
        """Counters for the whole SFU and per room; ``drops`` by reason (stats.DropReason)."""
        rooms = [r.stats() for r in self.rooms.values()]
        retired = self.counters.retired
        total = {
            k: sum(r[k] for r in rooms) + retired.get(k, 0)
            for k in ("participants", "tracks", "downtracks", *RETIRED_COUNTERS)
        }
        drops = drop_totals(self.counters.retired_drops)
        for r in rooms:
            for reason, count in r["drops"].items():
                drops[reason] += count
        return {
            "rooms": len(rooms),
            **total,
            "drops": drops,
            "transports": len(PeerTransport.open_transports),
            "transport_errors": PeerTransport.errors(),
            "per_room": rooms,
        }

    def layers(self) -> list[dict]:
        """Per video (subscriber, track) pair in every room: the simulcast layer forwarded now
        (-1: none yet), the one chosen for it, and how often it switched (see Room.layers)."""
        return [entry for room in self.rooms.values() for entry in room.layers()]

    def bandwidths(self) -> list[dict]:
        """Per subscriber in every room: its bandwidth estimate and where it comes from (see
        Room.bandwidths)."""
        return [entry for room in self.rooms.values() for entry in room.bandwidths()]

    @staticmethod
    def leak_check() -> dict:
        """Objects still in memory after a garbage collection (tests and debugging)."""
        gc.collect()
        return {
            "participant_objects": len(Participant.alive),
            "transports": len(PeerTransport.open_transports),
        }

    async def close(self) -> None:
        """Close every room."""
        for room in list(self.rooms.values()):
            await room.close("server_shutdown")
