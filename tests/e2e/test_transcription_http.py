"""The OpenAI-compatible backends against a small fake server on 127.0.0.1: speech recognition
(/v1/audio/transcriptions, from the worker process) and the optional meeting summary
(/v1/chat/completions), with their API keys; and what the notes and admin API give back."""

from __future__ import annotations

import io
import os
import signal
import time
import wave

import aiohttp
import pytest
from aiohttp import web

from signaling.transcription import TRANSCRIPTION
from tests.support.inprocess import LocalServer, free_port
from tests.support.media import until
from tests.support.speech import RATE, WavAudioTrack, read_wav, speak
from visio_client import Client
from visio_client.protocol import ServerError
from visio_sfu.asr import pool as pool_module


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


async def test_a_host_who_comes_back_after_the_meeting_gets_its_notes():
    """The notes dialog says "come back to this meeting to download them": the meeting ended
    (everyone left, the room closed), a host who joins it again finds its transcript."""
    clip = read_wav(speak("We agreed to move the launch to next month."))
    async with FakeOpenAI() as fake:
        settings = {"backend": "http", "http_url": fake.url, "language": "en"}
        async with LocalServer(transcription=settings, empty_timeout=0.5) as server:
            room = "comeback"
            host = Client(server.url, server.token(room, "hana", "Hana", room_transcribe=True))
            await host.connect()
            await host.request({"type": "transcription", "active": True}, timeout=60)
            await host.publish(WavAudioTrack([(0.5, clip)]))
            await host.wait_for(lambda m: m.get("type") == "caption" and m["final"], timeout=30)
            await host.close(leave=True)
            await until(lambda: server.sfu.room(room) is None, what="the meeting ended")
            again = Client(server.url, server.token(room, "hana", "Hana", room_host=True))
            await again.connect()
            try:
                state = await again.request({"type": "transcription_state"})
                assert state["has_transcript"] and state["can_download"] and not state["active"]
                notes = await again.request({"type": "transcript", "format": "md"})
                assert "**Hana** [00:00:0" in notes["content"] and "I heard" in notes["content"]
            finally:
                await again.close()


def test_processes_sharing_the_directory_see_each_others_transcripts(tmp_path):
    """visio-sfu serve runs several worker processes: what one saved (the meeting's) is found
    by another (the one an administrator's request reaches), and a deletion is seen by all."""
    from signaling.transcription import TranscriptStore
    from visio_sfu.transcript import Line, Transcript

    one = TranscriptStore(str(tmp_path), retention=3600)
    other = TranscriptStore(str(tmp_path), retention=3600)  # started before the meeting
    meeting = Transcript("board room", id="t1")
    meeting.add(Line("1", "PA_1", "ann", "Ann", 0.0, 1.0, "the budget is approved", "en"))
    one.add(meeting)
    assert other.get("board room") is None
    one.save(meeting)
    found = other.get("board room")
    assert found is not None and found.lines[0].text == "the budget is approved"
    assert [t.id for t in other.list("board room")] == ["t1"]
    assert other.delete("board room") == 1
    assert one.get("board room") is None and one.list("board room") == []
    assert not list(tmp_path.glob("*/*.json"))
    # past its retention, deleted by whichever process purges first
    late = Transcript("late", id="t2")
    one.save(late)
    assert other.purge(time.time() + 7200, keep=set()) == 1
    assert one.list("late") == []


def say(track: WavAudioTrack, clip, after: float = 0.5) -> None:
    """Have a microphone already playing say ``clip`` ``after`` seconds from now."""
    track.script.append(((track.samples + track._offset) / RATE + after, clip))


async def final_lines(client: Client, count: int, timeout: float = 30) -> list[dict]:
    def done():
        lines = [m for m in client.events if m.get("type") == "caption" and m["final"]]
        return lines if len(lines) >= count else None

    return await until(done, timeout=timeout, what=f"{count} final lines")


async def test_a_worker_that_dies_is_spawned_again(monkeypatch):
    """A transcription worker killed in the middle of a meeting is spawned again and the
    microphone it served is transcribed again, the room told; one dying too often is not, the
    room told why, and turning transcription on again brings a new one."""
    clip = read_wav(speak("The worker heard this sentence."))
    async with FakeOpenAI() as fake:
        settings = {"backend": "http", "http_url": fake.url, "language": "en", "captions": False}
        async with LocalServer(transcription=settings) as server:
            room = "phoenix"
            alice = Client(server.url, server.token(room, "alice", "Alice", room_transcribe=True))
            try:
                await alice.connect()
                await alice.request({"type": "transcription", "active": True}, timeout=60)
                mic = WavAudioTrack([(0.5, clip)])
                await alice.publish(mic)
                await final_lines(alice, 1)
                service = server.app[TRANSCRIPTION]
                pool = service.pool
                first = pool._workers[0].process.pid
                os.kill(first, signal.SIGKILL)
                status = await alice.wait_for(
                    lambda m: m.get("type") == "transcription_status" and "restarted" in m["error"]
                )
                assert status["active"] and "worker stopped" in status["error"], status
                say(mic, clip)  # heard by the new worker (queued while it starts)
                lines = await final_lines(alice, 2)
                assert lines[1]["name"] == "Alice" and lines[1]["text"].startswith("I heard")
                assert pool.restarts == 1 and pool._workers[0].process.pid != first

                monkeypatch.setattr(pool_module, "MAX_RESTARTS", 1)  # now it dies too often
                os.kill(pool._workers[0].process.pid, signal.SIGKILL)
                status = await alice.wait_for(
                    lambda m: (
                        m.get("type") == "transcription_status" and "not restarted" in m["error"]
                    )
                )
                await until(lambda: not service.rooms[room].tracks, what="the track closed")
                assert not pool.alive() and pool.restarts == 1
                # a host turns it off and on again: a new worker, the microphone heard again
                await alice.request({"type": "transcription", "active": False})
                await alice.request({"type": "transcription", "active": True}, timeout=60)
                say(mic, clip)
                lines = await final_lines(alice, 3)
                assert lines[2]["name"] == "Alice" and pool.alive()
            finally:
                await alice.close()


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


