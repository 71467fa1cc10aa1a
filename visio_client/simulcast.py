"""A simulcast publisher for aiortc, which has none: three VP8 layers sent as raw RTP.

The offer is amended the way a browser's is (``a=rid``, ``a=simulcast``, the RID header
extension); each layer is encoded once per frame by its own VP8 encoder and sent on its own
SSRC with the MID and RID extensions. PLIs from the server force a keyframe of their layer, NACKs
are answered from the last 512 packets of each layer (resent as they were), and
the server's ``layers`` messages (dynacast) switch layers off and on. Used by the tests and the
load tools.
"""

from __future__ import annotations

import asyncio
import fractions
import random

import av
import numpy as np
from aiortc import RTCSessionDescription
from aiortc.codecs.vpx import Vp8Encoder

from visio_sfu.rtp import rtcp
from visio_sfu.rtp.extensions import RID, SDES_MID
from visio_sfu.rtp.header import build_rtp

from .client import Client

RID_EXT_ID = 10
LAYERS = (("q", 160, 90, 100_000), ("h", 320, 180, 400_000), ("f", 640, 360, 1_200_000))
GRAIN = {"q": 10, "h": 48, "f": 48}  # noise amplitude per layer: sets its bitrate


def add_simulcast(sdp: str, rids: list[str], rid_ext_id: int = RID_EXT_ID) -> str:
    """Amend an aiortc offer's video m-section for simulcast, as a browser writes it."""
    out, in_video = [], False
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_video:
                out += _simulcast_lines(rids, rid_ext_id)
            in_video = line.startswith("m=video")
        if in_video and line.startswith(("a=ssrc", "a=ssrc-group")):
            continue  # simulcast layers are identified by RID, their SSRCs learnt
        out.append(line)
    if in_video:
        out += _simulcast_lines(rids, rid_ext_id)
    return "\r\n".join(out) + "\r\n"


def _simulcast_lines(rids: list[str], rid_ext_id: int) -> list[str]:
    return [
        f"a=extmap:{rid_ext_id} {RID}",
        *(f"a=rid:{r} send" for r in rids),
        "a=simulcast:send " + ";".join(rids),
    ]


