"""Publisher: sinks attached and detached, drops by reason, closing closes its sinks."""

from visio_sfu.publisher import Codec, Publisher
from visio_sfu.rtp.header import build_rtp
from visio_sfu.stats import DropReason, Stats


class Recorder:
    """A sink like a recorder would be: keeps what it gets."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, bool, int]] = []
        self.closed = False

    def write(self, data, ssrc, seq, ts, key, now, layer) -> None:
        self.packets.append((seq, key, layer))

    def close(self) -> None:
        self.closed = True


def audio(stats: Stats | None = None) -> Publisher:
    return Publisher(
        "TR",
        "PA",
        "audio",
        "microphone",
        "0",
        Codec("audio/opus", 48000, 111, 2),
        {},
        lambda b: True,
        1,
        stats=stats,
    )


def test_sinks_get_every_packet_while_attached():
    t = audio()
    a, b = Recorder(), Recorder()
    t.attach(a)
    t.attach(a)  # once only
    t.on_rtp(build_rtp(111, 1, 0, 9, b"x"), 0.0)
    t.attach(b)
    t.on_rtp(build_rtp(111, 2, 960, 9, b"x"), 0.02)
    t.detach(a)
    t.detach(a)  # harmless
    t.on_rtp(build_rtp(111, 3, 1920, 9, b"x"), 0.04)
    assert [p[0] for p in a.packets] == [1, 2]
    assert [p[0] for p in b.packets] == [2, 3]
    assert t.downtracks == []  # recorders are sinks, not subscribers' DownTracks


def test_drops_are_counted_by_reason_and_retired_on_close():
    stats = Stats()
    t = audio(stats)
    sink = Recorder()
    t.attach(sink)
    t.on_rtp(b"\x80\x6f", 0.0)  # too short
    t.on_rtp(build_rtp(97, 1, 0, 9, b"x"), 0.0)  # another payload type (RTX)
    t.set_muted(True)
    t.on_rtp(build_rtp(111, 2, 0, 9, b"x"), 0.0)
    assert sink.packets == []
    assert t.drops[DropReason.INVALID] == 1
    assert t.drops[DropReason.WRONG_PAYLOAD_TYPE] == 1
    assert t.drops[DropReason.MUTED] == 1
    t.close()
    assert sink.closed and t.sinks == []
    assert stats.retired_drops[DropReason.MUTED] == 1 and stats.retired["packets_in"] == 1
    late = Recorder()
    t.attach(late)  # a closed publisher closes a late sink at once
    assert late.closed


def test_packet_queues_are_appended_to_without_a_call():
    """A PacketQueue (the recorder's and the transcriber's sinks) gets one shared tuple per
    packet appended by the publisher, up to its limit, the rest counted; it never has its
    write called on the forwarding path; detach stops it, close closes it; called sinks go
    on beside it."""
    from collections import deque

    from visio_sfu.publisher import PacketQueue

    class Uncallable(PacketQueue):
        __slots__ = ()

        def write(self, *args) -> None:
            raise AssertionError("the forwarding path called write")

    t = audio()
    listed, popped = Uncallable([], 2), Uncallable(deque(), 10)
    called = Recorder()
    for sink in (listed, popped, called):
        t.attach(sink)
    for seq in (1, 2, 3):
        t.on_rtp(build_rtp(111, seq, 960 * seq, 9, b"x"), seq / 50)
    assert [p[1:] for p in listed.packets] == [(1, 960, 0.02, 0), (2, 1920, 0.04, 0)]
    assert listed.dropped == 1 and isinstance(listed.packets[0][0], bytes)
    assert [p[1] for p in popped.packets] == [1, 2, 3] and isinstance(popped.packets, deque)
    assert listed.packets[0] is popped.packets[0]  # one tuple for every queue
    assert [p[0] for p in called.packets] == [1, 2, 3]
    assert listed in t.sinks and t.downtracks == []
    t.detach(popped)
    t.on_rtp(build_rtp(111, 4, 3840, 9, b"x"), 0.08)
    assert len(popped.packets) == 3 and popped not in t.sinks
    t.close()
    assert listed.closed and not popped.closed and called.closed
