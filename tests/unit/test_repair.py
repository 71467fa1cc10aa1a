"""Loss repair without sockets: gaps in a publisher's stream asked for again (NACK), RTX
unwrapped and routed, duplicates dropped, late packets never switching a subscriber; and the
answers to subscribers' NACKs bounded (once a round trip, a byte budget), with the RTT from
their receiver reports; a failing sink does not take the fan-out down."""

from __future__ import annotations

from struct import pack

from tests.support.rtp import send, simulcast_track, vp8_payload, vp8_track
from visio_sfu.downtrack import DownTrack
from visio_sfu.media import Codec
from visio_sfu.publish import _rtx_for
from visio_sfu.publisher import BURST, DUPLICATE, LATE, MAX_MISSING, NEW, ReceiveStats
from visio_sfu.router import RtpRouter
from visio_sfu.rtp import rtcp
from visio_sfu.rtp.codecs import vp8_descriptor
from visio_sfu.rtp.header import build_rtp, payload_offset, unwrap_rtx
from visio_sfu.stats import DropReason


def rtx_of(packet: bytes, rtx_pt: int, rtx_ssrc: int, rtx_seq: int) -> bytes:
    """The RTX retransmission of ``packet`` (RFC 4588: OSN, then the original payload)."""
    off = payload_offset(packet)
    osn = packet[2:4]
    ts = int.from_bytes(packet[4:8], "big")
    head = build_rtp(rtx_pt, rtx_seq, ts, rtx_ssrc, b"", marker=bool(packet[1] & 0x80))
    return head + osn + packet[off:]


def test_unwrap_rtx_gives_back_the_original():
    original = build_rtp(96, 4242, 90000, 0xAAAA, vp8_payload(7, 1, True), marker=True)
    rtx = rtx_of(original, 97, 0xBBBB, 11)
    assert bytes(unwrap_rtx(rtx, 96, 0xAAAA)) == original
    padding_only = bytearray(build_rtp(97, 12, 0, 0xBBBB, b"\x00" * 3 + b"\x04"))
    padding_only[0] |= 0x20  # P bit: the 4 bytes are padding
    assert unwrap_rtx(bytes(padding_only), 96, 0xAAAA) is None
    assert unwrap_rtx(b"\x80\x61", 96, 1) is None


def test_the_rtx_payload_type_is_found_by_its_apt():
    codecs = [
        Codec("video/VP8", 90000, 96),
        Codec("video/rtx", 90000, 97, parameters={"apt": 96}),
        Codec("video/rtx", 90000, 99, parameters={"apt": 98}),
    ]
    assert _rtx_for(codecs, 96) == 97 and _rtx_for(codecs, 100) is None


def test_rtx_streams_are_routed_by_fid_groups():
    r = RtpRouter()
    t = vp8_track()
    r.add(t, [0xAAAA], {0xBBBB: 0xAAAA, 0xCCCC: 0x1234})
    assert r.route(build_rtp(97, 1, 0, 0xBBBB, b"xx")) == (t, t.layers[0], True)
    assert r.route(build_rtp(97, 1, 0, 0xCCCC, b"xx")) is None  # its media SSRC is not ours


def test_receive_stats_track_gaps_duplicates_and_wraparound():
    st = ReceiveStats(repair=True)
    assert st.update(65534, 0, 0.0, 90000) == NEW
    assert st.update(2, 0, 0.01, 90000) == NEW  # 65535, 0, 1 missing, across the wrap
    assert sorted(st.missing) == [0, 1, 65535]
    assert st.update(0, 0, 0.02, 90000) == LATE and st.repaired == 1
    assert st.update(0, 0, 0.03, 90000) == DUPLICATE  # a second copy: not forwarded
    assert st.update(2, 0, 0.03, 90000) == DUPLICATE
    assert st.update(2 + 200, 0, 0.04, 90000) == NEW  # a jump over MAX_GAP: a restart
    assert st.missing == {}
    assert st.update(202 + 100, 0, 0.05, 90000) == NEW and len(st.missing) == 99
    assert st.update(302 + 100, 0, 0.06, 90000) == NEW
    burst = st.update(402 + 100, 0, 0.07, 90000)  # more missing than can be asked for
    assert burst == BURST and st.missing == {} and MAX_MISSING < 3 * 99
    audio = ReceiveStats(repair=False)
    audio.update(10, 0, 0.0, 48000)
    assert audio.update(5, 0, 0.0, 48000) == LATE  # untracked stream: late, forwarded


