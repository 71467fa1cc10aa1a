"""RTP header reading and rewriting on bytes (RFC 3550, RFC 8285 header extensions).

Hot-path code: no RtpPacket objects, only offsets into the buffer and struct pack/unpack.
"""

from __future__ import annotations

from struct import pack, pack_into, unpack_from

_HEADER = "!BBHII"


def payload_offset(buf: bytes | bytearray | memoryview) -> int:
    """Offset of the payload in an RTP packet, or -1 if the packet is not valid RTP."""
    n = len(buf)
    if n < 12 or (buf[0] >> 6) != 2:
        return -1
    off = 12 + 4 * (buf[0] & 0x0F)
    if buf[0] & 0x10:
        if off + 4 > n:
            return -1
        off += 4 + 4 * ((buf[off + 2] << 8) | buf[off + 3])
    if off > n:
        return -1
    if buf[0] & 0x20:
        if off >= n:
            return -1
        pad = buf[n - 1]
        if pad == 0 or off + pad > n:
            return -1
    return off


def payload_end(buf: bytes | bytearray | memoryview) -> int:
    """End of the payload (before padding), or -1 if the packet is not valid RTP."""
    off = payload_offset(buf)
    if off < 0:
        return -1
    return len(buf) - buf[-1] if buf[0] & 0x20 else len(buf)


def rewrite_header(buf: bytearray, pt: int, seq: int, ts: int, ssrc: int) -> None:
    """Rewrite payload type, sequence number, timestamp and SSRC in place (marker kept)."""
    pack_into("!BHII", buf, 1, (buf[1] & 0x80) | (pt & 0x7F), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)


