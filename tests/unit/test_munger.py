"""Munger: sequence and timestamp continuity, table-driven, time passed in."""

import random

from visio_sfu.munger import Munger, seq_diff


def make() -> Munger:
    return Munger(90000, random.Random(1))


def test_first_source_keeps_spacing():
    m = make()
    out = [m.translate(0xAAAA, s, 1000 + 3000 * i, i / 30) for i, s in enumerate(range(100, 110))]
    seqs = [o[0] for o in out]
    assert all(seq_diff(b, a) == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert all((b[1] - a[1]) & 0xFFFFFFFF == 3000 for a, b in zip(out, out[1:], strict=False))


def test_publisher_restart_is_continuous():
    """A new source (publisher restart: new SSRC, random seq/ts) follows on seamlessly."""
    m = make()
    last = None
    for i in range(50):
        last = m.translate(1, 65500 + i, 4000000000 + 3000 * i, i / 30)
    # the publisher restarts 200 ms later with a new SSRC and random numbering
    first = m.translate(2, 17, 123456, 49 / 30 + 0.2)
    assert first[0] == (last[0] + 1) & 0xFFFF
    assert (first[1] - last[1]) & 0xFFFFFFFF == int(0.2 * 90000)
    second = m.translate(2, 18, 123456 + 3000, 49 / 30 + 0.2 + 1 / 30)
    assert second == ((first[0] + 1) & 0xFFFF, (first[1] + 3000) & 0xFFFFFFFF)


def test_wraparound_and_reordering():
    m = make()
    a = m.translate(5, 65535, 0, 0.0)
    b = m.translate(5, 1, 6000, 0.1)  # 0 is missing (lost or late)
    c = m.translate(5, 0, 3000, 0.11)  # late packet still maps into place
    assert seq_diff(b[0], a[0]) == 2
    assert seq_diff(c[0], a[0]) == 1
    assert m.source_seq(c[0]) == 0
    assert m.last_seq == b[0]


def test_packets_older_than_a_switch_are_dropped():
    m = make()
    for i in range(10):
        m.translate(1, 100 + i, 3000 * i, i / 30)
    m.translate(2, 500, 0, 1.0)
    assert m.translate(2, 499, 0, 1.01) is None  # before the new source's first packet
    assert m.source_seq(m.epoch_first_seq - 1 & 0xFFFF) is None


def test_drop_leaves_no_gap():
    m = make()
    a = m.translate(1, 10, 0, 0)
    m.drop(1, 11)
    b = m.translate(1, 12, 3000, 0.03)
    assert seq_diff(b[0], a[0]) == 1


def test_source_seq_maps_back_for_nack():
    m = make()
    outs = [m.translate(9, 1000 + i, 0, i) for i in range(20)]
    for i, (seq, _ts) in enumerate(outs):
        assert m.source_seq(seq) == 1000 + i
    assert m.source_seq((outs[-1][0] + 1) & 0xFFFF) is None  # never sent


def test_a_new_epoch_from_the_same_source_leaves_no_gap():
    """A transceiver reused for a track it carried before (breakout rooms: moved out and back)
    goes on from its last packet: the source packets it did not forward meanwhile are no loss
    (a subscriber would ask for them, and stall, since they are not its stream)."""
    m = make()
    last = m.translate(7, 1000, 90000, 0.0)
    m.new_epoch()  # 2 s later, 30 source packets on, from a keyframe
    first = m.translate(7, 1030, 90000 + 180000, 2.0)
    assert first[0] == (last[0] + 1) & 0xFFFF
    assert (first[1] - last[1]) & 0xFFFFFFFF == 180000
    assert m.source_seq(last[0]) is None  # a NACK for the old epoch is not answered
    assert m.source_seq(first[0]) == 1030


def test_the_epoch_before_a_switch_maps_back_to_its_source():
    """NACKs for what was sent before a layer switch: the layer switched from and its own
    sequence number and timestamp offset; nothing before that epoch, nothing once the
    transceiver is reused (a new epoch: what it carried before is not this track's)."""
    m = make()
    old = [m.translate(1, 500 + i, 9000 * i, i / 30) for i in range(5)]
    new = m.translate(2, 70, 123456, 5 / 30)
    assert seq_diff(new[0], old[-1][0]) == 1
    for i, (seq, ts) in enumerate(old):
        assert m.source_seq(seq) is None
        source, src_seq, ts_offset = m.previous_source_seq(seq)
        assert (source, src_seq) == (1, 500 + i)
        assert (9000 * i + ts_offset) & 0xFFFFFFFF == ts
    assert m.previous_source_seq(new[0]) is None  # the current epoch's
    assert m.previous_source_seq((old[0][0] - 1) & 0xFFFF) is None  # before it
    m.new_epoch()
    assert m.previous_source_seq(old[0][0]) is None


def test_the_epoch_before_is_forgotten_a_few_seconds_after_the_switch():
    """Later, this epoch's own numbers may have wrapped into that range (32768 packets on):
    a NACK for them must never be answered from the old layer."""
    from visio_sfu.munger import PREVIOUS_EPOCH_FOR

    m = make()
    old = [m.translate(1, 500 + i, 9000 * i, i / 30) for i in range(5)]
    m.translate(2, 70, 123456, 1.0)
    assert m.previous_source_seq(old[0][0]) is not None
    m.translate(2, 71, 126456, 1.0 + PREVIOUS_EPOCH_FOR + 0.1)
    assert m.previous_source_seq(old[0][0]) is None
    assert m.previous is None
