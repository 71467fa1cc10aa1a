"""/metrics: Prometheus exposition of the SFU's counters (prometheus-client).

The SFU keeps plain integer counters on its hot path; this collector reads them only when
Prometheus scrapes, so metrics cost nothing per packet. Event-loop lag is sampled by a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from visio_sfu import SFU, DropReason
from visio_sfu.transport import PeerTransport, udp_mux

from .session import SessionCounters
from .webhooks import WebhookNotifier

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

COUNTERS = {
    "packets_in": "RTP packets received from publishers",
    "bytes_in": "RTP bytes received from publishers",
    "packets_out": "RTP packets forwarded to subscribers",
    "bytes_out": "RTP bytes forwarded to subscribers",
    "nacks": "NACK messages received from subscribers",
    "retransmits": "packets resent from the retransmission cache",
    "keyframe_requests": "keyframe requests (PLI) sent to publishers",
    "keyframes_in": "keyframes received from publishers",
    "nacks_out": "NACKs sent to publishers for packets lost on their way to the server",
    "repaired": "packets from publishers that came after being missed (retransmitted or late)",
    "twcc_feedback_out": "transport-cc feedback packets sent to publishers (their congestion "
    "control reads them)",
    "layer_switches": "simulcast layer switches made for subscribers (at a keyframe)",
    "layer_starts": "videos started for a subscriber at a keyframe (joining, unmuting, shown "
    "again, a new path)",
}
GAUGES = {
    "rooms": "open rooms",
    "participants": "participants in all rooms",
    "tracks": "published tracks",
    "downtracks": "forwarded (subscriber, track) pairs",
    "transports": "open peer connections",
}


class LoopLag:
    """Samples how late the event loop runs a timer: the server's responsiveness."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.buckets = [0] * (len(LAG_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Begin sampling on the running loop."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = max(time.monotonic() - start - self.interval, 0.0)
            self.total += lag
            self.count += 1
            for i, bound in enumerate(LAG_BUCKETS):
                if lag <= bound:
                    self.buckets[i] += 1
                    break
            else:
                self.buckets[-1] += 1

    def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()