def _extension_block(buf: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(profile, start, end) of the header-extension block, or None."""
    n = len(buf)
    if n < 12 or not buf[0] & 0x10:
        return None
    off = 12 + 4 * (buf[0] & 0x0F)
    if off + 4 > n:
        return None
    profile = (buf[off] << 8) | buf[off + 1]
    end = off + 4 + 4 * ((buf[off + 2] << 8) | buf[off + 3])
    if end > n:
        return None
    return profile, off + 4, end


def find_extension(buf: bytes | bytearray | memoryview, ext_id: int) -> memoryview | None:
    """The data of header-extension element ``ext_id`` (one- or two-byte form), or None."""
    block = _extension_block(buf)
    if block is None:
        return None
    profile, i, end = block
    if profile == 0xBEDE:
        while i < end:
            b = buf[i]
            if b == 0:
                i += 1
                continue
            eid, length = b >> 4, (b & 0x0F) + 1
            if eid == 15:
                return None
            if i + 1 + length > end:
                return None
            if eid == ext_id:
                return memoryview(buf)[i + 1 : i + 1 + length]
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i < end:
            eid = buf[i]
            if eid == 0:
                i += 1
                continue
            if i + 1 >= end:
                return None
            length = buf[i + 1]
            if i + 2 + length > end:
                return None
            if eid == ext_id:
                return memoryview(buf)[i + 2 : i + 2 + length]
            i += 2 + length
    return None


def build_ext_table(mapping: dict[int, int]) -> bytes:
    """A 256-byte id translation table: table[old_id] = new_id, 0 = drop."""
    table = bytearray(256)
    for old, new in mapping.items():
        if 0 < old < 256 and 0 <= new < 256:
            table[old] = new
    return bytes(table)


def rewrite_extensions(buf: bytearray, table: bytes) -> int:
    """Map header-extension ids in place; elements mapped to 0 become padding (zeroed).

    Returns where the first element it dropped of three bytes or more began, in a one-byte
    block (room for a two-byte element written there), or -1."""
    block = _extension_block(buf)
    hole = -1
    if block is None:
        return hole
    profile, i, end = block
    if profile == 0xBEDE:
        while i < end:
            b = buf[i]
            if b == 0:
                i += 1
                continue
            eid, length = b >> 4, (b & 0x0F) + 1
            if eid == 15 or i + 1 + length > end:
                return hole
            new = table[eid]
            if new == 0 or new > 14:
                buf[i : i + 1 + length] = bytes(1 + length)
                if hole < 0 and length >= 2:
                    hole = i
            else:
                buf[i] = (new << 4) | (b & 0x0F)
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while i < end:
            eid = buf[i]
            if eid == 0:
                i += 1
                continue
            if i + 1 >= end:
                return hole
            length = buf[i + 1]
            if i + 2 + length > end:
                return hole
            new = table[eid]
            if new == 0:
                buf[i : i + 2 + length] = bytes(2 + length)
            else:
                buf[i] = new
            i += 2 + length
    return hole


def build_rtp(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    extensions: dict[int, bytes] | None = None,
) -> bytes:
    """Build an RTP packet (one-byte header extensions when given), for tests and tools."""
    first = 0x80
    ext = b""
    if extensions:
        first |= 0x10
        body = b"".join(bytes([(eid << 4) | (len(d) - 1)]) + d for eid, d in extensions.items())
        body += bytes(-len(body) % 4)
        ext = pack("!HH", 0xBEDE, len(body) // 4) + body
    header = pack(_HEADER, first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
    return header + ext + payload


def read_seq_ts_ssrc(buf: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(sequence number, timestamp, SSRC) of a packet known to be at least 12 bytes."""
    _, _, seq, ts, ssrc = unpack_from(_HEADER, buf, 0)
    return seq, ts, ssrc


def unwrap_rtx(buf: bytes | bytearray, payload_type: int, ssrc: int) -> bytearray | None:
    """The original packet inside an RTX retransmission (RFC 4588): its payload starts with the
    original sequence number; payload type and SSRC become the media stream's. None for a
    packet with no original in it (padding sent to probe bandwidth) or invalid RTP."""
    off = payload_offset(buf)
    end = payload_end(buf) if off >= 0 else -1
    if off < 0 or end - off < 2:
        return None
    osn = (buf[off] << 8) | buf[off + 1]
    out = bytearray(buf[:off])
    out += buf[off + 2 : end]
    out[0] &= 0xDF  # the original's padding is gone with the RTX padding
    ts = (buf[4] << 24) | (buf[5] << 16) | (buf[6] << 8) | buf[7]
    rewrite_header(out, payload_type, osn, ts, ssrc)
    return out


def set_extension(buf: bytearray, ext_id: int, value: bytes) -> bool:
    """Write header-extension element ``ext_id`` = ``value`` in place: over the element if the
    packet has it with that length, else in the block's trailing padding, else growing the
    block (the packet grows by 4 or 8 bytes). One-byte form for a packet without extensions.
    False, and ``buf`` unchanged, if the packet is not valid RTP or the id does not fit."""
    n = len(buf)
    size = len(value)
    if n < 12 or not 0 < size <= 16:
        return False
    off = 12 + 4 * (buf[0] & 0x0F)
    if not buf[0] & 0x10:
        if off > n or not 0 < ext_id < 15:
            return False
        body = bytes([(ext_id << 4) | (size - 1)]) + value
        body += bytes(-len(body) % 4)
        buf[off:off] = pack("!HH", 0xBEDE, len(body) // 4) + body
        buf[0] |= 0x10
        return True
    if off + 4 > n:
        return False
    profile = (buf[off] << 8) | buf[off + 1]
    words = (buf[off + 2] << 8) | buf[off + 3]
    start = off + 4
    end = start + 4 * words
    if end > n:
        return False
    if profile == 0xBEDE:
        if not 0 < ext_id < 15:
            return False
        head, element = 1, bytes([(ext_id << 4) | (size - 1)])
    elif profile & 0xFFF0 == 0x1000:
        if not 0 < ext_id < 256:
            return False
        head, element = 2, bytes([ext_id, size])
    else:
        return False
    i = last = start
    need = head + size
    hole = -1  # the first run of padding long enough for the element
    run_at = run = 0
    while i < end:
        eid = buf[i]
        if eid == 0:
            if run == 0:
                run_at = i
            run += 1
            if run == need and hole < 0:
                hole = run_at
            i += 1
            continue
        run = 0
        if head == 1:
            eid, length = eid >> 4, (eid & 0x0F) + 1
            if eid == 15:
                return False
        else:
            if i + 1 >= end:
                return False
            length = buf[i + 1]
        if i + head + length > end:
            return False
        if eid == ext_id:
            if length == size:
                buf[i + head : i + head + size] = value
                return True
            buf[i : i + head + length] = bytes(head + length)  # another length: written anew
        else:
            last = i + head + length
        i += head + length
    if hole >= 0 and (hole + need <= last or end - last >= need):
        # padding inside the block (an element dropped for this subscriber) or at its end
        at = hole if hole + need <= last else last
        buf[at : at + need] = element + value
        return True
    missing = need - (end - last)
    if missing > 0:
        grow = (missing + 3) // 4 * 4
        buf[end:end] = bytes(grow)
        pack_into("!H", buf, off + 2, words + grow // 4)
    buf[last : last + need] = element + value
    return True
