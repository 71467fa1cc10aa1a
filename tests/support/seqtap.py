"""What an aiortc client really received of its video: a tap on its receive path (after SRTP)
that records each media sequence number, directly or inside an RTX retransmission.

aiortc's getStats reports the media and the RTX inbound streams under the same id, so the RTX
stream's counters overwrite the media's (a 640x480 30 fps stream read "19 received, 0 lost"):
its packetsReceived/packetsLost cannot measure loss. This can."""

from __future__ import annotations

import time

from visio_client import Client
from visio_sfu.munger import seq_diff
from visio_sfu.rtp.header import payload_offset


class SeqTap:
    """Records (when, media sequence number) of every video packet ``client`` receives."""

    def __init__(self, client: Client) -> None:
        video = next(t for t in client.subscriber.getTransceivers() if t.kind == "video")
        media_pt = video._codecs[0].payloadType
        rtx_pt = next((c.payloadType for c in video._codecs if c.name == "rtx"), -1)
        dtls = video.receiver.transport
        handle = dtls._handle_rtp_data
        self.seqs: list[tuple[float, int]] = []

        async def spy(data: bytes, arrival_time_ms: int) -> None:
            pt = data[1] & 0x7F if len(data) >= 12 else -1
            if pt == media_pt:
                self.seqs.append((time.monotonic(), int.from_bytes(data[2:4], "big")))
            elif pt == rtx_pt:
                off = payload_offset(data)
                if 0 <= off <= len(data) - 2:
                    self.seqs.append((time.monotonic(), int.from_bytes(data[off : off + 2], "big")))
            await handle(data, arrival_time_ms)

        dtls._handle_rtp_data = spy

    def loss(self, start: float, end: float, grace: float = 1.0) -> tuple[int, int]:
        """(expected, never received) media sequence numbers, over the range of those that
        first arrived from ``start`` to ``end`` (time.monotonic()); repairs arriving up to
        ``grace`` seconds after ``end`` count as received. (A retransmission arriving in the
        window of a packet received before it does not widen the range: the numbers between
        it and the window's first would all read as lost.)"""
        seen: set[int] = set()
        first: list[tuple[float, int]] = []
        for t, q in self.seqs:
            if q not in seen:
                seen.add(q)
                first.append((t, q))
        sent = [q for t, q in first if start <= t <= end]
        if not sent:
            return 0, 0
        base = sent[0]
        unwrapped = [base + seq_diff(q, base) for q in sent]
        low, high = min(unwrapped), max(unwrapped)
        got = {base + seq_diff(q, base) for t, q in self.seqs if t <= end + grace}
        expected = range(low, high + 1)
        return len(expected), sum(1 for q in expected if q not in got)
