"""RTP header-extension URIs and the values the SFU reads or writes."""

from __future__ import annotations

import time

SDES_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def audio_level(data: bytes | memoryview | None) -> tuple[bool, int] | None:
    """(voice activity, level in -dBov 0..127) of an RFC 6464 element, or None."""
    if data is None or len(data) < 1:
        return None
    return bool(data[0] & 0x80), data[0] & 0x7F


def abs_send_time_to_seconds(data: bytes | memoryview) -> float:
    """The 24-bit 6.18 fixed-point abs-send-time as seconds (modulo 64)."""
    if len(data) < 3:
        return 0.0
    return ((data[0] << 16) | (data[1] << 8) | data[2]) / (1 << 18)


def abs_send_time(seconds: float) -> bytes:
    """A time in seconds (any clock) as an abs-send-time value (3 bytes, modulo 64 s)."""
    value = int(seconds * (1 << 18)) & 0xFFFFFF
    return bytes([value >> 16, (value >> 8) & 0xFF, value & 0xFF])


def abs_send_time_now() -> bytes:
    """The current time as an abs-send-time value (3 bytes)."""
    return abs_send_time(time.time())
