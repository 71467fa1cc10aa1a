"""Workarounds for aiortc as a receiver: its video decoders (patched when visio_client is
imported), and its NACKs (``NackRetry``, which the Client runs on its subscriber connection).

aiortc assembles frames from consecutive packets with one timestamp, and hands a frame made
only of RTP padding packets to its decoder as an empty packet; PyAV takes an empty packet for
the end of the stream (a flush), and every later packet fails with "End of file": the video
stops for good. Servers send padding-only packets to fill sequence numbers they cannot resend
(visio-sfu does after a simulcast layer switch on a congested link); browsers count them as
received. Here an empty frame is skipped instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiortc.codecs import h264, vpx
from aiortc.rtcrtpreceiver import RTP_HISTORY_SIZE

logger = logging.getLogger(__name__)


def _skipping_empty(decode: Any) -> Any:
    """``decode``, returning no picture for an empty frame instead of flushing the decoder."""
    if getattr(decode, "skips_empty", False):
        return decode

    def guarded(self: Any, encoded_frame: Any) -> list:
        if not encoded_frame.data:
            return []
        return decode(self, encoded_frame)

    guarded.skips_empty = True  # type: ignore[attr-defined]
    return guarded


def apply() -> None:
    """Patch aiortc's VP8 and H.264 decoders (once; idempotent)."""
    vpx.Vp8Decoder.decode = _skipping_empty(vpx.Vp8Decoder.decode)  # type: ignore[method-assign]
    h264.H264Decoder.decode = _skipping_empty(h264.H264Decoder.decode)  # type: ignore[method-assign]


#: how often a missing packet is asked for again (at least: once a round trip), and how many
#: times at most; how often the receivers are looked at
NACK_INTERVAL = 0.1
NACK_RTT_FACTOR = 1.25
NACK_TRIES = 10
POLL = 0.025


class NackRetry:
    """Asks again for the packets aiortc's receivers on ``pc`` still miss, every
    NACK_INTERVAL or NACK_RTT_FACTOR round trips (whichever is longer), NACK_TRIES times at
    most each, as browsers do.

    aiortc sends a NACK when it sees a gap, and never again: when the retransmission is lost
    too (a congested link drops it in the same queue), its jitter buffer waits for that
    number until it overflows, seconds later, and the video stands still meanwhile. aiortc
    knows no round trip as a receiver; it is learnt here from how long the asked-for packets
    take to come (``rtt``), so that a distant server is not asked again before its answer
    could be here."""

    def __init__(self, pc: Any) -> None:
        self.pc = pc
        self.asked = 0  # NACK packets sent by this
        #: seconds from a first NACK to its packet, the least of the last 16 (0: none yet; a
        #: sample is above the round trip when a retransmission was lost: the least is not)
        self.rtt = 0.0
        self._samples: list[float] = []
        #: ssrc -> missing seq -> [first asked (by aiortc, when seen here), last asked, times]
        self._tries: dict[int, dict[int, list[float]]] = {}
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL)
            if self.pc.connectionState == "closed":
                return
            for receiver in self.pc.getReceivers():
                try:
                    await self._ask(receiver, loop.time())
                except ConnectionError:
                    continue  # not connected (yet, or any more)
                except Exception:  # aiortc's internals changed: do without
                    logger.debug("NACK retry failed", exc_info=True)
                    return

    async def _ask(self, receiver: Any, now: float) -> None:
        generator = getattr(receiver, "_RTCRtpReceiver__nack_generator", None)
        missing = generator.missing if generator is not None else set()
        rtx = receiver._RTCRtpReceiver__rtx_ssrc
        active = receiver._RTCRtpReceiver__active_ssrc
        media = [s for s in active if s not in rtx]
        if not media:
            return
        ssrc = max(media, key=lambda s: active[s])
        tries = self._tries.get(ssrc, {})
        newest = generator.max_seq if generator is not None else None
        for seq in [seq for seq in tries if seq not in missing]:
            entry = tries.pop(seq)
            if newest is not None and (newest - seq) & 0xFFFF < RTP_HISTORY_SIZE:
                self._samples.append(now - entry[0])  # it came (further back: given up on)
                del self._samples[:-16]
                self.rtt = min(self._samples)
        if not missing:
            self._tries[ssrc] = tries
            return
        interval = max(NACK_INTERVAL, NACK_RTT_FACTOR * self.rtt)
        lost = []
        for seq in sorted(missing):
            entry = tries.get(seq)
            if entry is None:
                tries[seq] = [now, now, 1]  # aiortc asked for it when it saw the gap
            elif entry[2] < NACK_TRIES and now - entry[1] >= interval:
                entry[1] = now
                entry[2] += 1
                lost.append(seq)
        self._tries[ssrc] = tries
        if lost:
            await receiver._send_rtcp_nack(ssrc, lost)
            self.asked += 1

    def close(self) -> None:
        """Stop asking."""
        self._task.cancel()
