"""Codec payload inspection on bytes: VP8 (RFC 7741) and H.264 (RFC 6184) keyframes, VP8
payload-descriptor reading and rewriting (picture id, TL0PICIDX)."""

from __future__ import annotations

Payload = bytes | bytearray | memoryview


def vp8_descriptor(payload: Payload) -> tuple[int, int, int, int, int] | None:
    """(descriptor length, picture id or -1, its bits (0/7/15), TL0PICIDX or -1, TID or -1)."""
    n = len(payload)
    if n < 1:
        return None
    i = 1
    picture_id, bits, tl0, tid = -1, 0, -1, -1
    if payload[0] & 0x80:  # X
        if n < 2:
            return None
        x = payload[1]
        i = 2
        if x & 0x80:  # I
            if i >= n:
                return None
            if payload[i] & 0x80:
                if i + 1 >= n:
                    return None
                picture_id, bits = ((payload[i] & 0x7F) << 8) | payload[i + 1], 15
                i += 2
            else:
                picture_id, bits = payload[i] & 0x7F, 7
                i += 1
        if x & 0x40:  # L
            if i >= n:
                return None
            tl0 = payload[i]
            i += 1
        if x & 0x30:  # T or K
            if i >= n:
                return None
            if x & 0x20:
                tid = payload[i] >> 6
            i += 1
    if i > n:
        return None
    return i, picture_id, bits, tl0, tid


def vp8_is_keyframe(payload: Payload) -> bool:
    """True for the first packet of a VP8 keyframe."""
    if len(payload) < 2:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S=1 and partition index 0
        return False
    d = vp8_descriptor(payload)
    if d is None or d[0] >= len(payload):
        return False
    return not payload[d[0]] & 0x01  # P bit 0 = keyframe


def vp8_rewrite(buf: bytearray, offset: int, picture_id: int, tl0picidx: int) -> None:
    """Rewrite the picture id (keeping its width) and TL0PICIDX of the descriptor at offset."""
    d = vp8_descriptor(memoryview(buf)[offset:])
    if d is None or not buf[offset] & 0x80:
        return
    x = buf[offset + 1]
    i = offset + 2
    if x & 0x80:
        if d[2] == 15:
            buf[i] = 0x80 | ((picture_id >> 8) & 0x7F)
            buf[i + 1] = picture_id & 0xFF
            i += 2
        else:
            buf[i] = picture_id & 0x7F
            i += 1
    if x & 0x40 and tl0picidx >= 0:
        buf[i] = tl0picidx & 0xFF


def h264_is_keyframe(payload: Payload) -> bool:
    """True when the payload starts an IDR picture or carries an SPS."""
    n = len(payload)
    if n < 1:
        return False
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A
        i = 1
        while i + 2 < n:
            size = (payload[i] << 8) | payload[i + 1]
            if size == 0 or i + 2 + size > n:
                return False
            if payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + size
        return False
    if nal == 28 and n >= 2:  # FU-A
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return False
