"""The compiled DownTrack write (visio_sfu._batch.DownTrackCore) against the Python one
(``DownTrack._write``): random meetings of packets, layer changes, pauses, late and lost
packets, failed sends, transport-wide numbers and extension ids, fed to two subscribers of
the same track, one through each; the same bytes out and the same state after every packet."""

from __future__ import annotations

import random

import pytest
from pylibsrtp import Policy

from tests.support.rtp import vp8_payload
from tests.support.srtp import PROTECT, context_of, sessions_of_one_key
from visio_sfu.bwe import SendSideEstimator, TransportStamper
from visio_sfu.downtrack import DownTrack
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.rtp.extensions import ABS_SEND_TIME, SDES_MID, TRANSPORT_CC
from visio_sfu.rtp.header import build_rtp

batch = pytest.importorskip("visio_sfu._batch")  # test_rewrite.py fails when it is not built


class PythonDownTrack(DownTrack):
    """A DownTrack whose every packet takes the Python path."""

    def write(self, data, ssrc, seq, ts, key, now, layer=0):  # type: ignore[override]
        self._write(data, ssrc, seq, ts, key, now, layer)


class PythonStamper(TransportStamper):
    """A TransportStamper that numbers every packet in Python."""

    __slots__ = ()

    def stamp(self, buf, now, hole=-1):  # type: ignore[override]
        self._stamp(buf, now, hole)


def _state(dt: DownTrack) -> tuple:
    m, f = dt.munger, dt.forwarder
    return (
        dt.packets,
        dt.bytes,
        list(dt.drops),
        dt.freezes,
        round(dt.freeze_seconds, 9),
        dt._last_in,
        dt._last_out,
        [bytes(b) for b in dt.recent],
        (m.source, m.seq_offset, m.ts_offset, m.last_seq, m.last_ts, m.last_time),
        (m.highest_src_seq, m.epoch_first_seq, m.epoch_first_ts, m.started, m.previous),
        (f.current, f.target, f.switches, f.starts),
        (dt._pid_offset, dt._tl0_offset, dt._last_pid, dt._last_tl0),
    )


def _track(kind: str, simulcast: bool) -> Publisher:
    codec = Codec("video/VP8", 90000, 96) if kind == "video" else Codec("audio/opus", 48000, 111)
    options = {"height": 720, "rids": ["q", "h", "f"]} if simulcast else {}
    return Publisher(
        "TR",
        "PA",
        kind,
        "camera" if kind == "video" else "microphone",
        "0",
        codec,
        {SDES_MID: 1, ABS_SEND_TIME: 3},
        lambda b: True,
        1,
        **options,
    )


@pytest.mark.parametrize(
    "kind, simulcast, twcc, seed",
    [
        ("video", True, False, 1),
        ("video", True, True, 2),
        ("video", False, True, 3),
        ("video", False, False, 4),
        ("audio", False, True, 5),
        ("audio", False, False, 6),
    ],
)
def test_the_compiled_write_does_what_the_python_one_does(kind, simulcast, twcc, seed):
    rng = random.Random(seed)
    track = _track(kind, simulcast)
    outs: dict[str, list[bytes]] = {"c": [], "p": []}
    refuse = {"c": 0, "p": 0}

    def sender(name: str):
        def send(buf: bytearray) -> bool:
            refuse[name] += 1
            if refuse[name] % 97 == 0:  # the transport refuses one now and then
                return False
            outs[name].append(bytes(buf))
            return True

        return send

    compiled = DownTrack(track, sender("c"), "PB")
    python = PythonDownTrack(track, sender("p"), "PC")
    # same random start for both munges
    python.munger.last_seq, python.munger.last_ts = (
        compiled.munger.last_seq,
        compiled.munger.last_ts,
    )
    subscriber_ext = {ABS_SEND_TIME: 2} if not twcc else {SDES_MID: 1, TRANSPORT_CC: 4}
    for dt in (compiled, python):
        track.attach(dt)
        dt.bind(0xBEEF, 100, subscriber_ext)
        if twcc:
            stamper_type = TransportStamper if dt is compiled else PythonStamper
            dt.stamp = stamper_type(SendSideEstimator(), ext_id=4).stamp
    layers = len(track.layers)
    seqs = [rng.randrange(65536) for _ in range(layers)]
    pids = [rng.randrange(1 << 15) for _ in range(layers)]
    ts, now = rng.randrange(1 << 32), 1.0
    for step in range(4000):
        r = rng.random()
        if r < 0.01 and layers > 1:
            target = rng.randrange(-1, layers)
            for dt in (compiled, python):
                dt.set_target(target, now)
        elif r < 0.015:
            now += rng.choice([0.3, 0.7, 1.5])  # a freeze, or the publisher paused
        now += 0.003
        layer = rng.randrange(layers)
        late = rng.random() < 0.03
        seq = (seqs[layer] - rng.randrange(1, 40)) & 0xFFFF if late else seqs[layer]
        if not late:
            seqs[layer] = (
                seqs[layer] + (1 if rng.random() > 0.02 else rng.randrange(2, 9))
            ) % 65536
            pids[layer] = (pids[layer] + 1) % (1 << 15)
            if step % 5 == 0:
                ts = (ts + 3000) & 0xFFFFFFFF
        key = rng.random() < 0.03
        payload = vp8_payload(pids[layer], step & 0xFF, key) if kind == "video" else bytes(80)
        ext = {1: b"0", 3: b"abc"} if rng.random() < 0.9 else None
        data = build_rtp(
            96 if kind == "video" else 111, seq, ts, 111 * (layer + 1), payload, False, ext
        )
        track.on_rtp(data, now, track.layers[layer])
        assert outs["c"] == outs["p"], f"step {step}"
        assert _state(compiled) == _state(python), f"step {step}"
    assert len(outs["c"]) > 500
    # the steady state was the compiled one's, and the rest went to the Python path
    assert compiled.compiled > len(outs["c"]) // 2 and compiled.compiled < len(outs["c"])
    assert python.compiled == 0


