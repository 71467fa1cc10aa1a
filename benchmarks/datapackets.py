"""LiveKit data packets through visio-sfu: CPU per forwarded packet (docs/livekit.md).

A LiveKit client's DataPacket arrives on an SCTP data channel (aiortc's, pure Python), is read,
checked and stamped by its LiveKitSession, and sent on each receiver's ``_reliable`` channel:
a new per-packet path, in Python end to end. Here one sender and N receivers are real aiortc
peer connections on 127.0.0.1 (DTLS, SCTP) joined to a real Room through real LiveKitSessions
(their WebSockets left out); the sender sends ``count`` user packets of ``size`` bytes and the
run ends when every receiver has them all.

Printed: CPU of this process (clients and server together: they share it) per delivered
packet, and the same for a baseline run in the same process where the clients' packets go
straight from one aiortc peer to another (no server): the ratio is what the server adds.
``python -m benchmarks.datapackets [receivers] [count] [size]``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from livekit.protocol import models

from signaling.auth import Identity, VideoGrant
from signaling.config import Config
from signaling.livekit.session import LiveKitSession
from visio_sfu import SFU
from visio_sfu.events import SubscriberOffer
from visio_sfu.transport import set_ice_addresses


class _NoSocket:
    closed = False


async def _until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the data packets did not all arrive")
        await asyncio.sleep(0.01)


async def _client(sfu: SFU, config: Config, name: str) -> tuple:
    """A LiveKit-like client: its own peer connections, a session on the server."""
    ident = Identity(name, "", "", "key", VideoGrant(room="bench", room_join=True), 0.0)
    session = LiveKitSession(_NoSocket(), ident, sfu, config)  # type: ignore[arg-type]
    sub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: list[bytes] = []
    sub.on("datachannel", lambda ch: ch.on("message", got.append))
    offers: asyncio.Queue = asyncio.Queue()

    def emit(event: object) -> None:
        if isinstance(event, SubscriberOffer):
            offers.put_nowait(event)
        else:
            session.emit(event)  # type: ignore[arg-type]

    room = sfu.get_or_create_room("bench")
    p = await room.join(name, emit=emit, data_channels=True)
    session.participant = session._data_of = p
    p.on_data = session._on_data
    session._joined_sent = True  # (no JoinResponse: no WebSocket here)
    p.subscriber.offer()  # the first offer, with the data channels
    offer = await asyncio.wait_for(offers.get(), 20)
    await sub.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
    await sub.setLocalDescription(await sub.createAnswer())
    p.subscriber.on_answer(offer.offer_id, sub.localDescription.sdp)
    return p, sub, got


async def _sender(p) -> tuple:
    pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pub.createDataChannel("_reliable")
    await pub.setLocalDescription(await pub.createOffer())
    answer = await p.publish_offer(pub.localDescription.sdp)
    await pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await _until(lambda: channel.readyState == "open", 20)
    return pub, channel


async def through_server(receivers: int, count: int, size: int) -> dict:
    """CPU per delivered packet, sender -> server -> every receiver."""
    set_ice_addresses(["127.0.0.1"])
    sfu = SFU()
    config = Config()
    sender, _sub, _ = await _client(sfu, config, "sender")
    clients = [await _client(sfu, config, f"r{i}") for i in range(receivers)]
    pub, channel = await _sender(sender)
    await _until(lambda: all(len(c[0].subscriber.transport.data_labels()) == 2 for c in clients))
    packet = models.DataPacket(user=models.UserPacket(payload=b"x" * size, topic="bench"))
    data = packet.SerializeToString()
    cpu, wall = time.process_time(), time.monotonic()
    for _ in range(count):
        channel.send(data)
    await _until(lambda: all(len(c[2]) >= count for c in clients))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    for _p, sub, _got in clients:
        await sub.close()
    await pub.close()
    await sfu.close()
    delivered = count * receivers
    return {"delivered": delivered, "cpu_us": cpu / delivered * 1e6, "per_s": delivered / wall}


async def direct(count: int, size: int) -> dict:
    """CPU per packet between two aiortc peers, no server: the clients' own share."""
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: list[bytes] = []
    b.on("datachannel", lambda ch: ch.on("message", got.append))
    channel = a.createDataChannel("_reliable")
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await _until(lambda: channel.readyState == "open", 20)
    data = b"x" * size
    cpu, wall = time.process_time(), time.monotonic()
    for _ in range(count):
        channel.send(data)
    await _until(lambda: len(got) >= count)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    await a.close()
    await b.close()
    return {"delivered": count, "cpu_us": cpu / count * 1e6, "per_s": count / wall}


async def main(receivers: int = 4, count: int = 500, size: int = 200) -> None:
    base = await direct(count, size)
    served = await through_server(receivers, count, size)
    print(f"{size}-byte user packets, {count} sent, {receivers} receivers")
    print(
        f"direct, peer to peer:   {base['cpu_us']:7.1f} us CPU per packet, {base['per_s']:7.0f}/s"
    )
    print(
        f"through visio-sfu:      {served['cpu_us']:7.1f} us CPU per delivered packet, "
        f"{served['per_s']:7.0f}/s"
    )
    print(f"ratio (server path / direct): {served['cpu_us'] / base['cpu_us']:.2f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    asyncio.run(main(*args))
