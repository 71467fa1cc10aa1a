"""VP9 SVC on bytes: the payload descriptor (RFC 9628), the per-subscriber spatial/temporal
layer choice inside one stream, and what a subscriber receives (numbering, marker, NACKs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visio_sfu.allocator import UP_HOLD, allocate, layer_rates
from visio_sfu.downtrack import DownTrack
from visio_sfu.forwarder import ALL_TEMPORAL, FORWARD, OTHER_LAYER, WAITING_KEYFRAME, SvcForwarder
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
    assert f.decide_svc(0x68, 0, 1, False, False) == OTHER_LAYER  # up: waits for U, T0, key
    assert f.decide_svc(0x68, 0, 2, True, False) == OTHER_LAYER  # U two layers up: its
    assert f.temporal == 0  # frame may refer to a T1 frame that was dropped
    assert f.decide_svc(0x68, 0, 1, True, False) == FORWARD and f.temporal == 1  # one step
    assert f.decide_svc(0x68, 0, 2, True, False) == FORWARD and f.temporal == 2
    f.temporal_target = 0
    assert f.decide_svc(0x68, 0, 2, True, False) == OTHER_LAYER and f.temporal == 0
    f.temporal_target = ALL_TEMPORAL
    assert f.decide_svc(0x68, 0, 0, False, False) == FORWARD  # a T0 picture: every layer
    assert f.temporal == ALL_TEMPORAL


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
    # one temporal layer: no level below spatial layer 0 at full rate
    assert rates[:2] == [0.0, 0.0] and 0 < rates[2] < rates[3] < rates[4]
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


#: L3T3 as libwebrtc encodes it: T0 T2 T1 T2 ..., U set on T1 and T2 frames (they refer to
#: lower temporal layers only), each picture's reference (pid offset) by temporal layer
T_PATTERN = (0, 2, 1, 2)
REFERENCE = {0: 4, 1: 2, 2: 1}


class L3T3(Picture):
    """Pictures in the L3T3 temporal pattern, 30 a second; a keyframe first and when one is
    asked for (as a publisher answers a PLI)."""

    def next(self) -> None:
        tid = T_PATTERN[self.pid % 4]
        asked = self.track.keyframe_requests
        key = self.pid == 0 or asked != getattr(self, "asked", asked)
        self.asked = asked
        self.send(key=key, tid=0 if key else tid, u=tid > 0)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * 30)):
            self.next()


def forwarded_pictures(out: list[bytes]) -> list[tuple[int, int, int]]:
    """(picture id, spatial layer, temporal layer) of each packet a subscriber got."""
    result = []
    for p in out:
        payload = memoryview(p)[payload_offset(p) :]
        d = vp9_layers(payload)
        assert d is not None
        result.append((((payload[1] & 0x7F) << 8) | payload[2], d[1], d[2]))
    return result


def assert_decodable(out: list[bytes], first_key: int) -> None:
    """Continuous numbering, a marker on the last packet of each picture and only there, and
    every forwarded picture's reference forwarded too (from the keyframe ``first_key`` on)."""
    seqs = [int.from_bytes(p[2:4], "big") for p in out]
    assert all(seq_diff(b, a) == 1 for a, b in zip(seqs, seqs[1:], strict=False)), seqs
    pics = forwarded_pictures(out)
    pids = [pid for pid, _, _ in pics]
    ends = [i == len(pids) - 1 or pids[i + 1] != pid for i, pid in enumerate(pids)]
    assert [bool(p[1] & 0x80) for p in out] == ends
    sent = set(pids)
    for pid, _, tid in pics:
        if pid > first_key:
            assert pid - REFERENCE[tid] in sent, (pid, tid, sorted(sent))


def test_temporal_layers_are_measured_per_layer():
    track, dt, out = subscribed()
    pictures = L3T3(track)
    pictures.run(1.0)
    track.update_rates(pictures.now)
    pictures.run(1.0)
    track.update_rates(pictures.now)
    base = track.spatial[0]
    fps = base.temporal_fps
    assert fps[0] == pytest.approx(7.5, rel=0.1) and fps[1] == pytest.approx(7.5, rel=0.1)
    assert fps[2] == pytest.approx(15, rel=0.1)
    # what the freeze threshold and the fps cap read: the whole rate, halved per layer above
    assert [base.frame_rate(t) for t in range(3)] == pytest.approx([7.5, 15, 30], rel=0.1)
    t0, t1, t2 = base.temporal_bitrate
    assert t0 == pytest.approx(t1, rel=0.1) and t2 == pytest.approx(2 * t0, rel=0.1)
    assert sum(base.temporal_bitrate) == pytest.approx(base.bitrate, rel=0.01)
    rates = layer_rates(track, pictures.now, dt.max_layer)
    # T0 (a quarter of the frames), T0+T1 (half), then each spatial layer at the full rate
    assert rates[0] == pytest.approx(rates[2] / 4, rel=0.1)
    assert rates[1] == pytest.approx(rates[2] / 2, rel=0.1)
    assert 0 < rates[0] < rates[1] < rates[2] < rates[3] < rates[4]


