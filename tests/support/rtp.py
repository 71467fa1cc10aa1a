"""Helpers for tests of the forwarding path: VP8 tracks and packets built from bytes."""

from __future__ import annotations

from visio_sfu.publisher import Codec, Publisher
from visio_sfu.rtp.header import build_rtp


def vp8_payload(picture_id: int, tl0: int, key: bool, start: bool = True) -> bytes:
    first = 0x90 if start else 0x80  # X=1, S=start, partition 0
    ext = 0xC0  # I and L present
    pid = bytes([0x80 | (picture_id >> 8), picture_id & 0xFF])  # 15-bit picture id
    header = bytes([0x00 if key else 0x01])  # P bit: 0 for a keyframe
    return bytes([first, ext]) + pid + bytes([tl0]) + header + bytes(20)


def vp8_track(**options) -> Publisher:
    return Publisher(
        "TR",
        "PA",
        "video",
        "camera",
        "0",
        Codec("video/VP8", 90000, 96),
        {},
        lambda b: True,
        1,
        **options,
    )


def simulcast_track() -> Publisher:
    return vp8_track(height=720, rids=["q", "h", "f"])


def send(track, layer, ssrc, seq, ts, pid, tl0, key, now):
    data = build_rtp(96, seq, ts, ssrc, vp8_payload(pid, tl0, key))
    track.on_rtp(data, now, track.layers[layer])
