"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

A subscriber that negotiated the transport-cc header extension reports, in RTCP RTPFB format 15
packets, which of our transport-wide sequence numbers arrived and when. ``parse_feedback``
reads one such packet into sequence numbers and arrival times; ``build_feedback`` writes one
(tests, and a receiver written in Python). Parsers never raise on garbage: they return None.
"""

from __future__ import annotations

from struct import pack, unpack_from

from .rtcp import RTPFB, TWCC

#: one receive-delta tick: 250 µs
DELTA_TICK = 250e-6
#: one reference-time tick: 64 ms
REFERENCE_TICK = 0.064
_MAX_STATUS = 1 << 14  # no feedback packet covers more (a guard against garbage)


def parse_feedback(
    pkt: bytes | memoryview,
) -> tuple[int, list[int], list[float | None]] | None:
    """(feedback packet count, sequence numbers, arrival times in seconds or None when lost).

    Arrival times are on the receiver's clock (reference time + deltas): only their
    differences mean something. Sequence numbers wrap at 16 bits. None if the packet is invalid.
    """
    n = len(pkt)
    if n < 20:
        return None
    base, count = unpack_from("!HH", pkt, 12)
    ref = (pkt[16] << 16) | (pkt[17] << 8) | pkt[18]
    if ref & 0x800000:
        ref -= 1 << 24
    fb_count = pkt[19]
    if count == 0 or count > _MAX_STATUS:
        return None
    symbols: list[int] = []
    i = 20
    while len(symbols) < count:
        if i + 2 > n:
            return None
        chunk = (pkt[i] << 8) | pkt[i + 1]
        i += 2
        if not chunk & 0x8000:  # run length
            symbol = (chunk >> 13) & 0x3
            run = chunk & 0x1FFF
            symbols.extend([symbol] * min(run, count - len(symbols)))
            if run == 0:
                return None
        elif not chunk & 0x4000:  # 14 one-bit symbols
            for bit in range(13, -1, -1):
                symbols.append((chunk >> bit) & 1)
        else:  # 7 two-bit symbols
            for shift in range(12, -1, -2):
                symbols.append((chunk >> shift) & 3)
    del symbols[count:]
    seqs = [(base + k) & 0xFFFF for k in range(count)]
    arrivals: list[float | None] = []
    t = ref * REFERENCE_TICK
    for symbol in symbols:
        if symbol == 0:
            arrivals.append(None)
            continue
        if symbol == 1:
            if i + 1 > n:
                return None
            delta = pkt[i]
            i += 1
        elif symbol == 2:
            if i + 2 > n:
                return None
            delta = unpack_from("!h", pkt, i)[0]
            i += 2
        else:
            return None
        t += delta * DELTA_TICK
        arrivals.append(t)
    return fb_count, seqs, arrivals


def build_feedback(
    sender: int,
    media: int,
    base: int,
    arrivals: list[float | None],
    fb_count: int = 0,
    reference: float | None = None,
) -> bytes:
    """A transport-cc feedback packet for ``len(arrivals)`` sequence numbers from ``base``:
    each arrival time in seconds (any clock, the first one received sets the reference), or
    None when the packet did not arrive. ``reference``: the time to take as the reference when
    none arrived (the previous packet's: a reference time jumping to 0 resets a sender's
    clock offset). Runs of 14 or more equal statuses are run-length chunks, the rest two-bit
    status vectors."""
    first = next((a for a in arrivals if a is not None), reference or 0.0)
    ref = int(first // REFERENCE_TICK)
    t = ref * REFERENCE_TICK
    symbols: list[int] = []
    deltas = bytearray()
    for a in arrivals:
        if a is None:
            symbols.append(0)
            continue
        ticks = round((a - t) / DELTA_TICK)
        if 0 <= ticks <= 255:
            symbols.append(1)
            deltas.append(ticks)
        else:
            ticks = max(-32768, min(32767, ticks))
            symbols.append(2)
            deltas += pack("!h", ticks)
        t += ticks * DELTA_TICK
    chunks = bytearray()
    k, n = 0, len(symbols)
    while k < n:
        symbol = symbols[k]
        run = 1
        while k + run < n and run < 0x1FFF and symbols[k + run] == symbol:
            run += 1
        if run >= 14:  # a long run (a loss burst, a steady stream): two bytes
            chunks += pack("!H", (symbol << 13) | run)
            k += run
            continue
        part = symbols[k : k + 7] + [0] * (7 - len(symbols[k : k + 7]))
        chunk = 0xC000
        for j, s in enumerate(part):
            chunk |= s << (12 - 2 * j)
        chunks += pack("!H", chunk)
        k += 7
    body = (
        pack("!IIHH", sender, media, base & 0xFFFF, len(arrivals))
        + pack("!I", ((ref & 0xFFFFFF) << 8) | (fb_count & 0xFF))
        + bytes(chunks)
        + bytes(deltas)
    )
    body += bytes(-len(body) % 4)
    return pack("!BBH", 0x80 | TWCC, RTPFB, len(body) // 4) + body
