"""Values that describe negotiated media, shared by the transport and the forwarding code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Codec:
    """A negotiated codec: what a DownTrack needs to offer and forward it."""

    mime: str
    clock_rate: int
    payload_type: int
    channels: int | None = None
    parameters: dict | None = None

    @property
    def is_rtx(self) -> bool:
        """A retransmission (RTX) format, not a media codec."""
        return self.mime.lower().endswith("/rtx")


@dataclass
class NegotiatedMedia:
    """What one m-section negotiated: its mid, kind, codecs and header extensions."""

    mid: str
    kind: str
    direction: str
    codecs: list[Codec]
    extensions: dict[str, int]  # uri -> id
    ssrc: int = 0  # our sending SSRC (subscriber side)
    rtx_ssrc: int = 0  # our RTX SSRC (subscriber side), 0 if RTX was not negotiated

    def rtx_payload_type(self, payload_type: int) -> int:
        """The RTX payload type negotiated for ``payload_type`` (its apt), or 0."""
        for c in self.codecs:
            if c.is_rtx and str((c.parameters or {}).get("apt")) == str(payload_type):
                return c.payload_type
        return 0

    def media_codec(self) -> Codec | None:
        """The first codec that is not RTX: the one the remote side sends."""
        return next((c for c in self.codecs if not c.is_rtx), None)
