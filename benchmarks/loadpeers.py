"""Load-tool peers: publishers that replay pre-encoded RTP, subscribers that count without decoding.

Both sit on visio_sfu's PeerTransport (real ICE and DTLS-SRTP, no aiortc media pipeline).
Subscribers count packets and loss from the SRTP header, which is not encrypted. Publishers
carry each packet's send time in its RTP padding (RFC 3550: 8 bytes of time and the padding
length), which servers forward untouched, unlike abs-send-time, which an SFU may rewrite with
its own send time (Janus does). Subscribers decrypt one packet in ``DELAY_SAMPLE`` to read it,
so the load machine pays for decryption on a sample only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from struct import Struct, pack

from benchmarks.media import Clip
from visio_sfu.rtp.extensions import ABS_SEND_TIME, AUDIO_LEVEL, SDES_MID, abs_send_time
from visio_sfu.transport import PeerTransport

DELAY_BUCKET = 1e-4  # 0.1 ms histogram buckets
DELAY_BUCKETS = 20000  # up to 2 s
DELAY_SAMPLE = 4  # a subscriber decrypts one packet in 4 to read its send time
SEND_TIME = Struct("!dB")  # padding: send time (monotonic seconds), padding length (9)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; root may pass rmem_max
# subscribers' socket receive buffer; 0 (default) keeps the kernel's. Measured: 4 MB buffers
# made the server's sends dearer at 200 subscribers (27 µs per packet against 17), so they
# are an experiment (VISIO_BENCH_RCVBUF=bytes), not the default
RECEIVE_BUFFER = int(os.environ.get("VISIO_BENCH_RCVBUF", "0"))


class Stats:
    """What all subscribers of one load run received: packets, bytes, loss and delay."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.delays = [0] * (DELAY_BUCKETS + 1)
        # (subscriber, ssrc) -> [first seq, highest seq, packets, first frame timestamp,
        # highest frame timestamp, frames, timestamp step]: sequence numbers give packet loss;
        # frame timestamps (marker bit) give frame loss, which a relay that drops whole frames
        # and renumbers its packets shows only there
        self.streams: dict[tuple[int, int], list[int]] = {}
        self.pacer_skips = 0  # times the publishers fell half a second behind: tool overloaded

    def snapshot(self) -> dict:
        """Counters now, to subtract from a later snapshot."""
        expected = received = frames_expected = frames = 0
        for first, highest, n, ts_first, ts_high, nframes, step in self.streams.values():
            expected += highest - first + 1
            received += n
            if step:
                frames_expected += (ts_high - ts_first) // step + 1
                frames += nframes
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "expected": expected,
            "received": received,
            "frames_expected": frames_expected,
            "frames": frames,
            "pacer_skips": self.pacer_skips,
            "delays": list(self.delays),
        }

    @staticmethod
    def between(a: dict, b: dict, seconds: float) -> dict:
        """Rates, loss and delay percentiles between two snapshots."""
        expected = b["expected"] - a["expected"]
        received = b["received"] - a["received"]
        frames_expected = b["frames_expected"] - a["frames_expected"]
        frames = b["frames"] - a["frames"]
        hist = [y - x for x, y in zip(a["delays"], b["delays"], strict=True)]
        total = sum(hist)

        def percentile(q: float) -> float | None:
            if not total:
                return None
            need, seen = q * total, 0
            for i, n in enumerate(hist):
                seen += n
                if seen >= need:
                    return round((i + 0.5) * DELAY_BUCKET * 1000, 2)
            return None

        return {
            "packets_per_s": (b["packets"] - a["packets"]) / seconds,
            "mbit_per_s": (b["bytes"] - a["bytes"]) * 8 / seconds / 1e6,
            "loss_pct": max(0.0, 100 * (expected - received) / expected) if expected > 0 else 0.0,
            "pacer_skips": b["pacer_skips"] - a["pacer_skips"],
            "frames_lost_pct": (
                max(0.0, 100 * (frames_expected - frames) / frames_expected)
                if frames_expected > 0
                else 0.0
            ),
            "delay_p50_ms": percentile(0.5),
            "delay_p99_ms": percentile(0.99),
        }


