"""The forwarding path's per-subscriber rewrite, compiled (visio_sfu/_batch.c, rewrite_rtp)
and in Python (downtrack.rewrite_packet, the fallback when the extension is not built): the
same bytes and the same hole for every packet, malformed ones included, and the same packets
out of DownTracks whichever is used."""

from __future__ import annotations

import random

import pytest

from tests.support.rtp import send, simulcast_track, vp8_payload
from visio_sfu import downtrack
from visio_sfu.downtrack import DownTrack, extension_table, rewrite_packet
from visio_sfu.munger import Munger
from visio_sfu.rtp.extensions import ABS_SEND_TIME, AUDIO_LEVEL, SDES_MID
from visio_sfu.rtp.header import build_ext_table, build_rtp

compiled = downtrack._rewrite_rtp


def test_the_compiled_rewrite_is_built():
    """scripts/test.sh installs a compiler: the compiled path is the one tested here."""
    assert compiled is not None, "visio_sfu._batch was not built"
    assert downtrack.rewrite is compiled


def _random_packet(rng: random.Random) -> bytes:
    first = 0x80 | rng.choice([0, 0x10, 0x10, 0x10, 0x20, 0x30]) | rng.choice([0, 0, 1, 2])
    head = bytes([first, rng.randrange(256)]) + rng.randbytes(10)
    head += rng.randbytes(4 * (first & 0x0F))  # CSRCs
    body = b""
    if first & 0x10:
        kind = rng.random()
        if kind < 0.5:  # one-byte elements, some ids 15 or 0 (padding)
            for _ in range(rng.randrange(5)):
                if rng.random() < 0.2:
                    body += b"\x00"
                    continue
                eid = rng.choice([1, 2, 3, 4, 5, 9, 14, 15])
                length = rng.randrange(1, 17)
                body += bytes([(eid << 4) | (length - 1)]) + rng.randbytes(length)
            body += bytes(-len(body) % 4)
            profile = 0xBEDE
        elif kind < 0.85:  # two-byte elements
            for _ in range(rng.randrange(5)):
                if rng.random() < 0.2:
                    body += b"\x00"
                    continue
                length = rng.randrange(0, 20)
                body += bytes([rng.choice([1, 2, 3, 17, 200, 255]), length])
                body += rng.randbytes(length)
            body += bytes(-len(body) % 4)
            profile = 0x1000 | rng.randrange(16)
        else:  # another profile, or garbage
            body = rng.randbytes(4 * rng.randrange(4))
            profile = rng.randrange(65536)
        words = len(body) // 4
        if rng.random() < 0.1:
            words += rng.randrange(1, 4)  # a length past the packet's end
        if rng.random() < 0.1 and body:  # cut inside an element
            body = body[: rng.randrange(len(body))]
            body += bytes(-len(body) % 4)
        head += profile.to_bytes(2, "big") + words.to_bytes(2, "big") + body
    packet = head + rng.randbytes(rng.randrange(0, 40))
    if rng.random() < 0.05:
        packet = packet[: rng.randrange(12, len(packet) + 1)]  # truncated anywhere
    return packet


def _random_table(rng: random.Random) -> bytes | None:
    if rng.random() < 0.15:
        return None
    return build_ext_table({i: rng.choice([0, i, rng.randrange(1, 256)]) for i in range(1, 256)})


def test_compiled_and_python_rewrite_give_the_same_bytes_and_hole():
    assert compiled is not None, "visio_sfu._batch was not built"
    rng = random.Random(20)
    for _ in range(4000):
        data = _random_packet(rng)
        table = _random_table(rng)
        pt, seq, ts = rng.randrange(256), rng.randrange(1 << 17), rng.randrange(1 << 33)
        ssrc = rng.randrange(1 << 32)
        source = bytearray(data)
        expected = rewrite_packet(data, pt, seq, ts, ssrc, table)
        got = compiled(source, pt, seq, ts, ssrc, table)
        assert got == expected, (data.hex(), table)
        assert type(got[0]) is bytearray
        assert source == data  # a copy: the publisher's packet is left alone
        assert compiled(memoryview(data), pt, seq, ts, ssrc, table) == expected


def test_compiled_rewrite_refuses_what_the_python_one_refuses():
    assert compiled is not None, "visio_sfu._batch was not built"
    with pytest.raises(ValueError):
        compiled(bytes(11), 96, 1, 2, 3, None)  # shorter than a header
    with pytest.raises(ValueError):
        compiled(bytes(20), 96, 1, 2, 3, bytes(10))  # not a table
    with pytest.raises(OverflowError):
        compiled(bytes(20), 96, 1, 2, 1 << 32, None)
    with pytest.raises(TypeError):
        compiled(bytes(20), 96, 1, 2, 3)


def _scenario() -> list[bytes]:
    """A simulcast VP8 track with Chromium-like extensions (mid dropped, abs-send-time moved),
    a layer switch, NACKs answered on the RTX stream: every packet the subscriber is sent."""
    track = simulcast_track()
    track.extensions = {SDES_MID: 1, ABS_SEND_TIME: 3, AUDIO_LEVEL: 4}
    out: list[bytes] = []
    dt = DownTrack(track, lambda b: out.append(bytes(b)) or True, "PB")
    dt.munger = Munger(90000, random.Random(7))  # the same first numbers each time
    track.attach(dt)
    dt.bind(0xBEEF, 100, {SDES_MID: 1, ABS_SEND_TIME: 2}, rtx_ssrc=0xCAFE, rtx_payload_type=101)
    assert dt.ext_table == extension_table(track.extensions, {SDES_MID: 1, ABS_SEND_TIME: 2})
    exts = {1: b"0", 3: b"\x01\x02\x03", 4: b"\x85"}
    for i in range(6):
        payload = vp8_payload(300 + i, 10, i == 0) + bytes(100)
        data = build_rtp(96, 1000 + i, 3000 * i, 111, payload, i % 3 == 2, exts)
        track.on_rtp(data, i / 30, track.layers[0])
    dt.set_target(2)
    for i in range(6):
        payload = vp8_payload(7000 + i, 200, i == 0) + bytes(100)
        data = build_rtp(96, 50000 + i, 5000 + 3000 * i, 333, payload, False, exts)
        track.on_rtp(data, (6 + i) / 30, track.layers[2])
        send(track, 0, 111, 1006 + i, 18000 + 3000 * i, 306 + i, 10, False, (6 + i) / 30)
    seqs = [int.from_bytes(p[2:4], "big") for p in out[2:9]]
    dt.handle_nack(seqs, 0.5)
    return out


def test_downtracks_send_the_same_packets_with_either_rewrite(monkeypatch):
    assert compiled is not None, "visio_sfu._batch was not built"
    with_c = _scenario()
    monkeypatch.setattr(downtrack, "rewrite", rewrite_packet)
    in_python = _scenario()
    assert len(with_c) > 12 and any(p[1] & 0x7F == 101 for p in with_c)  # RTX resends
    assert with_c == in_python
