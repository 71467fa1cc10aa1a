"""RTCP on bytes: walking compound packets, parsing feedback, building reports.

RFC 3550 (SR, RR, SDES, BYE), RFC 4585 (generic NACK, PLI), RFC 5104 (FIR),
draft-alvestrand-rmcat-remb (REMB). Parsers never raise on garbage: they yield nothing or
return None / [].
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from struct import pack, unpack_from

SR, RR, SDES, BYE, RTPFB, PSFB = 200, 201, 202, 203, 205, 206
NACK, TWCC = 1, 15  # RTPFB formats
PLI, FIR, REMB = 1, 4, 15  # PSFB formats

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


def iter_rtcp(buf: bytes | bytearray | memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """Yield (packet type, count or format, whole packet) for each packet of a compound."""
    view = memoryview(buf)
    i, n = 0, len(view)
    while i + 4 <= n:
        if view[i] >> 6 != 2:
            return
        length = 4 * (((view[i + 2] << 8) | view[i + 3]) + 1)
        if i + length > n:
            return
        yield view[i + 1], view[i] & 0x1F, view[i : i + length]
        i += length


def media_ssrc(pkt: bytes | memoryview) -> int:
    """Media source SSRC of an RTPFB/PSFB packet (0 if too short)."""
    return unpack_from("!I", pkt, 8)[0] if len(pkt) >= 12 else 0


def sender_ssrc(pkt: bytes | memoryview) -> int:
    """SSRC of the packet sender (0 if too short)."""
    return unpack_from("!I", pkt, 4)[0] if len(pkt) >= 8 else 0


def parse_nack(pkt: bytes | memoryview) -> list[int]:
    """Sequence numbers reported lost by a generic NACK."""
    lost: list[int] = []
    for i in range(12, len(pkt) - 3, 4):
        pid, blp = unpack_from("!HH", pkt, i)
        lost.append(pid)
        for bit in range(16):
            if blp & (1 << bit):
                lost.append((pid + bit + 1) & 0xFFFF)
        if len(lost) > 1024:
            break
    return lost


def parse_remb(pkt: bytes | memoryview) -> tuple[int, list[int]] | None:
    """(bitrate in bps, SSRCs) of a REMB packet, or None."""
    if len(pkt) < 20 or bytes(pkt[12:16]) != b"REMB":
        return None
    count = pkt[16]
    exp = pkt[17] >> 2
    mantissa = ((pkt[17] & 0x03) << 16) | (pkt[18] << 8) | pkt[19]
    if len(pkt) < 20 + 4 * count:
        return None
    ssrcs = [unpack_from("!I", pkt, 20 + 4 * k)[0] for k in range(count)]
    return mantissa << exp, ssrcs


def parse_fir(pkt: bytes | memoryview) -> list[tuple[int, int]]:
    """(SSRC, sequence number) entries of a FIR packet."""
    return [(unpack_from("!I", pkt, i)[0], pkt[i + 4]) for i in range(12, len(pkt) - 7, 8)]


def parse_sr(pkt: bytes | memoryview) -> tuple[int, int, int, int, int] | None:
    """(SSRC, NTP time, RTP time, packet count, octet count) of a sender report, or None."""
    if len(pkt) < 28 or pkt[1] != SR:
        return None
    ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = unpack_from("!IIIIII", pkt, 4)
    return ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets


def parse_rr_blocks(pkt: bytes | memoryview) -> list[tuple[int, int, int, int, int]]:
    """Report blocks (SSRC, fraction lost, cumulative lost, highest seq, jitter) of SR/RR."""
    return [block[:5] for block in parse_report_blocks(pkt)]


def parse_report_blocks(
    pkt: bytes | memoryview,
) -> list[tuple[int, int, int, int, int, int, int]]:
    """Report blocks of SR/RR with their round-trip fields: (SSRC, fraction lost, cumulative
    lost, highest seq, jitter, last SR (middle 32 bits of its NTP time), delay since it)."""
    if len(pkt) < 8:
        return []
    start = 28 if pkt[1] == SR else 8
    count = pkt[0] & 0x1F
    blocks = []
    for k in range(count):
        i = start + 24 * k
        if i + 24 > len(pkt):
            break
        ssrc, word, highest, jitter, lsr, dlsr = unpack_from("!IIIIII", pkt, i)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append((ssrc, word >> 24, lost, highest, jitter, lsr, dlsr))
    return blocks


def _header(fmt: int, pt: int, words: int) -> bytes:
    return pack("!BBH", 0x80 | fmt, pt, words)


def build_pli(sender: int, media: int) -> bytes:
    """A picture loss indication."""
    return _header(PLI, PSFB, 2) + pack("!II", sender, media)


def build_fir(sender: int, media: int, seqnr: int) -> bytes:
    """A full intra request."""
    return _header(FIR, PSFB, 4) + pack("!IIIB3x", sender, 0, media, seqnr & 0xFF)


def build_nack(sender: int, media: int, seqs: list[int]) -> bytes:
    """A generic NACK for the given lost sequence numbers (in one pass once sorted)."""
    fci = bytearray()
    pid = blp = -1
    for s in sorted({s & 0xFFFF for s in seqs}):
        d = s - pid
        if pid >= 0 and 1 <= d <= 16:
            blp |= 1 << (d - 1)
            continue
        if pid >= 0:
            fci += pack("!HH", pid, blp)
        pid, blp = s, 0
    if pid >= 0:
        fci += pack("!HH", pid, blp)
    return _header(NACK, RTPFB, 2 + len(fci) // 4) + pack("!II", sender, media) + bytes(fci)


def build_remb(sender: int, bitrate: int, ssrcs: list[int]) -> bytes:
    """A receiver estimated maximum bitrate message."""
    bitrate = max(int(bitrate), 0)
    exp = 0
    while bitrate >= (1 << 18):
        bitrate >>= 1
        exp += 1
    ssrcs = ssrcs[:255]
    body = b"REMB" + bytes(
        [len(ssrcs), (exp << 2) | (bitrate >> 16), (bitrate >> 8) & 0xFF, bitrate & 0xFF]
    )
    body += b"".join(pack("!I", s) for s in ssrcs)
    return _header(REMB, PSFB, 2 + len(body) // 4) + pack("!II", sender, 0) + body


def build_sr(ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int) -> bytes:
    """A sender report with no report blocks."""
    return _header(0, SR, 6) + pack(
        "!IIIIII",
        ssrc,
        (ntp >> 32) & 0xFFFFFFFF,
        ntp & 0xFFFFFFFF,
        rtp_ts & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )


def build_rr(sender: int, blocks: list[tuple]) -> bytes:
    """A receiver report; blocks are (ssrc, fraction, lost, highest, jitter, lsr, dlsr)."""
    body = b""
    for ssrc, fraction, lost, highest, jitter, lsr, dlsr in blocks[:31]:
        body += pack(
            "!IIIIII",
            ssrc,
            ((fraction & 0xFF) << 24) | (lost & 0xFFFFFF),
            highest & 0xFFFFFFFF,
            jitter & 0xFFFFFFFF,
            lsr,
            dlsr,
        )
    return _header(len(blocks[:31]), RR, 1 + len(body) // 4) + pack("!I", sender) + body


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one CNAME item."""
    text = cname.encode()[:255]
    chunk = pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return _header(1, SDES, len(chunk) // 4) + chunk


def build_bye(ssrc: int) -> bytes:
    """A BYE for one source."""
    return _header(1, BYE, 1) + pack("!I", ssrc)


def ntp_now() -> int:
    """The current wall-clock time as a 64-bit NTP timestamp."""
    return ntp_from_seconds(time.time())


def ntp_from_seconds(t: float) -> int:
    """A Unix time in seconds as a 64-bit NTP timestamp."""
    return int((t + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_to_seconds(ntp: int) -> float:
    """A 64-bit NTP timestamp as Unix seconds."""
    return ntp / (1 << 32) - NTP_EPOCH_OFFSET