class LoadSubscriber:
    """Receives forwarded media and accounts it in shared Stats, decrypting only a sample."""

    _ids = 0

    def __init__(self, stats: Stats) -> None:
        LoadSubscriber._ids += 1
        self.index = LoadSubscriber._ids
        self.stats = stats
        self.transport = PeerTransport(on_rtp=self._on_rtp, decrypt=False)
        self.transport.receive_buffer = 0  # the kernel's default, unless enlarge_buffers
        self._count = self.index  # spreads the sampled packets across subscribers
        self._buffers_set = False

    async def answer(self, offer_sdp: str) -> str:
        """Answer the server's offer (visio-sfu, Janus)."""
        return await self.transport.answer(offer_sdp)

    async def offer(self, kinds: tuple[str, ...] = ("video", "audio")) -> str:
        """Offer to receive (the naive relay's flow: the receiver offers)."""
        for kind in kinds:
            self.transport.pc.addTransceiver(kind, direction="recvonly")
        return await self.transport.create_offer()

    async def apply_answer(self, sdp: str) -> None:
        """Apply the server's answer to our offer."""
        await self.transport.apply_answer(sdp)

    def enlarge_buffers(self) -> None:
        """Set the UDP sockets' receive buffer to RECEIVE_BUFFER if asked (once connected)."""
        if RECEIVE_BUFFER <= 0 or self._buffers_set or not self.transport.ready:
            return
        self._buffers_set = True
        option = SO_RCVBUFFORCE if os.geteuid() == 0 else socket.SO_RCVBUF
        for sock in self.transport.sockets():
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            except OSError:
                pass

    def _on_rtp(self, data: bytes, now: float) -> None:
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(data)
        seq = (data[2] << 8) | data[3]
        key = (self.index, int.from_bytes(data[8:12], "big"))
        stream = stats.streams.get(key)
        if stream is None:
            stream = stats.streams[key] = [seq, seq, 1, 0, 0, 0, 0]
        else:
            delta = (seq - (stream[1] & 0xFFFF)) & 0xFFFF
            if delta < 0x8000:
                stream[1] += delta
            stream[2] += 1
        if data[1] & 0x80:  # the last packet of a frame
            ts = int.from_bytes(data[4:8], "big")
            if not stream[5]:
                stream[3] = stream[4] = ts
                stream[5] = 1
            else:
                step = (ts - (stream[4] & 0xFFFFFFFF)) & 0xFFFFFFFF
                if 0 < step < 0x80000000:
                    stream[4] += step
                    stream[5] += 1
                    if not stream[6] or step < stream[6]:
                        stream[6] = step  # one frame's duration: the smallest step seen
        self._count += 1
        if self._count % DELAY_SAMPLE == 0 and data[0] & 0x20:
            try:
                plain = self.transport.srtp_rx().unprotect(data)
            except Exception:
                return
            if len(plain) > 21 and plain[-1] == SEND_TIME.size:
                sent = SEND_TIME.unpack_from(plain, len(plain) - SEND_TIME.size)[0]
                delay = max(now - sent, 0.0)
                stats.delays[min(int(delay / DELAY_BUCKET), DELAY_BUCKETS)] += 1

    async def close(self) -> None:
        """Close the peer connection."""
        await self.transport.close()


class Outgoing:
    """One sending m-section of a publisher: SSRC, payload type, extension ids, clip."""

    def __init__(self, clip: Clip, ssrc: int, pt: int, exts: dict[str, int], kind: str) -> None:
        self.clip = clip
        self.ssrc = ssrc
        self.pt = pt
        self.kind = kind
        self.abs_id = exts.get(ABS_SEND_TIME, 0)
        self.mid_id = exts.get(SDES_MID, 0)
        self.level_id = exts.get(AUDIO_LEVEL, 0)
        self.mid = b""
        self.seq = 0
        self.ts = 0
        self.frame = 0


