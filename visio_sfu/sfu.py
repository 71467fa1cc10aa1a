"""The SFU: the public entry point for anyone embedding visio-sfu.

``signaling`` drives the SFU only through this API, and an ops team can do the same::

    sfu = SFU()
    room = sfu.get_or_create_room("demo")
    alice = await room.join("alice", emit=print)      # events: dicts, see docs/protocol.md
    answer_sdp = await alice.publish_offer(offer_sdp) # media flows to everyone else
    alice.subscriber.on_answer(offer_id, answer_sdp)  # answer the server's subscriber offers
    print(sfu.stats())
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from .delay import DelayHistogram
from .participant import Participant
from .publisher import RETIRED_COUNTERS
from .room import Room
from .transport import PeerTransport

logger = logging.getLogger(__name__)


class SFU:
    """A set of rooms in one process."""

    def __init__(
        self, empty_timeout: float = 20.0, max_participants: int = 0, max_tracks: int = 16
    ) -> None:
        self.empty_timeout = empty_timeout
        self.max_participants = max_participants
        self.max_tracks = max_tracks
        self.rooms: dict[str, Room] = {}
        #: called with (event, data) for room_started, room_finished, participant_joined,
        #: participant_left, track_published, track_unpublished (webhooks use this)
        self.listeners: list[Callable[[str, dict], None]] = []
        #: how long each incoming packet is held before its copies are sent (all rooms)
        self.forwarding_delay = DelayHistogram()
        #: counters of closed tracks and downtracks, so that stats() totals never go down
        self.retired: dict[str, int] = dict.fromkeys(RETIRED_COUNTERS, 0)

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
                forwarding_delay=self.forwarding_delay,
                retired=self.retired,
            )
            self.rooms[name] = room
            logger.info("room %s created", name)
            room.notify("room_started")
        return room

    def _notify(self, event: str, data: dict) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, data)
            except Exception:
                logger.exception("SFU listener failed for %s", event)

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
        """Counters for the whole SFU and per room."""
        rooms = [r.stats() for r in self.rooms.values()]
        retired = self.retired
        total = {
            k: sum(r[k] for r in rooms) + retired.get(k, 0)
            for k in ("participants", "tracks", "downtracks", *RETIRED_COUNTERS)
        }
        return {
            "rooms": len(rooms),
            **total,
            "transports": len(PeerTransport.open_transports),
            "per_room": rooms,
        }

    def layers(self) -> list[dict]:
        """Per video (subscriber, track) pair in every room: the simulcast layer forwarded now
        (-1: none yet), the one chosen for it, and how often it switched (see Room.layers)."""
        return [entry for room in self.rooms.values() for entry in room.layers()]

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