def test_the_publisher_is_asked_again_then_given_up_on():
    sent: list[bytes] = []
    t = vp8_track()
    t._send_rtcp = lambda b: sent.append(b) or True
    send(t, 0, 0xAAAA, 100, 0, 1, 1, True, 0.0)
    send(t, 0, 0xAAAA, 103, 3000, 2, 1, False, 0.001)  # 101, 102 missing
    asked = [set(rtcp.parse_nack(p)) for p in sent]
    assert asked == [{101, 102}]
    for i in range(1, 40):  # packets keep coming for 2 s; 101 and 102 never do
        send(t, 0, 0xAAAA, 103 + i, 3000 * i, 2 + i, 1, False, 0.05 * i)
    assert 4 <= len(sent) <= 5  # every 50 ms, 5 times at most
    assert not t.layers[0].stats.missing  # given up
    before = t.drops[DropReason.DUPLICATE]
    send(t, 0, 0xAAAA, 110, 0, 9, 1, False, 2.0)  # an old one again: a duplicate
    assert t.drops[DropReason.DUPLICATE] == before + 1


def test_a_distant_publisher_is_asked_again_once_a_round_trip():
    """Retransmissions that take 200 ms to come teach the round trip: later gaps are asked
    for again every 1.25 round trips, not every 50 ms (four duplicates of each before the
    first answer could come)."""
    sent: list[bytes] = []
    t = vp8_track()
    t._send_rtcp = lambda b: sent.append(b) or True
    seq, now = 100, 0.0
    send(t, 0, 0xAAAA, seq, 0, 1, 1, True, now)
    for _ in range(3):  # three gaps, each repaired 200 ms after its NACK
        seq += 2
        send(t, 0, 0xAAAA, seq, 3000, 2, 1, False, now)  # seq - 1 missing, asked for now
        for i in range(1, 4):
            send(t, 0, 0xAAAA, seq + i, 3000, 2, 1, False, now + 0.06 * i)
        send(t, 0, 0xAAAA, seq - 1, 3000, 2, 1, False, now + 0.2)  # the retransmission
        seq += 3
        now += 1.0
    assert abs(t.layers[0].stats.repair_rtt - 0.2) < 1e-6
    # a gap whose first retransmission was lost too: it comes 0.45 s after the first NACK;
    # the round trip learnt stays the least seen, not that
    seq += 2
    send(t, 0, 0xAAAA, seq, 3000, 2, 1, False, now)
    for i in range(1, 9):
        send(t, 0, 0xAAAA, seq + i, 3000, 2, 1, False, now + 0.06 * i)
    send(t, 0, 0xAAAA, seq - 1, 3000, 2, 1, False, now + 0.45)
    seq += 8
    now += 1.0
    assert abs(t.layers[0].stats.repair_rtt - 0.2) < 1e-6
    sent.clear()
    send(t, 0, 0xAAAA, seq + 2, 3000, 2, 1, False, now)  # seq + 1 missing, never comes
    for i in range(1, 20):
        send(t, 0, 0xAAAA, seq + 2 + i, 3000, 2, 1, False, now + 0.05 * i)
    asked = [set(rtcp.parse_nack(p)) for p in sent]
    assert asked == [{seq + 1}] * 4, asked  # at 0, 0.25, 0.5, 0.75 s: not 5 within 0.2 s


def test_a_late_keyframe_packet_never_switches_a_subscriber():
    t = simulcast_track()
    out: list[bytes] = []
    dt = DownTrack(t, lambda b: out.append(bytes(b)) or True, "PB")
    t.attach(dt)
    dt.bind(1, 100, {})
    send(t, 0, 111, 10, 0, 1, 1, False, 0.0)
    send(t, 0, 111, 12, 0, 3, 1, False, 0.01)  # 11 missing
    send(t, 0, 111, 11, 0, 2, 1, True, 0.02)  # a keyframe's packet, late: no start on it
    assert dt.current_layer == -1 and out == []
    send(t, 0, 111, 13, 3000, 4, 2, True, 0.03)  # a new keyframe starts it
    assert dt.current_layer == 0 and len(out) == 1