def test_allocator_lowers_the_frame_rate_when_even_the_lowest_layer_does_not_fit():
    """A subscriber whose estimate is below spatial layer 0 at full frame rate gets T0 (or
    T0+T1), never nothing; the forwarded stream stays decodable and continuous; when the
    estimate rises it goes back up, temporal layers at a switching point."""
    track, dt, out = subscribed()
    participant = SimpleNamespace(
        subscriber=SimpleNamespace(bandwidth=None, downtracks={track.sid: dt})
    )
    pictures = L3T3(track)

    def rounds(seconds: float) -> None:  # the room's timer: every 0.25 s
        for _ in range(round(seconds * 4)):
            pictures.run(0.25)
            track.update_rates(pictures.now)
            allocate([participant], None, pictures.now)

    rounds(1.0)
    assert dt.level == 4 and dt.current_layer == 2 and dt.forwarder.temporal == ALL_TEMPORAL
    full0 = layer_rates(track, pictures.now, dt.max_layer)[2]
    participant.subscriber.bandwidth = full0 * 0.4  # T0 fits (a quarter), T0+T1 not
    rounds(0.25)
    assert dt.level == 0 and dt.target_layer == 0 and dt.forwarder.temporal_target == 0
    start = len(out)
    rounds(1.0)
    got = forwarded_pictures(out[start:])
    assert {(sid, tid) for _, sid, tid in got} == {(0, 0)}
    assert len({pid for pid, _, _ in got}) == pytest.approx(7.5, abs=1.5)  # a quarter
    participant.subscriber.bandwidth = full0 * 0.7  # T0+T1 fits (held a while first)
    rounds(UP_HOLD + 0.5)
    assert dt.level == 1 and dt.forwarder.temporal == 1
    participant.subscriber.bandwidth = full0 / 1000  # far below: T0 still, never paused
    rounds(1.0)
    assert dt.level == 0 and dt.target_layer == 0 and not dt.need_keyframe
    participant.subscriber.bandwidth = None  # no limit: all layers again
    rounds(UP_HOLD + 0.5)
    assert dt.level == 4 and dt.current_layer == 2 and dt.forwarder.temporal == ALL_TEMPORAL
    assert_decodable(out, first_key=0)
    assert dt.drops[5] == 0


def test_a_small_tile_gets_spatial_layer_0_at_its_full_frame_rate():
    """A tile smaller than spatial layer 0 (160x90 against 320x180) is capped at spatial
    layer 0 at the full frame rate, not at T0, the lowest level of the same size."""
    track, dt, out = subscribed()
    dt.max_height = 90
    participant = SimpleNamespace(
        subscriber=SimpleNamespace(bandwidth=None, downtracks={track.sid: dt})
    )
    pictures = L3T3(track)
    for _ in range(4):
        pictures.run(0.25)
        track.update_rates(pictures.now)
        allocate([participant], None, pictures.now)
    assert dt.level == 2 and dt.forwarder.temporal_target == ALL_TEMPORAL
    assert participant.subscriber.wanted_bitrate > 0  # probing aims at the full frame rate
    assert participant.subscriber.wanted_bitrate == pytest.approx(
        layer_rates(track, pictures.now, dt.max_layer)[2]
    )


def test_a_room_with_vp9_svc_simulcast_and_single_stream_videos():
    """One subscriber receives a VP9 SVC camera, a simulcast camera and a single-stream
    screen share: the selection is five levels wide for all of them (a crash once: the single
    stream's three levels did not fit the row)."""
    from tests.support.rtp import simulcast_track

    track, dt, out = subscribed()
    sim = simulcast_track()
    single = Publisher(
        "TR_s", "PA_s", "video", "screen_share", "1", Codec("video/VP8", 90000, 96), {},
        lambda b: True, 2, height=720, width=1280,
    )  # fmt: skip
    downtracks = {track.sid: dt}
    for other in (sim, single):
        odt = DownTrack(other, lambda b: True, "PB")
        odt.bind(0xCAFE + len(downtracks), 100, {})
        other.attach(odt)
        downtracks[other.sid] = odt
    participant = SimpleNamespace(subscriber=SimpleNamespace(bandwidth=None, downtracks=downtracks))
    pictures = L3T3(track)
    for _ in range(4):
        pictures.run(0.25)
        track.update_rates(pictures.now)
        for layer in sim.layers:
            layer.bitrate, layer.last_packet = 300_000.0, pictures.now
        allocate([participant], None, pictures.now)
    assert dt.level == 4
    assert downtracks[sim.sid].level == 2 and downtracks[single.sid].level == 0


