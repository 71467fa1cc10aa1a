"""RTP payloads back into codec frames, for a recorder: VP8 (RFC 7741) and H.264 (RFC 6184)
frames reassembled from ordered packets and losses; Opus (RFC 7587) packet durations; the
picture size of a VP8 keyframe or an H.264 SPS. Pure: bytes in, frames out; nothing is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codecs import vp8_descriptor

Payload = bytes | bytearray | memoryview

#: an Opus packet of one 20 ms CELT frame that decodes to digital silence (TOC 0xF8: CELT,
#: full band, 20 ms, mono, one frame); a recorder writes it where nothing was received
OPUS_SILENCE_20MS = bytes([0xF8, 0xFF, 0xFE])
#: the same for 10 ms (TOC 0xF0)
OPUS_SILENCE_10MS = bytes([0xF0, 0xFF, 0xFE])

# -- Opus ---------------------------------------------------------------------------------------


def opus_samples(packet: Payload, rate: int = 48000) -> int:
    """Samples (per channel, at ``rate``) an Opus packet holds, from its TOC byte; 0 if it is
    not a valid packet (RFC 6716, 3.1)."""
    n = len(packet)
    if n < 1:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        per_frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        per_frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        per_frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if n < 2:
            return 0
        frames = packet[1] & 0x3F
    samples = frames * per_frame
    if samples > 5760:  # more than 120 ms: invalid
        return 0
    return samples * rate // 48000


# -- frames -------------------------------------------------------------------------------------


@dataclass
class Frame:
    """One whole video frame: its bytes as a decoder wants them, its RTP timestamp (extended)
    and the arrival time of its last packet."""

    data: bytes
    ts: int
    key: bool
    arrival: float
    width: int = 0  # known for keyframes (VP8) or frames carrying an SPS (H.264)
    height: int = 0
    has_parameter_sets: bool = False  # H.264: the frame carries an SPS and a PPS


class FrameAssembler:
    """Ordered RTP payloads (and losses) of one video stream in, whole frames out.

    Packets of one frame share a timestamp; the marker bit ends a frame (a new timestamp ends
    it too). A frame that lost a packet is dropped, and so is every frame after it until a
    keyframe (inter frames refer to the frames before them): ``need_keyframe`` then says a
    keyframe should be asked for. The first frames wait for a keyframe likewise.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ts: int | None = None
        self._broken = False
        self._started = False  # the current frame's first packet was seen
        self._arrival = 0.0
        self.need_keyframe = True
        self.frames = 0  # whole frames given out
        self.dropped = 0  # frames dropped: broken, or waiting for a keyframe

    # what a codec defines ------------------------------------------------------------------
    def _begin(self, payload: Payload) -> tuple[bool, bytes]:  # pragma: no cover - abstract
        """(starts a frame, bytes of the frame this packet carries)."""
        raise NotImplementedError

    def _finish(self, parts: list[bytes], ts: int, arrival: float) -> Frame | None:
        raise NotImplementedError  # pragma: no cover - abstract

    # the stream ----------------------------------------------------------------------------
    def push(self, payload: Payload, ts: int, marker: bool, arrival: float) -> list[Frame]:
        """One packet's payload (after the RTP header), in sequence order."""
        out: list[Frame] = []
        if self._ts is not None and ts != self._ts:
            self._end(out)  # a new timestamp: the previous frame is over (its marker was lost?)
        try:
            starts, data = self._begin(payload)
        except (IndexError, ValueError):
            starts, data = False, b""
            self._broken = True
        if self._ts is None:
            self._ts = ts
            self._started = starts
            if not starts:
                self._broken = True  # the frame's first packet was lost
        self._arrival = arrival
        if data:
            self._parts.append(data)
        if marker:
            self._end(out)
        return out

    def lost(self, count: int = 1) -> list[Frame]:
        """``count`` packets were lost here: the frame under way is broken (and the frames after
        it need a keyframe: they may refer to one that was lost)."""
        out: list[Frame] = []
        if self._ts is not None:
            self._broken = True
        else:
            self.need_keyframe = True
        return out

    def flush(self) -> list[Frame]:
        """The end of the stream: the frame under way, if whole."""
        out: list[Frame] = []
        if self._ts is not None:
            self._end(out)
        return out

    def _end(self, out: list[Frame]) -> None:
        parts, ts, broken = self._parts, self._ts, self._broken or not self._started
        self._parts, self._ts, self._broken, self._started = [], None, False, False
        if ts is None:
            return
        frame = None if broken else self._finish(parts, ts, self._arrival)
        if frame is None:
            self.dropped += 1
            self.need_keyframe = True
            return
        if self.need_keyframe and not frame.key:
            self.dropped += 1
            return
        self.need_keyframe = False
        self.frames += 1
        out.append(frame)


