"""visio_client's workaround for aiortc's decoders: a frame made only of padding packets is
an empty packet, which PyAV takes for the end of the stream; after it nothing decoded."""

from __future__ import annotations

import fractions

import numpy as np
from aiortc.codecs import depayload
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

import visio_client  # noqa: F401 - applies the workaround


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
