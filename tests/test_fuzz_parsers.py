"""Property-based fuzzing of every parser on the input path: no input raises unexpectedly.

Random bytes and mutated valid packets go to the RTP, RTCP, header-extension, VP8 and H.264
readers, to the publisher's receive path (which fans out to a DownTrack), to the signaling
JSON decoder, the SDP offer parser and the token grant reader. Cases that once failed live in
tests/fuzz_corpus/ and are replayed first.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from signaling.auth import TokenError, VideoGrant
from signaling.protocol import ProtocolError, decode
from visio_sfu.downtrack import DownTrack
from visio_sfu.publisher import Codec, Publisher
from visio_sfu.rtp import rtcp
from visio_sfu.rtp.codecs import h264_is_keyframe, vp8_descriptor, vp8_is_keyframe, vp8_rewrite
from visio_sfu.rtp.extensions import abs_send_time_to_seconds, audio_level
from visio_sfu.rtp.header import (
    build_ext_table,
    build_rtp,
    find_extension,
    payload_end,
    payload_offset,
    rewrite_extensions,
)
from visio_sfu.rtp.vp9 import vp9_is_keyframe, vp9_layers
from visio_sfu.sdp import offered_simulcast, parse_offer
from visio_sfu.transport import TransportError

CORPUS = Path(__file__).parent / "fuzz_corpus"
FUZZ = settings(max_examples=300, deadline=None)


def corpus(prefix: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.glob(f"{prefix}-*"))]


def with_corpus(prefix: str):
    """Replay every corpus file named ``<prefix>-*`` as an explicit example."""

    def wrap(fn):
        for data in corpus(prefix):
            fn = example(data)(fn)
        return fn

    return wrap


VALID_RTP = build_rtp(
    96,
    1000,
    90000,
    0x1234,
    b"\x90\x80\x01\x10" + bytes(40),
    extensions={1: b"0", 3: b"\x01\x02\x03", 2: b"\x8a"},
)
VALID_RTCP = (
    rtcp.build_rr(1, [(2, 0, 0, 100, 5, 0, 0)])
    + rtcp.build_nack(1, 2, [5, 9])
    + rtcp.build_pli(1, 2)
    + rtcp.build_remb(1, 500000, [2])
    + rtcp.build_fir(1, 2, 1)
    + rtcp.build_sr(3, 1 << 40, 9, 10, 11)
)


@st.composite
def mutated(draw, base: bytes):
    """A valid packet with random bytes flipped, cut or appended."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=16))


packets = st.one_of(st.binary(max_size=300), mutated(VALID_RTP))


def feed_rtp(data: bytes) -> None:
    payload_offset(data)
    payload_end(data)
    for ext_id in (1, 2, 3, 14, 200):
        find_extension(data, ext_id)
    rewrite_extensions(bytearray(data), build_ext_table({1: 0, 2: 5, 3: 3}))
    audio_level(find_extension(data, 2))
    off = payload_offset(data)
    if off >= 0:
        body = memoryview(data)[off:]
        vp8_descriptor(body)
        vp8_is_keyframe(body)
        h264_is_keyframe(body)
        vp8_rewrite(bytearray(data), off, 12345, 7)


@FUZZ
@given(packets)
@with_corpus("rtp")
def test_rtp_readers_never_raise(data: bytes):
    feed_rtp(data)
    abs_send_time_to_seconds(data[:3])


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(VALID_RTCP)))
@with_corpus("rtcp")
def test_rtcp_readers_never_raise(data: bytes):
    for _pt, _fmt, pkt in rtcp.iter_rtcp(data):
        rtcp.media_ssrc(pkt)
        rtcp.sender_ssrc(pkt)
        rtcp.parse_nack(pkt)
        rtcp.parse_remb(pkt)
        rtcp.parse_fir(pkt)
        rtcp.parse_sr(pkt)
        rtcp.parse_rr_blocks(pkt)


def make_publisher() -> tuple[Publisher, list]:
    sent: list = []
    track = Publisher(
        "TR",
        "PA",
        "video",
        "camera",
        "0",
        Codec("video/VP8", 90000, 96),
        {"urn:ietf:params:rtp-hdrext:sdes:mid": 1},
        lambda b: True,
        7,
    )
    dt = DownTrack(track, lambda b: sent.append(bytes(b)) or True, "PB")
    dt.bind(0xABCD, 100, {})
    dt.current_layer = 0  # forward without waiting for a keyframe
    track.attach(dt)
    return track, sent


