"""SDP text in, values out: what the SFU reads from a publisher's offer and adds to its answer.

Pure and independent of aiortc (which parses SDP again when it applies a description): the m-
sections with their port, direction, mid, msid, SSRCs and ``a=bundle-only``; the simulcast a
browser asks for (``a=rid``, ``a=simulcast``, the RID header extensions), and the lines that
accept it in our answer, which aiortc does not negotiate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import TransportError

MAX_SDP = 256 * 1024
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass
class OfferedMedia:
    """One m-section of a remote offer: what a publisher announces."""

    index: int
    mid: str
    kind: str
    direction: str
    port: int
    msid_stream: str = ""
    msid_track: str = ""
    ssrcs: list[int] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    rtx: dict[int, int] = field(default_factory=dict)  # RTX SSRC -> its media SSRC (FID)
    bundle_only: bool = False  # a=bundle-only: port 0 yet active, on the BUNDLE transport

    @property
    def sending(self) -> bool:
        """Whether the remote side sends media in this section.

        A section with port 0 is rejected (RFC 8843 section 7.3.3), except when it carries
        ``a=bundle-only``: Firefox and GStreamer's webrtcbin, with max-bundle, write every
        section after the first that way in an initial offer, and their media flows on the
        BUNDLE transport.
        """
        return (self.port != 0 or self.bundle_only) and self.direction in ("sendrecv", "sendonly")


def sections(sdp: str) -> list[list[str]]:
    """SDP lines split into [session, m-section 1, m-section 2, ...] (empty lines dropped)."""
    parts: list[list[str]] = [[]]
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            parts.append([])
        if line:
            parts[-1].append(line)
    return parts


def _attribute(line: str, name: str) -> str | None:
    """The value of ``a=<name>:<value>`` (or '' for a flag ``a=<name>``), else None."""
    if line == f"a={name}":
        return ""
    prefix = f"a={name}:"
    return line[len(prefix) :].strip() if line.startswith(prefix) else None


def _media(index: int, lines: list[str], session_direction: str) -> OfferedMedia:
    fields = lines[0][2:].split()
    if len(fields) < 3:
        raise TransportError(f"m-section {index} is malformed")
    kind = fields[0]
    try:
        port = int(fields[1].split("/")[0])
    except ValueError:
        raise TransportError(f"m-section {index} has no valid port") from None
    if not 0 <= port <= 65535:
        raise TransportError(f"m-section {index} has no valid port")
    media = OfferedMedia(index, str(index), kind, session_direction, port)
    ssrc_msid = ""
    fid: list[tuple[int, int]] = []
    for line in lines[1:]:
        if line[2:] in DIRECTIONS and line.startswith("a="):
            media.direction = line[2:]
        elif (value := _attribute(line, "mid")) is not None and value:
            media.mid = value[:32]
        elif (value := _attribute(line, "msid")) is not None:
            parts = value.split()
            media.msid_stream = parts[0] if parts else ""
            media.msid_track = parts[1] if len(parts) > 1 else ""
        elif (value := _attribute(line, "bundle-only")) is not None:
            media.bundle_only = True
        elif (value := _attribute(line, "ssrc")) is not None:
            head, _, rest = value.partition(" ")
            if not head.isdigit() or int(head) >= 1 << 32:
                continue
            ssrc = int(head)
            if ssrc not in media.ssrcs:
                media.ssrcs.append(ssrc)
            if rest.startswith("msid:") and not ssrc_msid:
                ssrc_msid = rest[5:]
        elif (value := _attribute(line, "ssrc-group")) is not None:
            items = value.split()
            if len(items) == 3 and items[0] == "FID" and items[1].isdigit() and items[2].isdigit():
                fid.append((int(items[1]), int(items[2])))
        elif (value := _attribute(line, "rid")) is not None:
            parts = value.split()
            if len(parts) >= 2 and parts[1] == "send" and len(media.rids) < 4:
                media.rids.append(parts[0][:16])
    # the older a=ssrc:<ssrc> msid:<stream> <track> (GStreamer's webrtcbin has no a=msid)
    if not media.msid_track and ssrc_msid:
        parts = ssrc_msid.split()
        media.msid_stream = parts[0] if parts else ""
        media.msid_track = parts[1] if len(parts) > 1 else ""
    # the first SSRC of an FID group is the media one, the second its RTX
    for media_ssrc, rtx in fid:
        if rtx in media.ssrcs:
            media.ssrcs.remove(rtx)
        media.rtx[rtx] = media_ssrc
    return media


def parse_offer(sdp: str) -> list[OfferedMedia]:
    """Parse an SDP offer into its m-sections; raise TransportError if it is not one."""
    if not isinstance(sdp, str) or len(sdp) > MAX_SDP:
        raise TransportError("SDP is not a string or is too large")
    parts = sections(sdp)
    if len(parts) < 2 or not any(line.startswith("v=") for line in parts[0]):
        raise TransportError("SDP has no version line or no media section")
    session_direction = next((x[2:] for x in parts[0] if x[2:] in DIRECTIONS), "sendrecv")
    return [_media(i, lines, session_direction) for i, lines in enumerate(parts[1:])]


def offered_simulcast(sdp: str) -> dict[str, dict]:
    """Per mid, the simulcast a remote offer asks for: rids (in order) and RID extension ids."""
    out: dict[str, dict] = {}
    for section in sections(sdp)[1:]:
        mid, rids, exts = "", [], {}
        for line in section:
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=rid:"):
                fields = line[6:].split()
                if len(fields) >= 2 and fields[1] == "send":
                    rids.append(fields[0])
            elif line.startswith("a=extmap:"):
                fields = line[9:].split()
                ident = fields[0].split("/")[0] if fields else ""
                rid_uri = len(fields) >= 2 and fields[1] in (RID_URI, REPAIRED_RID_URI)
                if rid_uri and ident.isdigit():
                    exts[fields[1]] = int(ident)
        if mid and rids and RID_URI in exts:
            out[mid] = {"rids": rids[:4], "extensions": exts}
    return out


def accept_simulcast(answer_sdp: str, simulcast: dict[str, dict]) -> str:
    """Amend an answer to accept the offer's simulcast (aiortc negotiates none of it)."""
    if not simulcast:
        return answer_sdp
    parts = sections(answer_sdp)
    for section in parts[1:]:
        mid = next((line[6:].strip() for line in section if line.startswith("a=mid:")), "")
        spec = simulcast.get(mid)
        if spec is None:
            continue
        for uri, ext_id in spec["extensions"].items():
            section.append(f"a=extmap:{ext_id} {uri}")
        section.extend(f"a=rid:{rid} recv" for rid in spec["rids"])
        section.append("a=simulcast:recv " + ";".join(spec["rids"]))
    return "\r\n".join(line for part in parts for line in part) + "\r\n"
