"""Live captions in the web client (Chromium): a host starts transcription from the More menu,
everyone sees the "transcription on" indicator, an aiortc participant speaks (espeak-ng) and
the page shows what she says under her name; captions can be turned off per person; the host
downloads the meeting notes (Markdown, WebVTT, JSON) and deletes them."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import time
import urllib.parse

import pytest

from signaling.auth import VideoGrant, mint_token
from signaling.config import DEV_API_KEY, DEV_API_SECRET
from tests.browser.conftest import artefact, open_page
from tests.support.server import ServerProcess
from tests.support.speech import WavAudioTrack, need_espeak, read_wav, speak
from visio_client import Client
from visio_client.protocol import ServerError

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
ROOM = "captioned"
SAID = [
    "The quarterly budget review will take place on Thursday morning.",
    "Please send the final report to the whole team before Friday.",
]


def token(identity: str, name: str, **grant: bool) -> str:
    return mint_token(
        DEV_API_KEY,
        DEV_API_SECRET,
        identity,
        ROOM,
        name=name,
        grant=VideoGrant(room=ROOM, room_join=True, **grant),
    )


@pytest.fixture(scope="module")
def captions_server(tmp_path_factory):
    if importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("visio-sfu[notes] is not installed (scripts/test.sh installs it)")
    need_espeak()
    config = tmp_path_factory.mktemp("captions") / "visio.toml"
    config.write_text('[transcription]\nlanguage = "en"\n')
    server = ServerProcess(extra=["--config", str(config)])
    yield server
    server.stop()


#: how many tiles' name labels a caption covers, and whether a tile reaches into the band
COVERED = """() => {
  const rects = (sel) => [...document.querySelectorAll(sel)]
    .filter((e) => e.offsetParent).map((e) => e.getBoundingClientRect());
  const captions = rects('#captions .caption');
  const band = document.getElementById('captions').getBoundingClientRect();
  const meet = (a, b) =>
    a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  return {
    labels: rects('.tile .label').filter((l) => captions.some((c) => meet(l, c))).length,
    tiles: rects('.tile').filter((t) => t.bottom > band.top + 1).length,
    captions: captions.length,
  };
}"""


TOGGLE = "document.getElementById('captions-toggle')"
#: the notices (toasts) that cover part of a caption
TOAST_OVER_CAPTION = """() => {
  const captions = [...document.querySelectorAll('#captions .caption')]
    .map((e) => e.getBoundingClientRect());
  return [...document.querySelectorAll('#toasts p')].filter((p) => {
    const t = p.getBoundingClientRect();
    return captions.some((c) => t.left < c.right && c.left < t.right && t.top < c.bottom
      && c.top < t.bottom);
  }).map((p) => p.textContent);
}"""


def open_menu(page) -> None:
    if page.locator("#more-menu").is_hidden():
        page.click("#more-button")


class Speaker:
    """An aiortc participant in a thread of its own, publishing a WAV microphone."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = Client(url, token("alice", "Alice"))
        self.run(self.client.connect())

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def speak(self, clips) -> None:
        script, at = [], 0.5
        for clip in clips:
            script.append((at, clip))
            at += len(clip) / 48000 + 1.5
        self.run(self.client.publish(WavAudioTrack(script)))

    def close(self) -> None:
        try:
            self.run(self.client.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


async def host_request(url: str, msg: dict) -> dict:
    """A request by a host who joins for it."""
    host = Client(url, token("hana", "Hana", room_host=True))
    await host.connect()
    try:
        return await host.request(msg)
    finally:
        await host.close()


def test_captions_reach_the_page_with_the_speakers_name(captions_server, browser):
    clips = [read_wav(speak(text)) for text in SAID]
    query = urllib.parse.urlencode(
        {"token": token("dana", "Dana", room_transcribe=True), "autojoin": "1", "lang": "en"}
    )
    page = open_page(browser, f"{captions_server.url}/r/{ROOM}?{query}", "Dana")
    alice = Speaker(captions_server.url)
    try:
        page.locator("#room").wait_for(state="visible", timeout=15000)
        # her own tile bears the name the others see: the token's, not a made-up one
        page.locator(".tile.self .label .name", has_text="Dana (you)").wait_for(timeout=15000)
        assert page.locator("#transcribing").is_hidden()
        page.click("#more-button")
        start = page.locator("#transcription-button")
        start.wait_for(state="visible", timeout=10000)
        assert start.inner_text() == "Start transcription"
        start.click()
        indicator = page.locator("#transcribing")
        indicator.wait_for(state="visible", timeout=60000)  # the worker loads the model
        assert indicator.inner_text() == "Transcription on"
        # Alice (no grant) is told too, and may not start or stop it
        status = alice.run(alice.client.wait_for("transcription_status"))
        assert status["active"] and status["by"] == "Dana"

        started = time.monotonic()
        alice.speak(clips)
        first = page.locator("#captions .caption", has_text="budget")
        first.wait_for(state="visible", timeout=20000)
        partial_seen = time.monotonic() - started
        assert first.locator(".who").inner_text() == "Alice"
        final = page.locator("#captions .caption[data-final=true]", has_text="Thursday morning")
        final.wait_for(state="visible", timeout=20000)
        final_seen = time.monotonic() - started
        print(f"first caption {partial_seen:.1f} s after Alice started, final {final_seen:.1f} s")
        # the captions are in a band below the tiles: they never cover a name label
        page.wait_for_timeout(500)  # the tiles' move (0.2 s) when the band appeared
        covered = page.evaluate(COVERED)
        assert covered["labels"] == 0 and covered["tiles"] == 0 and covered["captions"], covered
        # nor does a notice cover a caption: notices stand above the band
        page.evaluate("() => window.visio.captions.note('Alice Martin started transcription')")
        over = page.evaluate(TOAST_OVER_CAPTION)
        assert over == [], over
        artefact(page, "captions-Dana")
        assert "quarterly budget review" in final.locator(".text").inner_text().lower()

        # captions off for Dana only: the box goes, the indicator stays
        open_menu(page)
        mark = f"() => getComputedStyle({TOGGLE}, '::after').content"
        assert page.evaluate(mark) == '"✓"'  # on: a check mark, not the colour alone
        page.click("#captions-toggle")
        assert page.get_attribute("#captions-toggle", "aria-checked") == "false"
        open_menu(page)
        assert page.evaluate(mark) == "none"
        page.click("#more-button")  # closed again
        page.wait_for_timeout(7000)  # Alice's second sentence comes meanwhile
        assert page.locator("#captions").is_hidden() and indicator.is_visible()
        open_menu(page)
        page.click("#captions-toggle")

        # the host stops transcription, downloads the notes in three formats, and deletes them
        alice.run(
            alice.client.wait_for(
                lambda m: m.get("type") == "caption" and m["final"] and "Friday" in m["text"],
                timeout=30,
            ),
            timeout=35,
        )
        open_menu(page)
        page.click("#transcription-button")
        indicator.wait_for(state="hidden", timeout=30000)
        open_menu(page)
        page.click("#notes-button")
        dialog = page.locator("#notes-dialog")
        dialog.wait_for(state="visible")
        assert dialog.locator("#notes-kept").inner_text() == (
            "The server keeps them 7 days after the meeting: come back to this meeting to"
            " download them."
        )
        got = {}
        for fmt in ("md", "vtt", "json"):
            with page.expect_download(timeout=30000) as download:
                dialog.locator(f".notes-download[data-format={fmt}]").click()
            assert download.value.suggested_filename.endswith(f".{fmt}")
            got[fmt] = open(download.value.path(), encoding="utf-8").read()
        artefact(page, "notes-dialog-Dana")
        assert "**Alice** [00:00:" in got["md"] and "## Key points" in got["md"]
        assert "Thursday morning" in got["md"]
        assert got["vtt"].startswith("WEBVTT") and "<v Alice>" in got["vtt"], got["vtt"][:300]
        lines = json.loads(got["json"])["lines"]
        assert [line["speaker"] for line in lines] == ["Alice", "Alice"], lines
        # a host of the meeting (roomHost) gets them too; a participant does not
        reply = alice.run(
            host_request(captions_server.url, {"type": "transcript", "format": "json"})
        )
        assert json.loads(reply["content"])["lines"] == lines
        with pytest.raises(ServerError) as refused:
            alice.run(alice.client.request({"type": "delete_transcript"}))
        assert refused.value.code == "permission_denied"
        # deleting takes a second click
        delete = dialog.locator("#notes-delete")
        delete.click()
        assert delete.inner_text() == "Delete them for good?"
        delete.click()
        page.locator("#notes-status", has_text="Deleted from the server.").wait_for()
        artefact(page, "notes-deleted-Dana")
        dialog.locator("button[value=close]").click()
        open_menu(page)
        assert page.locator("#notes-button").is_hidden()
        with pytest.raises(ServerError) as gone:
            alice.run(host_request(captions_server.url, {"type": "transcript", "format": "md"}))
        assert gone.value.code == "not_found"
    finally:
        alice.close()
        page.context.close()
