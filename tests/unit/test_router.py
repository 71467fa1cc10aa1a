"""RtpRouter: packets to (track, layer) by SSRC, else learnt from MID and RID extensions."""

from visio_sfu.publisher import Codec, Publisher
from visio_sfu.router import RtpRouter
from visio_sfu.rtp.header import build_rtp


def track(mid: str, rids=None) -> Publisher:
    return Publisher(
        "TR_" + mid,
        "PA",
        "video",
        "camera",
        mid,
        Codec("video/VP8", 90000, 96),
        {},
        lambda b: True,
        1,
        rids=rids,
    )


def with_extensions(ssrc: int, items: list[tuple[int, bytes]], pt: int = 96) -> bytes:
    """An RTP packet with one-byte header extensions (RFC 8285)."""
    body = b"".join(bytes([(ident << 4) | (len(value) - 1)]) + value for ident, value in items)
    body += bytes(-len(body) % 4)
    ext = b"\xbe\xde" + (len(body) // 4).to_bytes(2, "big") + body
    head = build_rtp(pt, 1, 1000, ssrc, b"")
    return bytes([head[0] | 0x10]) + head[1:12] + ext + b"payload"


def test_announced_ssrcs_route_at_once():
    r = RtpRouter()
    t = track("0")
    r.add(t, [1111])
    assert r.route(build_rtp(96, 1, 0, 1111, b"x")) == (t, t.layers[0], False)
    assert r.route(build_rtp(96, 1, 0, 2222, b"x")) is None and r.unknown == 1


def test_simulcast_layers_are_learnt_from_mid_and_rid():
    r = RtpRouter()
    r.mid_ext_id, r.rid_ext_id = 4, 10
    t = track("1", rids=["q", "h", "f"])
    r.add(t, [5555])  # simulcast SSRCs in the SDP are not trusted: learnt instead
    assert r.route(build_rtp(96, 1, 0, 5555, b"x")) is None
    packet = with_extensions(7777, [(4, b"1"), (10, b"h")])
    assert r.route(packet) == (t, t.layers[1], False)
    assert r.route(build_rtp(96, 2, 0, 7777, b"x")) == (t, t.layers[1], False)  # remembered
    assert r.track_of_ssrc(7777) is t


def test_wrong_payload_type_or_unknown_mid_is_not_learnt():
    r = RtpRouter()
    r.mid_ext_id = 4
    t = track("0")
    r.add(t, [])
    assert r.route(with_extensions(1, [(4, b"0")], pt=97)) is None  # RTX, not the codec
    assert r.route(with_extensions(2, [(4, b"9")])) is None
    assert r.unknown == 2


def test_removed_tracks_route_nothing():
    r = RtpRouter()
    t = track("0")
    r.add(t, [1111])
    r.remove(t)
    assert r.route(build_rtp(96, 1, 0, 1111, b"x")) is None