@pytest.mark.parametrize(
    "simulcast, vp8, twcc, seed",
    [
        (False, False, False, 7),
        (True, False, False, 8),
        (True, True, False, 9),
        (True, True, True, 10),
        (False, False, True, 11),
    ],
)
def test_the_compiled_write_into_a_route_sends_what_the_python_one_sends(
    simulcast, vp8, twcc, seed
):
    """With a Route as its send (the media port's batching), the compiled write rewrites and
    protects each packet in the batch's slot itself: the same SRTP bytes as the Python write
    protecting with a twin session, whether the batch is open (the slot) or not (the
    fallback), in the same order."""
    ours, theirs, fallback_session = sessions_of_one_key(Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 3)
    rng = random.Random(seed)
    track = _track("video", simulcast)
    compiled_out: list[bytes] = []
    python_out: list[bytes] = []
    b = batch.Batch()
    b.begin()

    def fallback(buf: bytearray) -> bool:  # what send_rtp does, the sockets aside
        # the fallback's own session stays in step with ours: libsrtp's AES-GCM output
        # depends on the key, SSRC and index only
        compiled_out.append(fallback_session.protect(bytes(buf)))
        return True

    class Dtls:
        _tx_srtp = ours

    class Protocol:
        transport = object()

    route = batch.Route(b, fallback)
    pair, protocol = object(), Protocol()
    assert route.arm(
        PROTECT,
        context_of(ours),
        ours,
        Dtls(),
        {1: pair},
        pair,
        protocol,
        Protocol.transport,
        {("127.0.0.1", 9): protocol},
        ("127.0.0.1", 9),
    )
    compiled = DownTrack(track, route.send, "PB")
    python = PythonDownTrack(
        track, lambda buf: python_out.append(theirs.protect(bytes(buf))) or True, "PC"
    )
    python.munger.last_seq, python.munger.last_ts = (
        compiled.munger.last_seq,
        compiled.munger.last_ts,
    )
    estimators = {}
    for dt in (compiled, python):
        track.attach(dt)
        # with transport-cc, abs-send-time is dropped: its hole takes the number
        dt.bind(0xBEEF, 100, {SDES_MID: 1, TRANSPORT_CC: 4} if twcc else {ABS_SEND_TIME: 2})
        dt._vp8 = vp8  # VP8 picture ids kept continuous (simulcast) or not
        if twcc:
            estimators[dt] = SendSideEstimator()
            stamper_type = TransportStamper if dt is compiled else PythonStamper
            dt.stamp = stamper_type(estimators[dt], ext_id=4).stamp
    layers = len(track.layers)
    seqs = [rng.randrange(65536) for _ in range(layers)]
    ts, now = rng.randrange(1 << 32), 1.0
    for step in range(3000):
        if rng.random() < 0.01 and layers > 1:
            target = rng.randrange(-1, layers)
            for dt in (compiled, python):
                dt.set_target(target, now)
        if rng.random() < 0.05:  # the batch closed: the fallback sends
            b.end()
        elif not b.open:
            b.begin()
        now += 0.003 + (0.7 if rng.random() < 0.005 else 0.0)
        layer = rng.randrange(layers)
        late = rng.random() < 0.03
        seq = (seqs[layer] - rng.randrange(1, 40)) & 0xFFFF if late else seqs[layer]
        if not late:
            seqs[layer] = (seqs[layer] + 1) % 65536
            if step % 5 == 0:
                ts = (ts + 3000) & 0xFFFFFFFF
        payload = vp8_payload(step & 0x7FFF, step & 0xFF, rng.random() < 0.03)
        data = build_rtp(96, seq, ts, 111 * (layer + 1), payload, False, {1: b"0", 3: b"abc"})
        track.on_rtp(data, now, track.layers[layer])
        compiled_out.extend(d for d, _addr in b.take(0))
        assert compiled_out == python_out, f"step {step}"
        assert _state(compiled) == _state(python), f"step {step}"
    if twcc:  # the same numbers, send times and sizes recorded for the estimator
        assert estimators[compiled]._sent == estimators[python]._sent
        assert estimators[compiled]._size == estimators[python]._size
        assert compiled.stamp.__self__.seq == python.stamp.__self__.seq > 500
    assert len(compiled_out) > 500
    assert route.sent > len(compiled_out) // 2  # most went the direct way
    assert compiled.compiled > len(compiled_out) // 2