@FUZZ
@given(st.lists(packets, max_size=20))
def test_forwarding_path_never_raises(datas: list[bytes]):
    track, sent = make_publisher()
    for i, data in enumerate(datas):
        track.on_rtp(data, i * 0.01)
    for out in sent:  # whatever went out is valid RTP with our SSRC and payload type
        assert payload_offset(out) >= 0
        assert out[1] & 0x7F == 100 and out[8:12] == (0xABCD).to_bytes(4, "big")
    track.downtracks[0].handle_nack(list(range(0, 65536, 4099)), 1.0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
@with_corpus("json")
def test_signaling_decoder_only_raises_protocol_errors(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        msg = decode(text)
    except ProtocolError as exc:
        assert exc.code in ("bad_json", "bad_request")
    else:
        assert isinstance(msg, dict) and isinstance(msg["type"], str)


SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=msid:s t\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
    "a=ssrc-group:FID 1 2\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:x\r\na=ice-ufrag:abcd\r\n"
    "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11\r\na=setup:actpass\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\na=rid:q send\r\n"
    "a=simulcast:send q\r\n"
)


@st.composite
def sdp_mutations(draw):
    lines = SDP.split("\r\n")
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "garble", "dup"]))
        if action == "drop":
            lines.pop(i)
        elif action == "garble":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))] + draw(st.text(max_size=8))
        else:
            lines.insert(i, lines[i])
        if not lines:
            break
    return "\r\n".join(lines)


@FUZZ
@given(st.one_of(st.text(max_size=300), sdp_mutations()))
@with_corpus("sdp")
def test_sdp_parser_only_raises_transport_errors(sdp):
    if isinstance(sdp, bytes):
        sdp = sdp.decode("utf-8", "replace")
    try:
        parse_offer(sdp)
    except TransportError:
        pass
    offered_simulcast(sdp)


@FUZZ
@given(json_values)
def test_grant_reader_only_raises_token_errors(claims):
    try:
        VideoGrant.from_claims(claims)
    except TokenError:
        pass


# -- LiveKit's protobuf signaling (signaling/livekit) -------------------------------------------
_LK_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:s mic\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:s cam\r\n"
    "a=rid:f send\r\na=rid:h send\r\na=simulcast:send f;h\r\n"
)


def _livekit_frames() -> list[bytes]:
    """One SignalRequest of each kind a client sends, valid for a joined session."""
    from livekit.protocol import models, rtc

    R = rtc.SignalRequest
    video, audio = models.TrackType.VIDEO, models.TrackType.AUDIO
    layer = models.VideoLayer(quality=models.VideoQuality.HIGH, width=640, height=360)
    return [
        R(ping_req=rtc.Ping(timestamp=1, rtt=2)).SerializeToString(),
        R(ping=5).SerializeToString(),
        R(offer=rtc.SessionDescription(type="offer", sdp=_LK_OFFER, id=3)).SerializeToString(),
        R(answer=rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=1)).SerializeToString(),
        R(
            trickle=rtc.TrickleRequest(
                candidateInit='{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host",'
                '"sdpMid":"0","sdpMLineIndex":0}',
                target=rtc.SignalTarget.SUBSCRIBER,
            )
        ).SerializeToString(),
        R(
            add_track=rtc.AddTrackRequest(
                cid="cam",
                type=video,
                width=640,
                height=360,
                layers=[layer, layer],
                simulcast_codecs=[rtc.SimulcastCodec(codec="vp9", cid="cam")],
            )
        ).SerializeToString(),
        R(add_track=rtc.AddTrackRequest(cid="mic", type=audio, muted=True)).SerializeToString(),
        R(mute=rtc.MuteTrackRequest(sid="TR_y", muted=True)).SerializeToString(),
        R(
            subscription=rtc.UpdateSubscription(
                track_sids=["TR_x"],
                subscribe=True,
                participant_tracks=[models.ParticipantTracks(track_sids=["TR_y"])],
            )
        ).SerializeToString(),
        R(
            track_setting=rtc.UpdateTrackSettings(
                track_sids=["TR_x"], quality=models.VideoQuality.LOW, height=180
            )
        ).SerializeToString(),
        R(
            update_metadata=rtc.UpdateParticipantMetadata(
                name="n", metadata="m", attributes={"a": "b", "c": ""}, request_id=4
            )
        ).SerializeToString(),
        R(
            subscription_permission=rtc.SubscriptionPermission(
                track_permissions=[
                    rtc.TrackPermission(participant_identity="other", track_sids=["TR_x"]),
                    rtc.TrackPermission(participant_sid="PA_x", all_tracks=True),
                ]
            )
        ).SerializeToString(),
        R(sync_state=rtc.SyncState()).SerializeToString(),
        R(leave=rtc.LeaveRequest()).SerializeToString(),
    ]


