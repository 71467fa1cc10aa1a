"""PeerTransports connected to each other on 127.0.0.1, for tests and benchmarks without
signaling."""

from __future__ import annotations

import asyncio

from visio_sfu.transport import PeerTransport, udp_mux


async def connected_pair(
    kind: str = "video", timeout: float = 10.0, on_mux: tuple[bool, bool] = (False, False)
) -> tuple[PeerTransport, PeerTransport]:
    """(sender, receiver): two PeerTransports with DTLS-SRTP up; the first offers send-only.
    ``on_mux``: which of the two gathers on the process's UdpMux (set_udp_mux), the server's
    side; the other on a socket of its own (a client)."""
    mux = udp_mux()
    sender, receiver = PeerTransport(), PeerTransport()
    sender._mux = mux if on_mux[0] else None
    receiver._mux = mux if on_mux[1] else None
    sender.add_slot(kind, None)
    answer = await receiver.answer(await sender.create_offer())
    await sender.apply_answer(answer)
    deadline = asyncio.get_running_loop().time() + timeout
    while not (sender.ready and receiver.ready):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("peer transports did not connect")
        await asyncio.sleep(0.02)
    return sender, receiver
