"""signaling/livekit/convert.py: LiveKit's messages from visio-sfu's values and data packets
seen by JSON clients (docs/livekit.md, "One room, two protocols")."""

from __future__ import annotations

import zlib

from livekit.protocol import models

from signaling.livekit import convert
from visio_sfu.events import ParticipantRef, TrackInfo


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


def test_layers_by_rid_name_and_size():
    assert convert.layer_qualities(["q", "h", "f"]) == [0, 1, 2]
    assert convert.layer_qualities(["h", "f"]) == [1, 2]
    assert convert.layer_qualities(["a", "b"]) == [1, 2]  # unknown names: by position from top
    track = TrackInfo(
        "TR_1", "video", "camera", "cam", False, 1280, 720, "video/VP8", "1", True, ("q", "h", "f")
    )
    info = convert.track_info(track)
    assert [(x.quality, x.width, x.height, x.rid) for x in info.layers] == [
        (models.VideoQuality.LOW, 320, 180, "q"),
        (models.VideoQuality.MEDIUM, 640, 360, "h"),
        (models.VideoQuality.HIGH, 1280, 720, "f"),
    ]
    single = TrackInfo("TR_2", "video", "camera", "", False, 640, 480, "video/VP8", "2", False, ())
    assert [(x.quality, x.width) for x in convert.track_info(single).layers] == [(2, 640)]


def test_msid_as_the_rust_sdk_needs_it():
    sdp = "m=video 9 UDP 96\r\na=msid:PA_ab12 TR_cd34\r\na=msid:- unused-1\r\n"
    assert convert.livekit_msid(sdp) == (
        "m=video 9 UDP 96\r\na=msid:PA_ab12|TR_cd34 TR_cd34\r\na=msid:- unused-1\r\n"
    )


def test_json_view_of_data_packets():
    user = models.DataPacket(user=models.UserPacket(payload=b'{"a": 1}', topic="app"))
    assert convert.json_view(user) == ("app", {"a": 1})
    text = models.DataPacket(user=models.UserPacket(payload=b"hi", topic="chat"))
    assert convert.json_view(text) == ("chat", {"text": "hi"})
    raw = models.DataPacket(user=models.UserPacket(payload=b"\xff\x00", topic="bin"))
    assert convert.json_view(raw) == ("bin", {"base64": "/wA="})
    chat = models.DataPacket(chat_message=models.ChatMessage(id="m1", message="yo"))
    assert convert.json_view(chat) == ("chat", {"text": "yo", "id": "m1"})
    header = models.DataStream.Header(
        stream_id="s1",
        topic="lk.chat",
        inline_content=_deflate("déflaté".encode()),
        compression=models.DataStream.CompressionType.DEFLATE_RAW,
        text_header=models.DataStream.TextHeader(),
    )
    assert convert.json_view(models.DataPacket(stream_header=header)) == (
        "chat",
        {"text": "déflaté", "id": "s1"},
    )
    rpc = models.DataPacket(rpc_ack=models.RpcAck(request_id="r"))
    assert convert.json_view(rpc) is None
    assert convert.read_data_packet(b"\xff\xff") is None


def test_inflate_refuses_bombs_and_garbage():
    bomb = _deflate(b"a" * 100_000)
    assert convert.inflate(bomb, 1, 1000) is None
    assert convert.inflate(b"\xff\xfe", 1, 1000) is None
    assert convert.inflate(b"plain", 0, 1000) == b"plain"
    assert convert.inflate(b"plain", 7, 1000) is None  # an unknown compression


def test_json_chat_becomes_a_text_stream_and_data_a_user_packet():
    who = ParticipantRef("PA_1", "web", "Web")
    packets = convert.packets_for_json_data(who, "chat", {"text": "salut"}, 1000)
    header, chunk, trailer = packets
    assert header.stream_header.topic == "lk.chat" and header.stream_header.total_length == 5
    assert chunk.stream_chunk.content == b"salut"
    assert trailer.stream_trailer.stream_id == header.stream_header.stream_id
    assert {p.participant_identity for p in packets} == {"web"}
    (user,) = convert.packets_for_json_data(who, "app", [1, 2], 1000)
    assert user.user.topic == "app" and user.user.payload == b"[1,2]"
    assert user.user.participant_sid == "PA_1"
