"""SubscribeConnection: a participant's receiving side: its subscribe connection and DownTracks.

The server makes the offers on this connection (``answer`` serves a client that offers
instead, as a WHEP player does). Changes (tracks added or removed) are batched:
at most one offer is outstanding, and changes made while it waits are sent in the next one.
Transceivers freed by a removed track are reused for the next track of the same kind, with the
same Munger, so the browser keeps one continuous stream per SSRC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .bwe import SendSideEstimator, TransportStamper
from .downtrack import DownTrack
from .errors import TransportError
from .events import Event, NegotiationFailed, OfferedTrack, SectionsWanted, SubscriberOffer
from .munger import Munger
from .publisher import Publisher
from .rtp import rtcp
from .rtp.extensions import ABS_SEND_TIME
from .rtp.twcc import parse_feedback
from .sdp import TRANSPORT_CC_URI, answered_extension, offer_opus_fec, offer_transport_cc
from .transport import PeerTransport, Slot

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT = 20.0
PROBE_INTERVAL = 2.0  # seconds between probes (after a failed one: PROBE_BACKOFF more)
PROBE_BACKOFF = 3.0
PROBE_AGAIN = 0.3  # after a successful one, if still below what is wanted: the next at once
PROBE_DURATION = 0.1  # a probe cluster is sent over this long ...
PROBE_STEPS = 5  # ... in this many bursts
MAX_NACKED = 2048  # sequence numbers taken from one compound RTCP packet, per track


#: the stream of every section of a ``fixed_sections`` client (WHEP), whatever it carries
FIXED_STREAM = "visio"


class SubscribeConnection:
    """The subscribe connection of one participant and the DownTracks it carries."""

    def __init__(
        self,
        participant_sid: str,
        emit: Callable[[Event], None],
        on_failed: Callable[[str], None],
        first_offer: int = 1,
        transport_factory: Callable[..., PeerTransport] = PeerTransport,
        data_channels: tuple[tuple[str, bool], ...] = (),
        on_data: Callable[[str, bytes], None] | None = None,
        transport: PeerTransport | None = None,
        fixed_sections: bool = False,
    ) -> None:
        """``first_offer``: the number of the first offer id (``s<n>``); a restarted connection
        goes on counting, so a late answer to an offer of the old one is never taken for an
        answer to the new one. ``data_channels``: ``(label, reliable)`` of the channels this
        connection opens before its first offer (which then never lacks an m-section);
        ``on_data`` receives what the client sends on them.

        ``transport``: the participant's one peer connection, shared with its publishing side
        (Participant ``single_pc``, LiveKit's ``/rtc/v1``): the client makes every offer, with
        receive-only m-sections this side fills (``fill`` then ``answered``); when a track to
        receive finds none free, a ``SectionsWanted`` event asks the client for more. The
        owner hands on the connection's RTCP and state (``handle_rtcp``, ``handle_state``).

        ``fixed_sections`` (with ``transport``): the client offers once and never again (WHEP).
        Every section it receives on is answered sending from the first answer, with or
        without a track (one stream for all: players take ``streams[0]``); a track takes any
        free one, a removed track's section is free at once; the owner answers the client's
        offer again itself (``Participant.reanswer``), which the client never sees. Live
        (unmuted) tracks are placed first, the most recently unmuted first, and a muted
        track gives its section up to a live one of its kind that waits (``track_muted``)."""
        self.participant_sid = participant_sid
        self.fixed_sections = fixed_sections and transport is not None
        self._emit = emit
        self._on_failed = on_failed
        #: the client offers (one shared peer connection); else this side does
        self.client_offers = transport is not None
        if transport is not None:
            self.transport = transport
        else:
            extra = {"on_data": on_data} if on_data is not None else {}
            self.transport = transport_factory(
                on_rtcp=self._on_rtcp, on_state=self._on_state, **extra
            )
            if data_channels:
                self.transport.open_data_channels(data_channels)
        self.downtracks: dict[str, DownTrack] = {}  # track sid -> DownTrack
        self._by_ssrc: dict[int, DownTrack] = {}
        self._slot: dict[str, Slot] = {}  # track sid -> transceiver
        self._to_bind: dict[str, DownTrack] = {}
        self._released: list[Slot] = []  # inactive in the offer being made
        self._free: list[Slot] = []  # inactive and negotiated: reusable
        self._mungers: dict[int | str, Munger] = {}  # transceiver id (client_offers: mid) -> munger
        self._dirty = False
        self._task: asyncio.Task | None = None
        self._answer: tuple[str, asyncio.Future] | None = None
        self._offer_sdp = ""  # the offer waiting for its answer
        self._offers = first_offer - 1
        self._early_candidates: list[dict | None] = []  # trickled before the first answer
        self.remb_bitrate: int | None = None
        #: send-side estimate from transport-cc feedback, when the subscriber negotiated it
        self.estimator = SendSideEstimator()
        self.stamper = TransportStamper(self.estimator)
        self.twcc_feedbacks = 0
        self.wanted_bitrate = 0.0  # what the layers its views allow would cost (allocator)
        self._next_probe = 0.0
        self.probe_packets = 0
        self.closed = False
        self.negotiations = 0
        # client_offers: sections asked for since its last offer, free ones after our last
        # answer (inactive, reusable), whether a new offer was asked for, an answer being made
        self._asked = {"audio": 0, "video": 0}
        self._spare = {"audio": 0, "video": 0}
        self._wanted = False
        self._filling = False
        self._want_soon = False
        self._unmuted_at: dict[str, float] = {}  # track sid -> when it was last unmuted

    # -- subscriptions -------------------------------------------------------------------
    def add(self, track: Publisher) -> DownTrack:
        """Start receiving ``track``; the next offer carries it."""
        existing = self.downtracks.get(track.sid)
        if existing is not None:
            return existing
        if self.closed or self.transport.state == "closed":
            # the client closed its peer connection (it went away without leaving: its
            # participant waits for a resume) or this one was abandoned: nothing can be offered
            # on it. The subscription is kept, unbound and fed nothing, so that the connection
            # replacing this one (Participant.reconnect) carries the track; never an error for
            # the one publishing it
            dt = DownTrack(track, self.transport.rtp_sender, self.participant_sid)
            if not self.closed:
                self.downtracks[track.sid] = dt
            return dt
        if self.client_offers:  # placed in a section of the client's next offer (fill)
            dt = DownTrack(track, self.transport.rtp_sender, self.participant_sid)
            self.downtracks[track.sid] = dt
            self._to_bind[track.sid] = dt
            track.attach(dt)
            self._schedule()
            return dt
        transceiver = self._take_transceiver(track)
        munger = self._mungers.get(id(transceiver))
        dt = DownTrack(track, self.transport.rtp_sender, self.participant_sid)
        if munger is not None:
            munger.new_epoch()  # continuous with what it sent last, whatever it carried
            dt.munger = munger
        self._mungers[id(transceiver)] = dt.munger
        self.downtracks[track.sid] = dt
        self._slot[track.sid] = transceiver
        self._to_bind[track.sid] = dt
        track.attach(dt)  # until negotiated, its packets count as dropped "not_bound"
        self._schedule()
        return dt

    def remove(self, track_sid: str) -> None:
        """Stop receiving a track; the next offer marks its m-section inactive."""
        dt = self.downtracks.pop(track_sid, None)
        transceiver = self._slot.pop(track_sid, None)
        self._to_bind.pop(track_sid, None)
        self._unmuted_at.pop(track_sid, None)
        if dt is not None:
            dt.close()
            self._by_ssrc.pop(dt.ssrc, None)
        if transceiver is not None and not self.closed:
            transceiver.direction = "inactive"
            transceiver.release_msid()
            self._released.append(transceiver)
            if self.client_offers:  # its next offer frees the section (answered inactive)
                self._ask_soon()
            else:
                self._schedule()

    def _take_transceiver(self, track: Publisher) -> Slot:
        for t in self._free:
            if t.kind == track.kind:
                self._free.remove(t)
                t.direction = "sendonly"
                t.set_codec(track.codec)
                break
        else:
            t = self.transport.add_slot(track.kind, track.codec)
        t.set_msid(track.participant_sid, track.sid)
        return t

    # -- negotiation ---------------------------------------------------------------------
    def _schedule(self) -> None:
        if self.client_offers:
            self._ask_soon()
            return
        self._dirty = True
        if self._task is None and not self.closed:
            self._task = asyncio.ensure_future(self._negotiate())

    async def _negotiate(self) -> None:
        try:
            while self._dirty and not self.closed:
                self._dirty = False
                await self._negotiate_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            # a connection closed under a negotiation (its participant dropped, the server
            # stopping) before the subscriber was: nothing to report
            if not self.closed and self.transport.state != "closed":
                logger.exception(
                    "subscriber negotiation failed (participant %s)", self.participant_sid
                )
        finally:
            self._task = None

    async def _negotiate_once(self) -> None:
        released, self._released = self._released, []
        # the tracks this offer carries: a track added from here on (even on a transceiver
        # reused, which has a mid already) is bound after the answer to the next offer, not
        # this one's, where its section is inactive (the client would drop what it is sent)
        offered = {sid: t for sid, t in self._slot.items()}
        sdp = offer_opus_fec(offer_transport_cc(await self.transport.create_offer()))
        if self.closed:
            return  # abandoned meanwhile: this offer must never reach the client
        self._offers += 1
        offer_id = f"s{self._offers}"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._answer = (offer_id, future)
        self._offer_sdp = sdp
        tracks = []
        for sid, t in self._slot.items():
            if t.mid is None or offered.get(sid) is not t:
                continue  # added while the offer was made: it is in the next one
            track = self.downtracks[sid].track
            tracks.append(OfferedTrack(t.mid, sid, track.participant_sid, track.kind, track.source))
        self._offer_event = SubscriberOffer(offer_id, sdp, tuple(tracks))
        self._emit(self._offer_event)
        try:
            answer = await asyncio.wait_for(future, ANSWER_TIMEOUT)
        except TimeoutError:
            logger.warning("participant %s did not answer offer %s", self.participant_sid, offer_id)
            self._answer = None
            self._released = released + self._released
            self._dirty = True  # offer again: the client may have dropped that one
            return
        finally:
            if self._answer is not None and self._answer[1] is future:
                self._answer = None
        try:
            await self.transport.apply_answer(answer)
        except TransportError as exc:
            self._emit(NegotiationFailed(offer_id, str(exc)))
            self._released = released + self._released
            return
        self.negotiations += 1
        self.stamper.ext_id = answered_extension(answer, TRANSPORT_CC_URI) or 0
        early, self._early_candidates = self._early_candidates, []
        for candidate in early:
            try:
                await self.transport.add_ice_candidate(candidate)
            except TransportError as exc:
                logger.info("subscriber %s: candidate dropped: %s", self.participant_sid, exc)
        self._free.extend(t for t in released if t not in self._slot.values())
        self._bind_pending(offered)

    def _bind_pending(self, offered: dict[str, Slot] | None = None) -> None:
        """Bind the DownTracks the answered offer carried (``offered``; None: every one)."""
        for sid, dt in list(self._to_bind.items()):
            t = self._slot.get(sid)
            if t is None or t.mid is None or (offered is not None and offered.get(sid) is not t):
                continue
            media = t.describe()
            mime = dt.track.codec.mime.lower()
            pt = next((c.payload_type for c in media.codecs if c.mime.lower() == mime), None)
            del self._to_bind[sid]
            if pt is None:
                logger.info("subscriber %s cannot receive %s", self.participant_sid, mime)
                dt.track.detach(dt)
                continue
            extensions = dict(media.extensions)
            if self.stamper.ext_id:
                # with transport-cc the receiver has no use for abs-send-time (its REMB): the
                # element is dropped, and its four bytes take the transport-wide number
                extensions.pop(ABS_SEND_TIME, None)
            rtx_pt = media.rtx_payload_type(pt)
            dt.bind(media.ssrc, pt, extensions, media.rtx_ssrc, rtx_pt)
            if self.stamper.ext_id:
                dt.stamp = self.stamper.stamp
            self._by_ssrc[media.ssrc] = dt
            dt.track.attach(dt)

    # -- a client that makes every offer (one peer connection) ----------------------------
    def fill(self, slots: list[Slot], receiving: set[str]) -> None:
        """Before our answer to a client offer (``slots``: its m-sections, ``receiving``: the
        mids of those it receives on): the tracks already placed keep their sections, those
        removed since are inactive in this answer (reusable in the next), and the tracks
        waiting take the free sections of their kind."""
        if self.closed:
            raise TransportError("the subscriber connection is closed")
        self._filling = True
        self._asked = {"audio": 0, "video": 0}
        self._wanted = False
        for sid in self._yielding():  # muted tracks whose sections live ones wait for
            track = self.downtracks[sid].track
            self.remove(sid)  # (fixed: its section is free in this answer)
            self.add(track)  # waits again, after the live ones
        by_mid = {s.mid: s for s in slots if s.mid is not None}
        taken = set() if self.fixed_sections else {t.mid for t in self._released}
        self._released = []
        for mid in taken:
            slot = by_mid.get(mid or "")
            if slot is not None:
                slot.direction = "inactive"
                slot.release_msid()
        for sid, old in list(self._slot.items()):
            slot = by_mid.get(old.mid or "")
            if slot is not None:
                slot.direction = "sendonly"
                slot.set_msid(self.downtracks[sid].track.participant_sid, sid)
                self._slot[sid] = slot
                taken.add(slot.mid)
        free = [by_mid[mid] for mid in by_mid if mid in receiving and mid not in taken]
        for slot in free:
            if self.fixed_sections:  # sending, carrying nothing until a track takes it
                slot.direction = "sendonly"
                if slot.msid[0] != FIXED_STREAM:
                    slot.set_msid(FIXED_STREAM, f"{FIXED_STREAM}-{slot.mid}")
            elif slot.direction != "inactive":
                slot.direction = "inactive"
                slot.release_msid()
        for sid, dt in self._waiting():
            slot = next((s for s in free if s.kind == dt.track.kind), None)
            if slot is None:
                continue
            free.remove(slot)
            slot.direction = "sendonly"
            if not self.fixed_sections:  # (fixed: the msid of the first answer stays)
                slot.set_msid(dt.track.participant_sid, sid)
            munger = self._mungers.get(slot.mid or "")
            if munger is not None:
                munger.new_epoch()  # continuous with what this section sent last
                dt.munger = munger
            self._mungers[slot.mid or ""] = dt.munger
            self._slot[sid] = slot
        spare = {"audio": 0, "video": 0}
        for slot in free:
            spare[slot.kind] = spare.get(slot.kind, 0) + 1
        for mid in taken:
            slot = by_mid.get(mid or "")
            if slot is not None and slot.direction == "inactive":
                spare[slot.kind] = spare.get(slot.kind, 0) + 1  # free after this answer
        self._spare = spare

    def answered(self, answer_sdp: str) -> None:
        """Our answer to the client's offer (after ``fill``) is made: the tracks it carries
        are bound and sent from now on; those still without a section ask for more."""
        self._filling = False
        if self.closed:
            return
        self.negotiations += 1
        self.stamper.ext_id = answered_extension(answer_sdp, TRANSPORT_CC_URI) or 0
        self._bind_pending()
        self._want()

    def unfilled(self) -> None:
        """No answer could be made after ``fill``: the tracks keep the sections it gave them
        (bound once an answer carries them); requests for offers may go out again."""
        self._filling = False

    def could_place(self) -> bool:
        """Whether an answer to the client's last offer again would place a track that waits
        (or free a section for one, or give a muted track's section to a live one): for a
        client that never offers again (WHEP), the server answers its last offer itself
        (``Participant.reanswer``) instead of asking for one."""
        if not self.client_offers or self.closed or not self.negotiations:
            return False
        waiting = {dt.track.kind for _sid, dt in self._waiting()}
        if not waiting:
            return False
        return (
            bool(self._released)
            or any(self._spare.get(kind, 0) for kind in waiting)
            or bool(self._yielding())
        )

    def track_muted(self, track_sid: str, muted: bool) -> None:
        """A track this side receives was muted or unmuted. With fixed sections (WHEP) the
        live tracks are placed first: a live track waiting while a muted one of its kind
        holds a section takes that section at the next answer (the owner's, asked for as
        for a track that comes: ``SectionsWanted``)."""
        if track_sid not in self.downtracks:
            return
        if not muted:
            self._unmuted_at[track_sid] = time.monotonic()
        if self.fixed_sections:
            self._ask_soon()

    def _waiting(self) -> list[tuple[str, DownTrack]]:
        """The tracks without a section, in the order they take one: with fixed sections, the
        live (unmuted) ones first, the most recently unmuted first; else first come."""
        waiting = [(sid, dt) for sid, dt in self._to_bind.items() if sid not in self._slot]
        if self.fixed_sections:  # (a stable sort: first come among equals)
            waiting.sort(key=lambda it: (it[1].track.muted, -self._unmuted_at.get(it[0], 0.0)))
        return waiting

    def _yielding(self) -> list[str]:
        """With fixed sections: the placed tracks that are muted while more live tracks of
        their kind wait than there are free sections, as many as those lack (their sections
        go to them)."""
        if not self.fixed_sections:
            return []
        lacking = {"audio": 0, "video": 0}
        for _sid, dt in self._waiting():
            if not dt.track.muted:
                lacking[dt.track.kind] += 1
        for kind in lacking:
            lacking[kind] -= self._spare.get(kind, 0)  # free after the last answer
        for slot in self._released:
            lacking[slot.kind] = lacking.get(slot.kind, 0) - 1  # (fixed: free at the next)
        out = []
        for sid in self._slot:
            track = self.downtracks[sid].track
            if track.muted and lacking[track.kind] > 0:
                lacking[track.kind] -= 1
                out.append(sid)
        return out

    def mid_to_track(self) -> dict[str, str]:
        """Which track each section carries (mid -> track sid), as answered last."""
        return {t.mid: sid for sid, t in self._slot.items() if t.mid is not None}

    def _ask_soon(self) -> None:
        """``_want`` once the changes of this turn of the event loop are made (one request
        for tracks added or removed together)."""
        if not self._want_soon and not self.closed:
            self._want_soon = True
            asyncio.get_running_loop().call_soon(self._want)

    def _want(self) -> None:
        """Ask the client for an offer when tracks wait for a section (with more sections if
        there are not enough free ones), or when sections were released: answered inactive
        in its next offer, they are free for the next tracks."""
        self._want_soon = False
        if self.closed or self._filling or not self.negotiations:
            return  # (the answer being made, or the first one, places them or asks)
        if self.fixed_sections:  # no offer will come: the owner answers again, if it helps
            if self.could_place():
                self._emit(SectionsWanted(0, 0))
            return
        waiting = {"audio": 0, "video": 0}
        for sid, dt in self._to_bind.items():
            if sid not in self._slot:
                waiting[dt.track.kind] += 1
        if not any(waiting.values()) and not self._released:
            return
        extra = {k: max(0, n - self._spare.get(k, 0) - self._asked[k]) for k, n in waiting.items()}
        if self._wanted and not any(extra.values()):
            return  # an offer was asked for already, with room enough
        for k, n in extra.items():
            self._asked[k] += n
        self._wanted = True
        self._emit(SectionsWanted(extra["audio"], extra["video"]))

    def handle_rtcp(self, data: bytes) -> None:
        """A compound RTCP packet from the client on a shared connection (see __init__)."""
        self._on_rtcp(data)

    def handle_state(self, state: str) -> None:
        """The shared connection's state changed (see __init__)."""
        self._on_state(state)

    def offer(self) -> None:
        """Make an offer now even if nothing changed (a LiveKit client waits for one, with the
        data channels, right after joining)."""
        if self.client_offers:
            raise TransportError("the client makes the offers on this connection")
        self._schedule()

    def restart_ice(self) -> None:
        """Offer again now, with new ICE credentials (see Participant.restart_ice)."""
        if self.client_offers:
            raise TransportError("the client makes the offers on this connection")
        self.transport.restart_ice()
        self._schedule()

    def repeat_offer(self) -> bool:
        """Emit the offer waiting for its answer again, if any (a client whose signaling came
        back while it was sent: see Room.resume_signaling); True if there was one."""
        pending = self.pending_offer()
        event = getattr(self, "_offer_event", None)
        if pending is None or event is None or event.offer_id != pending[0]:
            return False
        self._emit(event)
        return True

    def pending_offer(self) -> tuple[str, str] | None:
        """``(offer id, sdp)`` of the offer waiting for its answer, if any (to send it again
        to a client that reconnected meanwhile)."""
        if self._answer is None or self._answer[1].done():
            return None
        return self._answer[0], self._offer_sdp

    @property
    def offers_made(self) -> int:
        """How many offers this connection numbered (the next one is ``s<offers_made + 1>``)."""
        return self._offers

    async def add_ice_candidate(self, candidate: dict | None) -> None:
        """A candidate trickled by the client. Browsers trickle as soon as they set their
        answer, often before the answer reaches us: those wait until it is applied."""
        if self.transport.has_remote_description:
            await self.transport.add_ice_candidate(candidate)
        elif len(self._early_candidates) < 64:
            self._early_candidates.append(candidate)

    async def answer(self, offer_sdp: str, tracks: list[Publisher]) -> str:
        """Answer a client's offer instead of offering (a WHEP player offers receive-only
        sections): each section carries the next of ``tracks`` of its kind, the others are
        inactive. Only before any other negotiation; returns the answer SDP."""
        if self.closed:
            raise TransportError("the subscriber connection is closed")
        if self.negotiations or self._task is not None or self._answer is not None:
            raise TransportError("this connection already negotiates with offers of its own")
        slots = await self.transport.receive_offer(offer_sdp)
        pending = list(tracks)
        for slot in slots:
            track = next((t for t in pending if t.kind == slot.kind), None)
            if track is None or track.sid in self.downtracks:
                slot.direction = "inactive"
                slot.release_msid()
                continue
            pending.remove(track)
            slot.direction = "sendonly"
            slot.set_msid(track.participant_sid, track.sid)
            dt = DownTrack(track, self.transport.rtp_sender, self.participant_sid)
            self._mungers[id(slot)] = dt.munger
            self.downtracks[track.sid] = dt
            self._slot[track.sid] = slot
            self._to_bind[track.sid] = dt
        sdp = await self.transport.make_answer()
        self.negotiations += 1
        self._bind_pending()
        return sdp

    def on_answer(self, offer_id: object, sdp: str) -> None:
        """The client's answer to our offer ``offer_id``; raises TransportError if unexpected."""
        if self._answer is None or (offer_id is not None and offer_id != self._answer[0]):
            raise TransportError("no subscriber offer is waiting for this answer")
        future = self._answer[1]
        if not future.done():
            future.set_result(sdp)

    # -- RTCP and state ------------------------------------------------------------------
    def _on_rtcp(self, data: bytes) -> None:
        now = time.monotonic()
        nacked: dict[DownTrack, dict[int, None]] = {}  # every NACK of the compound, once
        for pt, fmt, pkt in rtcp.iter_rtcp(data):
            if pt == rtcp.RTPFB and fmt == rtcp.NACK:
                dt = self._by_ssrc.get(rtcp.media_ssrc(pkt))
                if dt is not None:
                    seqs = nacked.setdefault(dt, {})
                    if len(seqs) < MAX_NACKED:
                        seqs.update(dict.fromkeys(rtcp.parse_nack(pkt)))
            elif pt == rtcp.PSFB and fmt == rtcp.PLI:
                dt = self._by_ssrc.get(rtcp.media_ssrc(pkt))
                if dt is not None:
                    _keyframe_for(dt, now)
            elif pt == rtcp.PSFB and fmt == rtcp.FIR:
                for ssrc, _seq in rtcp.parse_fir(pkt):
                    dt = self._by_ssrc.get(ssrc)
                    if dt is not None:
                        _keyframe_for(dt, now)
            elif pt == rtcp.RTPFB and fmt == rtcp.TWCC:
                feedback = parse_feedback(pkt)
                if feedback is not None and self.stamper.ext_id:
                    self.twcc_feedbacks += 1
                    self.estimator.on_feedback(feedback[1], feedback[2], now)
            elif pt == rtcp.PSFB and fmt == rtcp.REMB:
                remb = rtcp.parse_remb(pkt)
                if remb is not None:
                    self.remb_bitrate = remb[0]
            elif pt in (rtcp.RR, rtcp.SR):
                for block in rtcp.parse_report_blocks(pkt):
                    dt = self._by_ssrc.get(block[0])
                    if dt is not None:
                        dt.handle_report(block[1], block[4], block[5], block[6], now)
        for dt, seqs in nacked.items():
            dt.handle_nack(list(seqs), now)

    def probe(self, now: float) -> float | None:
        """Probe the path upward when the estimate is below what this subscriber's views want:
        a cluster of recent packets resent at up to twice the estimate over 100 ms (duplicates
        its receiver discards, each with a transport-wide number); the feedback about them says
        whether the path carried that rate, and only then may the estimate, and the layers,
        go up. Returns the cluster's target rate, or None if no probe was sent."""
        est = self.estimator
        # probes go on doubling while they succeed (a lifted cap is found in a few of them);
        # a failed one waits PROBE_BACKOFF more, a path that is full is not pushed often
        succeeded = bool(est.probes) and est.last_probe is not None
        if (
            not self.stamper.ext_id
            or not self.twcc_feedbacks
            or est.probing
            or now < self._next_probe - (PROBE_INTERVAL - PROBE_AGAIN if succeeded else 0.0)
            or (est.probes and est.last_probe is None and now < self._next_probe + PROBE_BACKOFF)
            or est.state == "overuse"
            or est.loss_fraction > 0.05
            or est.estimate >= self.wanted_bitrate  # the allocator counts its margin
        ):
            return None
        recent = [
            (dt, b)
            for dt in self.downtracks.values()
            if dt.track.kind == "video" and dt.rtx_ssrc
            for b in dt.recent
        ]
        if len(recent) < 4:
            return None  # probes are RTX of recent packets: none without an RTX stream
        target = min(2 * est.estimate, 1.2 * self.wanted_bitrate)
        size = sum(len(b) for _, b in recent) / len(recent)
        extra = max(target - est.acked_rate, target / 2)  # what the probe packets add
        count = max(int(extra * PROBE_DURATION / 8 / size), 10)
        self._next_probe = now + PROBE_INTERVAL
        est.probe_start(self.stamper.seq, target, now)
        packets = [recent[k % len(recent)] for k in range(count)]
        per_step = -(-count // PROBE_STEPS)
        loop = asyncio.get_running_loop()
        for step in range(PROBE_STEPS):
            part = packets[step * per_step : (step + 1) * per_step]
            last = step == PROBE_STEPS - 1
            loop.call_later(step * PROBE_DURATION / PROBE_STEPS, self._send_probe, part, last)
        return target

    def _send_probe(self, packets: list[tuple[DownTrack, bytearray]], last: bool) -> None:
        if self.closed:
            return
        now = time.monotonic()
        for dt, sent in packets:
            buf = dt.rtx_packet(sent)
            self.stamper.stamp(buf, now)
            if self.transport.send_rtp(buf):
                self.probe_packets += 1
        if last:
            self.estimator.probe_end(self.stamper.seq)

    @property
    def bandwidth(self) -> int | None:
        """What this subscriber can receive, in bits per second: the send-side estimate once
        transport-cc feedback comes, else its REMB; None while neither is known."""
        if self.twcc_feedbacks:
            return int(self.estimator.estimate)
        return self.remb_bitrate

    def _on_state(self, state: str) -> None:
        if state == "connected":
            for dt in self.downtracks.values():
                if dt.bound:
                    dt.restart()
        elif state == "failed":
            self._on_failed("ice_failed")

    def send_reports(self, now: float) -> None:
        """Send a sender report for every downstream track."""
        for dt in self.downtracks.values():
            sr = dt.sender_report(now)
            if sr is not None:
                self.transport.send_rtcp(sr)

    async def close(self) -> None:
        """Stop every DownTrack and close the connection."""
        self.abandon()
        await self.transport.close()

    def abandon(self) -> None:
        """Stop at once, without waiting: no more offers or events from this connection, every
        DownTrack closed; ``close`` then closes the transport."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._answer is not None and not self._answer[1].done():
            self._answer[1].cancel()
        for dt in self.downtracks.values():
            dt.close()
        self.downtracks.clear()
        self._by_ssrc.clear()
        self._slot.clear()


def _keyframe_for(dt: DownTrack, now: float) -> None:
    """A subscriber asks for a keyframe (PLI, FIR): of the layer it decodes, or waits for;
    not of every layer (a paused subscriber asks for none)."""
    layer = dt.current_layer if dt.current_layer >= 0 else dt.target_layer
    if layer >= 0:
        dt.track.request_keyframe(now, layer)
