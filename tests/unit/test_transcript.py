"""The transcript without sockets: duplicates across microphones, exports, notes; the audio
tap; the per-track audio pipeline (reordering, DTX, loss) on Opus made here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from visio_sfu.audiotap import AudioTap
from visio_sfu.rtp.header import build_rtp
from visio_sfu.transcript import (
    Line,
    Transcript,
    action_items,
    key_points,
    make_notes,
    to_markdown,
    to_webvtt,
)


def line(i: int, who: str, start: float, text: str, level: float = -20.0) -> Line:
    return Line(
        f"TR_{who}-{i}", f"PA_{who}", who, who.title(), start, start + 3, text, "en", level=level
    )


def test_the_same_sentence_on_two_microphones_is_kept_once_from_the_louder():
    t = Transcript("r")
    kept, replaced = t.add(line(0, "alice", 1.0, "We ship the release on Monday.", -18))
    assert kept and replaced is None
    # Bob's microphone heard Alice, quieter, a little later: dropped
    assert t.add(line(0, "bob", 1.2, "we ship the release on monday", -35)) == (False, None)
    # Carol's microphone heard her louder than Alice's (Alice far from hers): replaces it
    kept, replaced = t.add(line(0, "carol", 1.1, "We ship the release on Monday!", -10))
    assert kept and replaced == "TR_alice-0"
    assert [x.identity for x in t.lines] == ["carol"]
    # the same words said again later, or another sentence at once, are new lines
    assert t.add(line(1, "bob", 20.0, "We ship the release on Monday.", -40))[0]
    assert t.add(line(2, "alice", 1.5, "Coffee is ready in the kitchen.", -30))[0]
    assert [x.identity for x in t.lines] == ["carol", "alice", "bob"]


def test_exports_name_the_speaker_and_time_and_escape_text():
    t = Transcript("board <room>", started_at=0.0)
    t.add(line(0, "alice", 61.5, "Budget approved --> next <b>step</b>"))
    t.add(line(1, "bob", 3600 + 2.25, "I will send the minutes by Friday."))
    vtt = to_webvtt(t)
    assert vtt.startswith("WEBVTT\n\n1\n00:01:01.500 --> 00:01:04.500\n<v Alice>Budget approved")
    assert "&lt;b&gt;step&lt;/b&gt;" in vtt and "-->" not in vtt.split("\n")[4][5:]
    assert "01:00:02.250 --> 01:00:05.250\n<v Bob>I will send" in vtt
    md = to_markdown(t, make_notes(t))
    assert "**Alice** [00:01:01]: Budget approved --\\> next \\<b\\>step\\</b\\>" in md
    assert "## Action items\n\n- [ ] I will send the minutes by Friday. (Bob, 01:00:02)" in md
    back = Transcript.from_json(json.loads(json.dumps(t.to_json())))
    assert [x.public() for x in back.lines] == [x.public() for x in t.lines]  # no level
    assert back.room == "board <room>"
    # a meeting people own is titled with its name, in the notes and the exported JSON
    assert md.startswith("# Meeting notes: board \\<room\\>\n")
    t.title = "Revue *hebdo*"
    assert to_markdown(t).startswith("# Meeting notes: Revue \\*hebdo\\*\n")
    assert Transcript.from_json(json.loads(json.dumps(t.to_json()))).title == "Revue *hebdo*"
    assert t.to_json()["speakers"] == ["Alice", "Bob"]
    assert "level" not in t.to_json()["lines"][0]


def test_key_points_and_action_items():
    said = [
        ("alice", "Good morning everyone, thanks for coming."),
        ("bob", "The library budget needs two more reviewers before the council vote."),
        ("alice", "Yes."),
        ("carol", "The council vote on the library budget is next Tuesday."),
        ("bob", "Lovely weather today."),
        ("alice", "I will draft the library budget summary for the council."),
        ("carol", "Could you share the slides?"),
        ("bob", "Il faut envoyer le compte rendu avant vendredi."),
        ("carol", "Please book the room for Thursday."),
    ]
    t = Transcript("r")
    for i, (who, text) in enumerate(said):
        t.add(line(i, who, i * 10.0, text))
    points = [p.text for p in key_points(t, limit=2)]
    assert all("library budget" in p or "council" in p for p in points), points
    actions = [p.text for p in action_items(t)]
    assert actions == [
        "I will draft the library budget summary for the council.",
        "Il faut envoyer le compte rendu avant vendredi.",
        "Please book the room for Thursday.",
    ]


def test_audio_tap_keeps_packets_within_its_limit_and_strips_headers():
    tap = AudioTap(limit=3)
    packets = [build_rtp(111, i, i * 960, 5, bytes([i]) * 10) for i in range(5)]
    for i, data in enumerate(packets):
        tap.write(data, 5, i, i * 960, False, 100.0 + i, 0)
    assert tap.dropped == 2
    first, batch = tap.take()
    assert first == 100.0 and batch == [(i, i * 960, bytes([i]) * 10) for i in range(3)]
    assert tap.take() is None
    tap.write(packets[4], 5, 4, 4 * 960, False, 200.0, 0)
    assert tap.take() == (100.0, [(4, 3840, bytes([4]) * 10)])  # the stream's first arrival
    tap.close()
    assert tap.closed


@pytest.fixture(scope="module")
def speech_packets():
    pytest.importorskip("faster_whisper")
    from tests.support.speech import opus_packets, read_wav, speak

    clip = read_wav(speak("Testing one two three, the pipeline works."))
    return opus_packets(np.concatenate([np.zeros(24000, np.int16), clip]))


def run_stream(packets, order):
    from visio_sfu.asr.stream import AudioStream

    stream = AudioStream("k", "en", partial_interval=float("inf"))
    for i in range(0, len(order), 7):
        stream.push(
            [(j & 0xFFFF, (j * 960 + 12345) & 0xFFFFFFFF, packets[j]) for j in order[i : i + 7]],
            50.0,
        )
    return stream, [j for j in stream.jobs() + stream.close() if j.final]


def test_stream_finds_one_utterance_in_order_reordered_or_lossy(speech_packets):
    n = len(speech_packets)
    _stream, clean = run_stream(speech_packets, list(range(n)))
    assert len(clean) == 1
    utterance = clean[0]
    assert 0.3 < utterance.start - 50.0 < 0.8  # half a second of silence came first
    assert 2.0 < utterance.end - utterance.start < 5.0
    # swapped neighbours: the same audio
    swapped = list(range(n))
    for i in range(10, n - 1, 9):
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    stream, jobs = run_stream(speech_packets, swapped)
    assert stream.lost == 0 and len(jobs) == 1
    assert np.allclose(jobs[0].audio, utterance.audio, atol=1e-4)
    # 5 % loss: still one utterance of about the same length
    lossy = [i for i in range(n) if i % 20 != 7]
    stream, jobs = run_stream(speech_packets, lossy)
    assert stream.lost >= n // 20 - 1 and len(jobs) == 1
    assert abs((jobs[0].end - jobs[0].start) - (utterance.end - utterance.start)) < 0.3


def test_stream_silence_gap_dtx_splits_utterances_and_keeps_time(speech_packets):
    from visio_sfu.asr.stream import AudioStream

    stream = AudioStream("k", "en", partial_interval=float("inf"))
    n = len(speech_packets)
    # the clip twice, with 10 s of DTX (no packets, the timestamp jumps) between
    stream.push([(j, j * 960, speech_packets[j]) for j in range(n)], 0.0)
    stream.push([(n + j, (n + j + 500) * 960, speech_packets[j]) for j in range(n)], 0.0)
    jobs = [j for j in stream.jobs() + stream.close() if j.final]
    assert len(jobs) == 2
    assert jobs[1].start - jobs[0].start == pytest.approx(n * 0.02 + 10.0, abs=0.1)


def test_speaker_weights_loader_accepts_tensors_only(tmp_path):
    import pickle

    from visio_sfu.asr.speakers import load_weights

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        for value in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(value, f)
        pickle.dump({"model_state": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_weights(path)


def test_speaker_clusters_follow_voices():
    from visio_sfu.asr.speakers import SpeakerClusters

    rng = np.random.default_rng(1)
    voices = [rng.normal(size=256) for _ in range(2)]

    def utterance(v):
        e = voices[v] + rng.normal(scale=0.3, size=256)
        return e / np.linalg.norm(e)

    clusters = SpeakerClusters()
    assert [clusters.assign(utterance(v)) for v in (0, 1, 0, 0, 1, 1, 0)] == [1, 2, 1, 1, 2, 2, 1]


def test_model_directory_is_checked_against_its_pinned_hashes(tmp_path):
    import hashlib

    from visio_sfu.asr.model import ModelError, verify_model_dir

    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100)
    good = hashlib.sha256(model.read_bytes()).hexdigest()
    assert verify_model_dir(tmp_path, {"model.bin": good}) == tmp_path
    assert verify_model_dir(tmp_path, {"model.bin": good}) == tmp_path  # remembered
    model.write_bytes(b"tampered" * 100)  # another file now: checked again
    with pytest.raises(ModelError, match=f"expected {good}: refusing to load"):
        verify_model_dir(tmp_path, {"model.bin": good})
    with pytest.raises(ModelError, match="no sha256 pinned"):
        verify_model_dir(tmp_path, {})
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="no tokenizer.json"):
        verify_model_dir(tmp_path, {"model.bin": good})


def _model_dir(path, content: bytes = b"weights" * 1000) -> str:
    """A small model directory; returns model.bin's sha256."""
    import hashlib

    path.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        (path / name).write_text("{}")
    (path / "model.bin").write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def test_a_model_checked_once_is_not_hashed_again_by_another_process(tmp_path, monkeypatch):
    """Every process of a server (the front, each worker) hashed the 145 MB model at start-up
    (5-26 s under load): a stamp now records a file found matching its pin, keyed by its
    path, inode, size, times and the pin, so another process (or the next start) skips the
    hash while the file is unchanged; a file changed since is hashed again and refused."""
    import os
    import subprocess
    import sys
    import time

    from visio_sfu.asr import model as model_module
    from visio_sfu.asr.model import ModelError, verify_model_dir

    models, stamps = tmp_path / "model", tmp_path / "cache" / "verified"
    good = _model_dir(models)
    hashed: list[str] = []
    real = model_module.sha256_of

    def counting(path, *args):
        hashed.append(str(path))
        return real(path, *args)

    monkeypatch.setattr(model_module, "sha256_of", counting)
    assert verify_model_dir(models, {"model.bin": good}, stamps) == models
    assert len(hashed) == 1 and len(list(stamps.glob("*.json"))) == 1
    # another process: not hashed (its sha256_of would fail the check if it were called)
    probe = (
        "import sys; from visio_sfu.asr import model as m\n"
        "m.sha256_of = lambda *a: 'called'\n"
        "print(m.verify_model_dir(sys.argv[1], {'model.bin': sys.argv[2]}, sys.argv[3]))"
    )
    run = [sys.executable, "-c", probe, str(models), good, str(stamps)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == str(models), done.stderr
    # this process forgetting what it checked (a restart) reads the stamp too
    monkeypatch.setattr(model_module, "_VERIFIED", set())
    verify_model_dir(models, {"model.bin": good}, stamps)
    assert len(hashed) == 1
    # another pin: the stamp is not for it, hashed (and refused)
    with pytest.raises(ModelError, match="refusing to load"):
        verify_model_dir(models, {"model.bin": "0" * 64}, stamps)
    assert len(hashed) == 2
    # the same size rewritten in place, its modification time set back: hashed, refused
    model = models / "model.bin"
    before = model.stat()
    time.sleep(0.05)  # (a later change time than the stamp's, whatever the clock's grain)
    with open(model, "r+b") as f:
        f.write(b"X")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert model.stat().st_size == before.st_size and model.stat().st_ino == before.st_ino
    # (by this process too, which found the file good before: its own memory of that is
    # keyed by the change time as well)
    with pytest.raises(ModelError, match=f"expected {good}: refusing to load"):
        verify_model_dir(models, {"model.bin": good}, stamps)
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "has sha256 called" in done.stderr, done.stderr
    # replaced by another file (a new inode) holding the right content: hashed, accepted
    fresh = tmp_path / "model.bin.new"
    fresh.write_bytes(b"weights" * 1000)
    os.replace(fresh, model)
    verify_model_dir(models, {"model.bin": good}, stamps)
    assert len(hashed) == 4
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_processes_starting_together_hash_the_model_once(tmp_path, monkeypatch):
    """The front and its workers start at once: one hashes, the others wait for its stamp."""
    import threading
    import time

    from visio_sfu.asr import model as model_module
    from visio_sfu.asr.model import verify_model_dir

    models, stamps = tmp_path / "model", tmp_path / "verified"
    good = _model_dir(models, b"w" * (4 << 20))
    hashed: list[str] = []
    real = model_module.sha256_of

    def slow(path, *args):
        hashed.append(str(path))
        time.sleep(0.3)
        return real(path, *args)

    monkeypatch.setattr(model_module, "sha256_of", slow)
    errors: list[BaseException] = []

    def check() -> None:
        try:
            verify_model_dir(models, {"model.bin": good}, stamps)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(hashed) == 1, (errors, hashed)


def test_an_unwritable_stamp_directory_only_costs_the_hash(tmp_path):
    from visio_sfu.asr.model import verify_model_dir

    models = tmp_path / "model"
    good = _model_dir(models)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # the stamps' directory cannot be made under a file
    assert verify_model_dir(models, {"model.bin": good}, blocker / "verified") == models
