"""VP9 SVC on bytes: the payload descriptor (RFC 9628), the per-subscriber spatial/temporal
layer choice inside one stream, and what a subscriber receives (numbering, marker, NACKs)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visio_sfu.allocator import layer_rates
from visio_sfu.downtrack import DownTrack
from visio_sfu.forwarder import FORWARD, OTHER_LAYER, WAITING_KEYFRAME, SvcForwarder
from visio_sfu.munger import seq_diff
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.rtp.header import build_rtp, payload_offset
from visio_sfu.rtp.vp9 import vp9_is_keyframe, vp9_layers

PT = 98


def vp9_payload(
    pid: int, sid: int, tid: int, start: bool, end: bool, key: bool, u: bool = False
) -> bytes:
    """A non-flexible-mode VP9 descriptor with a 15-bit picture id, layer indices and
    TL0PICIDX, then some payload bytes."""
    first = 0x80 | 0x20 | (0x08 if start else 0) | (0x04 if end else 0)
    if not key or sid > 0:
        first |= 0x40 if not key else 0  # P: inter-picture predicted (not a keyframe)
    layer = (tid << 5) | (0x10 if u else 0) | (sid << 1) | (1 if key and sid else 0)
    return bytes([first, 0x80 | (pid >> 8), pid & 0xFF, layer, 7]) + bytes(30)


def vp9_track() -> Publisher:
    return Publisher(
        "TR_v", "PA_v", "video", "camera", "0", Codec("video/VP9", 90000, PT), {},
        lambda b: True, 1, height=720, width=1280,
    )  # fmt: skip


def subscribed() -> tuple[Publisher, DownTrack, list[bytes]]:
    """A VP9 track, one bound subscriber of it, and what that subscriber is sent."""
    track = vp9_track()
    out: list[bytes] = []
    dt = DownTrack(track, lambda b: out.append(bytes(b)) or True, "PB")
    track.attach(dt)
    dt.bind(0xBEEF, 100, {})
    return track, dt, out


class Picture:
    """Feeds a track L3T3-like pictures: each picture has three spatial layers, two packets
    each; the marker is on the very last packet (sid 2), as Chrome sends them."""

    def __init__(self, track: Publisher) -> None:
        self.track = track
        self.seq = 1000
        self.pid = 0
        self.now = 0.0

    def send(self, key: bool = False, tid: int = 0, layers: int = 3, u: bool = False) -> None:
        ts = 3000 * self.pid
        for sid in range(layers):
            for part in range(2):
                last = sid == layers - 1 and part == 1
                payload = vp9_payload(self.pid, sid, tid, part == 0, part == 1, key, u)
                data = build_rtp(PT, self.seq, ts, 0xABC, payload, marker=last)
                self.track.on_rtp(data, self.now)
                self.seq += 1
        self.pid += 1
        self.now += 1 / 30


def test_descriptor_fields():
    d = vp9_layers(vp9_payload(300, 2, 1, True, False, False, u=True))
    assert d is not None and d[1:] == (2, 1, True) and d[0] & 0x08
    assert vp9_is_keyframe(vp9_payload(5, 0, 0, True, False, True))
    assert not vp9_is_keyframe(vp9_payload(5, 1, 0, True, False, True))  # upper layer
    assert not vp9_is_keyframe(vp9_payload(5, 0, 0, False, False, True))  # not its start
    assert not vp9_is_keyframe(vp9_payload(5, 0, 0, True, False, False))  # predicted
    assert vp9_layers(bytes([0x08, 0x00])) == (0x08, 0, 0, False)  # no layer indices
    assert vp9_layers(bytes([0xA8, 0x80, 0x01])) is None  # cut before the layer byte
    assert vp9_layers(b"") is None


@given(st.binary(max_size=12))
def test_descriptor_never_raises(data: bytes):
    d = vp9_layers(data)
    assert d is None or (0 <= d[1] < 8 and 0 <= d[2] < 8)
    vp9_is_keyframe(data)


def test_svc_forwarder_switches_down_at_a_picture_and_up_at_a_keyframe():
    f = SvcForwarder()
    f.set_target(2)
    assert f.decide_svc(0x48 | 0x20, 0, 0, False, False) == WAITING_KEYFRAME
    assert f.keyframe_wanted == 2
    assert f.decide_svc(0x28, 0, 0, False, True) == FORWARD and f.current == 2
    assert f.starts == 1
    assert f.decide_svc(0x28, 2, 0, False, False) == FORWARD
    f.set_target(0)
    assert f.decide_svc(0x20, 2, 0, False, False) == FORWARD  # mid-picture: not yet
    assert f.decide_svc(0x68, 0, 0, False, False) == FORWARD and f.current == 0
    assert f.decide_svc(0x68, 1, 0, False, False) == OTHER_LAYER
    assert f.set_target(1)  # up: a keyframe is wanted
    assert f.decide_svc(0x68, 0, 0, False, False) == FORWARD and f.current == 0
    assert f.decide_svc(0x28, 0, 0, False, True) == FORWARD and f.current == 1
    assert f.switches == 2
    f.temporal_target = 0
    assert f.decide_svc(0x68, 0, 1, False, False) == OTHER_LAYER  # down at once
    f.temporal_target = 2
    assert f.decide_svc(0x68, 0, 1, False, False) == OTHER_LAYER  # up: waits for U or key
    assert f.decide_svc(0x68, 0, 1, True, False) == FORWARD and f.temporal == 2


@pytest.mark.parametrize("target", [0, 1, 2])
def test_downtrack_forwards_the_chosen_spatial_layer_with_continuous_numbering(target):
    track = vp9_track()
    assert track.svc and track.is_keyframe is not None
    out: list[bytes] = []
    dt = DownTrack(track, lambda b: out.append(bytes(b)) or True, "PB")
    track.attach(dt)
    dt.bind(0xBEEF, 100, {})
    dt.set_target(target)
    pictures = Picture(track)
    pictures.send()  # no keyframe yet: nothing
    assert out == [] and dt.need_keyframe
    pictures.send(key=True)
    for _ in range(5):
        pictures.send()
    per_picture = 2 * (target + 1)
    assert len(out) == 6 * per_picture
    seqs = [int.from_bytes(p[2:4], "big") for p in out]
    assert all(seq_diff(b, a) == 1 for a, b in zip(seqs, seqs[1:], strict=False)), seqs
    layers = [vp9_layers(memoryview(p)[payload_offset(p) :]) for p in out]
    assert {d[1] for d in layers} == set(range(target + 1))
    markers = [bool(p[1] & 0x80) for p in out]
    # one marker per picture, on its last forwarded packet (the end of the layer chosen)
    assert markers == ([False] * (per_picture - 1) + [True]) * 6
    assert all(p[1] & 0x7F == 100 for p in out)
    # the publisher's spatial layers are known to the allocator, each costing more
    track.update_rates(1.0)
    pictures.now = 1.0
    pictures.send()
    rates = layer_rates(track, pictures.now, dt.max_layer)
    assert rates[0] > 0 and rates[0] < rates[1] < rates[2]
    assert track.layer_count == 3 and track.layer_heights() == [180, 360, 720]


def test_downtrack_switches_and_answers_nacks_with_the_right_packets():
    track, dt, out = subscribed()
    dt.set_target(2)
    pictures = Picture(track)
    pictures.send(key=True)
    pictures.send()
    assert len(out) == 12
    dt.set_target(0)  # down: from the next picture on
    pictures.send()
    pictures.send()
    assert len(out) == 16 and dt.current_layer == 0 and dt.switches == 1
    dt.set_target(1)  # up: a keyframe is asked for; layer 0 meanwhile
    before = track.keyframe_requests
    pictures.send()
    assert len(out) == 18 and track.keyframe_requests >= before
    pictures.send(key=True)
    assert len(out) == 22 and dt.current_layer == 1
    seqs = [int.from_bytes(p[2:4], "big") for p in out]
    assert all(seq_diff(b, a) == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    # a NACK for packets sent before and after drops gets exactly those packets again
    resent: list[bytes] = []
    dt._send = lambda b: resent.append(bytes(b)) or True
    wanted = [seqs[3], seqs[13], seqs[21]]
    assert dt.handle_nack(wanted, pictures.now + 0.05) == 3, dt.drops
    assert [int.from_bytes(p[2:4], "big") for p in resent] == wanted
    assert [p[12:] for p in resent] == [out[3][12:], out[13][12:], out[21][12:]]
    # with the marker they first had: none mid-picture, at the end of the layer sent then
    assert [p[1] & 0x80 for p in resent] == [0, 0x80, 0x80]


def test_packets_lost_upstream_and_retransmitted_late_fill_their_place():
    """What the publisher resends late goes out with the number kept for it; a late packet of
    a layer not forwarded goes out as padding, so the subscriber sees no loss either way."""
    track, dt, out = subscribed()
    dt.set_target(1)
    pictures = Picture(track)
    pictures.send(key=True)
    held: list[bytes] = []
    feed = track.on_rtp
    # the next picture loses its 2nd (sid 0) and 5th (sid 2) packets on the way
    track.on_rtp = lambda data, now, layer=None: (
        held.append(data) if pictures.seq - 1000 in (7, 10) else feed(data, now, layer)
    )
    pictures.send()
    track.on_rtp = feed
    pictures.send()
    assert len(held) == 2 and len(out) == 4 + 3 + 4
    for data in held:  # the retransmissions arrive
        feed(data, pictures.now)
    assert len(out) == 13
    seqs = sorted(int.from_bytes(p[2:4], "big") for p in out)
    assert all(seq_diff(b, a) == 1 for a, b in zip(seqs, seqs[1:], strict=False)), seqs
    late_media, late_padding = out[-2], out[-1]
    assert late_media[12:] == held[0][12:]  # the sid 0 packet, as it was
    assert late_padding[0] & 0x20 and len(late_padding) == 12 + 4  # padding only
    assert late_padding[1] & 0x80 == 0
    assert dt.drops[5] == 0  # munger_reject: nothing refused
    feed(held[0], pictures.now)  # a second copy: refused
    assert len(out) == 13


def _with_vp9(sdp: str) -> str:
    """An aiortc offer as a browser writes it: VP9 profiles 0 and 2 after VP8 and H.264."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("m=video"):
            line += " 110 111 112"
        out.append(line)
        if line.startswith("a=rtpmap:97 VP8"):
            out += [
                "a=rtpmap:110 VP9/90000",
                "a=fmtp:110 profile-id=0",
                "a=rtpmap:111 rtx/90000",
                "a=fmtp:111 apt=110",
                "a=rtpmap:112 VP9/90000",
                "a=fmtp:112 profile-id=2",
            ]
    return "\r\n".join(out) + "\r\n"


@pytest.mark.parametrize("codec", ["", "video/VP9"])
async def test_the_codec_a_track_asks_for_comes_first_in_the_answer(codec):
    """A LiveKit client publishing VP9 offers VP8 first and relies on the server to answer VP9
    first; a track announced with codec video/VP9 gets that, one announced without keeps the
    offer's order. VP9 profile 2 is never accepted."""
    from aiortc import RTCPeerConnection

    from visio_client.media import PatternVideoTrack
    from visio_sfu.participant import Participant

    client = RTCPeerConnection()
    p = Participant("alice")
    try:
        track = PatternVideoTrack(0)
        client.addTransceiver(track, direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        p.add_track(track.id, "video", "camera", codec=codec)
        answer = await p.publish_offer(_with_vp9(client.localDescription.sdp))
        m_line = next(x for x in answer.splitlines() if x.startswith("m=video"))
        first = m_line.split()[3]
        assert ("VP9/90000" in answer) and "a=rtpmap:112" not in answer
        assert first == ("110" if codec else "97"), m_line
        (published,) = p.tracks.values()
        assert published.codec.mime.lower() == (codec or "video/VP8").lower()
        assert published.svc == bool(codec)
    finally:
        await p.close()
        await client.close()
