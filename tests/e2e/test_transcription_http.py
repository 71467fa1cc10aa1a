"""The OpenAI-compatible backends against a small fake server on 127.0.0.1: speech recognition
(/v1/audio/transcriptions, from the worker process) and the optional meeting summary
(/v1/chat/completions), with their API keys; and what the notes and admin API give back."""

from __future__ import annotations

import io
import time
import wave

import aiohttp
from aiohttp import web

from tests.support.inprocess import LocalServer, free_port
from tests.support.media import until
from tests.support.speech import WavAudioTrack, read_wav, speak
from visio_client import Client


class FakeOpenAI:
    """Answers like an OpenAI-compatible server and remembers what it was sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.transcriptions: list[dict] = []
        self.chats: list[dict] = []
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", self.transcribe)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)

    async def __aenter__(self) -> FakeOpenAI:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    async def transcribe(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        with wave.open(io.BytesIO(upload.file.read())) as w:
            seconds = w.getnframes() / w.getframerate()
            fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        self.transcriptions.append(
            {
                "auth": request.headers.get("Authorization"),
                "model": form["model"],
                "language": form["language"],
                "format": fmt,
                "seconds": seconds,
            }
        )
        return web.json_response({"text": f"I heard {round(seconds)} seconds of speech."})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.chats.append({"auth": request.headers.get("Authorization"), "body": body})
        summary = "The team met; Alice spoke about speech."
        return web.json_response(
            {"choices": [{"message": {"role": "assistant", "content": summary}}]}
        )


async def test_http_backend_and_summary_endpoint(tmp_path):
    clip = read_wav(speak("The remote server transcribes this sentence for us."))
    async with FakeOpenAI() as fake:
        settings = {
            "backend": "http",
            "http_url": fake.url,
            "http_model": "large-v3",
            "http_api_key": "sk-asr",
            "language": "en",
            "summary_url": f"{fake.url}/v1",
            "summary_model": "local-llm",
            "summary_api_key": "sk-sum",
            "store_dir": str(tmp_path),
            "auto_start": ["rem*"],  # the room setting: transcribed from its start
        }
        async with LocalServer(transcription=settings) as server:
            room = "remote"
            admin = server.token(room, "admin", room_admin=True)
            alice = Client(server.url, server.token(room, "alice", "Alice"))
            try:
                await alice.connect()
                status = await alice.wait_for("transcription_status")
                assert status["active"] and status["by"] == ""
                status, body = await server.api("GET", f"/api/rooms/{room}/transcription", admin)
                assert status == 200 and body["active"] and body["available"], body
                await alice.publish(WavAudioTrack([(0.5, clip)]))
                caption = await alice.wait_for(
                    lambda m: m.get("type") == "caption" and m["final"], timeout=30
                )
                assert caption["name"] == "Alice" and caption["identity"] == "alice"
                seconds = round(len(clip) / 48000)
                assert abs(int(caption["text"].split()[2]) - seconds) <= 1, caption
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(
                        f"{server.url}/api/rooms/{room}/notes",
                        headers={"Authorization": f"Bearer {admin}"},
                    ) as r,
                ):
                    assert r.status == 200 and r.content_type == "text/markdown"
                    assert "attachment" in r.headers["Content-Disposition"]
                    notes = await r.text()
                status, listed = await server.api("GET", f"/api/rooms/{room}/transcripts", admin)
                assert status == 200 and listed["transcripts"][0]["lines"] == 1
                status, _ = await server.api(
                    "POST", f"/api/rooms/{room}/transcription", admin, {"active": False}
                )
                await until(lambda: list(tmp_path.glob("*/*.json")), what="transcript saved")
                status, deleted = await server.api("DELETE", f"/api/rooms/{room}/transcript", admin)
                assert status == 200 and deleted == {"deleted": 1}
                assert not list(tmp_path.glob("*/*.json"))
                status, _ = await server.api("GET", f"/api/rooms/{room}/transcript", admin)
                assert status == 404
            finally:
                await alice.close()
    finals = [t for t in fake.transcriptions if abs(t["seconds"] - len(clip) / 48000) < 1.0]
    assert finals, fake.transcriptions
    for t in fake.transcriptions:
        assert t["auth"] == "Bearer sk-asr" and t["model"] == "large-v3"
        assert t["language"] == "en" and t["format"] == (16000, 1, 2)
    # the notes: the summary from the chat endpoint, then the transcript
    assert "## Summary\n\nThe team met; Alice spoke about speech." in notes
    assert "**Alice** [" in notes and "I heard" in notes
    (chat,) = fake.chats
    assert chat["auth"] == "Bearer sk-sum" and chat["body"]["model"] == "local-llm"
    assert "Alice: I heard" in chat["body"]["messages"][-1]["content"]


def test_transcripts_are_deleted_after_their_retention(tmp_path):
    from signaling.transcription import TranscriptStore
    from visio_sfu.transcript import Line, Transcript

    store = TranscriptStore(str(tmp_path), retention=3600)
    old, live = Transcript("a b/c", id="old"), Transcript("a b/c", id="live")
    old.add(Line("1", "PA_1", "x", "X", 0.0, 1.0, "hello there", "en"))
    for t in (old, live):
        store.add(t)
        store.save(t)
    assert len(list(tmp_path.glob("*/*.json"))) == 2  # room names made file-safe
    again = TranscriptStore(str(tmp_path), retention=3600)  # a restart reads them back
    assert again.get("a b/c", "old").lines[0].text == "hello there"
    now = time.time()
    assert store.purge(now + 1800, keep=set()) == 0
    assert store.purge(now + 7200, keep={"live"}) == 1  # a transcription under way stays
    assert [t.id for t in store.list("a b/c")] == ["live"]
    assert len(list(tmp_path.glob("*/*.json"))) == 1
