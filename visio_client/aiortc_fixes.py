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


#: how often a missing packet is asked for again, and for how long at most
NACK_INTERVAL = 0.1
NACK_TRIES = 10


class NackRetry:
    """Asks again for the packets aiortc's receivers on ``pc`` still miss, every
    NACK_INTERVAL, NACK_TRIES times at most each, as browsers do.

    aiortc sends a NACK when it sees a gap, and never again: when the retransmission is lost
    too (a congested link drops it in the same queue), its jitter buffer waits for that
    number until it overflows, seconds later, and the video stands still meanwhile."""

    def __init__(self, pc: Any) -> None:
        self.pc = pc
        self.asked = 0  # NACK packets sent by this
        self._tries: dict[int, dict[int, int]] = {}  # ssrc -> missing seq -> times asked
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(NACK_INTERVAL)
            if self.pc.connectionState == "closed":
                return
            for receiver in self.pc.getReceivers():
                try:
                    await self._ask(receiver)
                except ConnectionError:
                    continue  # not connected (yet, or any more)
                except Exception:  # aiortc's internals changed: do without
                    logger.debug("NACK retry failed", exc_info=True)
                    return

    async def _ask(self, receiver: Any) -> None:
        generator = getattr(receiver, "_RTCRtpReceiver__nack_generator", None)
        missing = sorted(generator.missing) if generator is not None else []
        if not missing:
            return
        rtx = receiver._RTCRtpReceiver__rtx_ssrc
        active = receiver._RTCRtpReceiver__active_ssrc
        media = [s for s in active if s not in rtx]
        if not media:
            return
        ssrc = max(media, key=lambda s: active[s])
        tries = self._tries.get(ssrc, {})
        self._tries[ssrc] = tries = {seq: tries.get(seq, 0) for seq in missing}  # still missing
        lost = [seq for seq, n in tries.items() if n < NACK_TRIES]
        for seq in lost:
            tries[seq] += 1
        if lost:
            await receiver._send_rtcp_nack(ssrc, lost)
            self.asked += 1

    def close(self) -> None:
        """Stop asking."""
        self._task.cancel()
