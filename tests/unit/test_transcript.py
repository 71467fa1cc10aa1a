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
