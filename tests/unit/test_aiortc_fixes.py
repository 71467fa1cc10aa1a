"""visio_client's workarounds for aiortc: a frame made only of padding packets is an empty
packet, which PyAV takes for the end of the stream (after it nothing decoded); a missing
packet asked for once only, or (asked again) sooner than its answer could come."""

from __future__ import annotations

import fractions
from types import SimpleNamespace

import numpy as np
from aiortc.codecs import depayload
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import RtpPacket
from av import VideoFrame

import visio_client  # noqa: F401 - applies the workaround
from visio_client.aiortc_fixes import NackRetry


def test_an_empty_frame_does_not_stop_the_vp8_decoder():
    encoder = Vp8Encoder()
    frame = VideoFrame.from_ndarray(np.zeros((120, 160, 3), dtype=np.uint8), format="rgb24")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    payloads, _ts = encoder.encode(frame, force_keyframe=True)
    params = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    data = b"".join(depayload(params, p) for p in payloads)
    decoder = Vp8Decoder()
    assert decoder.decode(JitterFrame(data=b"", timestamp=0)) == []
    pictures = decoder.decode(JitterFrame(data=data, timestamp=3000))
    assert len(pictures) == 1 and pictures[0].width == 160


class _Receiver:
    """What NackRetry reads of an aiortc RTCRtpReceiver, and the NACKs it sends."""

    def __init__(self) -> None:
        self._RTCRtpReceiver__nack_generator = NackGenerator()
        self._RTCRtpReceiver__rtx_ssrc = {}
        self._RTCRtpReceiver__active_ssrc = {1234: 0}
        self.nacks: list[list[int]] = []

    def got(self, seq: int) -> None:
        self._RTCRtpReceiver__nack_generator.add(RtpPacket(sequence_number=seq))

    async def _send_rtcp_nack(self, ssrc: int, lost: list[int]) -> None:
        self.nacks.append(lost)


async def test_nack_retry_asks_again_once_a_round_trip():
    """A missing packet is asked for again every 100 ms while the round trip is unknown;
    once repairs are seen to take 300 ms, every 375 ms, and never more than 10 times."""
    receiver = _Receiver()
    retry = NackRetry(SimpleNamespace(getReceivers=lambda: [receiver], connectionState="new"))
    retry.close()  # driven by hand below
    receiver.got(1)
    receiver.got(3)  # 2 missing: aiortc asked for it
    for k in range(5):
        await retry._ask(receiver, k * 0.025)
    assert receiver.nacks == [[2]]  # asked again once 100 ms had passed
    receiver.got(2)  # repaired 300 ms after the gap was seen
    await retry._ask(receiver, 0.3)
    assert abs(retry.rtt - 0.3) < 1e-9
    receiver.nacks.clear()
    receiver.got(5)  # 4 missing, never comes
    times = [1.0 + k * 0.025 for k in range(200)]
    asked_at = []
    for now in times:
        before = len(receiver.nacks)
        await retry._ask(receiver, now)
        if len(receiver.nacks) > before:
            asked_at.append(now - 1.0)
    assert len(asked_at) == 9  # 10 with aiortc's own
    assert all(abs(b - a - 0.375) < 0.03 for a, b in zip([0.0] + asked_at, asked_at, strict=False))