class LoadPublisher:
    """Sends a video and/or audio clip as RTP in real time, from pre-encoded payloads."""

    def __init__(self, video: Clip | None, audio: Clip | None) -> None:
        self.transport = PeerTransport()
        self.transport.receive_buffer = 0  # the kernel's default, as the other load peers
        self.clips = {"video": video, "audio": audio}
        self.cids: dict[str, str] = {}
        self.outgoing: list[Outgoing] = []
        self.sent = 0
        self._transceivers = {}
        for kind, clip in self.clips.items():
            if clip is None:
                continue
            t = self.transport.add_slot(kind, None)
            cid = f"{kind}-{id(self):x}"
            t.set_msid(f"load-{id(self):x}", cid)
            self.cids[kind] = cid
            self._transceivers[kind] = t

    @property
    def frames_per_second(self) -> float:
        """Frames this publisher sends each second, all its clips together."""
        return sum(1 / clip.interval for clip in self.clips.values() if clip is not None)

    async def offer(self) -> str:
        """Our offer (the publisher offers on every server)."""
        return await self.transport.create_offer()

    async def apply_answer(self, sdp: str) -> None:
        """Apply the server's answer and learn what was negotiated."""
        await self.transport.apply_answer(sdp)
        for kind, t in self._transceivers.items():
            media = t.describe()
            codec = next(
                (c for c in media.codecs if c.mime.lower() in ("video/vp8", "audio/opus")),
                None,
            )
            if codec is None:
                raise RuntimeError(f"the server did not accept {kind} in VP8/Opus")
            out = Outgoing(self.clips[kind], media.ssrc, codec.payload_type, media.extensions, kind)
            out.mid = (media.mid or "").encode()
            self.outgoing.append(out)

    def send_frame(self, out: Outgoing, now: float) -> None:
        """Send the next frame of one clip, stamped with the send time."""
        frames = out.clip.frames
        payloads = frames[out.frame % len(frames)]
        out.frame += 1
        out.ts = (out.ts + out.clip.clock_step) & 0xFFFFFFFF
        ext = b""
        if out.abs_id:
            ext = bytes([(out.abs_id << 4) | 2]) + abs_send_time(now)
        elif out.level_id:
            ext = bytes([out.level_id << 4, 0xA0])  # voice, -32 dBov
        if out.mid_id and out.mid:
            ext += bytes([(out.mid_id << 4) | (len(out.mid) - 1)]) + out.mid
        if ext:
            ext += bytes(-len(ext) % 4)
            ext = pack("!HH", 0xBEDE, len(ext) // 4) + ext
        first = 0xB0 if ext else 0xA0  # version 2, padding (the send time), extension
        last = len(payloads) - 1
        clock, stamp = time.monotonic, SEND_TIME.pack
        for i, payload in enumerate(payloads):
            out.seq = (out.seq + 1) & 0xFFFF
            header = pack(
                "!BBHII", first, out.pt | (0x80 if i == last else 0), out.seq, out.ts, out.ssrc
            )
            sent_at = stamp(clock(), SEND_TIME.size)  # per packet: a frame takes a while
            if self.transport.send_rtp(header + ext + payload + sent_at):
                self.sent += 1

    async def close(self) -> None:
        """Close the peer connection."""
        await self.transport.close()


async def pace(
    publishers: list[LoadPublisher], stop: asyncio.Event, stats: Stats | None = None
) -> None:
    """Send every publisher's clips in real time until ``stop`` is set (one task for all);
    ``stats.pacer_skips`` counts the times a clip fell so far behind that it skipped ahead."""
    loop = time.monotonic
    start = loop()
    schedule: list[tuple[float, LoadPublisher, Outgoing]] = []
    for n, pub in enumerate(publishers):
        for out in pub.outgoing:
            phase = (n * 0.0037) % out.clip.interval  # spread the frames of many publishers
            schedule.append((start + phase, pub, out))
    while not stop.is_set():
        now = loop()
        nearest = now + 0.02
        for i, (due, pub, out) in enumerate(schedule):
            if due <= now:
                if pub.transport.ready:
                    pub.send_frame(out, now)
                due += out.clip.interval
                if due < now - 0.5:  # fell far behind: skip ahead rather than burst
                    due = now + out.clip.interval
                    if stats is not None:
                        stats.pacer_skips += 1
                schedule[i] = (due, pub, out)
            nearest = min(nearest, due)
        await asyncio.sleep(max(nearest - loop(), 0.0005))
