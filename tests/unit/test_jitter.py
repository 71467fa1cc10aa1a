"""The recorder's jitter buffer, without sockets: order restored, losses given up after the
latency (or when too much waits behind them), late and duplicate packets dropped, sequence
numbers wrapping, a stream that starts over."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from visio_sfu.jitter import JitterBuffer, Lost


def feed(buffer: JitterBuffer, seqs, now=0.0):
    out = []
    for s in seqs:
        out += buffer.push(s & 0xFFFF, s, now)
    return out


def test_in_order_packets_come_out_at_once():
    b = JitterBuffer(latency=0.2)
    feed(b, range(10))
    assert b.pop(0.0) == list(range(10))
    assert len(b) == 0 and b.lost == 0


def test_reordering_is_undone():
    b = JitterBuffer(latency=0.2)
    feed(b, [0, 2, 1, 4, 3, 5])
    assert b.pop(0.0) == [0, 1, 2, 3, 4, 5]


def test_a_gap_waits_for_the_latency_then_is_given_up():
    b = JitterBuffer(latency=0.2)
    feed(b, [0, 1, 3, 4], now=1.0)
    assert b.pop(1.0) == [0, 1]
    assert b.pop(1.1) == []  # 2 may still come
    assert b.pop(1.25) == [Lost(1), 3, 4]
    assert b.lost == 1
    feed(b, [2], now=1.3)  # too late: given up already
    assert b.late == 1 and b.pop(2.0) == []


def test_a_packet_that_comes_back_in_time_fills_its_gap():
    b = JitterBuffer(latency=0.5)
    feed(b, [10, 11, 13, 14], now=0.0)
    b.pop(0.0)
    feed(b, [12], now=0.3)  # a retransmission, within the latency
    assert b.pop(0.3) == [12, 13, 14] and b.lost == 0


def test_duplicates_are_dropped():
    b = JitterBuffer()
    feed(b, [1, 2, 2, 3])
    assert b.pop(0.0) == [1, 2, 3] and b.duplicates == 1
    feed(b, [3])
    assert b.late == 1


def test_too_much_waiting_behind_a_gap_gives_it_up_at_once():
    b = JitterBuffer(latency=10.0, capacity=8)
    feed(b, [0] + list(range(2, 12)))
    assert b.pop(0.0) == [0, Lost(1), *range(2, 12)]


def test_sequence_numbers_wrap():
    b = JitterBuffer()
    feed(b, [65533, 65534, 65535, 0, 1])
    assert b.pop(0.0) == [65533, 65534, 65535, 0, 1]


def test_a_stream_that_starts_over_is_followed():
    b = JitterBuffer(latency=0.2, capacity=64)
    feed(b, [100, 101, 102])
    b.pop(0.0)
    out = feed(b, [40000, 40001])  # far ahead: a restart, not 39 897 losses
    assert out == [Lost(0)] and b.restarts == 1
    assert b.pop(0.0) == [40000, 40001] and b.lost == 0


def test_flush_gives_everything_in_order():
    b = JitterBuffer(latency=5.0)
    feed(b, [1, 2, 5, 4])
    assert b.flush() == [1, 2, Lost(1), 4, 5]
    assert len(b) == 0


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.floats(0, 1), min_size=20, max_size=300),
    st.floats(0, 0.3),
    st.integers(0, 2**32 - 1),
)
def test_whatever_the_order_and_loss_each_packet_comes_out_once_in_order(first, delays, loss, seed):
    rng = random.Random(seed)
    sent = [(first + i, i * 0.02 + d * 0.1) for i, d in enumerate(delays)]
    kept = [(s, t) for s, t in sent if rng.random() >= loss]
    arrivals = sorted(kept, key=lambda x: x[1])
    b = JitterBuffer(latency=0.2)
    out = []
    for seq, t in arrivals:
        out += b.push(seq & 0xFFFF, seq, t)
        out += b.pop(t)
    out += b.flush()
    packets = [x for x in out if not isinstance(x, Lost)]
    assert packets == sorted(packets)  # in order, never twice
    assert len(set(packets)) == len(packets)
    late = {s for s, _ in kept} - set(packets)
    assert len(late) == b.late  # what is missing came after its turn
    lost = sum(x.count for x in out if isinstance(x, Lost))
    assert lost == b.lost
