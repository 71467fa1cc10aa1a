"""Transport-cc feedback to publishers (issue 17: publisher feedback from what is really
received): what TwccResponder reports, read back with the parser a sender would use, and a
GCC-like sender (our own SendSideEstimator) finding a capped uplink from it alone."""

from __future__ import annotations

from visio_sfu.bwe import SendSideEstimator
from visio_sfu.rtp import rtcp
from visio_sfu.rtp.header import build_rtp
from visio_sfu.rtp.twcc import parse_feedback
from visio_sfu.twcc_responder import MAX_SPAN, PER_PACKET, TwccResponder

EXT = 5


def packet(seq: int, ssrc: int = 1111, size: int = 100) -> bytes:
    """A client's RTP packet with transport-wide number ``seq`` (and a mid, as Chromium)."""
    ext = {3: b"0", EXT: (seq & 0xFFFF).to_bytes(2, "big")}
    return build_rtp(96, seq & 0xFFFF, 0, ssrc, bytes(size), extensions=ext)


def read(feedback: list[bytes]) -> list[tuple[int, float | None]]:
    """(sequence number, arrival) from each packet, as the client's congestion control reads
    them; every packet a valid RTCP transport-cc feedback."""
    out = []
    for fb in feedback:
        ((pt, fmt, body),) = list(rtcp.iter_rtcp(fb))
        assert (pt, fmt) == (rtcp.RTPFB, rtcp.TWCC)
        parsed = parse_feedback(body)
        assert parsed is not None
        out += list(zip(parsed[1], parsed[2], strict=True))
    return out


def test_arrivals_and_losses_are_reported_in_order_with_their_spacing():
    r = TwccResponder(EXT, sender_ssrc=42)
    for seq in (10, 11, 13, 12, 15):  # 14 lost, 12 reordered
        r.record(packet(seq), 100.0 + seq * 0.01)
    got = read(r.feedback())
    assert [s for s, _ in got] == [10, 11, 12, 13, 14, 15]
    assert got[4][1] is None
    times = {s: t for s, t in got if t is not None}
    for seq in (11, 12, 13, 15):  # the receiver's clock: only differences mean something
        assert abs((times[seq] - times[10]) - (seq - 10) * 0.01) < 0.0003
    assert r.reported == 5 and r.sent == 1
    # the next feedback starts after the last one: 16 lost, 17 arrived
    r.record(packet(17), 100.3)
    assert [(s, t is None) for s, t in read(r.feedback())] == [(16, True), (17, False)]
    assert r.feedback() == []  # nothing new: nothing sent


def test_sequence_numbers_wrap_and_feedback_counts_run_on():
    r = TwccResponder(EXT, 42)
    seqs = list(range(65530, 65536)) + list(range(0, 6))
    counts = []
    for k, seq in enumerate(seqs):
        r.record(packet(seq), 5.0 + k * 0.005)
        if k % 4 == 3:
            for fb in r.feedback():
                counts.append(parse_feedback(list(rtcp.iter_rtcp(fb))[0][2])[0])
    assert counts == [0, 1, 2]
    r2 = TwccResponder(EXT, 42)
    for k, seq in enumerate(seqs):
        r2.record(packet(seq), 5.0 + k * 0.005)
    assert [s for s, _ in read(r2.feedback())] == seqs


def test_a_late_packet_already_reported_lost_is_not_reported_again():
    r = TwccResponder(EXT, 42)
    for seq in (1, 3):
        r.record(packet(seq), 1.0)
    assert [s for s, _ in read(r.feedback())] == [1, 2, 3]
    r.record(packet(2), 1.2)  # too late
    assert r.feedback() == []
    r.record(packet(4), 1.3)
    assert [s for s, _ in read(r.feedback())] == [4]