class SFUCollector(Collector):
    """Reads the SFU's counters at scrape time."""

    def __init__(
        self,
        sfu: SFU,
        lag: LoopLag,
        counters: SessionCounters | None = None,
        webhooks: WebhookNotifier | None = None,
    ) -> None:
        self.sfu = sfu
        self.lag = lag
        self.counters = counters or SessionCounters()
        self.webhooks = webhooks

    def collect(self) -> Iterator:
        stats = self.sfu.stats()
        for name, doc in GAUGES.items():
            yield GaugeMetricFamily(f"visio_{name}", doc, value=stats.get(name, 0))
        for name, doc in COUNTERS.items():
            yield CounterMetricFamily(f"visio_{name}", doc, value=stats.get(name, 0))
        drops = CounterMetricFamily(
            "visio_dropped",
            "packets not forwarded (or not retransmitted), by reason (docs/metrics.md)",
            labels=["reason"],
        )
        for reason in DropReason:
            drops.add_metric([reason.label], stats["drops"][reason.label])
        yield drops
        errors = CounterMetricFamily(
            "visio_srtp_errors",
            "SRTP/SRTCP packets that failed to unprotect (receive) or protect (send)",
            labels=["direction"],
        )
        for direction, count in sorted(stats["transport_errors"].items()):
            errors.add_metric([direction], count)
        yield errors
        yield from self._layers()
        yield from self._media_port()
        failures = CounterMetricFamily(
            "visio_negotiation_failures",
            "negotiations a client reported it could not apply, per connection",
            labels=["target"],
        )
        for target, count in sorted(self.counters.negotiation_failures.items()):
            failures.add_metric([target], count)
        yield failures
        hooks = CounterMetricFamily(
            "visio_webhooks",
            "webhook events by outcome: delivered, failed (all attempts), dropped (queue full)",
            labels=["outcome"],
        )
        w = self.webhooks
        for outcome in ("delivered", "failed", "dropped"):
            hooks.add_metric([outcome], getattr(w, outcome) if w is not None else 0)
        yield hooks
        yield CounterMetricFamily(
            "visio_subscriber_restarts",
            "fresh subscriber connections made after a client could not apply an offer",
            value=self.counters.subscriber_restarts,
        )
        yield CounterMetricFamily(
            "visio_ice_restarts",
            "ICE restarts within a peer connection (a client's network changed): the session "
            "and its media went on, on a new path",
            value=PeerTransport.ice_restarts_total,
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*LAG_BUCKETS, float("inf")), self.lag.buckets, strict=True):
            cumulative += count
            buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
        yield HistogramMetricFamily(
            "visio_event_loop_lag_seconds",
            "how late the event loop runs a 500 ms timer",
            buckets=buckets,
            sum_value=self.lag.total,
        )
        delay = self.sfu.forwarding_delay
        yield HistogramMetricFamily(
            "visio_forwarding_delay_seconds",
            "time from a publisher's packet reaching the server to its last forwarded copy "
            "being sent (one observation per incoming packet)",
            buckets=[
                ("+Inf" if bound == float("inf") else repr(bound), n)
                for bound, n in delay.cumulative()
            ],
            sum_value=delay.sum,
        )

    def _media_port(self) -> Iterator:
        """The one UDP port of every peer (visio_sfu/udpmux.py): what it dropped, its batches."""
        mux = udp_mux()
        dropped = CounterMetricFamily(
            "visio_media_port_dropped",
            "datagrams the media port dropped: from an address no connection holds "
            "(unknown_sender), STUN requests whose integrity failed (bad_integrity), that a "
            "connection failed on (malformed), not sent (send_failed: the socket gone, a "
            "destination the kernel refused, a TCP "
            "client too far behind, an ICE-TCP client's address after its stream closed)",
            labels=["reason"],
        )
        for reason, attr in (
            ("unknown_sender", "unknown"),
            ("bad_integrity", "refused"),
            ("malformed", "errors"),
            ("send_failed", "send_errors"),
        ):
            dropped.add_metric([reason], getattr(mux, attr) if mux is not None else 0)
        yield dropped
        yield CounterMetricFamily(
            "visio_media_port_sendmmsg_calls",
            "batched sends of the media port (a received packet's fan-out each: one sendmmsg, "
            "more above 256 datagrams or when one is interrupted)",
            value=mux.batches if mux is not None else 0,
        )
        yield CounterMetricFamily(
            "visio_media_port_batched_datagrams",
            "datagrams the media port sent through sendmmsg",
            value=mux.batched if mux is not None else 0,
        )

    def _layers(self) -> Iterator:
        """Per subscriber and video track: the layer it gets, and how often it switches."""
        labels = ["room", "subscriber", "track"]
        layer = GaugeMetricFamily(
            "visio_downtrack_layer",
            "simulcast layer forwarded to a subscriber now (0 lowest; -1 none: waiting for a "
            "keyframe or hidden)",
            labels=labels,
        )
        target = GaugeMetricFamily(
            "visio_downtrack_target_layer",
            "simulcast layer chosen for a subscriber (it is forwarded from its next keyframe)",
            labels=labels,
        )
        temporal = GaugeMetricFamily(
            "visio_downtrack_temporal_layer",
            "VP9 SVC: highest temporal layer forwarded to a subscriber now (0: T0 only, a "
            "quarter of L3T3's frames; 1: half; 7: every layer; 2 briefly, after a step up at "
            "a U frame until the next T0 frame)",
            labels=labels,
        )
        switches = CounterMetricFamily(
            "visio_downtrack_layer_switches",
            "layer switches made for a subscriber of a video track",
            labels=labels,
        )
        freezes = CounterMetricFamily(
            "visio_downtrack_freezes",
            "times a subscriber got no packet of a video for over 0.5 s (VP9 SVC at T0 or "
            "T0+T1: 2.5 frame intervals, if longer) while it wanted the "
            "video (not hidden or paused) and its publisher sent (a layer switch waiting for "
            "its keyframe, loss, a congested path)",
            labels=labels,
        )
        freeze_time = CounterMetricFamily(
            "visio_downtrack_freeze_seconds",
            "time those freezes lasted",
            labels=labels,
        )
        resent = CounterMetricFamily(
            "visio_downtrack_retransmits",
            "packets resent to a subscriber after its NACKs (on its RTX stream when negotiated)",
            labels=labels,
        )
        on_layer: dict[str, int] = {}
        for entry in self.sfu.layers():
            values = [entry["room"], entry["subscriber"], entry["track"]]
            freezes.add_metric(values, entry["freezes"])
            freeze_time.add_metric(values, entry["freeze_seconds"])
            resent.add_metric(values, entry["retransmits"])
            layer.add_metric(values, entry["layer"])
            target.add_metric(values, entry["target"])
            switches.add_metric(values, entry["switches"])
            if entry.get("temporal") is not None:
                temporal.add_metric(values, entry["temporal"])
            key = str(entry["layer"])
            on_layer[key] = on_layer.get(key, 0) + 1
        by_layer = GaugeMetricFamily(
            "visio_downtracks_by_layer",
            "video (subscriber, track) pairs per layer forwarded now (-1: none)",
            labels=["layer"],
        )
        for key in ("-1", "0", "1", "2"):
            by_layer.add_metric([key], on_layer.pop(key, 0))
        for key, count in sorted(on_layer.items()):
            by_layer.add_metric([key], count)
        yield from (layer, target, temporal, switches, by_layer, freezes, freeze_time, resent)
        yield from self._bandwidths()

    def _bandwidths(self) -> Iterator:
        """Per subscriber: the bandwidth estimate layers are chosen with, and its source."""
        labels = ["room", "subscriber"]
        estimate = GaugeMetricFamily(
            "visio_subscriber_bandwidth_bps",
            "bandwidth estimate of a subscriber's connection, bits per second (source: twcc = "
            "send-side from transport-cc feedback, remb = the subscriber's own)",
            labels=[*labels, "source"],
        )
        feedbacks = CounterMetricFamily(
            "visio_subscriber_twcc_feedback",
            "transport-cc feedback packets received from a subscriber",
            labels=labels,
        )
        overuses = CounterMetricFamily(
            "visio_subscriber_overuse",
            "times the send-side estimator saw a queue building toward a subscriber",
            labels=labels,
        )
        loss = GaugeMetricFamily(
            "visio_subscriber_loss_ratio",
            "share of packets a subscriber reported lost in its last transport-cc window",
            labels=labels,
        )
        wanted = GaugeMetricFamily(
            "visio_subscriber_wanted_bps",
            "what the layers a subscriber's views allow would cost, bits per second (probing "
            "aims for it)",
            labels=labels,
        )
        probes = CounterMetricFamily(
            "visio_subscriber_probes",
            "probe clusters sent to a subscriber (result: sent, succeeded)",
            labels=[*labels, "result"],
        )
        probe_packets = CounterMetricFamily(
            "visio_subscriber_probe_packets",
            "packets resent to a subscriber to probe its path",
            labels=labels,
        )
        for entry in self.sfu.bandwidths():
            values = [entry["room"], entry["subscriber"]]
            wanted.add_metric(values, entry["wanted"])
            probes.add_metric([*values, "sent"], entry["probes"])
            probes.add_metric([*values, "succeeded"], entry["probes_succeeded"])
            probe_packets.add_metric(values, entry["probe_packets"])
            if entry["bandwidth"] is not None:
                estimate.add_metric([*values, entry["source"]], entry["bandwidth"])
            feedbacks.add_metric(values, entry["feedbacks"])
            overuses.add_metric(values, entry["overuses"])
            loss.add_metric(values, entry["loss"])
        yield from (estimate, feedbacks, overuses, loss, wanted, probes, probe_packets)


def setup_metrics(
    app: web.Application,
    sfu: SFU,
    counters: SessionCounters | None = None,
    webhooks: WebhookNotifier | None = None,
) -> None:
    """Serve /metrics for this SFU, with an event-loop lag sampler."""
    registry = CollectorRegistry()
    lag = LoopLag()
    registry.register(SFUCollector(sfu, lag, counters, webhooks))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def lifecycle(app: web.Application):
        lag.start()
        yield
        lag.stop()

    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(lifecycle)