class VP8Assembler(FrameAssembler):
    """VP8 frames from RFC 7741 payloads: the payload descriptor stripped, partitions joined."""

    def _begin(self, payload: Payload) -> tuple[bool, bytes]:
        d = vp8_descriptor(payload)
        if d is None or d[0] > len(payload):
            raise ValueError("bad VP8 payload descriptor")
        starts = bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0  # S=1, partition 0
        return starts, bytes(payload[d[0] :])

    def _finish(self, parts: list[bytes], ts: int, arrival: float) -> Frame | None:
        data = b"".join(parts)
        if not data:
            return None
        key = not data[0] & 0x01
        width = height = 0
        if key:
            size = vp8_keyframe_size(data)
            if size is None:
                return None
            width, height = size
        return Frame(data, ts, key, arrival, width, height)


def vp8_keyframe_size(frame: Payload) -> tuple[int, int] | None:
    """(width, height) from a VP8 keyframe's header (RFC 6386, 9.1), or None."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = (frame[6] | frame[7] << 8) & 0x3FFF
    height = (frame[8] | frame[9] << 8) & 0x3FFF
    return (width, height) if width and height else None


_START = b"\x00\x00\x00\x01"


class H264Assembler(FrameAssembler):
    """H.264 access units (Annex B byte stream) from RFC 6184 payloads: single NAL units,
    STAP-A aggregates and FU-A fragments (packetization modes 0 and 1)."""

    def __init__(self) -> None:
        super().__init__()
        self._fu = False  # inside a fragmented NAL unit

    def _begin(self, payload: Payload) -> tuple[bool, bytes]:
        if len(payload) < 1:
            raise ValueError("empty H.264 payload")
        nal = payload[0] & 0x1F
        if 1 <= nal <= 23:
            self._fu = False
            return True, _START + bytes(payload)
        if nal == 24:  # STAP-A: 16-bit sizes, then the NAL units
            out = bytearray()
            i, n = 1, len(payload)
            while i + 2 <= n:
                size = (payload[i] << 8) | payload[i + 1]
                if size == 0 or i + 2 + size > n:
                    raise ValueError("bad STAP-A")
                out += _START + bytes(payload[i + 2 : i + 2 + size])
                i += 2 + size
            self._fu = False
            return True, bytes(out)
        if nal == 28:  # FU-A
            if len(payload) < 2:
                raise ValueError("short FU-A")
            fu = payload[1]
            if fu & 0x80:  # start of the NAL unit: rebuild its header
                self._fu = True
                header = (payload[0] & 0xE0) | (fu & 0x1F)
                return True, _START + bytes([header]) + bytes(payload[2:])
            if not self._fu:
                raise ValueError("FU-A continued without its start")
            if fu & 0x40:
                self._fu = False
            return False, bytes(payload[2:])
        raise ValueError(f"unsupported H.264 NAL unit type {nal}")

    def lost(self, count: int = 1) -> list[Frame]:
        self._fu = False
        return super().lost(count)

    def _finish(self, parts: list[bytes], ts: int, arrival: float) -> Frame | None:
        data = b"".join(parts)
        types = set()
        size = None
        for nal in _nal_units(data):
            if not nal:
                continue
            kind = nal[0] & 0x1F
            types.add(kind)
            if kind == 7 and size is None:
                size = h264_sps_size(nal)
        if not types & {1, 5}:
            return None  # parameter sets or SEI alone: nothing to show
        width, height = size or (0, 0)
        return Frame(data, ts, 5 in types, arrival, width, height, {7, 8} <= types)


def _nal_units(stream: bytes) -> list[bytes]:
    """The NAL units of an Annex B stream made by H264Assembler (4-byte start codes)."""
    return [part for part in stream.split(_START) if part]


class _Bits:
    """An exp-Golomb bit reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise ValueError("SPS too short")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def h264_sps_size(nal: bytes) -> tuple[int, int] | None:
    """(width, height) of the pictures an H.264 SPS NAL unit describes, cropping applied."""
    try:
        r = _Bits(_rbsp(nal[1:]))
        profile = r.bits(8)
        r.bits(16)  # constraint flags, level
        r.ue()  # seq_parameter_set_id
        chroma = 1
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma = r.ue()
            if chroma == 3:
                r.bit()  # separate_colour_plane_flag
            r.ue()  # bit depths
            r.ue()
            r.bit()  # qpprime_y_zero_transform_bypass_flag
            if r.bit():  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma != 3 else 12):
                    if r.bit():
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + r.se() + 256) % 256
                            last = nxt or last
        r.ue()  # log2_max_frame_num_minus4
        poc = r.ue()
        if poc == 0:
            r.ue()
        elif poc == 1:
            r.bit()
            r.se()
            r.se()
            for _ in range(r.ue()):
                r.se()
        r.ue()  # max_num_ref_frames
        r.bit()  # gaps_in_frame_num_value_allowed_flag
        width_mbs = r.ue() + 1
        height_units = r.ue() + 1
        frame_mbs_only = r.bit()
        if not frame_mbs_only:
            r.bit()
        r.bit()  # direct_8x8_inference_flag
        crop = (0, 0, 0, 0)
        if r.bit():
            crop = (r.ue(), r.ue(), r.ue(), r.ue())
    except ValueError:
        return None
    unit_x = 1 if chroma in (0, 3) else 2
    unit_y = (1 if chroma in (0, 3) or chroma == 2 else 2) * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        return None
    return width, height