def test_temporal_up_switch_waits_for_a_switching_point():
    track, dt, out = subscribed()
    dt.set_level(0)  # spatial layer 0, T0 only
    pictures = L3T3(track)
    pictures.run(1.0)  # from the keyframe (pid 0): T0 pictures only
    assert {tid for _, _, tid in forwarded_pictures(out)} == {0}
    assert pictures.pid % 4 == 2  # the next picture is a T1 one, with U
    dt.set_level(2)  # every temporal layer
    pictures.next()  # T1, U: one step up (it refers to T0 only)
    assert dt.forwarder.temporal == 1 and forwarded_pictures(out)[-1][2] == 1
    pictures.next()  # T2, U: another step (it refers to the T1 frame just forwarded)
    assert dt.forwarder.temporal == 2 and forwarded_pictures(out)[-1][2] == 2
    dt.set_level(0)
    pictures.run(0.5)
    while pictures.pid % 4 != 1:  # just after a T0 picture
        pictures.next()
    assert dt.forwarder.temporal == 0
    dt.set_level(2)
    before = len(out)
    pictures.next()  # a T2 frame with U while only T0 is forwarded: its T1 reference is not
    assert len(out) == before and dt.forwarder.temporal == 0
    pictures.next()  # T1, U
    pictures.next()  # T2, U
    assert dt.forwarder.temporal == 2
    assert_decodable(out, first_key=0)


def temporal_metric(dt: DownTrack) -> float:
    """visio_downtrack_temporal_layer for this pair, as /metrics shows it."""
    from signaling.metrics import SFUCollector

    sfu = SimpleNamespace(layers=lambda: [{"room": "r", **dt.layer_info()}])
    collector = SFUCollector(sfu, None)  # type: ignore[arg-type]
    family = next(m for m in collector._layers() if m.name == "visio_downtrack_temporal_layer")
    (sample,) = family.samples
    return sample.value


def test_a_frame_rate_cap_limits_the_temporal_layer():
    """UpdateTrackSettings' fps (LiveKit) caps the temporal layer: 15 of 30 frames a second
    is T0+T1 in L3T3, whatever the bandwidth."""
    track, dt, out = subscribed()
    participant = SimpleNamespace(
        subscriber=SimpleNamespace(bandwidth=None, downtracks={track.sid: dt})
    )
    dt.max_fps = 15
    pictures = L3T3(track)
    for _ in range(8):
        pictures.run(0.25)
        track.update_rates(pictures.now)
        allocate([participant], None, pictures.now)
    assert dt.level == 4 and dt.forwarder.temporal_target == 1
    start = len(out)
    pictures.run(1.0)
    assert temporal_metric(dt) == 1
    got = forwarded_pictures(out[start:])
    assert {tid for _, _, tid in got} == {0, 1} and {sid for _, sid, _ in got} == {0, 1, 2}
    assert len({pid for pid, _, _ in got}) == pytest.approx(15, abs=2)
    dt.max_fps = 0
    allocate([participant], None, pictures.now)
    assert dt.forwarder.temporal_target == ALL_TEMPORAL
    pictures.run(0.2)
    assert temporal_metric(dt) == ALL_TEMPORAL
    assert_decodable(out, first_key=0)


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


async def test_livekit_track_setting_fps_reaches_the_subscriber():
    """LiveKit's UpdateTrackSettings carries fps: the session hands it to the participant's
    DownTrack (the cap the allocator applies, above), with width/height and quality."""
    from livekit.protocol import rtc

    from signaling.livekit.session import LiveKitSession
    from visio_sfu.participant import Participant

    p = Participant("bob")
    try:
        track = vp9_track()
        assert p.subscriber is not None
        dt = p.subscriber.add(track)
        session = SimpleNamespace(_p=lambda: p)
        req = rtc.UpdateTrackSettings(track_sids=[track.sid], fps=10, height=360)
        await LiveKitSession.on_track_setting(session, req)  # type: ignore[arg-type]
        assert dt.max_fps == 10 and dt.max_height == 360 and dt.visible
        req = rtc.UpdateTrackSettings(track_sids=[track.sid], height=360)
        await LiveKitSession.on_track_setting(session, req)  # type: ignore[arg-type]
        assert dt.max_fps == 0  # not given: no cap
    finally:
        await p.close()
