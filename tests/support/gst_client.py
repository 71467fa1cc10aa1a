#!/usr/bin/python3
"""GStreamer webrtcbin as a visio-sfu client: a second, independent WebRTC stack in the tests.

Run it with the SYSTEM Python (Debian's python3-gi, gir1.2-gst-plugins-bad-1.0,
gstreamer1.0-nice, gstreamer1.0-plugins-{base,good,bad}, python3-aiohttp); it imports only the
standard library, gi and aiohttp, never the project:

    /usr/bin/python3 tests/support/gst_client.py 'ws://127.0.0.1:7880/rtc?access_token=...' \
        --publish --subscribe
    /usr/bin/python3 tests/support/gst_client.py --whip http://127.0.0.1:7880/whip/room \
        --token <JWT>

It speaks docs/protocol.md with two webrtcbin elements, as the protocol's two-connection model
asks: ``pub`` sends a VP8 test pattern (videotestsrc) and an Opus tone (audiotestsrc) and makes
the offers; ``sub`` answers the server's subscriber offers and decodes every track it receives
(depayloader, decoder, fakesink; the frames are counted after the decoder).

With ``--whip URL --token JWT`` it is a WHIP encoder (RFC 9725) instead, as OBS would be: the
same ``pub`` webrtcbin and test pattern, no WebSocket. It makes its offer, waits until ICE
gathering is complete (no trickle: every candidate is in the offer), POSTs the offer to URL with
``Authorization: Bearer JWT``, applies the 201's answer, and on exit sends DELETE to the
session's ``Location``. Its status lines then carry ``whip``: the POST's status, the session's
URL, the DELETE's status (or the error bodies).

ICE stays on 127.0.0.1: each webrtcbin's ``ice-agent`` (GstWebRTCNice) is given that address
with its ``add-local-ip-address`` action signal before gathering (libnice then gathers on the
listed addresses only), and ICE-TCP is switched off (``ice-tcp`` property).

Every second it prints one JSON line of status to stdout (connection states, RTP sent, per
received track RTP packets and decoded frames or audio buffers, errors). It exits cleanly on
SIGTERM, SIGINT, or when its stdin (a pipe) is closed.

GStreamer calls back on its own threads (streaming threads, the ICE thread, promise
callbacks): those callbacks only count, or hand the work to the asyncio loop with
``call_soon_threadsafe``. The one exception is linking a new webrtcbin source pad, which
GStreamer requires to happen in the ``pad-added`` callback itself, before data flows.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import re
import signal
import stat
import sys
import threading
import time
import urllib.parse

import aiohttp
import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402

PUBLISH = (
    "videotestsrc is-live=true pattern=smpte ! video/x-raw,width={w},height={h},framerate={fps}/1"
    " ! videoconvert ! queue ! vp8enc deadline=1 cpu-used=8 target-bitrate=400000"
    " keyframe-max-dist=30 error-resilient=partitions ! rtpvp8pay pt=96 picture-id-mode=15-bit"
    " name=vpay ! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
    " ! pub. "
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample"
    " ! queue ! opusenc bitrate=32000 ! rtpopuspay pt=111 name=apay"
    " ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! pub. "
)
DEPAY = {
    "VP8": "rtpvp8depay ! vp8dec",
    "VP9": "rtpvp9depay ! vp9dec",
    "H264": "rtph264depay ! avdec_h264",
    "OPUS": "rtpopusdepay ! opusdec",
}
STATE_PROPS = ("connection-state", "ice-connection-state", "ice-gathering-state", "signaling-state")


def ice_agent(webrtcbin):
    """The webrtcbin's ICE agent, without taking webrtcbin's own reference to it.

    GStreamer 1.22.0 creates the agent floating and never sinks it: PyGObject then sinks that
    floating reference as its own, and freeing the Python wrapper frees the agent under
    webrtcbin (GST_IS_WEBRTC_ICE criticals, then a segfault). Give webrtcbin its reference back.
    """
    ice = webrtcbin.get_property("ice-agent")
    if ice.__grefcount__ == 1:  # only Python's: webrtcbin's reference was taken
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        gobject = ctypes.CDLL("libgobject-2.0.so.0")
        ref = gobject.g_object_ref
        ref.restype, ref.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        ref(get(ice.__gpointer__, None))
    return ice


def packets(info) -> tuple[int, int]:
    """(packets, bytes) of a probed buffer or buffer list (payloaders push lists)."""
    if info.type & Gst.PadProbeType.BUFFER:
        return 1, info.get_buffer().get_size()
    blist = info.get_buffer_list()
    n = blist.length()
    return n, sum(blist.get(i).get_size() for i in range(n))


DATA = Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST


def nick(value) -> str:
    """'connected' for GST_WEBRTC_PEER_CONNECTION_STATE_CONNECTED and the like."""
    return getattr(value, "value_nick", str(value))


class Received:
    """What arrives on one webrtcbin source pad (one remote track)."""

    def __init__(self, mid: str, kind: str, encoding: str) -> None:
        self.mid, self.kind, self.encoding = mid, kind, encoding
        self.rtp_packets = self.rtp_bytes = 0
        self.decoded = 0  # video frames, or audio buffers, out of the decoder
        self.width = self.height = 0

    def on_rtp(self, pad, info):
        n, size = packets(info)
        self.rtp_packets += n
        self.rtp_bytes += size
        return Gst.PadProbeReturn.OK

    def on_decoded(self, pad, info):
        self.decoded += 1
        if self.kind == "video" and not self.width:
            caps = pad.get_current_caps()
            if caps is not None:
                s = caps.get_structure(0)
                self.width = s.get_value("width") or 0
                self.height = s.get_value("height") or 0
        return Gst.PadProbeReturn.OK


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.errors: list[str] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.next_id = 0
        self.waiting: dict[str, asyncio.Future] = {}
        self.joined: dict = {}
        self.published: dict[str, dict] = {}  # mid -> {cid, kind, sid}
        self.remote: dict[str, dict] = {}  # mid -> the subscriber offer's track info
        self.received: dict[str, Received] = {}  # pad name -> counters
        self.sent: dict[str, list[int]] = {"video": [0, 0], "audio": [0, 0]}  # packets, bytes
        self.mids: dict[str, list[str]] = {"publisher": [], "subscriber": []}
        self.candidates: dict[str, list | None] = {"publisher": [], "subscriber": []}
        self.offers_answered = 0
        self.sub_queue: asyncio.Queue = asyncio.Queue()
        self.sending: set[asyncio.Task] = set()
        self.lock = threading.Lock()
        self.whip: dict = {}  # WHIP mode: url, post (status), location, delete (status)

        desc = ""
        if args.publish:
            desc += "webrtcbin name=pub bundle-policy=max-bundle " + PUBLISH.format(
                w=args.width, h=args.height, fps=args.fps
            )
        if args.subscribe:
            desc += "webrtcbin name=sub bundle-policy=max-bundle "
        element = Gst.parse_launch(desc)
        if isinstance(element, Gst.Pipeline):
            self.pipeline = element
        else:  # a lone webrtcbin: parse_launch returns the element itself
            self.pipeline = Gst.Pipeline.new("gst-client")
            self.pipeline.add(element)
        self.pub = self.pipeline.get_by_name("pub")
        self.sub = self.pipeline.get_by_name("sub")
        for target, element in (("publisher", self.pub), ("subscriber", self.sub)):
            if element is None:
                continue
            ice = ice_agent(element)
            if not ice.emit("add-local-ip-address", args.ice_address):
                self.error(f"{target}: add-local-ip-address {args.ice_address} refused")
            if args.ice_tcp_only:  # a network that lets no UDP through: ICE over TCP alone
                ice.set_property("ice-udp", False)
                ice.set_property("ice-tcp", True)
            else:
                ice.set_property("ice-tcp", False)
            element.connect("on-ice-candidate", self.on_ice_candidate, target)
            element.connect("notify::ice-gathering-state", self.on_gathering, target)
        if self.pub is not None:
            for pad in self.pub.sinkpads:  # send only: the server never sends on this connection
                pad.props.transceiver.set_property(
                    "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
                )
            for name, kind in (("vpay", "video"), ("apay", "audio")):
                self.pipeline.get_by_name(name).get_static_pad("src").add_probe(
                    DATA, self.on_sent, kind
                )
        if self.sub is not None:
            self.sub.connect("pad-added", self.on_pad_added)

    # -- helpers ------------------------------------------------------------------------
    def error(self, text: str) -> None:
        self.errors.append(text)
        del self.errors[:-20]

    def threadsafe(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the asyncio loop (from any thread)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    async def promise(self, element, action: str, *args):
        """Emit a webrtcbin action that takes a GstPromise; return the promise's reply."""
        done = self.loop.create_future()

        def changed(_promise):  # on a GStreamer thread
            self.threadsafe(lambda: done.done() or done.set_result(None))

        promise = Gst.Promise.new_with_change_func(changed)
        element.emit(action, *args, promise)
        await asyncio.wait_for(done, 10)
        if promise.wait() != Gst.PromiseResult.REPLIED:
            raise RuntimeError(f"{action}: promise not replied")
        reply = promise.get_reply()  # keep the Structure referenced while reading it
        if reply is not None and reply.has_field("error"):
            raise RuntimeError(f"{action}: {reply.get_value('error')}")
        return reply

    async def send(self, msg: dict) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(msg))

    async def request(self, msg: dict, timeout: float = 15) -> dict:
        self.next_id += 1
        rid = msg["id"] = f"g{self.next_id}"
        self.waiting[rid] = fut = self.loop.create_future()
        try:
            await self.send(msg)
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(rid, None)
        if reply.get("type") == "error":
            raise RuntimeError(f"{msg['type']}: {reply.get('code')}: {reply.get('message')}")
        return reply

    # -- GStreamer callbacks (GStreamer threads) ------------------------------------------
    def on_sent(self, pad, info, kind):
        counts = self.sent[kind]
        n, size = packets(info)
        counts[0] += n
        counts[1] += size
        return Gst.PadProbeReturn.OK

    def on_ice_candidate(self, element, mline: int, candidate: str, target: str) -> None:
        self.threadsafe(self.queue_candidate, target, mline, candidate)

    def on_gathering(self, element, _pspec, target: str) -> None:
        complete = GstWebRTC.WebRTCICEGatheringState.COMPLETE
        if element.get_property("ice-gathering-state") == complete:
            self.threadsafe(self.queue_candidate, target, None, None)

    def on_pad_added(self, element, pad) -> None:
        """A new remote stream: depayload, decode and count it (linked here, before data flows)."""
        if pad.direction != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        s = caps.get_structure(0)
        kind = s.get_string("media") or "?"
        encoding = (s.get_string("encoding-name") or "?").upper()
        transceiver = pad.props.transceiver
        mid = transceiver.props.mid if transceiver is not None else None
        rec = Received(mid or "?", kind, encoding)
        chain = DEPAY.get(encoding, "decodebin")
        try:
            bin_ = Gst.parse_bin_from_description(
                f"queue ! {chain} ! fakesink name=sink sync=false async=false", True
            )
        except Exception as exc:  # noqa: BLE001
            self.threadsafe(self.error, f"no decoder for {encoding}: {exc}")
            bin_ = Gst.parse_bin_from_description("fakesink sync=false async=false", True)
        self.pipeline.add(bin_)
        bin_.sync_state_with_parent()
        if pad.link(bin_.get_static_pad("sink")) != Gst.PadLinkReturn.OK:
            self.threadsafe(self.error, f"could not link {pad.get_name()} ({encoding})")
        pad.add_probe(DATA, rec.on_rtp)
        sink = bin_.get_by_name("sink")
        if sink is not None:
            sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, rec.on_decoded)
        with self.lock:
            self.received[pad.get_name()] = rec

    # -- trickle --------------------------------------------------------------------------
    def queue_candidate(self, target: str, mline: int | None, candidate: str | None) -> None:
        if candidate is None:
            item = None
        else:
            mids = self.mids[target]
            mid = mids[mline] if mline is not None and mline < len(mids) else None
            item = {"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": mline}
        pending = self.candidates[target]
        if pending is None:  # the description is on the server already
            msg = {"type": "trickle", "target": target, "candidate": item}
            task = self.loop.create_task(self.send(msg))
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)
        else:
            pending.append(item)

    async def flush_candidates(self, target: str) -> None:
        pending, self.candidates[target] = self.candidates[target], None
        for item in pending or []:
            await self.send({"type": "trickle", "target": target, "candidate": item})

    # -- publisher ------------------------------------------------------------------------
    async def wait_caps(self) -> None:
        deadline = time.monotonic() + 10  # webrtcbin needs the caps of its sink pads to offer
        while any(p.get_current_caps() is None for p in self.pub.sinkpads):
            if time.monotonic() > deadline:
                raise RuntimeError("no caps on the publisher's sink pads after 10 s")
            await asyncio.sleep(0.05)

    async def publish(self) -> None:
        await self.wait_caps()
        reply = await self.promise(self.pub, "create-offer", None)
        offer = reply.get_value("offer")
        text = offer.sdp.as_text()
        sections = text.split("\r\nm=")[1:]
        for section in sections:
            kind = section.split(" ", 1)[0]
            mid = re.search(r"^a=mid:(\S+)", section, re.M).group(1)
            # webrtcbin 1.22 writes the msid only at SSRC level: a=ssrc:<n> msid:<stream> <track>
            found = re.search(r"^a=ssrc:\d+ msid:\S+ (\S+)", section, re.M)
            cid = found.group(1) if found else mid
            self.mids["publisher"].append(mid)
            added = await self.request(
                {
                    "type": "add_track",
                    "cid": cid,
                    "kind": kind,
                    "source": "camera" if kind == "video" else "microphone",
                    "name": "gstreamer",
                    "width": self.args.width if kind == "video" else 0,
                    "height": self.args.height if kind == "video" else 0,
                }
            )
            self.published[mid] = {"cid": cid, "kind": kind, "sid": added["track"]["sid"]}
        await self.promise(self.pub, "set-local-description", offer)
        self.offer_sdp = text
        answer = await self.request({"type": "offer", "target": "publisher", "sdp": text})
        await self.flush_candidates("publisher")
        self.answer_sdp = answer["sdp"]
        ok, sdp = GstSdp.SDPMessage.new_from_text(answer["sdp"])
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        await self.promise(self.pub, "set-remote-description", desc)

    # -- WHIP ---------------------------------------------------------------------------------
    async def whip_publish(self, http: aiohttp.ClientSession) -> None:
        """Offer with every candidate in it, POST it, apply the answer (RFC 9725, no trickle)."""
        await self.wait_caps()
        reply = await self.promise(self.pub, "create-offer", None)
        offer = reply.get_value("offer")
        for section in offer.sdp.as_text().split("\r\nm=")[1:]:
            mid = re.search(r"^a=mid:(\S+)", section, re.M).group(1)
            self.mids["publisher"].append(mid)
            self.published[mid] = {"kind": section.split(" ", 1)[0]}  # the server names tracks
        await self.promise(self.pub, "set-local-description", offer)
        complete = GstWebRTC.WebRTCICEGatheringState.COMPLETE
        deadline = time.monotonic() + 10
        while self.pub.get_property("ice-gathering-state") != complete:
            if time.monotonic() > deadline:
                raise RuntimeError("ICE gathering not complete after 10 s")
            await asyncio.sleep(0.05)
        text = self.pub.get_property("local-description").sdp.as_text()
        text = self.with_candidates(text)
        self.offer_sdp = text
        self.whip["url"] = self.args.whip
        headers = {
            "Authorization": f"Bearer {self.args.token}",
            "Content-Type": "application/sdp",
        }
        async with http.post(self.args.whip, data=text, headers=headers) as r:
            body = await r.text()
            self.whip["post"] = r.status
            if r.status != 201:
                self.whip["error"] = body[:500]
                raise RuntimeError(f"WHIP POST: {r.status} {body[:300]}")
            location = r.headers.get("Location")
        if not location:
            raise RuntimeError("WHIP POST: 201 without a Location")
        self.whip["location"] = urllib.parse.urljoin(self.args.whip, location)
        self.answer_sdp = body
        ok, sdp = GstSdp.SDPMessage.new_from_text(body)
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        await self.promise(self.pub, "set-remote-description", desc)

    def with_candidates(self, text: str) -> str:
        """The local description with the gathered candidates in their m-sections, if webrtcbin
        did not write them there itself (it does since 1.18; this keeps older ones working)."""
        if "\r\na=candidate:" in text:
            return text
        head, *sections = text.split("\r\nm=")
        for item in self.candidates["publisher"] or []:
            if item is not None and item["sdpMLineIndex"] < len(sections):
                i = item["sdpMLineIndex"]
                sections[i] = sections[i].rstrip("\r\n") + f"\r\na={item['candidate']}\r\n"
        return "\r\nm=".join([head, *sections])

    async def whip_delete(self, http: aiohttp.ClientSession) -> None:
        """End the WHIP session: DELETE its URL (the participant leaves the room)."""
        headers = {"Authorization": f"Bearer {self.args.token}"}
        async with http.delete(self.whip["location"], headers=headers) as r:
            self.whip["delete"] = r.status
            if r.status != 200:
                self.error(f"WHIP DELETE: {r.status} {(await r.text())[:200]}")

    # -- subscriber -----------------------------------------------------------------------
    async def subscriber_offers(self) -> None:
        """Answer the server's subscriber offers, one at a time, in order."""
        while True:
            msg = await self.sub_queue.get()
            try:
                await self.answer(msg)
            except Exception as exc:  # noqa: BLE001
                self.error(f"subscriber offer {msg.get('id')}: {exc}")

    async def answer(self, msg: dict) -> None:
        for info in msg.get("tracks") or []:
            self.remote[str(info.get("mid"))] = info
        ok, sdp = GstSdp.SDPMessage.new_from_text(msg["sdp"])
        offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, sdp)
        await self.promise(self.sub, "set-remote-description", offer)
        reply = await self.promise(self.sub, "create-answer", None)
        answer = reply.get_value("answer")
        text = answer.sdp.as_text()
        self.mids["subscriber"] = re.findall(r"^a=mid:(\S+)", text, re.M)
        await self.promise(self.sub, "set-local-description", answer)
        await self.send({"type": "answer", "target": "subscriber", "id": msg["id"], "sdp": text})
        self.offers_answered += 1
        self.last_sub_offer, self.last_sub_answer = msg["sdp"], text
        await self.flush_candidates("subscriber")

    # -- signaling ------------------------------------------------------------------------
    async def read_socket(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            msg = json.loads(frame.data)
            rid = msg.get("id")
            if msg.get("type") == "offer" and msg.get("target") == "subscriber":
                if self.sub is not None:
                    self.sub_queue.put_nowait(msg)
            elif isinstance(rid, str) and rid in self.waiting:
                if not self.waiting[rid].done():
                    self.waiting[rid].set_result(msg)
            elif msg.get("type") == "error":
                self.error(f"server: {msg.get('code')}: {msg.get('message')}")
            elif msg.get("type") == "leave":
                self.error(f"server ended the session: {msg.get('reason')}")
                break
        if not self.stop.is_set():  # not our own leave
            self.error(f"socket closed ({self.ws.close_code})")
        self.stop.set()

    async def pings(self) -> None:
        while True:
            await asyncio.sleep(10)
            await self.send({"type": "ping", "ts": int(time.time() * 1000)})

    async def poll_bus(self) -> None:
        bus = self.pipeline.get_bus()
        while True:
            while (m := bus.pop()) is not None:
                if m.type == Gst.MessageType.ERROR:
                    err, debug = m.parse_error()
                    self.error(f"{m.src.get_name()}: {err.message}")
                elif m.type == Gst.MessageType.WARNING:
                    err, debug = m.parse_warning()
                    self.error(f"warning {m.src.get_name()}: {err.message}")
            await asyncio.sleep(0.1)

    def status(self) -> dict:
        sid = self.joined.get("participant", {}).get("sid")
        out: dict = {"t": round(time.time(), 3), "sid": sid}
        for target, element in (("publisher", self.pub), ("subscriber", self.sub)):
            if element is not None:
                out[target] = {
                    p.split("-state")[0]: nick(element.get_property(p)) for p in STATE_PROPS
                }
        if self.pub is not None:
            out["sent"] = {k: {"packets": v[0], "bytes": v[1]} for k, v in self.sent.items()}
            out["published"] = self.published
        with self.lock:
            received = list(self.received.items())
        tracks = []
        for pad, rec in received:
            info = self.remote.get(rec.mid, {})
            tracks.append(
                {
                    "pad": pad,
                    "mid": rec.mid,
                    "kind": rec.kind,
                    "encoding": rec.encoding,
                    "track": info.get("track"),
                    "participant": info.get("participant"),
                    "source": info.get("source"),
                    "rtp_packets": rec.rtp_packets,
                    "rtp_bytes": rec.rtp_bytes,
                    ("frames_decoded" if rec.kind == "video" else "audio_buffers"): rec.decoded,
                    **({"width": rec.width, "height": rec.height} if rec.kind == "video" else {}),
                }
            )
        out["received"] = tracks
        out["remote_tracks"] = list(self.remote.values())
        out["subscriber_offers_answered"] = self.offers_answered
        if self.args.whip:
            out["whip"] = dict(self.whip)
        out["errors"] = self.errors[-5:]
        return out

    async def report(self) -> None:
        while True:
            print(json.dumps(self.status()), flush=True)
            await asyncio.sleep(1)

    async def run(self) -> None:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise RuntimeError("the pipeline does not start")
        tasks = [asyncio.ensure_future(c) for c in (self.poll_bus(), self.report())]
        async with aiohttp.ClientSession() as http:
            try:
                if self.args.whip:
                    await self.whip_publish(http)
                    if self.args.dump_sdp:
                        sys.stderr.write(f"--- WHIP offer\n{self.offer_sdp}\n")
                        sys.stderr.write(f"--- WHIP answer\n{self.answer_sdp}\n")
                    await self.stop.wait()
                    return
                self.ws = await http.ws_connect(self.args.url, heartbeat=None)
                tasks.append(asyncio.ensure_future(self.read_socket()))
                tasks.append(asyncio.ensure_future(self.pings()))
                self.joined = await self.request({"type": "join", "name": self.args.name})
                if self.sub is not None:
                    tasks.append(asyncio.ensure_future(self.subscriber_offers()))
                if self.pub is not None:
                    await self.publish()
                if self.args.dump_sdp:
                    for attr in ("offer_sdp", "answer_sdp"):
                        sys.stderr.write(f"--- publisher {attr}\n{getattr(self, attr, '')}\n")
                await self.stop.wait()
            except Exception as exc:  # noqa: BLE001
                self.error(f"{type(exc).__name__}: {exc}")
                print(json.dumps(self.status()), flush=True)
            finally:
                if self.args.dump_sdp and hasattr(self, "last_sub_offer"):
                    sys.stderr.write(f"--- subscriber offer\n{self.last_sub_offer}\n")
                    sys.stderr.write(f"--- subscriber answer\n{self.last_sub_answer}\n")
                if self.whip.get("location"):
                    try:
                        await asyncio.wait_for(self.whip_delete(http), 5)
                    except Exception as exc:  # noqa: BLE001
                        self.error(f"WHIP DELETE: {type(exc).__name__}: {exc}")
                if self.ws is not None and not self.ws.closed:
                    try:
                        await asyncio.wait_for(self.send({"type": "leave"}), 2)
                        await asyncio.wait_for(self.ws.close(), 2)
                    except Exception:  # noqa: BLE001
                        pass
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                print(json.dumps(self.status()), flush=True)
                self.pipeline.set_state(Gst.State.NULL)


async def main(args: argparse.Namespace) -> int:
    client = Client(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, client.stop.set)
    if stat.S_ISFIFO(os.fstat(0).st_mode):  # stdin is a pipe: its closing ends the client

        def watch_stdin() -> None:
            while sys.stdin.buffer.read1(4096):
                pass
            client.threadsafe(client.stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()
    if args.duration:
        loop.call_later(args.duration, client.stop.set)
    await client.run()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="ws://host:port/rtc?access_token=<JWT>")
    parser.add_argument("--publish", action="store_true", help="send VP8 video and Opus audio")
    parser.add_argument("--subscribe", action="store_true", help="receive and decode others")
    parser.add_argument("--whip", metavar="URL", help="publish over WHIP to this endpoint instead")
    parser.add_argument("--token", help="the WHIP access token (Authorization: Bearer)")
    parser.add_argument("--name", default="GStreamer")
    parser.add_argument("--ice-address", default="127.0.0.1", help="the only ICE host address")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    parser.add_argument("--dump-sdp", action="store_true", help="write the SDPs to stderr")
    parser.add_argument(
        "--ice-tcp-only", action="store_true", help="ICE over TCP only (no UDP candidates)"
    )
    arguments = parser.parse_args()
    if arguments.whip:
        if arguments.url or arguments.subscribe or not arguments.token:
            parser.error("--whip takes --token, and neither a WebSocket URL nor --subscribe")
        arguments.publish = True
    elif not arguments.url:
        parser.error("give the WebSocket URL, or --whip URL --token JWT")
    elif not (arguments.publish or arguments.subscribe):
        parser.error("give --publish, --subscribe or both")
    Gst.init(None)
    sys.exit(asyncio.run(main(arguments)))