class _Errors(logging.Handler):
    """Keeps the ERROR records logged (a handler's crash is logged, not raised, by handle())."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _joined_livekit_session(single_pc: bool, published: bool):
    """A LiveKit session joined to a room on fake transports, with another participant in it
    publishing tracks (so that requests naming tracks and participants reach real state); if
    ``published``, the session has published its own microphone and camera."""
    from signaling.auth import Identity
    from signaling.config import Config
    from signaling.livekit.session import LiveKitSession
    from tests.support.fake_transport import FakeTransport
    from visio_sfu import SFU

    class _NoSocket:
        closed = False

        async def close(self) -> None:
            self.closed = True

    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("r")
    other = await room.join("other", emit=lambda e: None)
    await other.publish_offer(_LK_OFFER)
    grant = VideoGrant(room="r", room_join=True, can_update_own_metadata=True)
    who = Identity("fuzz", "", "", "key", grant, 0.0)
    session = LiveKitSession(_NoSocket(), who, sfu, Config(), single_pc=single_pc)  # type: ignore[arg-type]
    await session.join()
    if published:
        from livekit.protocol import rtc

        for frame in _livekit_frames():
            if rtc.SignalRequest.FromString(frame).WhichOneof("message") in ("add_track", "offer"):
                await session.handle(frame)
        assert session.participant is not None and len(session.participant.tracks) == 2
    return sfu, session, [*other.tracks, other.sid]


def _with_real_sids(data: bytes, session, others: list[str]) -> bytes:
    """The frame with its made-up sids (TR_x, TR_y, PA_x) replaced by real ones (the other
    participant's track and sid, the session's own first track), when it decodes."""
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError
    from livekit.protocol import rtc

    try:
        text = text_format.MessageToString(rtc.SignalRequest.FromString(data))
    except DecodeError:
        return data
    own = list(session.participant.tracks) if session.participant is not None else []
    for fake, real in (("TR_x", others[0]), ("TR_y", (own or others)[0]), ("PA_x", others[-1])):
        text = text.replace(f'"{fake}"', f'"{real}"')
    try:
        return text_format.Parse(text, rtc.SignalRequest()).SerializeToString()
    except text_format.ParseError:
        return data


async def _fuzz_livekit_session(frames: list[bytes], single_pc: bool, published: bool) -> None:
    from signaling.livekit.session import _DONE
    from tests.support.fake_transport import FakeTransport

    made = len(FakeTransport.instances)  # (each example's are let go: 3 MB an example)
    sfu, session, names = await _joined_livekit_session(single_pc, published)
    try:
        for data in frames:
            await session.handle(_with_real_sids(data, session, names))
            await asyncio.sleep(0)
        while not session._outbox.empty():  # what it would write: serializable protobufs
            item = session._outbox.get_nowait()
            if item is not _DONE:
                for message in session._convert(item):
                    message.SerializeToString()
    finally:
        await session.close("left")
        await sfu.close()
        del FakeTransport.instances[made:]


def _livekit_frames_or_corpus():
    def wrap(fn):
        for data in corpus("livekit"):
            fn = example([data], False, True)(fn)
        return fn

    return wrap


@settings(max_examples=150, deadline=None)
@given(
    st.lists(  # half valid requests (mutating them mostly cuts them short), half mutated/bytes
        st.booleans().flatmap(
            lambda valid: (
                st.sampled_from(_livekit_frames())
                if valid
                else st.one_of(st.binary(max_size=300), *(mutated(f) for f in _livekit_frames()))
            )
        ),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
    st.booleans(),
)
@_livekit_frames_or_corpus()
def test_livekit_signal_requests_to_a_joined_session_never_crash(
    frames: list[bytes], single: bool, published: bool
):
    """Any frames to a JOINED session (two connections or one; publishing or not), another
    participant publishing in its room: each handled, refused or dropped; no handler crashes
    (handle() logs a crash at ERROR rather than raising it, and a refusal at INFO: any ERROR
    record, from any logger, asyncio's unretrieved task exceptions included, fails), and what
    it would write back serializes."""
    errors = _Errors()
    log = logging.getLogger()  # the root: signaling's, visio_sfu's and asyncio's records
    log.addHandler(errors)
    try:
        asyncio.run(_fuzz_livekit_session(frames, single, published))
        gc.collect()  # a task that failed unseen says so when it is collected
    finally:
        log.removeHandler(errors)
    assert not errors.records, [
        (r.getMessage(), r.exc_text or logging.Formatter().formatException(r.exc_info))
        if r.exc_info
        else r.getMessage()
        for r in errors.records
    ]


def _data_packets() -> list[bytes]:
    from livekit.protocol import models

    return [
        models.DataPacket(
            user=models.UserPacket(payload=b'{"a":1}', topic="chat")
        ).SerializeToString(),
        models.DataPacket(
            stream_header=models.DataStream.Header(
                stream_id="s",
                topic="lk.chat",
                inline_content=b"hi",
                text_header=models.DataStream.TextHeader(),
            )
        ).SerializeToString(),
        models.DataPacket(
            chat_message=models.ChatMessage(id="1", message="yo")
        ).SerializeToString(),
    ]


@FUZZ
@given(st.one_of(st.binary(max_size=300), *(mutated(f) for f in _livekit_frames())))
@with_corpus("livekit")
def test_livekit_signal_reader_never_raises(data: bytes):
    """Any frame: handled or dropped, never an exception (a session not yet joined)."""
    import asyncio

    from signaling.config import Config
    from signaling.livekit.session import LiveKitSession

    class _NoSocket:
        closed = False

    from signaling.auth import Identity

    who = Identity("fuzz", "", "", "key", VideoGrant(room="r", room_join=True), 0.0)
    session = LiveKitSession(_NoSocket(), who, None, Config())  # type: ignore[arg-type]
    asyncio.run(session.handle(data))


@FUZZ
@given(st.one_of(st.binary(max_size=300), *(mutated(p) for p in _data_packets())))
@with_corpus("lkdata")
def test_livekit_data_packet_reader_never_raises(data: bytes):
    """A data-channel message: read as a DataPacket or refused, and its JSON view made."""
    from signaling.livekit import convert

    packet = convert.read_data_packet(data)
    if packet is not None:
        convert.json_view(packet)


def _join_requests() -> list[bytes]:
    """WrappedJoinRequests as /rtc/v1 carries them (before base64url): gzip and not."""
    import gzip

    from livekit.protocol import models, rtc

    join = rtc.JoinRequest(
        client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.JS, protocol=17),
        publisher_offer=rtc.SessionDescription(type="offer", sdp="v=0\r\n", id=1),
        reconnect=True,
        participant_sid="PA_x",
    ).SerializeToString()
    gz = rtc.WrappedJoinRequest.Compression.GZIP
    return [
        rtc.WrappedJoinRequest(
            compression=gz, join_request=gzip.compress(join)
        ).SerializeToString(),
        rtc.WrappedJoinRequest(join_request=join).SerializeToString(),
    ]


@FUZZ
@given(st.one_of(st.binary(max_size=300), *(mutated(w) for w in _join_requests())))
def test_livekit_join_request_reader_only_raises_value_errors(data: bytes):
    """A /rtc/v1 join_request (any bytes, base64url-encoded, padded or not): a JoinRequest
    or ValueError (answered 400 with its text)."""
    import base64

    from signaling.livekit import read_join_request

    for raw in (base64.urlsafe_b64encode(data).decode(), data.decode("latin-1")):
        try:
            read_join_request(raw.rstrip("="))
        except ValueError:
            pass


VALID_VP9 = build_rtp(
    98, 7, 3000, 4321, bytes([0xA8, 0x80, 0x05, (1 << 5) | (1 << 1), 0]) + bytes(40)
)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=120), mutated(VALID_VP9)), max_size=30))
def test_vp9_svc_forwarding_never_raises(datas: list[bytes]):
    """VP9 SVC (visio_sfu/rtp/vp9.py and the SvcForwarder): any packets, subscribers at every
    spatial layer; what goes out is RTP with our SSRC and payload type, NACKs answered."""
    track = Publisher(
        "TR", "PA", "video", "camera", "0", Codec("video/VP9", 90000, 98), {}, lambda b: True, 7
    )
    sent: list[bytes] = []
    for layer in (0, 1, 2):
        dt = DownTrack(track, lambda b: sent.append(bytes(b)) or True, f"P{layer}")
        dt.bind(0xABCD, 100, {})
        dt.set_target(layer)
        track.attach(dt)
    for i, data in enumerate(datas):
        vp9_is_keyframe(data)
        vp9_layers(data)
        track.on_rtp(data, i * 0.01)
    for out in sent:
        assert payload_offset(out) >= 0
        assert out[1] & 0x7F == 100 and out[8:12] == (0xABCD).to_bytes(4, "big")
    for dt in track.downtracks:
        dt.handle_nack(list(range(0, 65536, 4099)), 1.0)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["protobuf", "json"]))
def test_twirp_decoder_only_raises_twirp_errors(body: bytes, encoding: str):
    """LiveKit's RoomService requests (signaling/livekit_api.py): any body, any method, either
    encoding: a message or TwirpError malformed."""
    from signaling.livekit_api import REQUESTS, TwirpError, decode

    for cls in REQUESTS.values():
        try:
            decode(cls, body, encoding)
        except TwirpError as exc:
            assert exc.code == "malformed"