def test_the_transcription_settings_from_toml_env_and_options(tmp_path, monkeypatch):
    """Like every setting: the TOML [transcription] table < VISIO_TRANSCRIPTION_<SETTING> <
    visio-sfu serve's options, setting by setting; bad text is refused with its name."""
    from signaling.cli import _parser, serve_config
    from signaling.config import ConfigError, load_config
    from signaling.transcription import Settings

    toml = tmp_path / "visio.toml"
    toml.write_text(
        '[transcription]\nlanguage = "en"\nstore_dir = "/toml"\nretention = "2d"\nworkers = 2\n'
    )
    for name in [n for n in __import__("os").environ if n.startswith("VISIO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("VISIO_TRANSCRIPTION_STORE_DIR", "/env")
    monkeypatch.setenv("VISIO_TRANSCRIPTION_RETENTION", "12h")
    monkeypatch.setenv("VISIO_TRANSCRIPTION_CAPTIONS", "off")
    monkeypatch.setenv("VISIO_TRANSCRIPTION_AUTO_START", "board-*, team-*")
    monkeypatch.setenv("VISIO_TRANSCRIPTION_HTTP_API_KEY", "sk-secret")
    s = Settings.from_config(
        serve_config(_parser().parse_args(["serve", "--config", str(toml)])).transcription
    )
    assert (s.language, s.store_dir, s.retention, s.workers) == ("en", "/env", 43200, 2)
    assert s.captions is False and s.auto_start == ["board-*", "team-*"] and s.enabled
    assert s.http_api_key == "sk-secret"
    options = [
        "serve",
        "--config",
        str(toml),
        "--transcripts-dir",
        "/opt",
        "--transcript-retention",
        "30d",
        "--transcription-language",
        "fr",
        "--no-transcription",
        "--transcription-model-dir",
        "/models/small",
        "--transcription-model-sha256",
        "ab" * 32,
    ]
    config = serve_config(_parser().parse_args(options))
    s = Settings.from_config(config.transcription)
    assert (s.store_dir, s.retention, s.language, s.enabled) == ("/opt", 30 * 86400, "fr", False)
    assert (s.model_dir, s.model_sha256, s.workers, s.captions) == (
        "/models/small",
        "ab" * 32,
        2,
        False,
    )
    assert "sk-secret" not in repr(config)
    for var, value, said in [
        ("VISIO_TRANSCRIPTION_WORKERS", "two", "workers: invalid value 'two'"),
        ("VISIO_TRANSCRIPTION_CAPTIONS", "maybe", "captions: invalid value"),
        ("VISIO_TRANSCRIPTION_RETENTION", "forever", "retention"),
        ("VISIO_TRANSCRIPTION_MODELDIR", "/x", "VISIO_TRANSCRIPTION_MODELDIR"),
    ]:
        with pytest.raises(ConfigError, match=said):
            Settings.from_config(load_config(env={var: value}).transcription)


def test_token_transcribe_flag(tmp_path, capsys):
    import jwt

    from signaling import cli

    toml = tmp_path / "visio.toml"
    toml.write_text('[keys]\nk = "a-secret-of-at-least-thirty-two-characters"\n')
    args = ["token", "--config", str(toml), "--room", "r", "--identity", "a", "--transcribe"]
    assert cli.main(args) == 0
    token = capsys.readouterr().out.strip()
    video = jwt.decode(token, "a-secret-of-at-least-thirty-two-characters", algorithms=["HS256"])[
        "video"
    ]
    assert video["roomTranscribe"] is True and video["roomRecord"] is False
    assert video["room"] == "r" and video["canPublish"] is True


async def test_without_the_notes_extra_it_says_how_to_add_a_model(monkeypatch):
    """The default install has no model: transcription is unavailable, says how to add one,
    and the meeting goes on."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "faster_whisper" else real(name, *a),
    )
    async with LocalServer() as server:
        room = "plain"
        host = Client(server.url, server.token(room, "host", "Host", room_transcribe=True))
        try:
            await host.connect()
            state = await host.request({"type": "transcription_state"})
            assert not state["available"] and not state["active"]
            assert "pip install 'visio-sfu[notes]'" in state["error"], state
            with pytest.raises(ServerError) as refused:
                await host.request({"type": "transcription", "active": True})
            assert refused.value.code == "unavailable" and "visio-sfu[notes]" in str(refused.value)
            assert len(server.sfu.room(room).participants) == 1  # the meeting goes on
        finally:
            await host.close()


async def test_a_development_host_may_record_and_transcribe():
    """In development mode a room link with &host=1 makes a host who may try every control of
    the web client: recording and transcription too; a guest may not."""
    import jwt

    from signaling.config import DEV_API_SECRET

    async with LocalServer(dev=True) as server, aiohttp.ClientSession() as http:
        grants = {}
        for query in ("room=r&host=1", "room=r"):
            async with http.get(f"{server.url}/dev/token?{query}") as r:
                token = (await r.json())["token"]
            grants[query] = jwt.decode(token, DEV_API_SECRET, algorithms=["HS256"])["video"]
    host, guest = grants["room=r&host=1"], grants["room=r"]
    assert host["roomHost"] and host["roomRecord"] and host["roomTranscribe"], host
    assert not any(guest.get(k) for k in ("roomHost", "roomRecord", "roomTranscribe")), guest
