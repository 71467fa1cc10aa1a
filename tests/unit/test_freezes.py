"""The freeze counter (issue 17): a freeze is no video forwarded for over 0.5 s (VP9 SVC given
fewer frames: 2.5 of its frame intervals, if longer) to a subscriber that wants the track while
its publisher sends. A tile hidden then shown again, or a publisher
that stopped sending, is no freeze; a real gap is, for simulcast and VP9 SVC alike, and shows
in /metrics (visio_downtrack_freezes_total)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client.core import Metric

from signaling.metrics import SFUCollector
from tests.support.rtp import send, simulcast_track
from tests.unit.test_vp9_svc import T_PATTERN, Picture, forwarded_pictures, subscribed
from visio_sfu.allocator import UP_HOLD, allocate, layer_rates
from visio_sfu.downtrack import FREEZE, DownTrack
from visio_sfu.forwarder import ALL_TEMPORAL
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


@pytest.mark.parametrize("chosen_by", ["bandwidth", "fps cap"])
def test_a_low_frame_rate_given_by_temporal_layers_is_no_freeze(chosen_by):
    """A VP9 L3T3 publisher at 6 frames a second; a subscriber given T0 (1.5 frames a second)
    by the allocator or by its fps cap gets a frame every 0.67 s: no freeze (15 in 10 s were
    counted). A real gap at T0 still is one, and with every layer forwarded again the
    threshold is 0.5 s again."""
    video = Svc()
    track, dt, pics = video.track, video.dt, video.pictures
    participant = SimpleNamespace(
        subscriber=SimpleNamespace(bandwidth=None, downtracks={track.sid: dt})
    )
    fps = 6

    def rounds(seconds: float, answer: bool = True) -> None:
        """6 pictures a second (a keyframe when asked, if ``answer``); every 0.25 s, the room's
        round: rates, then the allocator."""
        end = pics.now + seconds
        next_round = pics.now + 0.25
        while pics.now < end:
            tid = T_PATTERN[pics.pid % 4]
            asked = track.keyframe_requests != getattr(pics, "asked", 0)
            key = pics.pid == 0 or (answer and asked)
            if answer:
                pics.asked = track.keyframe_requests
            at = pics.now
            pics.send(key=key, tid=0 if key else tid, u=tid > 0)
            pics.now = at + 1 / fps
            while pics.now >= next_round:
                track.update_rates(next_round)
                allocate([participant], None, next_round)
                next_round += 0.25

    rounds(2.0)
    assert dt.level == 4 and dt.freezes == 0
    if chosen_by == "bandwidth":
        full0 = layer_rates(track, pics.now, dt.max_layer)[2]
        participant.subscriber.bandwidth = full0 / 1000  # far below: T0, never paused
    else:
        dt.max_fps = 2
    rounds(0.5)
    assert dt.forwarder.temporal == 0
    start = len(video.out)
    rounds(10.0)
    assert len({pid for pid, _, _ in forwarded_pictures(video.out[start:])}) == 15
    assert dt.freezes == 0, dt.freeze_log  # before: 15 freezes, 10 s
    assert dt.freeze_after == pytest.approx(2.5 / 1.5, rel=0.2)
    dt.restart()  # a real gap: the keyframe comes 3 s later
    rounds(3.0, answer=False)
    rounds(1.0)
    assert dt.freezes == 1 and dt.freeze_seconds > 3.0, dt.freeze_log
    participant.subscriber.bandwidth = None  # every layer again: 0.5 s
    dt.max_fps = 0
    rounds(0.5 + UP_HOLD)
    assert dt.forwarder.temporal == ALL_TEMPORAL and dt.freeze_after == FREEZE
