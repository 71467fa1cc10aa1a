"""Forwarder: the per-packet decision, without I/O: starts and switches at keyframes,
pause and resume, audio, and the keyframe requests it asks for."""

from visio_sfu.forwarder import FORWARD, SWITCH, Forwarder
from visio_sfu.stats import DropReason


def test_a_video_starts_at_a_keyframe_and_asks_for_one_meanwhile():
    f = Forwarder(video=True)
    assert f.waiting
    assert f.decide(0, key=False) == DropReason.WAITING_KEYFRAME
    assert f.keyframe_wanted == 0
    f.keyframe_wanted = -1
    assert f.decide(0, key=True) == SWITCH and f.starts == 1 and f.switches == 0
    assert f.decide(0, key=False) == FORWARD and not f.waiting


def test_a_switch_waits_for_the_new_layers_keyframe_and_the_old_layer_goes_on():
    f = Forwarder(video=True)
    f.decide(0, key=True)
    assert f.set_target(2)  # a keyframe of layer 2 is wanted now
    assert f.decide(0, key=False) == FORWARD  # the old layer flows meanwhile ...
    assert f.keyframe_wanted == 2  # ... asking again for the new one
    f.keyframe_wanted = -1
    assert f.decide(2, key=False) == DropReason.WAITING_KEYFRAME and f.keyframe_wanted == 2
    assert f.decide(1, key=True) == DropReason.OTHER_LAYER  # not ours
    assert f.decide(2, key=True) == SWITCH and f.switches == 1
    assert f.decide(0, key=False) == DropReason.OTHER_LAYER
    assert f.decide(2, key=False) == FORWARD


def test_pause_and_resume():
    f = Forwarder(video=True)
    f.decide(0, key=True)
    assert not f.set_target(-1)  # hidden: nothing wanted
    assert f.decide(0, key=False) == DropReason.PAUSED and f.waiting
    assert f.set_target(0)
    assert f.decide(0, key=False) == DropReason.WAITING_KEYFRAME
    assert f.decide(0, key=True) == SWITCH and f.starts == 2 and f.switches == 0


def test_restart_after_a_new_path_or_an_unmute():
    f = Forwarder(video=True)
    f.decide(0, key=True)
    assert f.restart() == 0 and f.waiting
    assert f.decide(0, key=False) == DropReason.WAITING_KEYFRAME


def test_audio_never_waits():
    f = Forwarder(video=False)
    assert not f.waiting and f.restart() == -1
    assert f.decide(0, key=False) == FORWARD
