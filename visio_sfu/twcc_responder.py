"""TwccResponder: transport-cc feedback to a client about what it sends us.

A client that negotiated the transport-cc header extension on its sending sections numbers
every packet it sends (media, retransmissions, padding) with one transport-wide sequence
number, and runs its own send-side congestion control (Google's GCC in Chromium, Firefox and
LiveKit's SDKs) from our feedback: which of those numbers arrived, and when. With it the
publisher's encoder follows what its uplink really carries, delay building in a queue
included, long before the queue overflows; without it only the loss-based REMB
(:class:`visio_sfu.bwe.PublisherRate`) told it anything.

On the receive path a packet only costs an append of (packet, arrival time) to a bounded list;
``feedback`` (every ``FEEDBACK_INTERVAL``, from the room's timer) reads the sequence numbers
and builds the RTCP packets.
"""

from __future__ import annotations

from struct import unpack_from

from .rtp.header import find_extension
from .rtp.twcc import build_feedback

#: seconds between two feedback packets (libwebrtc's receivers send them every 50-100 ms)
FEEDBACK_INTERVAL = 0.1
#: packets kept between two feedbacks at most (10 s of a 4 Mbit/s publisher); beyond, dropped
#: unreported (the client reads them as lost: it is sending far more than we can take)
RECORD_LIMIT = 4096
#: sequence numbers one feedback packet reports at most (it stays well under an MTU)
PER_PACKET = 400
#: a jump of sequence numbers this large is a restart (or garbage), not loss: start anew
MAX_GAP = 2000
#: sequence numbers one call reports at most: older ones are left unreported (a client
#: moving its numbers on by just under MAX_GAP each packet cannot make us write thousands of
#: feedback packets a tick)
MAX_SPAN = 2 * MAX_GAP


class TwccResponder:
    """What one connection received with transport-wide sequence numbers, as feedback."""

    __slots__ = (
        "ext_id",
        "sender_ssrc",
        "packets",
        "limit",
        "fb_count",
        "sent",
        "reported",
        "dropped",
        "_next",
        "_last",
        "_reference",
    )

    def __init__(self, ext_id: int, sender_ssrc: int, limit: int = RECORD_LIMIT) -> None:
        self.ext_id = ext_id
        self.sender_ssrc = sender_ssrc
        #: (packet, arrival in seconds), appended by the receive path
        self.packets: list[tuple[bytes, float]] = []
        self.limit = limit
        self.fb_count = 0  # feedback packets sent (their 8-bit count runs on from this)
        self.sent = 0
        self.reported = 0  # packets reported received
        self.dropped = 0  # packets not kept (over ``limit`` between two feedbacks)
        self._next: int | None = None  # unwrapped sequence number the next feedback starts at
        self._last = 0  # the highest unwrapped sequence number seen
        self._reference = 0.0  # the last arrival reported: a reference when none arrived

    def record(self, data: bytes, now: float) -> None:
        """A packet arrived (the receive path inlines this append)."""
        if len(self.packets) < self.limit:
            self.packets.append((data, now))
        else:
            self.dropped += 1

    def feedback(self) -> list[bytes]:
        """The RTCP transport-cc packets reporting what arrived since the last call (none if
        nothing did)."""
        packets, self.packets = self.packets, []
        arrivals: dict[int, float] = {}
        ext_id, last, first = self.ext_id, self._last, self._next
        data = b""
        for data, now in packets:
            value = find_extension(data, ext_id)
            if value is None or len(value) != 2:
                continue
            # unwrapped against the highest number seen so far
            seq = (last & ~0xFFFF) | (value[0] << 8) | value[1]
            if seq < last - 0x8000:
                seq += 0x10000
            elif seq > last + 0x8000 and seq >= 0x10000:
                seq -= 0x10000
            if first is None or abs(seq - last) > MAX_GAP:
                # the first packet, or a jump no loss explains (the client started its
                # numbers anew, or garbage): report from here on, forget what came before
                arrivals.clear()
                first = last = seq
            elif seq > last:
                last = seq
            if seq not in arrivals:  # a duplicate keeps its first arrival
                arrivals[seq] = now
        self._last, self._next = last, first
        start = first
        if start is None or not arrivals or max(arrivals) < start:
            return []  # nothing new, or only late packets already reported lost
        media = unpack_from("!I", data, 8)[0]
        out = []
        end = last + 1
        start = max(start, end - MAX_SPAN)
        get = arrivals.get
        while start < end:
            stop = min(start + PER_PACKET, end)
            times = [get(s) for s in range(start, stop)]
            got = [t for t in times if t is not None]
            self.reported += len(got)
            out.append(
                build_feedback(
                    self.sender_ssrc,
                    media,
                    start & 0xFFFF,
                    times,
                    self.fb_count,
                    self._reference,
                )
            )
            if got:
                self._reference = got[-1]
            self.fb_count = (self.fb_count + 1) & 0xFF
            start = stop
        self._next = end
        self.sent += len(out)
        return out
