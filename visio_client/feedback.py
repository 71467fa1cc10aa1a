"""Transport-cc feedback from an aiortc subscriber connection to the server.

aiortc receives the transport-wide sequence numbers the server writes into what it sends but
never reports them, so the server's send-side estimate (visio_sfu/bwe.py) had nothing to work
from for a Python subscriber, and chose its layers blind. ``TransportFeedback`` taps the
connection's decrypted RTP (before aiortc's own handling), and every 100 ms sends the server
transport-cc feedback built by the server's own :class:`visio_sfu.twcc_responder.TwccResponder`.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from aiortc import RTCPeerConnection

from visio_sfu.twcc_responder import FEEDBACK_INTERVAL, TwccResponder


class TransportFeedback:
    """Reports what arrives on ``pc`` (transport-wide numbers in header extension
    ``ext_id``) to the sender, until ``close``."""

    def __init__(self, pc: RTCPeerConnection, ext_id: int) -> None:
        self.pc = pc
        self.responder = TwccResponder(ext_id, secrets.randbits(32) or 1)
        self.sent = 0  # feedback packets sent
        dtls = next(
            (t.receiver.transport for t in pc.getTransceivers() if t.receiver.transport),
            None,
        )
        if dtls is None:
            raise ValueError("this connection has no transport yet")
        self._dtls = dtls
        record = self.responder.record
        # arrival times from the socket, before aiortc queues, decrypts and handles the
        # packet (the header and its extensions are not encrypted): an event loop busy
        # elsewhere would bunch them up, and a bunched-up probe reads as a slow path
        protocols = [p for p in dtls.transport._connection._protocols if p.transport]
        for protocol in protocols:
            received = protocol.datagram_received

            def tapped_datagram(data: bytes, addr: object, received=received) -> None:
                if len(data) >= 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                    record(data, time.monotonic())  # RTP (not STUN, DTLS nor RTCP)
                received(data, addr)

            protocol.datagram_received = tapped_datagram
        if not protocols:  # no socket to watch: when aiortc hands the packet over
            handle = dtls._handle_rtp_data

            async def tapped(data: bytes, arrival_time_ms: int) -> None:
                if len(data) >= 12:
                    record(data, time.monotonic())
                await handle(data, arrival_time_ms)

            dtls._handle_rtp_data = tapped
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FEEDBACK_INTERVAL)
            if self._dtls.state in ("closed", "failed"):
                return  # nothing more to report
            for packet in self.responder.feedback():
                try:
                    await self._dtls._send_rtp(packet)  # SRTCP-protected: it is RTCP
                except ConnectionError:
                    break  # DTLS not up yet (or going down): the next tick tells
                self.sent += 1

    def close(self) -> None:
        """Stop reporting."""
        self._task.cancel()
