"""SpeakerDetector: loudest wins, silence means nobody, hysteresis against flapping."""

import numpy as np

from visio_sfu.speaker import SpeakerDetector


def feed(d, keys, levels, rounds=6):
    out = None
    for _ in range(rounds):
        out = d.update(keys, np.array(levels), np.ones(len(levels), bool))
    return out


def test_loudest_track_is_the_speaker_and_silence_is_nobody():
    d = SpeakerDetector()
    assert feed(d, ["a", "b", "c"], [127, 30, 60]) == "b"
    assert feed(d, ["a", "b", "c"], [127, 127, 127], rounds=20) is None


def test_hysteresis_keeps_the_speaker_until_clearly_louder():
    d = SpeakerDetector()
    assert feed(d, ["a", "b"], [30, 40]) == "a"
    assert feed(d, ["a", "b"], [30, 28]) == "a"  # b slightly louder: no change
    assert feed(d, ["a", "b"], [40, 20], rounds=12) == "b"  # b clearly louder


def test_tracks_coming_and_going():
    d = SpeakerDetector()
    assert feed(d, ["a", "b"], [30, 127]) == "a"
    assert feed(d, ["b", "c"], [127, 25]) == "c"
    assert feed(d, [], []) is None