def test_subscriber_nacks_are_answered_once_a_round_trip_within_a_budget():
    t = vp8_track()
    out: list[bytes] = []
    dt = DownTrack(t, lambda b: out.append(bytes(b)) or True, "PB")
    t.attach(dt)
    dt.bind(1, 100, {})
    for i in range(60):  # 2 s of 1 KB packets; the cache keeps the last second
        payload = vp8_payload(10 + i, 1, i == 0) + bytes(1000)
        t.on_rtp(build_rtp(96, 1000 + i, 3000 * i, 111, payload), i / 30, t.layers[0])
    seqs = [int.from_bytes(p[2:4], "big") for p in out]
    out.clear()
    now = 2.0
    t.update_rates(now)
    share = t.layers[0].bitrate / 8 * 0.5  # bytes a second the retransmissions may take
    assert share > 4000
    assert dt.handle_nack(seqs[-10:], now) == 10
    assert dt.handle_nack(seqs[-10:] * 20, now + 0.01) == 0  # the same again, at once
    assert dt.drops[DropReason.NACK_DUPLICATE] == 200
    assert dt.handle_nack(seqs[-5:], now + 0.1) == 5  # a round trip later (100 ms default)
    # every cached packet asked for again and again, each time past the once-a-round-trip
    # limit: the budget (4 KB/s floor, one second of it saved) caps what is resent
    out.clear()
    for k in range(8):
        dt.handle_nack(seqs[-29:], now + 0.2 + k * 0.08)
    resent = sum(len(p) for p in out)
    assert resent <= share * (0.8 + 1), (resent, share)
    assert dt.drops[DropReason.NACK_BUDGET] > 0


def test_the_round_trip_comes_from_receiver_reports():
    t = vp8_track()
    dt = DownTrack(t, lambda b: True, "PB")
    dt.bind(1, 100, {})
    t.attach(dt)
    send(t, 0, 111, 1, 0, 1, 1, True, 0.0)
    sr = dt.sender_report(10.0)
    ntp_hi, ntp_lo = int.from_bytes(sr[8:12], "big"), int.from_bytes(sr[12:16], "big")
    lsr = ((ntp_hi << 32 | ntp_lo) >> 16) & 0xFFFFFFFF
    dt.handle_report(0, 0, lsr, int(0.02 * 65536), 10.1)  # 100 ms later, held 20 ms there
    assert abs(dt.rtt - 0.08) < 0.002


class Raising:
    def __init__(self) -> None:
        self.closed = False

    def write(self, *args) -> None:
        raise RuntimeError("broken sink")

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_is_detached_and_the_others_go_on():
    t = vp8_track()
    bad = Raising()
    t.attach(bad)
    out: list[bytes] = []
    dt = DownTrack(t, lambda b: out.append(bytes(b)) or True, "PB")
    t.attach(dt)
    dt.bind(1, 100, {})
    send(t, 0, 111, 1, 0, 1, 1, True, 0.0)
    send(t, 0, 111, 2, 3000, 2, 1, False, 0.03)
    assert len(out) == 2 and bad.closed and bad not in t.sinks


def test_build_nack_is_exact():
    seqs = [5, 6, 21, 22, 40, 65535, 0]
    assert sorted(set(rtcp.parse_nack(rtcp.build_nack(1, 2, seqs)))) == sorted(seqs)
    assert rtcp.build_nack(1, 2, [])[:4] == pack("!BBH", 0x81, 205, 2)


