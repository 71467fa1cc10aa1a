"""DownTrack: layer switching at keyframes, with sequence numbers, timestamps, VP8 picture id
and TL0PICIDX kept continuous for the subscriber."""

from tests.support.rtp import send, simulcast_track, vp8_track
from visio_sfu.downtrack import DownTrack
from visio_sfu.munger import seq_diff
from visio_sfu.rtp.codecs import vp8_descriptor
from visio_sfu.rtp.header import payload_offset
from visio_sfu.stats import Stats


def test_switch_waits_for_a_keyframe_and_keeps_everything_continuous():
    track = simulcast_track()
    out: list[bytes] = []
    dt = DownTrack(track, lambda b: out.append(bytes(b)) or True, "PB")
    track.attach(dt)
    dt.bind(0xBEEF, 100, {})
    # layer 0 (q): keyframe then deltas; layer 2 (f) runs with its own numbering
    send(track, 0, 111, 1000, 5000, 300, 10, True, 0.00)
    send(track, 2, 333, 50000, 5000, 7000, 200, False, 0.00)
    for i in range(1, 4):
        send(track, 0, 111, 1000 + i, 5000 + 3000 * i, 300 + i, 10 + i, False, i / 30)
        send(track, 2, 333, 50000 + i, 5000 + 3000 * i, 7000 + i, 200 + i, False, i / 30)
    assert len(out) == 4 and dt.current_layer == 0
    dt.set_target(2)
    # f delta frame: not yet (waiting for an f keyframe); q keeps flowing meanwhile
    send(track, 2, 333, 50004, 17000, 7004, 204, False, 4 / 30)
    send(track, 0, 111, 1004, 17000, 304, 14, False, 4 / 30)
    assert len(out) == 5 and dt.current_layer == 0
    # f keyframe: switch; q packets are dropped from now on
    send(track, 2, 333, 50005, 20000, 7005, 205, True, 5 / 30)
    send(track, 0, 111, 1005, 20000, 305, 15, False, 5 / 30)
    send(track, 2, 333, 50006, 23000, 7006, 206, False, 6 / 30)
    assert dt.current_layer == 2 and len(out) == 7 and dt.switches == 1  # the start is none
    seqs = [int.from_bytes(p[2:4], "big") for p in out]
    assert all(seq_diff(b, a) == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    descriptors = [vp8_descriptor(memoryview(p)[payload_offset(p) :]) for p in out]
    pids = [d[1] for d in descriptors]
    tl0s = [d[3] for d in descriptors]
    assert pids == [300, 301, 302, 303, 304, 305, 306], pids
    assert tl0s == [10, 11, 12, 13, 14, 15, 16], tl0s
    assert {p[8:12] for p in out} == {(0xBEEF).to_bytes(4, "big")}
    ts = [int.from_bytes(p[4:8], "big") for p in out]
    assert all(0 < (b - a) % 2**32 <= 6000 for a, b in zip(ts, ts[1:], strict=False)), ts


def test_pause_and_resume():
    track = simulcast_track()
    out: list[bytes] = []
    dt = DownTrack(track, lambda b: out.append(bytes(b)) or True, "PB")
    track.attach(dt)
    dt.bind(1, 100, {})
    send(track, 0, 111, 1, 0, 1, 1, True, 0)
    dt.set_target(-1)  # hidden tile
    send(track, 0, 111, 2, 3000, 2, 2, True, 0.03)
    assert len(out) == 1 and dt.current_layer == -1
    dt.set_target(0)
    send(track, 0, 111, 3, 6000, 3, 3, False, 0.06)
    assert len(out) == 1  # waits for a keyframe
    send(track, 0, 111, 4, 9000, 4, 4, True, 0.09)
    assert len(out) == 2


def test_closed_tracks_hand_their_counters_to_the_totals_once():
    """The SFU's totals never go down when a track or a subscriber goes (Prometheus counters)."""
    stats = Stats()
    retired = stats.retired
    track = vp8_track(stats=stats)
    leaving, staying = (DownTrack(track, lambda b: True, sid) for sid in ("PB", "PC"))
    for dt in (leaving, staying):
        track.attach(dt)
        dt.bind(0xBEEF, 100, {})
    for i in range(5):
        send(track, 0, 111, 1000 + i, 3000 * i, 300 + i, 10, i == 0, i / 30)
    assert leaving.packets == staying.packets == 5
    leaving.close()  # a subscriber leaves
    leaving.close()
    assert retired["packets_out"] == 5 and retired["packets_in"] == 0
    track.close()  # the publisher leaves: its own counters and its remaining downtracks'
    track.close()
    staying.close()  # the subscriber side drops it later: not counted twice
    assert retired["packets_in"] == 5 and retired["bytes_in"] == track.bytes > 0
    assert retired["packets_out"] == 10 and retired["bytes_out"] == 2 * staying.bytes
