"""Simulcast in Chromium: one publisher, two subscribers, one showing a small tile and one the
video pinned large; each receives the layer its view needs (different frame widths)."""

from __future__ import annotations

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
        small_seen = small.evaluate(INBOUND)
        print("simulcast: publisher", layers, "small", small_seen, "large", seen)
        assert small_seen["width"] <= 320 < seen["width"], (small_seen, seen)
        artefact(large, "simulcast-large")
        artefact(small, "simulcast-small")
    finally:
        for page in (publisher, small, large):
            page.context.close()
