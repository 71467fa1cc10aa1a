"""SDP read from publishers' offers (visio_sfu/sdp.py): ``m=audio 0 … a=bundle-only`` is an
active section (RFC 8843), as Firefox and GStreamer's webrtcbin write it with max-bundle; port 0
without it is a rejected one; msid from a=msid or, without it, from a=ssrc (webrtcbin)."""

from visio_sfu.sdp import accept_simulcast, offered_simulcast, parse_offer

FIREFOX_OFFER = """v=0
o=mozilla...THIS_IS_SDPARTA-115 1 0 IN IP4 0.0.0.0
s=-
t=0 0
a=fingerprint:sha-256 1C:2A:47:40:05:0B:88:2B:7F:80:1B:8C:B5:3D:4A:93:2D:64:91:15:B4:B6:65:71:0B
a=group:BUNDLE 0 1 2
a=ice-options:trickle
a=msid-semantic:WMS *
m=video 9 UDP/TLS/RTP/SAVPF 120
c=IN IP4 0.0.0.0
a=sendonly
a=ice-pwd:0123456789abcdef0123456789abcdef
a=ice-ufrag:abcd1234
a=mid:0
a=msid:{stream} {video}
a=rtcp-mux
a=rtpmap:120 VP8/90000
a=setup:actpass
a=ssrc:1111 cname:{{c}}
m=audio 0 UDP/TLS/RTP/SAVPF 109
c=IN IP4 0.0.0.0
a=bundle-only
a=sendonly
a=ice-pwd:0123456789abcdef0123456789abcdef
a=ice-ufrag:abcd1234
a=mid:1
a=msid:{stream} {audio}
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=setup:actpass
a=ssrc:2222 cname:{{c}}
m=audio 0 UDP/TLS/RTP/SAVPF 109
c=IN IP4 0.0.0.0
a=sendonly
a=mid:2
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=ssrc:3333 cname:{{c}}
"""


def test_bundle_only_port_zero_section_is_active():
    offered = parse_offer(FIREFOX_OFFER.replace("\n", "\r\n"))
    video, audio, rejected = offered
    assert video.port == 9 and video.sending and not video.bundle_only
    assert audio.port == 0 and audio.bundle_only and audio.sending, "bundle-only is active"
    assert audio.ssrcs == [2222]
    assert rejected.port == 0 and not rejected.bundle_only and not rejected.sending


def test_inactive_and_recvonly_sections_are_not_sending():
    for direction in ("inactive", "recvonly"):
        sdp = FIREFOX_OFFER.replace("a=sendonly", f"a={direction}").replace("\n", "\r\n")
        assert not any(m.sending for m in parse_offer(sdp))


def test_msid_from_the_ssrc_line_when_there_is_no_msid_line():
    sdp = FIREFOX_OFFER.replace("a=msid:{stream} {video}\n", "").replace(
        "a=ssrc:1111 cname:{{c}}", "a=ssrc:1111 msid:gst webrtctransceiver0"
    )
    video = parse_offer(sdp.replace("\n", "\r\n"))[0]
    assert (video.msid_stream, video.msid_track) == ("gst", "webrtctransceiver0")


def test_simulcast_is_read_and_accepted():
    offer = (
        "v=0\r\ns=-\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n"
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
        "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n"
    )
    spec = offered_simulcast(offer)
    assert spec == {
        "0": {
            "rids": ["q", "h", "f"],
            "extensions": {"urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 4},
        }
    }
    answer = accept_simulcast("v=0\r\ns=-\r\nm=video 9 x 96\r\na=mid:0\r\n", spec)
    assert "a=simulcast:recv q;h;f" in answer and "a=rid:f recv" in answer
