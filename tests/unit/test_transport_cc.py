"""Issue 17 on bytes and SDP: the transport-cc offer and answer, the transport-wide number
written into forwarded packets, retransmissions on the RTX stream (RFC 4588), and the Opus
options kept in answers to publishers."""

from __future__ import annotations

from tests.support.rtp import send, vp8_track
from visio_sfu.bwe import SendSideEstimator, TransportStamper
from visio_sfu.downtrack import DownTrack
from visio_sfu.rtp import rtcp
from visio_sfu.rtp.header import build_rtp, find_extension, payload_offset, set_extension
from visio_sfu.sdp import (
    TRANSPORT_CC_ID,
    TRANSPORT_CC_URI,
    answered_extension,
    keep_opus_options,
    offer_opus_fec,
    offer_transport_cc,
)

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98\r\na=mid:0\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
    "a=rtpmap:97 VP8/90000\r\na=rtcp-fb:97 nack\r\na=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=97\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
)


def test_the_subscriber_offer_carries_transport_cc_with_one_id_for_the_bundle():
    sdp = offer_transport_cc(OFFER)
    assert sdp.count(f"a=extmap:{TRANSPORT_CC_ID} {TRANSPORT_CC_URI}") == 2
    assert "a=rtcp-fb:97 transport-cc" in sdp and "a=rtcp-fb:96 transport-cc" in sdp
    assert "a=rtcp-fb:98 transport-cc" not in sdp  # not for the RTX format
    assert offer_transport_cc(sdp) == sdp  # once
    # an id the offer already uses is never given to it (no remapping in a later offer)
    taken = OFFER.replace("a=extmap:3 ", f"a=extmap:{TRANSPORT_CC_ID} ")
    assert offer_transport_cc(taken) == taken
    assert answered_extension(sdp, TRANSPORT_CC_URI) == TRANSPORT_CC_ID
    assert answered_extension(OFFER, TRANSPORT_CC_URI) is None


def test_opus_fec_and_dtx_are_kept_in_the_answer_to_a_publisher():
    offer = OFFER.replace(
        "a=rtpmap:96 opus/48000/2\r\n",
        "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 minptime=10;useinbandfec=1;usedtx=1\r\n",
    )
    answer = keep_opus_options(offer, OFFER)
    assert "a=fmtp:96 useinbandfec=1;usedtx=1" in answer
    assert keep_opus_options(OFFER, OFFER) == OFFER  # not offered: not added
    sub = offer_opus_fec(OFFER)
    assert "a=fmtp:96 minptime=10;useinbandfec=1" in sub
    assert "a=fmtp:97" not in sub  # video untouched


def test_set_extension_adds_or_overwrites_and_keeps_the_payload():
    bare = bytearray(build_rtp(96, 1, 2, 3, b"payload"))
    assert set_extension(bare, 8, b"\x00\x07")
    assert bytes(find_extension(bare, 8)) == b"\x00\x07"
    assert bare[payload_offset(bare) :] == b"payload"
    packed = bytearray(build_rtp(96, 1, 2, 3, b"payload", extensions={1: b"ab", 3: b"xyz"}))
    assert set_extension(packed, 8, b"\x00\x09") and len(packed) == len(packed)
    assert bytes(find_extension(packed, 3)) == b"xyz"
    size = len(packed)
    assert set_extension(packed, 8, b"\x01\x00") and len(packed) == size  # in place
    assert bytes(find_extension(packed, 8)) == b"\x01\x00"
    two_byte = bytearray(build_rtp(96, 1, 2, 3, b"p"))
    two_byte[0] |= 0x10
    two_byte[12:12] = b"\x10\x00\x00\x01\x05\x01\xaa\x00"  # two-byte form, id 5
    assert set_extension(two_byte, 8, b"\x00\x01")
    assert bytes(find_extension(two_byte, 8)) == b"\x00\x01"
    assert bytes(find_extension(two_byte, 5)) == b"\xaa"
    assert not set_extension(bytearray(b"\x80" * 8), 8, b"\x00\x01")  # not RTP
    assert not set_extension(bare, 15, b"\x00\x01")  # no such one-byte id


