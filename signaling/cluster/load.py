"""What a process carries: rooms, participants, forwarded packets per second."""

from __future__ import annotations

import time

from visio_sfu import SFU


class LoadMeter:
    """Samples an SFU's load; packets per second over the time since the previous sample."""

    def __init__(self, sfu: SFU) -> None:
        self.sfu = sfu
        self._last = (time.monotonic(), 0)
        self.pps = 0.0

    def sample(self) -> dict:
        """{rooms: [names], participants, pps}: cheap enough to call every second."""
        stats = self.sfu.stats()
        now, packets = time.monotonic(), int(stats.get("packets_out", 0))
        then, before = self._last
        if now - then >= 0.5:
            self.pps = max(packets - before, 0) / (now - then)
            self._last = (now, packets)
        return {
            "rooms": sorted(self.sfu.rooms),
            "participants": int(stats.get("participants", 0)),
            "pps": round(self.pps, 1),
        }


def score(rooms: int, participants: int, pps: float) -> float:
    """How loaded a worker or node is, to pick the least loaded one for a new room: one per
    participant, one per room (a new room brings people), one per 1000 packets/s."""
    return rooms + participants + pps / 1000.0