def test_a_long_span_is_split_and_a_restart_starts_anew():
    r = TwccResponder(EXT, 42)
    for seq in range(1000):
        r.record(packet(seq), seq * 0.001)
    fbs = r.feedback()
    assert len(fbs) == -(-1000 // PER_PACKET)
    assert all(len(fb) < 1200 for fb in fbs)
    assert [s for s, _ in read(fbs)] == list(range(1000))
    # the client numbers anew from far away (a new transport): reported from there, no
    # feedback full of "lost" for the numbers in between
    for seq in (40000, 40001):
        r.record(packet(seq), 2.0)
    assert [s for s, _ in read(r.feedback())] == [40000, 40001]


def test_bad_packets_are_skipped_and_the_list_is_bounded():
    r = TwccResponder(EXT, 42, limit=10)
    r.record(build_rtp(96, 1, 0, 1, b"x"), 0.0)  # no extension
    r.record(build_rtp(96, 2, 0, 1, b"x", extensions={EXT: b"\x01"}), 0.0)  # one byte
    r.record(bytes(12) + b"\x10", 0.0)  # an extension bit and nothing after
    assert r.feedback() == []
    for seq in range(20):
        r.record(packet(seq), seq * 0.001)
    assert r.dropped == 10
    assert [s for s, _ in read(r.feedback())] == list(range(10))


def test_a_gcc_sender_finds_a_capped_uplink_from_this_feedback():
    """A client sending into a 600 kbit/s bottleneck (a 300 ms drop-tail queue) at what its
    estimator (GCC-like: ours) makes of our feedback alone, starting below the cap: the
    estimate rises to the cap, the delay building in the queue is seen (overuse) and it
    backs off, and it stays near the cap."""
    r = TwccResponder(EXT, 42)
    est = SendSideEstimator(initial=400_000)
    cap, size = 600_000, 1200
    now = link_free = 0.0
    seq = 0
    estimates = []
    while now < 12.0:
        interval = size * 8 / est.estimate
        end = now + 0.1
        while now < end:
            est.on_sent(seq, size, now)
            start = max(now, link_free)
            if start - now <= 0.3:
                link_free = start + size * 8 / cap
                r.record(packet(seq, size=size - 12 - 8), link_free + 0.02)
            seq += 1
            now += interval
        for fb in r.feedback():
            ((_pt, _fmt, body),) = list(rtcp.iter_rtcp(fb))
            _count, seqs, arrivals = parse_feedback(body)
            est.on_feedback(seqs, arrivals, now)
        estimates.append((now, est.estimate))
    assert est.overuses >= 1  # the queue's delay came through the feedback
    late = [e for t, e in estimates if t > 4.0]
    assert 0.5 * cap < min(late) and max(late) < 1.2 * cap, late


def test_a_client_jumping_its_numbers_cannot_make_feedback_pile_up():
    """A publisher moving its transport-wide number on by just under a restart's jump with
    every packet: each call reports MAX_SPAN numbers at most (a few packets), not the whole
    range it claims (thousands of packets a tick on the event loop)."""
    r = TwccResponder(EXT, 42)
    for k in range(400):
        r.record(packet((k * 1999) & 0xFFFF), k * 0.001)
    fbs = r.feedback()
    assert len(fbs) <= -(-MAX_SPAN // PER_PACKET)
    assert sum(len(fb) for fb in fbs) < 12_000


def test_a_feedback_where_nothing_arrived_keeps_the_reference_time():
    """A burst loss longer than one feedback packet: the packet reporting only losses keeps
    the reference time of the one before (0 would make a sender reset its clock offset), and
    the run of losses costs two bytes, not a chunk per seven."""
    r = TwccResponder(EXT, 42)
    r.record(packet(0), 5000.0)
    r.record(packet(PER_PACKET * 2 + 5), 5001.0)
    fbs = r.feedback()
    assert len(fbs) == 3
    refs = [int.from_bytes(fb[16:19], "big") for fb in fbs]
    assert refs[1] == refs[0] and refs[0] > 0
    assert len(fbs[1]) <= 24  # header, reference, one run-length chunk
    got = read(fbs)
    assert [s for s, t in got if t is not None] == [0, PER_PACKET * 2 + 5]
