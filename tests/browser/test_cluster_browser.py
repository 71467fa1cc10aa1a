"""Issue 19 in Chromium: two web clients reach one room through two different nodes of a
cluster (a real redis-server, three ``visio-sfu serve --redis`` processes); the room lives on
the third. kill -9 that node: both pages reconnect by themselves and see each other again."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from signaling.auth import VideoGrant, mint_token
from tests.browser.conftest import artefact, open_page
from tests.support.browser import REMOTE_MEDIA, poll
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

SEES_ONE = """() => {
  const s = window.visio.session;
  const videos = [...document.querySelectorAll('#grid .tile:not(.self) video')]
    .filter(v => v.srcObject && v.srcObject.getVideoTracks().some(t => t.readyState === 'live'))
    .map(v => ({w: v.videoWidth, t: v.currentTime, ready: v.readyState}));
  return {state: s ? s.state : 'none', sid: s && s.me ? s.me.sid : null, videos};
}"""


@pytest.fixture(scope="module")
def cluster():
    redis = RedisServer()
    nodes = {}
    try:
        for name in ("x", "y", "z"):
            extra = ["--redis", redis.url, "--node-id", name, "--heartbeat-ttl", "3"]
            nodes[name] = ServerProcess(extra=extra)
        yield redis, nodes
    finally:
        for node in nodes.values():
            node.stop()
        redis.stop()


def test_pages_on_two_nodes_share_a_room_and_survive_its_node(cluster, browser):
    redis, nodes = cluster
    x = nodes["x"]
    key, secret = x.dev_credentials()
    token = mint_token(key, secret, "admin", "*", grant=VideoGrant(room="*", room_create=True))
    request = urllib.request.Request(
        f"{x.url}/api/rooms",
        data=json.dumps({"name": "cluster-web"}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert urllib.request.urlopen(request, timeout=10).status == 201
    owner = redis.get("visio:room:cluster-web")
    first, second = [n for name, n in nodes.items() if name != owner]
    pages = [
        open_page(browser, f"{node.url}/r/cluster-web?name={name}&autojoin=1&lang=en", name)
        for node, name in ((first, "Alice"), (second, "Bob"))
    ]
    try:
        before = {}
        for page, name in zip(pages, ("Alice", "Bob"), strict=True):
            poll(
                page,
                REMOTE_MEDIA,
                lambda r: len([v for v in r["videos"] if v["w"] > 0 and v["ready"] >= 2]) == 1,
                what=f"{name} sees the other through another node",
            )
            before[name] = page.evaluate(SEES_ONE)
            artefact(page, f"cluster-{name}")
        killed = time.monotonic()
        nodes[owner].proc.kill()
        for page, name in zip(pages, ("Alice", "Bob"), strict=True):
            seen = poll(
                page,
                SEES_ONE,
                lambda r, b=before[name]: (
                    r["state"] == "connected"
                    and r["sid"] != b["sid"]  # a new participant on the room's new node
                    and any(v["w"] > 0 and v["ready"] >= 2 for v in r["videos"])
                ),
                timeout=20,
                what=f"{name} reconnected",
            )
            moved = poll(
                page,
                SEES_ONE,
                lambda r, s=seen: any(
                    v["t"] > max(w["t"] for w in s["videos"]) for v in r["videos"]
                ),
                what=f"{name}'s video advancing after the kill",
            )
            assert moved["state"] == "connected"
        took = time.monotonic() - killed
        print(f"both pages see each other again {took:.1f} s after kill -9")
        assert took <= 10, f"media again only {took:.1f} s after the node died (10 s allowed)"
        assert redis.get("visio:room:cluster-web") not in (None, owner)
        for page, name in zip(pages, ("Alice", "Bob"), strict=True):
            artefact(page, f"cluster-{name}-after-kill")
    finally:
        for page in pages:
            page.context.close()