class SimulcastPublisher:
    """Publishes one simulcast video (three layers of a flat colour) through ``client``."""

    def __init__(self, client: Client, colour: tuple[int, int, int] = (40, 90, 200), fps: int = 15):
        self.client = client
        self.colour = colour
        self.fps = fps
        self.active = {rid for rid, *_ in LAYERS}
        self.encoders = {}
        for rid, _w, _h, bitrate in LAYERS:
            encoder = Vp8Encoder()
            encoder.target_bitrate = bitrate
            self.encoders[rid] = encoder
        self.ssrcs = {rid: random.getrandbits(32) for rid, *_ in LAYERS}
        self.seqs = {rid: random.getrandbits(16) for rid, *_ in LAYERS}
        self.keyframe_wanted = {rid: True for rid, *_ in LAYERS}
        self.sent = {rid: 0 for rid, *_ in LAYERS}
        self.resent = 0
        # recent packets per SSRC, to answer the server's NACKs (as a browser's sender does)
        self._cache: dict[int, dict[int, bytes]] = {ssrc: {} for ssrc in self.ssrcs.values()}
        self.track_sid = ""
        self._noise: dict[int, np.ndarray] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> dict:
        """Negotiate and start sending; returns the server's track description."""
        client = self.client
        reply = await client.request(
            {
                "type": "add_track",
                "cid": "simulcast-video",
                "kind": "video",
                "source": "camera",
                "width": 640,
                "height": 360,
            }
        )
        self.track_sid = reply["track"]["sid"]
        transceiver = client.publisher.addTransceiver("video", direction="sendonly")
        transceiver.sender._track_id = "simulcast-video"
        offer = await client.publisher.createOffer()
        await client.publisher.setLocalDescription(offer)
        sdp = add_simulcast(client.publisher.localDescription.sdp, [r for r, *_ in LAYERS])
        answer = await client.request({"type": "offer", "target": "publisher", "sdp": sdp})
        self.answer_sdp = answer["sdp"]
        await client.publisher.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type="answer")
        )
        self.transceiver = transceiver
        self.pt = transceiver._codecs[0].payloadType
        self.mid = transceiver.mid
        self.mid_id = next(e.id for e in transceiver._headerExtensions if e.uri == SDES_MID)
        dtls = transceiver.sender.transport
        original = dtls._handle_rtcp_data

        async def on_rtcp(data: bytes) -> None:
            for pt, fmt, pkt in rtcp.iter_rtcp(data):
                if pt == rtcp.PSFB and fmt == rtcp.PLI:
                    for rid, ssrc in self.ssrcs.items():
                        if ssrc == rtcp.media_ssrc(pkt):
                            self.keyframe_wanted[rid] = True
                elif pt == rtcp.RTPFB and fmt == rtcp.NACK:
                    cache = self._cache.get(rtcp.media_ssrc(pkt), {})
                    for seq in rtcp.parse_nack(pkt)[:64]:
                        packet = cache.get(seq)
                        if packet is not None:  # resent as it was (no RTX stream here)
                            self.resent += 1
                            await dtls._send_rtp(packet)
            await original(data)

        dtls._handle_rtcp_data = on_rtcp
        client.on_message = self._on_message
        self._task = asyncio.ensure_future(self._run(dtls))
        return reply["track"]

    def _on_message(self, msg: dict) -> None:
        if msg.get("type") == "layers" and msg.get("track") == self.track_sid:
            self.active = set(msg["active"])

    async def _run(self, dtls) -> None:
        while dtls.state != "connected":
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        frame_no = 0
        while True:
            ts = int(frame_no * 90000 / self.fps) & 0xFFFFFFFF
            for rid, width, height, _bitrate in LAYERS:
                if rid not in self.active:
                    continue
                frame = self._frame(width, height, frame_no)
                force = self.keyframe_wanted[rid] or frame_no % (self.fps * 3) == 0
                self.keyframe_wanted[rid] = False
                payloads, _ = self.encoders[rid].encode(frame, force_keyframe=force)
                for i, payload in enumerate(payloads):
                    self.seqs[rid] = (self.seqs[rid] + 1) & 0xFFFF
                    packet = build_rtp(
                        self.pt,
                        self.seqs[rid],
                        ts,
                        self.ssrcs[rid],
                        payload,
                        marker=i == len(payloads) - 1,
                        extensions={self.mid_id: self.mid.encode(), RID_EXT_ID: rid.encode()},
                    )
                    cache = self._cache[self.ssrcs[rid]]
                    cache[self.seqs[rid]] = packet
                    if len(cache) > 512:
                        del cache[next(iter(cache))]
                    await dtls._send_rtp(packet)
                    self.sent[rid] += 1
            frame_no += 1
            delay = start + frame_no / self.fps - loop.time()
            await asyncio.sleep(max(delay, 0))

    def _frame(self, width: int, height: int, n: int) -> av.VideoFrame:
        # grain over the colour keeps each encoder near its target bitrate, as camera noise does
        noise = self._noise.get(width)
        if noise is None:
            rng = np.random.default_rng(width)
            amplitude = GRAIN[next(r for r, w, *_ in LAYERS if w == width)]
            noise = self._noise[width] = rng.integers(0, amplitude, (4, height, width, 3), np.uint8)
        rgb = noise[n % 4] + np.array(self.colour, dtype=np.uint8)
        bar = (n * 4) % width
        rgb[:, bar : bar + 4] = 235
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = int(n * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        return frame

    async def stop(self) -> None:
        """Stop sending."""
        if self._task is not None:
            self._task.cancel()
