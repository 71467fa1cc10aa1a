"""A small aiortc client for visio-sfu: connect, publish, receive.

Used by the examples and the end-to-end tests. It speaks docs/protocol.md over one WebSocket
(visio_client.protocol.SignalingConnection, which also pings) with two peer connections
(publisher: we offer; subscriber: the server offers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from visio_sfu.sdp import TRANSPORT_CC_URI, answer_transport_cc, answered_extension

from . import aiortc_fixes
from .feedback import TransportFeedback
from .protocol import ServerError, SignalingConnection

aiortc_fixes.apply()

__all__ = ["Client", "RemoteTrack", "ServerError"]

logger = logging.getLogger(__name__)


@dataclass
class RemoteTrack:
    """A track received from another participant."""

    track: MediaStreamTrack
    track_sid: str
    participant_sid: str
    kind: str
    source: str


class Client:
    """One participant: a signaling socket and two peer connections."""

    def __init__(
        self, url: str, token: str, reconnect: bool = False, transport_cc: bool = False
    ) -> None:
        """``reconnect``: when the socket drops (a server stopped, drained or died), join
        again by itself (resuming if the same server still holds us) and publish the same
        tracks: docs/cluster.md. ``transport_cc``: accept the transport-cc extension the
        server offers and report what arrives (visio_client.feedback), so that the server
        estimates our downlink and chooses our layers by it (aiortc alone reports nothing)."""
        self.url = url.rstrip("/")
        self.token = token
        self.reconnect = reconnect
        self.transport_cc = transport_cc
        self.feedback: TransportFeedback | None = None  # on the subscriber connection
        #: asks again for what the subscriber connection misses (aiortc asks once)
        self.nack_retry: aiortc_fixes.NackRetry | None = None
        self.reconnects = 0  # successful reconnections
        #: called after each successful reconnection, with its 'joined' message
        self.on_reconnected: Callable[[dict], None] | None = None
        self._published: list[tuple[MediaStreamTrack, str, bool]] = []
        self._closed = False
        self._reconnecting: asyncio.Task | None = None
        self._name: str | None = None
        self.signal = self._new_signal()
        # max-bundle: aiortc's default (balanced) leaves the second m-section of a kind on a
        # transport of its own when an offer brings several at once, and it never connects
        config = RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self._config = config
        self.publisher = RTCPeerConnection(config)
        self.subscriber = RTCPeerConnection(config)
        self._restarting = False  # waiting for a fresh subscriber connection
        self.subscriber_restarts = 0
        self.joined: dict | None = None
        #: the room we are in and who else is there (a move to a breakout room changes both)
        self.room: dict | None = None
        self.participants: dict[str, dict] = {}  # sid -> participant (docs/protocol.md)
        #: the tracks received now: those of the latest subscriber offer applied
        self.remote_tracks: list[RemoteTrack] = []
        self.on_track: Callable[[RemoteTrack], None] | None = None
        self.on_message: Callable[[dict], None] | None = None
        self._negotiation = asyncio.Lock()

    # -- connection ------------------------------------------------------------------------
    def _new_signal(self) -> SignalingConnection:
        signal = SignalingConnection(self.url, self.token)
        signal.on_message = self._on_message
        signal.on_offer = self._on_offer
        signal.on_close = self._on_socket_closed
        return signal

    def _on_socket_closed(self) -> None:
        if not self.reconnect or self._closed or self.joined is None:
            return
        if self._reconnecting is not None and not self._reconnecting.done():
            return
        left = [e for e in self.signal.events if e.get("type") == "leave"]
        if left and left[-1].get("reason") in ("replaced", "removed"):
            return  # we were put out: do not come back
        ws = self.signal.ws
        if ws is not None and ws.close_code in (4001, 4004, 4029):
            return  # room full, resumed by another connection, flooding: coming back is wrong
        self._reconnecting = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.25
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                joined = await self._rejoin()
            except Exception as exc:
                logger.info("reconnection failed (%s: %s); trying again", type(exc).__name__, exc)
                delay = min(delay * 2, 2.0)
                continue
            self.reconnects += 1
            if self.on_reconnected is not None:
                self.on_reconnected(joined)
            return

    async def _rejoin(self) -> dict:
        """New socket, new peer connections, join (resuming if possible), publish again."""
        old = (self.signal, self.publisher, self.subscriber)
        self.signal = self._new_signal()
        self.signal.on_close = None  # until joined: a failure here is retried by the loop
        self.publisher = RTCPeerConnection(self._config)
        self._replace_subscriber()  # a fresh one, no tracks (closes the old one)
        self.subscriber_restarts -= 1  # not a restart the server made
        await old[0].close(leave=False)
        await old[1].close()
        try:
            await self.signal.connect()
            msg: dict = {"type": "join"}
            if self._name:
                msg["name"] = self._name
            resume = (self.joined or {}).get("resume")
            if resume:
                msg["resume"] = resume
            joined = await self.request(msg)
            self.joined = joined
            tracks, self._published = self._published, []
            if tracks:
                for track, source, muted in tracks:
                    await self._add_track(track, source, muted)
                await self.negotiate_publisher()
        except BaseException:
            await self.signal.close(leave=False)
            raise
        self.signal.on_close = self._on_socket_closed
        if not self.signal.open:  # dropped while we were joining
            self._on_socket_closed()
        return joined

    async def connect(
        self, name: str | None = None, room: str | None = None, resume: str | None = None
    ) -> dict:
        """Open the socket and join; returns the 'joined' message. ``resume``: the resume
        token of an earlier connection (its 'joined' has it) whose participant to take back."""
        try:
            self._name = name
            await self.signal.connect()
            msg: dict = {"type": "join"}
            if name:
                msg["name"] = name
            if room:
                msg["room"] = room
            if resume:
                msg["resume"] = resume
            self.joined = await self.request(msg)
        except BaseException:
            await self.close()
            raise
        self.room = self.joined["room"]
        self.participants = {p["sid"]: p for p in self.joined.get("participants", [])}
        return self.joined

    @property
    def ws(self):  # noqa: ANN201 - aiohttp.ClientWebSocketResponse | None
        """The WebSocket (tests close it, read its close code)."""
        return self.signal.ws

    @property
    def events(self) -> list[dict]:
        """Every message the server sent, in order."""
        return self.signal.events

    async def request(self, msg: dict, timeout: float = 15) -> dict:
        """Send a request and wait for the answer with the same id."""
        return await self.signal.request(msg, timeout)

    async def send(self, msg: dict) -> None:
        """Send one message."""
        await self.signal.send(msg)

    async def wait_for(self, predicate: Callable[[dict], bool] | str, timeout: float = 15) -> dict:
        """Wait for a server event (already received or future) matching ``predicate``."""
        return await self.signal.wait_for(predicate, timeout)

    def _on_message(self, msg: dict) -> None:
        if self.on_message is not None:
            self.on_message(msg)
        kind = msg.get("type")
        if kind == "subscriber_restarted":
            self._replace_subscriber()  # before the next offer, which is for the new one
        elif kind == "moved":  # a breakout room (or back): same connections, other people
            self.room = msg.get("room")
            self.participants = {p["sid"]: p for p in msg.get("participants", [])}
        elif kind == "participant_joined":
            self.participants[msg["participant"]["sid"]] = msg["participant"]
        elif kind == "participant_left":
            self.participants.pop(msg["participant"]["sid"], None)

    def _on_offer(self, msg: dict) -> None:
        if not self._restarting:  # else: made for the connection being replaced
            asyncio.ensure_future(self._answer_subscriber(msg, self.subscriber))

    async def _answer_subscriber(self, msg: dict, pc: RTCPeerConnection) -> None:
        try:
            async with self._negotiation:
                if pc is not self.subscriber:
                    return  # replaced meanwhile
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
                self._sync_tracks(pc, msg.get("tracks", []))
                answer = await pc.createAnswer()
                await pc.setLocalDescription(answer)
                if pc is not self.subscriber:
                    return
                sdp = pc.localDescription.sdp
                if self.nack_retry is None or self.nack_retry.pc is not pc:
                    if self.nack_retry is not None:
                        self.nack_retry.close()  # a connection replaced
                    self.nack_retry = aiortc_fixes.NackRetry(pc)
                if self.transport_cc:
                    sdp = self._with_transport_cc(pc, msg["sdp"], sdp)
                await self.send(
                    {"type": "answer", "target": "subscriber", "id": msg["id"], "sdp": sdp}
                )
        except Exception as exc:  # never stay silently broken: report, start over
            if pc is not self.subscriber or self._restarting or not self.signal.open:
                return
            logger.warning("subscriber offer %s could not be applied: %s", msg.get("id"), exc)
            try:
                await self.restart_subscriber(f"{type(exc).__name__}: {exc}", msg.get("id"))
            except Exception:
                logger.exception("subscriber restart failed")

    def _with_transport_cc(self, pc: RTCPeerConnection, offer: str, answer: str) -> str:
        """Our answer with the transport-cc extension the server offered (aiortc leaves it
        out), and the feedback that reports it running on ``pc``."""
        mids = {t.mid for t in pc.getTransceivers() if t.mid is not None}
        answer = answer_transport_cc(offer, answer, mids)
        ext_id = answered_extension(answer, TRANSPORT_CC_URI)
        if ext_id is None:
            return answer
        if self.feedback is not None and self.feedback.pc is not pc:
            self.feedback.close()  # a connection replaced
            self.feedback = None
        if self.feedback is None:
            self.feedback = TransportFeedback(pc, ext_id)
        return answer

    async def restart_subscriber(self, message: str = "", offer: object = None) -> dict:
        """Report a subscriber offer we could not apply (docs/protocol.md, negotiation_failed):
        the server starts a fresh subscriber connection, which replaces ours."""
        self._restarting = True
        try:
            msg = {"type": "negotiation_failed", "target": "subscriber", "message": message}
            if offer is not None:
                msg["offer"] = offer
            return await self.request(msg)
        finally:
            self._restarting = False

    def _replace_subscriber(self) -> None:
        old = self.subscriber
        self.subscriber = RTCPeerConnection(self._config)
        self.remote_tracks = []
        self._restarting = False
        self.subscriber_restarts += 1
        asyncio.ensure_future(old.close())

    def _sync_tracks(self, pc: RTCPeerConnection, offered: list[dict]) -> None:
        """``remote_tracks`` becomes what this offer carries: a track missing from it is gone,
        and an m-section the server reuses (aiortc keeps its receiver's track object) now
        carries another participant's track (docs/protocol.md, subscriber offer)."""
        by_mid = {t.mid: t for t in pc.getTransceivers()}
        before = {(r.track_sid, id(r.track)): r for r in self.remote_tracks}
        now, new = [], []
        for info in offered:
            transceiver = by_mid.get(info.get("mid"))
            track = transceiver.receiver.track if transceiver is not None else None
            if track is None:
                continue
            remote = before.get((info.get("track", ""), id(track)))
            if remote is None:
                remote = RemoteTrack(
                    track,
                    info.get("track", ""),
                    info.get("participant", ""),
                    track.kind,
                    info.get("source", ""),
                )
                new.append(remote)
            now.append(remote)
        self.remote_tracks = now
        for remote in new:
            if self.on_track is not None:
                self.on_track(remote)

    # -- publishing ------------------------------------------------------------------------
    async def publish(
        self, *tracks: MediaStreamTrack, sources: list[str] | None = None, muted: bool = False
    ) -> list:
        """Publish tracks (``muted``: published muted); returns the server's descriptions."""
        published = []
        for i, track in enumerate(tracks):
            source = (sources or [])[i] if sources and i < len(sources) else ""
            published.append(await self._add_track(track, source, muted))
        await self.negotiate_publisher()
        return published

    async def _add_track(self, track: MediaStreamTrack, source: str, muted: bool) -> dict:
        request = {"type": "add_track", "cid": track.id, "kind": track.kind, "source": source}
        if muted:
            request["muted"] = True
        reply = await self.request(request)
        self.publisher.addTransceiver(track, direction="sendonly")
        self._published.append((track, source, muted))
        return reply["track"]

    async def negotiate_publisher(self) -> None:
        """Offer the publisher connection's current state to the server."""
        offer = await self.publisher.createOffer()
        await self.publisher.setLocalDescription(offer)
        reply = await self.request(
            {"type": "offer", "target": "publisher", "sdp": self.publisher.localDescription.sdp}
        )
        await self.publisher.setRemoteDescription(
            RTCSessionDescription(sdp=reply["sdp"], type="answer")
        )

    # -- teardown ----------------------------------------------------------------------------
    async def leave(self) -> None:
        """Leave the room politely, then close everything."""
        await self.close(leave=True)

    async def close(self, leave: bool = False) -> None:
        """Close the socket and both peer connections."""
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        for helper in (self.feedback, self.nack_retry):
            if helper is not None:
                helper.close()
        await self.signal.close(leave=leave)
        await self.publisher.close()
        await self.subscriber.close()
