"""A PeerTransport stand-in with no sockets, no ICE and no DTLS, for unit tests of the
negotiation state machines and of rooms: it numbers m-sections, writes a small SDP offer from
its slots, records what was sent, and is "connected" as soon as an answer is applied."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from visio_sfu.media import Codec, NegotiatedMedia

_ssrcs = itertools.count(1000)


class FakeSlot:
    """One m-section of a FakeTransport (the Slot API of visio_sfu.transport)."""

    def __init__(self, kind: str, codec: Codec | None) -> None:
        self.kind = kind
        self.mid: str | None = None
        self.direction = "sendonly"
        self.codec = codec or (
            Codec("video/VP8", 90000, 96) if kind == "video" else Codec("audio/opus", 48000, 111, 2)
        )
        self.ssrc = next(_ssrcs)
        self.msid = ("-", f"fake-{self.ssrc}")

    def set_msid(self, stream_id: str, track_id: str) -> None:
        self.msid = (stream_id, track_id)

    def release_msid(self) -> None:
        self.msid = ("-", f"unused-{next(_ssrcs)}")

    def set_codec(self, codec: Codec | None) -> None:
        if codec is not None:
            self.codec = codec

    def describe(self) -> NegotiatedMedia:
        mid = self.mid or ""
        return NegotiatedMedia(mid, self.kind, self.direction, [self.codec], {}, self.ssrc)


class FakeTransport:
    """Records offers, answers and packets; connected once an answer is applied."""

    instances: list[FakeTransport] = []

    def __init__(
        self,
        on_rtp: Callable | None = None,
        on_rtcp: Callable | None = None,
        on_state: Callable[[str], None] | None = None,
        decrypt: bool = True,
        on_data: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.on_rtp, self.on_rtcp, self.on_state = on_rtp, on_rtcp, on_state
        self.on_data = on_data  # the peer's data-channel messages (tests call it)
        self.channels: list[str] = []  # data channel labels, "open" at once
        self.data: list[tuple[str, bytes]] = []  # data-channel messages sent
        self.slots: list[FakeSlot] = []
        self.offers: list[str] = []
        self.answers: list[str] = []
        self.candidates: list[dict | None] = []
        self.sent: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.has_remote_description = False
        self.closed = False
        self.receive_errors = self.send_errors = 0
        FakeTransport.instances.append(self)

    @property
    def state(self) -> str:
        """As PeerTransport's: closed once closed, connected once an answer is applied."""
        if self.closed:
            return "closed"
        return "connected" if self.has_remote_description else "new"

    def open_data_channels(self, labels: tuple[tuple[str, bool], ...]) -> None:
        self.channels += [label for label, _reliable in labels]

    def data_labels(self) -> list[str]:
        return list(self.channels)

    def send_data(self, label: str, data: bytes) -> bool:
        if label not in self.channels or self.closed:
            return False
        self.data.append((label, data))
        return True

    def add_slot(self, kind: str, codec: Codec | None) -> FakeSlot:
        slot = FakeSlot(kind, codec)
        self.slots.append(slot)
        return slot

    async def create_offer(self) -> str:
        lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
        for i, slot in enumerate(self.slots):
            slot.mid = slot.mid or str(i)
            lines += [
                f"m={slot.kind} 9 UDP/TLS/RTP/SAVPF {slot.codec.payload_type}",
                f"a=mid:{slot.mid}",
                f"a={slot.direction}",
                f"a=msid:{slot.msid[0]} {slot.msid[1]}",
            ]
        sdp = "\r\n".join(lines) + "\r\n"
        self.offers.append(sdp)
        return sdp

    async def apply_answer(self, sdp: str) -> None:
        self.answers.append(sdp)
        self.has_remote_description = True

    async def receive_offer(
        self, sdp: str, prefer: dict[str, str] | None = None
    ) -> list[FakeSlot]:
        from visio_sfu.sdp import parse_offer

        for media in parse_offer(sdp):
            slot = self.add_slot(media.kind, None)
            slot.mid = media.mid
        self.has_remote_description = True
        return list(self.slots)

    async def make_answer(self) -> str:
        return await self.create_offer()

    async def answer(self, sdp: str, prefer: dict[str, str] | None = None) -> str:
        await self.receive_offer(sdp)
        return await self.make_answer()

    def negotiated(self) -> list[NegotiatedMedia]:
        return [s.describe() for s in self.slots if s.mid is not None]

    def send_rtp(self, data: bytes | bytearray) -> bool:
        self.sent.append(bytes(data))
        return not self.closed

    @property
    def rtp_sender(self) -> Callable[[bytes | bytearray], bool]:
        """What a DownTrack sends with (PeerTransport's compiled Route or send_rtp)."""
        return self.send_rtp

    def send_rtcp(self, data: bytes) -> bool:
        self.rtcp.append(bytes(data))
        return not self.closed

    async def add_ice_candidate(self, candidate: dict | None) -> None:
        self.candidates.append(candidate)

    async def close(self) -> None:
        self.closed = True