def test_a_nack_before_the_epoch_of_a_reused_transceiver_is_answered_with_padding():
    """A transceiver reused (breakout rooms: a participant moved and back) goes on from the
    last number it sent; if the subscriber missed the end of the old stream, nothing is left to
    resend: a padding-only packet fills each hole (aiortc's jitter buffer would otherwise wait
    for it for seconds), with the new epoch's first timestamp. Older numbers stay refused."""
    old, new = vp8_track(), vp8_track()
    out: list[bytes] = []
    send_out = lambda b: out.append(bytes(b)) or True  # noqa: E731
    first = DownTrack(old, send_out, "PB")
    old.attach(first)
    first.bind(7, 100, {})
    for i in range(10):
        old.on_rtp(
            build_rtp(96, 500 + i, 3000 * i, 111, vp8_payload(i, 1, i == 0)), i / 30, old.layers[0]
        )
    last = int.from_bytes(out[-1][2:4], "big")
    old.detach(first)
    second = DownTrack(new, send_out, "PB")  # the same transceiver: the same munger
    second.munger = first.munger
    second.munger.new_epoch()
    new.attach(second)
    second.bind(7, 100, {})
    out.clear()
    new.on_rtp(build_rtp(96, 9000, 777, 222, vp8_payload(1, 1, True)), 1.0, new.layers[0])
    assert int.from_bytes(out[0][2:4], "big") == (last + 1) & 0xFFFF
    epoch_ts = int.from_bytes(out[0][4:8], "big")
    out.clear()
    assert second.handle_nack([(last - 1) & 0xFFFF, last], 1.1) == 0  # nothing resent ...
    assert len(out) == 2 and second.drops[DropReason.NACK_MISSING] == 0  # ... padding instead
    for packet, seq in zip(out, [(last - 1) & 0xFFFF, last], strict=True):
        assert packet[0] == 0xA0 and len(packet) == 16 and packet[-1] == 4  # padding only
        assert int.from_bytes(packet[2:4], "big") == seq
        assert int.from_bytes(packet[4:8], "big") == epoch_ts
        assert int.from_bytes(packet[8:12], "big") == 7 and packet[1] & 0x7F == 100
    out.clear()
    second.handle_nack([(last - 600) & 0xFFFF], 1.2)  # far before: refused, counted
    assert out == [] and second.drops[DropReason.NACK_MISSING] == 1


def test_nacks_for_what_was_sent_before_a_layer_switch_are_answered_from_the_old_layer():
    """A subscriber moved down a layer (a congested link) asks for packets of the layer it
    left, lost on the way: they are resent from that layer's cache, numbered, timed and
    picture-numbered as first sent. Over the budget, a padding packet with the packet's own
    timestamp takes each one's number (aiortc's jitter buffer waits seconds for a number,
    and asks for it only once; a padding packet with another timestamp made an empty frame
    that stopped aiortc's decoder for good)."""
    track = simulcast_track()
    out: list[bytes] = []
    dt = DownTrack(track, lambda b: out.append(bytes(b)) or True, "PB")
    track.attach(dt)
    dt.bind(0xBEEF, 100, {})
    dt.set_target(0)  # q first: the f epoch that follows has picture id offsets of its own
    for i in range(3):
        send(track, 0, 111, 990 + i, 3000 * i, 290 + i, 9, i == 0, i / 100)
    assert len(out) == 3
    out.clear()
    dt.set_target(2)
    for i in range(10):  # layer 2 (f): a keyframe then deltas, 1 KB each
        payload = vp8_payload(7000 + i, 200, i == 0) + bytes(1000)
        data = build_rtp(96, 50000 + i, 5000 + 3000 * i, 333, payload)
        track.on_rtp(data, i / 30, track.layers[2])
        send(track, 0, 111, 1000 + i, 5000 + 3000 * i, 300 + i, 10, i == 0, i / 30)
    first = list(out)
    assert len(first) == 10 and dt.current_layer == 2
    dt.set_target(0)
    send(track, 0, 111, 1010, 35000, 310, 11, True, 10 / 30)  # q keyframe: switched
    assert dt.current_layer == 0 and len(out) == 11
    now = 0.4
    track.update_rates(now)
    out.clear()
    lost = first[6:9]
    seqs = [int.from_bytes(p[2:4], "big") for p in lost]
    assert dt.handle_nack(seqs, now) == 3
    assert out == lost  # as first sent: number, timestamp, picture id, payload
    pids = [vp8_descriptor(memoryview(p)[payload_offset(p) :])[1] for p in lost]
    assert pids == [299, 300, 301]  # continuous from q's 292: offsets were not (0, 0)
    # asked again and again (past the once-a-round-trip limit), over the budget: padding
    # packets, each with the timestamp of the packet it stands for
    padded = 0
    for k in range(1, 30):  # within PREVIOUS_EPOCH_FOR of the switch
        out.clear()
        dt.handle_nack(seqs, now + k * 0.08)
        for p in out:
            if p[0] & 0x20 and len(p) == 16:  # padding only
                padded += 1
                original = lost[seqs.index(int.from_bytes(p[2:4], "big"))]
                assert p[4:8] == original[4:8]  # its frame's timestamp
    assert padded > 0 and dt.drops[DropReason.NACK_BUDGET] >= padded
    # a number never sent on either layer: nothing
    out.clear()
    assert dt.handle_nack([(seqs[-1] + 500) & 0xFFFF], now + 4) == 0 and out == []
