"""Live captions in the web client (Chromium): a host starts transcription from the More menu,
everyone sees the "transcription on" indicator, an aiortc participant speaks (espeak-ng) and
the page shows what she says under her name; captions can be turned off per person; the host
downloads the meeting notes."""

from __future__ import annotations

import asyncio
import importlib.util
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


def test_captions_reach_the_page_with_the_speakers_name(captions_server, browser):
    clips = [read_wav(speak(text)) for text in SAID]
    query = urllib.parse.urlencode(
        {"token": token("dana", "Dana", room_transcribe=True), "autojoin": "1", "lang": "en"}
    )
    page = open_page(browser, f"{captions_server.url}/r/{ROOM}?{query}", "Dana")
    alice = Speaker(captions_server.url)
    try:
        page.locator("#room").wait_for(state="visible", timeout=15000)
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
        artefact(page, "captions-Dana")
        assert "quarterly budget review" in final.locator(".text").inner_text().lower()

        # captions off for Dana only: the box goes, the indicator stays
        open_menu(page)
        page.click("#captions-toggle")
        assert page.get_attribute("#captions-toggle", "aria-checked") == "false"
        page.wait_for_timeout(7000)  # Alice's second sentence comes meanwhile
        assert page.locator("#captions").is_hidden() and indicator.is_visible()
        open_menu(page)
        page.click("#captions-toggle")

        # the host downloads the notes
        page.wait_for_function(
            "() => document.querySelectorAll('#captions .caption[data-final=true]').length >= 1"
        )
        open_menu(page)
        with page.expect_download(timeout=30000) as download:
            page.click("#notes-button")
        notes = open(download.value.path(), encoding="utf-8").read()
        assert download.value.suggested_filename.endswith(".md")
        assert "**Alice** [00:00:" in notes and "## Key points" in notes
        assert "Thursday morning" in notes
    finally:
        alice.close()
        page.context.close()
