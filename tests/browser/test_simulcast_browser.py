"""Simulcast in Chromium: one publisher, two subscribers, one showing a small tile and one the
video pinned large; each receives the layer its view needs (different frame widths)."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import artefact, open_page
from tests.support.browser import poll

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

INBOUND = """async () => {
  const s = window.visio.session;
  let width = 0, frames = 0;
  if (s && s.subscriber) (await s.subscriber.getStats()).forEach(x => {
    if (x.type === 'inbound-rtp' && x.kind === 'video') {
      width = Math.max(width, x.frameWidth || 0); frames += x.framesDecoded || 0; }
  });
  return {width, frames};
}"""

OUTBOUND = """async () => {
  const s = window.visio.session;
  const layers = {};
  if (s && s.publisher) (await s.publisher.getStats()).forEach(x => {
    if (x.type === 'outbound-rtp' && x.kind === 'video')
      layers[x.rid || '-'] = {w: x.frameWidth || 0, sent: x.framesSent || 0,
                              why: x.qualityLimitationReason};
  });
  return layers;
}"""


def test_small_tile_and_large_view_get_different_layers(server, browser):
    url = f"{server.url}/r/simulcast?autojoin=1&lang=en&name="
    publisher = open_page(browser, url + "Pub", "Pub")
    small = open_page(browser, url + "Small", "Small")
    large = open_page(browser, url + "Large", "Large")
    try:
        large.set_viewport_size({"width": 1280, "height": 1400})
        small.set_viewport_size({"width": 1280, "height": 720})
        for page in (small, large):
            poll(page, INBOUND, lambda r: r["frames"] > 10, what="video decoded")
        large.locator("#grid .tile", has=large.locator(".name", has_text="Pub")).dblclick()
        layers = poll(
            publisher,
            OUTBOUND,
            lambda r: len([x for x in r.values() if x["sent"] > 0]) >= 2,
            timeout=40,
            what="two simulcast layers sent",
        )
        seen = poll(
            large,
            INBOUND,
            lambda r: r["width"] > 320,
            timeout=60,
            what=f"the large view gets a higher layer (publisher sends {layers})",
        )
        # the small tile's layer follows its size as the page reports it (a layout still
        # settling after three joins in a row may have asked for more for a moment)
        small_seen = poll(small, INBOUND, lambda r: 0 < r["width"] <= 320, what="a low layer")
        print("simulcast: publisher", layers, "small", small_seen, "large", seen)
        assert small_seen["width"] <= 320 < seen["width"], (small_seen, seen)
        artefact(large, "simulcast-large")
        artefact(small, "simulcast-small")
    finally:
        for page in (publisher, small, large):
            page.context.close()


TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def subscriber_metrics(server) -> dict[str, dict[str, float]]:
    """visio_subscriber_* samples by subscriber sid: {name[source]: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(server._fetch("/metrics").decode()):
        for sample in family.samples:
            if sample.name.startswith("visio_subscriber_"):
                extra = sample.labels.get("source") or sample.labels.get("result")
                key = sample.name + (f"[{extra}]" if extra else "")
                if "subscriber" in sample.labels:
                    out.setdefault(sample.labels["subscriber"], {})[key] = sample.value
    return out


def test_chromium_negotiates_transport_cc_and_its_feedback_drives_the_estimate(server, browser):
    """The server's subscriber offer carries transport-cc (aiortc offers none); Chromium accepts
    it, numbers come on every packet, its feedback reaches the send-side estimator, and the
    estimate (not REMB) is what layers are chosen with: a large view still gets the top layer."""
    url = f"{server.url}/r/twcc?autojoin=1&lang=en&name="
    publisher = open_page(browser, url + "Pub", "Pub")
    viewer = open_page(browser, url + "View", "View")
    try:
        viewer.set_viewport_size({"width": 1280, "height": 1400})
        poll(viewer, INBOUND, lambda r: r["frames"] > 10, what="video decoded")
        answer = viewer.evaluate("() => window.visio.session.subscriber.localDescription.sdp")
        assert TWCC_URI in answer, "Chromium's answer dropped transport-cc"
        assert "transport-cc" in viewer.evaluate(
            "() => window.visio.session.subscriber.remoteDescription.sdp"
        )
        # Opus in-band FEC and DTX, which Chromium offers, are kept in our answer (aiortc's
        # has no a=fmtp for Opus: Chromium then sends neither)
        published = publisher.evaluate("() => window.visio.session.publisher.remoteDescription.sdp")
        opus = re.search(r"a=rtpmap:(\d+) opus/", published)
        assert opus, published
        fmtp = re.search(rf"a=fmtp:{opus[1]} (.*)", published)
        assert fmtp and "useinbandfec=1" in fmtp[1], published
        viewer.locator("#grid .tile", has=viewer.locator(".name", has_text="Pub")).dblclick()
        sid = viewer.evaluate("() => window.visio.session.me.sid")
        seen = poll(viewer, INBOUND, lambda r: r["width"] > 320, timeout=60, what="top layer")
        deadline = time.monotonic() + 20
        mine: dict[str, float] = {}
        while time.monotonic() < deadline:
            mine = subscriber_metrics(server).get(sid, {})
            if mine.get("visio_subscriber_twcc_feedback_total", 0) > 20:
                break
            time.sleep(0.5)
        print("transport-cc: viewer", sid, seen, mine)
        assert mine.get("visio_subscriber_twcc_feedback_total", 0) > 20, mine
        # the send-side estimate is the one layers are chosen with (REMB is the fallback), and
        # it does not hold back the layers the large view wants
        estimate = mine.get("visio_subscriber_bandwidth_bps[twcc]", 0)
        assert estimate >= min(mine["visio_subscriber_wanted_bps"], 1_000_000), mine
        assert mine.get("visio_subscriber_loss_ratio", 1) < 0.05, mine
    finally:
        for page in (publisher, viewer):
            page.context.close()
