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


RID_URIS = (
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
)


def keep_rid_extensions(offer_sdp: str, answer_sdp: str) -> str:
    """Amend an answer to accept the rid header extensions in every video section that
    offers them (aiortc accepts them only with simulcast). A client on one connection
    (LiveKit's /rtc/v1) offers receive-only video sections first: were the extensions refused
    there, Chromium could negotiate no simulcast on that bundle afterwards ("negotiates
    simulcast but does not negotiate the RID RTP header extension")."""
    offered: dict[str, dict[str, int]] = {}
    for section in sections(offer_sdp)[1:]:
        mid = next((line[6:].strip() for line in section if line.startswith("a=mid:")), "")
        offered[mid] = _extmap_ids(section)
    parts = sections(answer_sdp)
    for section in parts[1:]:
        if not section or not section[0].startswith("m=video"):
            continue
        mid = next((line[6:].strip() for line in section if line.startswith("a=mid:")), "")
        have = _extmap_ids(section)
        for uri in RID_URIS:
            ext_id = offered.get(mid, {}).get(uri)
            if ext_id is not None and uri not in have:
                section.append(f"a=extmap:{ext_id} {uri}")
    return "\r\n".join(line for part in parts for line in part) + "\r\n"


TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def _extmap_ids(lines: list[str]) -> dict[str, int]:
    """uri -> id of a section's ``a=extmap`` lines."""
    out: dict[str, int] = {}
    for line in lines:
        value = _attribute(line, "extmap")
        if value is None:
            continue
        parts = value.split()
        head = parts[0].split("/")[0] if parts else ""
        if len(parts) >= 2 and head.isdigit():
            out[parts[1]] = int(head)
    return out


#: the id our subscriber offers give transport-cc: one that aiortc never uses (it numbers its
#: own extensions from 1 as sections of a new kind appear), so that no later offer of the same
#: connection remaps it (Firefox refuses an offer that does)
TRANSPORT_CC_ID = 8


def offer_transport_cc(sdp: str, ext_id: int = TRANSPORT_CC_ID) -> str:
    """Our subscriber offer with the transport-cc header extension (id ``ext_id``, for the
    whole bundle) and its feedback added to every active audio and video section (aiortc
    offers neither). Unchanged if a section already uses that id."""
    parts = sections(sdp)
    used = {i for part in parts[1:] for i in _extmap_ids(part).values()}
    free = ext_id
    if free in used or any(TRANSPORT_CC_URI in _extmap_ids(p) for p in parts[1:]):
        return sdp
    out = list(parts[0])
    for part in parts[1:]:
        kind = part[0][2:].split(" ", 1)[0]
        if kind not in ("audio", "video") or part[0].split()[1] == "0":
            out += part
            continue
        out += _with_transport_cc(part, free)
    return "\r\n".join(out) + "\r\n"


def _with_transport_cc(part: list[str], ext_id: int) -> list[str]:
    """A section's lines with the transport-cc extension (``ext_id``) and its feedback for
    each media payload type, after the section's last extmap (or its first line)."""
    pts = [
        v.split()[0]
        for v in (_attribute(line, "rtpmap") for line in part)
        if v and not v.split()[-1].lower().startswith(("rtx/", "red/", "ulpfec/"))
    ]
    extra = [f"a=extmap:{ext_id} {TRANSPORT_CC_URI}"] + [
        f"a=rtcp-fb:{pt} transport-cc" for pt in pts
    ]
    at = max((k for k, line in enumerate(part) if line.startswith("a=extmap:")), default=0)
    return part[: at + 1] + extra + part[at + 1 :]


