"""The freeze counter (issue 17): a freeze is no video forwarded for over 0.5 s to a subscriber
that wants the track while its publisher sends. A tile hidden then shown again, or a publisher
that stopped sending, is no freeze; a real gap is, for simulcast and VP9 SVC alike, and shows
in /metrics (visio_downtrack_freezes_total)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client.core import Metric

from signaling.metrics import SFUCollector
from tests.support.rtp import send, simulcast_track
from tests.unit.test_vp9_svc import Picture, subscribed
from visio_sfu.downtrack import DownTrack
from visio_sfu.publisher import Publisher

FPS = 30


class Simulcast:
    """A simulcast publisher sending layer 0 at 30 frames a second (a keyframe when asked)."""

    def __init__(self) -> None:
        self.track = simulcast_track()
        self.out: list[bytes] = []
        self.dt = DownTrack(self.track, lambda b: self.out.append(bytes(b)) or True, "PB")
        self.track.attach(self.dt)
        self.dt.bind(0xBEEF, 100, {})
        self.n = 0
        self.now = 1.0

    def send(self, key: bool = False) -> None:
        n = self.n
        send(self.track, 0, 111, 1000 + n, 3000 * n, 300 + n, n & 0xFF, key, self.now)
        self.n += 1
        self.now += 1 / FPS

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * FPS)):
            self.send()


class Svc:
    """A VP9 SVC publisher sending three spatial layers at 30 pictures a second."""

    def __init__(self) -> None:
        self.track, self.dt, self.out = subscribed()
        self.pictures = Picture(self.track)
        self.pictures.now = 1.0

    @property
    def now(self) -> float:
        return self.pictures.now

    @now.setter
    def now(self, value: float) -> None:
        self.pictures.now = value

    def send(self, key: bool = False) -> None:
        self.pictures.send(key=key)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds * FPS)):
            self.send()


def freezes_metric(track: Publisher, dt: DownTrack) -> float:
    """visio_downtrack_freezes_total for this pair, as /metrics shows it."""
    sfu = SimpleNamespace(layers=lambda: [{"room": "r", **dt.layer_info()}])
    collector = SFUCollector(sfu, None)  # type: ignore[arg-type]
    family: Metric = next(m for m in collector._layers() if m.name == "visio_downtrack_freezes")
    return next(s.value for s in family.samples if s.labels["track"] == track.sid)


@pytest.fixture(params=["simulcast", "vp9-svc"])
def video(request):
    return Simulcast() if request.param == "simulcast" else Svc()


def test_a_hidden_tile_shown_again_is_not_a_freeze(video):
    video.send(key=True)
    video.run(1.0)
    assert video.out and video.dt.freezes == 0
    video.dt.set_target(-1, video.now)  # hidden: paused
    sent = len(video.out)
    video.run(5.0)  # the publisher goes on sending
    assert len(video.out) == sent
    video.dt.set_target(0, video.now)  # shown again: its keyframe comes 0.2 s later
    video.run(0.2)
    video.send(key=True)
    video.run(1.0)
    assert len(video.out) > sent
    assert video.dt.freezes == 0, video.dt.freeze_log  # before: one of 5.2 s
    assert freezes_metric(video.track, video.dt) == 0


def test_shown_again_and_kept_waiting_for_a_keyframe_is_a_freeze(video):
    """The clock starts when the subscriber wants the video again: a keyframe 1 s late is
    a freeze of 1 s, not of the hidden time."""
    video.send(key=True)
    video.run(1.0)
    video.dt.set_target(-1, video.now)
    video.run(3.0)
    shown = video.now
    video.dt.set_target(0, shown)
    video.run(1.0)
    video.send(key=True)
    assert video.dt.freezes == 1
    assert video.dt.freeze_seconds == pytest.approx(video.now - 1 / FPS - shown, abs=0.01)


def test_a_gap_while_wanted_is_a_freeze_and_shows_in_metrics(video):
    video.send(key=True)
    video.run(1.0)
    assert freezes_metric(video.track, video.dt) == 0
    video.dt.restart()  # a new network path: nothing until a keyframe
    before = video.now
    video.run(0.8)
    video.send(key=True)
    video.run(0.5)
    assert video.dt.freezes == 1  # SVC: none were counted before
    assert 0.8 <= video.dt.freeze_seconds <= 0.9, video.dt.freeze_seconds
    assert video.dt.freeze_log[-1][0] == pytest.approx(before + 0.8, abs=0.01)
    assert freezes_metric(video.track, video.dt) == 1


def test_a_publisher_that_stops_sending_causes_no_freeze(video):
    video.send(key=True)
    video.run(1.0)
    video.now += 3.0  # muted, or its network: nothing arrives
    video.run(1.0)
    assert video.dt.freezes == 0, video.dt.freeze_log
    # a freeze that began while it still sent counts up to when it stopped
    video.dt.restart()
    stalled = video.now
    video.run(1.0)
    stopped = video.now - 1 / FPS
    video.now += 3.0
    video.send(key=True)
    video.run(0.5)
    assert video.dt.freezes == 1
    assert video.dt.freeze_seconds == pytest.approx(stopped - stalled + 1 / FPS, abs=0.05)
