"""Data channels on a PeerTransport (LiveKit's clients speak over them): the server's own
channels made before any transceiver (aiortc's max-bundle pitfall), the peer's channels, both
directions, media sections added afterwards, and the rid order of simulcast layers."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from visio_sfu.publish import lowest_first
from visio_sfu.transport import MAX_DATA_MESSAGE, PeerTransport


async def _until(check, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_server_channels_first_then_media_both_ways():
    # the session's 127.0.0.1 (tests/conftest.py); not changed here, so nothing to put back
    got: list[tuple[str, bytes]] = []
    server = PeerTransport(on_data=lambda label, data: got.append((label, data)))
    server.open_data_channels((("_reliable", True), ("_lossy", False)))
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client_got: list[tuple[str, bytes]] = []
    channels: dict[str, object] = {}

    @client.on("datachannel")
    def on_channel(channel) -> None:
        channels[channel.label] = channel
        channel.on("message", lambda m, label=channel.label: client_got.append((label, m)))

    try:
        # the first offer carries the data channels only
        offer = await server.create_offer()
        assert "m=application" in offer and "m=video" not in offer
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        await server.apply_answer(client.localDescription.sdp)
        await _until(lambda: set(server.data_labels()) == {"_reliable", "_lossy"})
        await _until(
            lambda: len(channels) == 2 and all(c.readyState == "open" for c in channels.values())
        )
        assert server.send_data("_reliable", b"to client")
        assert server.send_data("_lossy", b"lossy to client")
        await _until(lambda: len(client_got) == 2)
        assert sorted(client_got) == [("_lossy", b"lossy to client"), ("_reliable", b"to client")]
        channels["_reliable"].send(b"to server")
        await _until(lambda: got == [("_reliable", b"to server")])
        channels["_reliable"].send(b"x" * (MAX_DATA_MESSAGE + 1))  # too large: dropped
        # a media section added later renegotiates on the same (bundled) transport
        server.add_slot("video", None)
        offer = await server.create_offer()
        assert "m=video" in offer
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        await server.apply_answer(client.localDescription.sdp)
        channels["_reliable"].send(b"still there")
        await _until(lambda: got[-1] == ("_reliable", b"still there"))
        assert server.data_dropped == 1 and server.state == "connected"  # the large one
        assert ("_reliable", b"x" * (MAX_DATA_MESSAGE + 1)) not in got
        assert not server.send_data("_nothing", b"x")
        assert server.data_dropped == 2
    finally:
        await client.close()
        await server.close()


def test_simulcast_rids_lowest_first_by_name():
    assert lowest_first(["f", "h", "q"]) == ["q", "h", "f"]  # LiveKit's Rust SDK
    assert lowest_first(["q", "h", "f"]) == ["q", "h", "f"]  # browsers
    assert lowest_first(["h", "f"]) == ["h", "f"]
    assert lowest_first(["hi", "lo"]) == ["hi", "lo"]  # unknown names: the offer's order