def answer_transport_cc(offer_sdp: str, answer_sdp: str, mids: set[str]) -> str:
    """Our answer with the transport-cc header extension and its feedback accepted in the
    sections ``mids`` where the offer has it, under the offer's id (aiortc answers without
    it): where the client receives, it then reports what arrives, for our send-side estimate
    (as for our offers' sections, ``offer_transport_cc``); where it sends, we report what
    arrives (TwccResponder), for its own."""
    offered: dict[str, int] = {}
    for part in sections(offer_sdp)[1:]:
        mid = next((line[6:].strip() for line in part if line.startswith("a=mid:")), "")
        found = _extmap_ids(part).get(TRANSPORT_CC_URI)
        if found is not None:
            offered[mid] = found
    parts = sections(answer_sdp)
    out = list(parts[0])
    for part in parts[1:]:
        mid = next((line[6:].strip() for line in part if line.startswith("a=mid:")), "")
        ext_id = offered.get(mid)
        if mid not in mids or ext_id is None or TRANSPORT_CC_URI in _extmap_ids(part):
            out += part
            continue
        out += _with_transport_cc(part, ext_id)
    return "\r\n".join(out) + "\r\n"


def answered_extension(sdp: str, uri: str) -> int | None:
    """The id an answer gives header extension ``uri`` (in any section), or None."""
    for part in sections(sdp)[1:]:
        found = _extmap_ids(part).get(uri)
        if found is not None:
            return found
    return None


#: Opus options a sender only uses when the receiver's description asks for them (RFC 7587)
OPUS_OPTIONS = ("useinbandfec", "usedtx")


def _opus_payload_types(lines: list[str]) -> list[str]:
    return [
        v.split()[0]
        for v in (_attribute(line, "rtpmap") for line in lines)
        if v and len(v.split()) > 1 and v.split()[1].lower().startswith("opus/")
    ]


def _with_fmtp(lines: list[str], options: dict[str, str]) -> list[str]:
    """A section's lines with ``options`` added to each Opus payload type's a=fmtp (one made
    after its a=rtpmap if there is none); options already there are left as they are."""
    out = list(lines)
    for pt in _opus_payload_types(out):
        at = next((k for k, line in enumerate(out) if line.startswith(f"a=fmtp:{pt} ")), None)
        if at is None:
            rtpmap = next(k for k, line in enumerate(out) if line.startswith(f"a=rtpmap:{pt} "))
            out.insert(
                rtpmap + 1, f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in options.items())
            )
            continue
        head, _, params = out[at].partition(" ")
        have = {p.split("=", 1)[0].strip().lower() for p in params.split(";") if p.strip()}
        extra = [f"{k}={v}" for k, v in options.items() if k not in have]
        if extra:
            out[at] = head + " " + ";".join([params.strip(), *extra] if params.strip() else extra)
    return out


def keep_opus_options(offer_sdp: str, answer_sdp: str) -> str:
    """Our answer to a publisher, with the Opus in-band FEC and DTX its offer asked for: aiortc
    answers Opus with no a=fmtp, and a browser's encoder then sends neither (no FEC to repair
    a lost packet, and silence sent in full)."""
    offered = sections(offer_sdp)[1:]
    parts = sections(answer_sdp)
    out = list(parts[0])
    for index, part in enumerate(parts[1:]):
        options: dict[str, str] = {}
        if index < len(offered):
            for line in offered[index]:
                value = _attribute(line, "fmtp")
                if value is None or value.split()[0] not in _opus_payload_types(offered[index]):
                    continue
                for param in value.partition(" ")[2].split(";"):
                    key, _, val = param.strip().partition("=")
                    if key.lower() in OPUS_OPTIONS and val.strip() == "1":
                        options[key.lower()] = "1"
        out += _with_fmtp(part, options) if options else part
    return "\r\n".join(out) + "\r\n"


def offer_opus_fec(sdp: str) -> str:
    """Our subscriber offer saying that we (as its sender) may carry Opus in-band FEC: what a
    publisher sends is forwarded as it is, FEC included, and the receiver decodes it."""
    parts = sections(sdp)
    out = list(parts[0])
    for part in parts[1:]:
        out += _with_fmtp(part, {"minptime": "10", "useinbandfec": "1"})
    return "\r\n".join(out) + "\r\n"