def forwarding(rtx: bool):
    track = vp8_track()
    out: list[bytes] = []
    dt = DownTrack(track, lambda b: out.append(bytes(b)) or True, "PB")
    track.attach(dt)
    dt.bind(0xBEEF, 100, {}, rtx_ssrc=0xCAFE if rtx else 0, rtx_payload_type=101 if rtx else 0)
    estimator = SendSideEstimator()
    stamper = TransportStamper(estimator, ext_id=8)
    dt.stamp = stamper.stamp
    for i in range(10):
        send(track, 0, 111, 1000 + i, 5000 + 3000 * i, 300 + i, 10 + i, i == 0, i / 30)
    return dt, out, estimator


def test_every_packet_sent_carries_the_next_transport_wide_number():
    dt, out, estimator = forwarding(rtx=True)
    assert [int.from_bytes(find_extension(p, 8), "big") for p in out] == list(range(10))
    assert estimator._sent[9] > 0 and estimator._size[9] == len(out[9])
    assert len(dt.recent) == 10
    # a NACK is answered on the RTX stream: own SSRC, payload type and numbering, the
    # original sequence number in front of the payload, and the next transport number
    first = int.from_bytes(out[3][2:4], "big")
    assert dt.handle_nack([first], 1.0) == 1
    resent = out[-1]
    assert int.from_bytes(resent[8:12], "big") == 0xCAFE and resent[1] & 0x7F == 101
    off = payload_offset(resent)
    assert int.from_bytes(resent[off : off + 2], "big") == first
    assert resent[off + 2 :] == out[3][payload_offset(out[3]) :]
    assert int.from_bytes(find_extension(resent, 8), "big") == 10


def test_without_rtx_a_nack_is_answered_on_the_media_stream():
    dt, out, _ = forwarding(rtx=False)
    first = int.from_bytes(out[3][2:4], "big")
    assert dt.handle_nack([first], 1.0) == 1
    assert out[-1][2:4] == out[3][2:4] and int.from_bytes(out[-1][8:12], "big") == 0xBEEF


def test_feedback_through_rtcp_reaches_the_estimator():
    from visio_sfu.rtp.twcc import build_feedback, parse_feedback

    dt, out, estimator = forwarding(rtx=True)
    pkt = build_feedback(1, 0xBEEF, 0, [10.0 + k * 0.01 for k in range(10)])
    (_pt, fmt, view), *_ = rtcp.iter_rtcp(pkt)
    parsed = parse_feedback(view)
    estimator.on_feedback(parsed[1], parsed[2], estimator._sent[9] + 0.05)
    assert estimator.feedbacks == 1 and estimator.acked_rate > 0


def test_set_extension_reuses_a_dropped_element_and_keeps_every_other():
    import random

    from visio_sfu.rtp.header import build_ext_table, rewrite_extensions

    # a Chromium-like video packet: mid and abs-send-time; the subscriber with transport-cc
    # gets neither, and the number takes their place: the packet does not grow
    packet = bytearray(build_rtp(96, 1, 2, 3, b"payload", extensions={1: b"0", 3: b"abc"}))
    rewrite_extensions(packet, build_ext_table({1: 0, 3: 0}))
    size = len(packet)
    assert set_extension(packet, 8, b"\x12\x34") and len(packet) == size
    assert bytes(find_extension(packet, 8)) == b"\x12\x34"
    rng = random.Random(5)
    for _ in range(500):
        elements = {
            eid: bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            for eid in rng.sample(range(1, 8), rng.randint(0, 4))
        }
        payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        buf = bytearray(build_rtp(96, 1, 2, 3, payload, extensions=elements or None))
        dropped = {e for e in elements if rng.random() < 0.5}
        rewrite_extensions(buf, build_ext_table({e: (0 if e in dropped else e) for e in elements}))
        assert set_extension(buf, 9, b"\xab\xcd")
        assert bytes(find_extension(buf, 9)) == b"\xab\xcd"
        for e, data in elements.items():
            found = find_extension(buf, e)
            assert (found is None) if e in dropped else bytes(found) == data
        assert bytes(buf[payload_offset(buf) :]) == payload
