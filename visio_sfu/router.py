"""RtpRouter: which published track and layer an incoming RTP packet belongs to.

By SSRC first (one dict lookup, the hot path); an unknown SSRC is learnt from the packet's MID
header extension (which track) and, for simulcast, its RID extension (which layer), as browsers
announce simulcast layers by rid, not by SSRC. Retransmissions on an RTX stream (RFC 4588) are
routed too, marked as such: by the SDP's FID groups, or learnt from the RTX payload type and the
repaired-RID extension. Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from struct import unpack_from
from typing import TYPE_CHECKING

from .rtp.header import find_extension, payload_offset

if TYPE_CHECKING:
    from .publisher import Layer, Publisher

#: (track, layer, rtx): ``rtx`` is True for a retransmission to unwrap (RFC 4588)
Route = tuple["Publisher", "Layer", bool]


class RtpRouter:
    """The routing table of one publish connection."""

    def __init__(self) -> None:
        self._by_ssrc: dict[int, Route] = {}
        self._by_mid: dict[str, Publisher] = {}
        self.mid_ext_id = 0  # the MID header extension's id on this connection (0: none)
        self.rid_ext_id = 0  # the RID header extension's id (0: none)
        self.rrid_ext_id = 0  # the repaired-RID header extension's id (0: none)
        self.unknown = 0  # packets no track claims

    def add(self, track: Publisher, ssrcs: list[int], rtx: dict[int, int] | None = None) -> None:
        """Route ``track``'s packets: by its mid, and by the SSRCs its SDP announces (simulcast
        SSRCs are learnt from the RID extension instead); ``rtx``: RTX SSRC -> media SSRC."""
        self._by_mid[track.mid] = track
        self.announce(track, ssrcs, rtx)

    def announce(
        self, track: Publisher, ssrcs: list[int], rtx: dict[int, int] | None = None
    ) -> None:
        """SSRCs a (renegotiated) offer announces for a track without simulcast."""
        if not track.simulcast:
            layer = track.layers[0]
            for ssrc in ssrcs:
                self._by_ssrc[ssrc] = (track, layer, False)
            for rtx_ssrc, media_ssrc in (rtx or {}).items():
                if media_ssrc in ssrcs:
                    self._by_ssrc[rtx_ssrc] = (track, layer, True)

    def remove(self, track: Publisher) -> None:
        """Forget a track: its packets are unknown from now on."""
        if self._by_mid.get(track.mid) is track:
            del self._by_mid[track.mid]
        for ssrc in [s for s, entry in self._by_ssrc.items() if entry[0] is track]:
            del self._by_ssrc[ssrc]

    def route(self, data: bytes) -> Route | None:
        """(track, layer) of an RTP packet of at least 12 bytes, or None (counted unknown)."""
        entry = self._by_ssrc.get(unpack_from("!I", data, 8)[0])
        if entry is None:
            entry = self._learn(data)
        return entry

    def _learn(self, data: bytes) -> Route | None:
        track = layer = None
        if self.mid_ext_id and payload_offset(data) >= 0:
            mid = find_extension(data, self.mid_ext_id)
            if mid is not None:
                track = self._by_mid.get(bytes(mid).decode("ascii", "replace"))
        rtx = False
        if track is not None:
            pt = data[1] & 0x7F
            rtx = pt == track.rtx_payload_type
            rid_ext = self.rrid_ext_id if rtx else self.rid_ext_id
            if pt != track.codec.payload_type and not rtx:
                pass
            elif not track.simulcast:
                layer = track.layers[0]
            elif rid_ext:
                rid = find_extension(data, rid_ext)
                if rid is not None:
                    name = bytes(rid).decode("ascii", "replace")
                    layer = next((x for x in track.layers if x.rid == name), None)
        if track is None or layer is None:
            self.unknown += 1
            return None
        entry = (track, layer, rtx)
        self._by_ssrc[unpack_from("!I", data, 8)[0]] = entry
        return entry

    def track_of_ssrc(self, ssrc: int) -> Publisher | None:
        """The track sending on ``ssrc`` (for its sender reports)."""
        entry = self._by_ssrc.get(ssrc)
        return entry[0] if entry is not None else None

    def clear(self) -> None:
        """Forget everything."""
        self._by_ssrc.clear()
        self._by_mid.clear()
