"""A LiveKit client's data packets through a LiveKitSession (signaling/livekit) into a room, on
fake transports: the sender stamped, destinations, canPublishData, the size limit, the channel
deciding reliability, garbage and unknown channels dropped, and what JSON clients see."""

from __future__ import annotations

from livekit.protocol import models

from signaling.auth import Identity, VideoGrant
from signaling.config import Config
from signaling.livekit.session import LiveKitSession
from tests.support.fake_transport import FakeTransport
from visio_sfu import SFU, Permissions
from visio_sfu.events import DataReceived


class _NoSocket:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_data_packets_into_the_room():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("r")
    inbox: dict[str, list] = {"bob": [], "carol": []}
    alice = await room.join("alice")
    for name in inbox:
        await room.join(name, emit=inbox[name].append)
    config = Config()
    who = Identity("alice", "", "", "key", VideoGrant(room="r", room_join=True), 0.0)
    session = LiveKitSession(_NoSocket(), who, sfu, config)  # type: ignore[arg-type]
    session.participant = session._data_of = alice

    def got(name: str) -> list[DataReceived]:
        out = [e for e in inbox[name] if isinstance(e, DataReceived)]
        inbox[name].clear()
        return out

    forged = models.DataPacket(
        participant_identity="mallory",
        sequence=7,
        user=models.UserPacket(payload=b"hi", topic="chat", participant_identity="mallory"),
    )
    session._on_data("_reliable", forged.SerializeToString())
    for name in inbox:
        (event,) = got(name)
        assert event.sender.identity == "alice" and event.reliable
        assert (event.topic, event.payload, event.encoded_only) == ("chat", {"text": "hi"}, False)
        packet = models.DataPacket.FromString(event.encoded[1])
        assert packet.participant_identity == packet.user.participant_identity == "alice"
        assert packet.participant_sid == alice.sid and packet.sequence == 7

    to_bob = models.DataPacket(destination_identities=["bob"], user=models.UserPacket(payload=b"x"))
    session._on_data("_lossy", to_bob.SerializeToString())
    (event,) = got("bob")
    assert not event.reliable and got("carol") == []

    rpc = models.DataPacket(rpc_ack=models.RpcAck(request_id="1"))
    session._on_data("_reliable", rpc.SerializeToString())
    assert [e.encoded_only for e in got("bob")] == [True]  # for LiveKit clients only
    assert len(got("carol")) == 1

    big = models.DataPacket(user=models.UserPacket(payload=b"x" * config.max_data_bytes))
    for label, data in (
        ("_reliable", big.SerializeToString()),  # over max_data_bytes
        ("_reliable", b"\xff\xff\xff"),  # not a DataPacket
        ("_data_track", forged.SerializeToString()),  # a channel that is not forwarded
        ("_reliable", models.DataPacket().SerializeToString()),  # nothing in it
    ):
        session._on_data(label, data)
        assert got("bob") == [] and got("carol") == [], label

    alice.permissions = Permissions(can_publish_data=False)
    session._on_data("_reliable", forged.SerializeToString())
    assert got("bob") == [] and got("carol") == []
    await sfu.close()


async def test_data_goes_on_while_the_websocket_is_down():
    """A suspended LiveKit participant (its WebSocket dropped, its peer connections up) still
    sends and receives data packets; a JSON participant's events stay held."""
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("r")
    config = Config()
    sessions = {}
    for name in ("alice", "bob"):
        who = Identity(name, "", "", "key", VideoGrant(room="r", room_join=True), 0.0)
        session = sessions[name] = LiveKitSession(_NoSocket(), who, sfu, config)  # type: ignore[arg-type]
        session._send_join = lambda room, p: None  # no WebSocket here
        await session.join()
    alice, bob = (sessions[n].participant for n in ("alice", "bob"))
    web_inbox: list = []
    await room.join("web", emit=web_inbox.append)
    await sessions["bob"].close("disconnected")  # bob's socket drops: kept for a resume
    assert room.is_suspended(bob) and bob.suspended

    packet = models.DataPacket(user=models.UserPacket(payload=b"to bob", topic="t"))
    alice.on_data("_reliable", packet.SerializeToString())
    ((label, data),) = bob.subscriber.transport.data
    assert label == "_reliable" and models.DataPacket.FromString(data).user.payload == b"to bob"

    reply = models.DataPacket(user=models.UserPacket(payload=b"from bob", topic="t"))
    bob.publishing.transport = None  # (what bob's client sends arrives on any of its channels)
    bob.on_data("_reliable", reply.SerializeToString())
    ((label, data),) = alice.subscriber.transport.data
    assert models.DataPacket.FromString(data).participant_identity == "bob"
    assert [e.payload for e in web_inbox if isinstance(e, DataReceived)] == ["to bob", "from bob"]
    await sfu.close()
