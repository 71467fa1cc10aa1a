"""Participant and SFU on fake transports: mute and update events, the SFU's totals (which never
go down when someone leaves), drops by reason, and the layers view."""

from __future__ import annotations

from tests.support.fake_transport import FakeTransport
from tests.unit.test_room import OFFER, Inbox
from visio_sfu import SFU
from visio_sfu.events import ParticipantUpdated, TrackMuted
from visio_sfu.rtp.header import build_rtp
from visio_sfu.stats import DropReason, Stats, drop_totals


async def test_mute_and_update_are_told_to_the_others_and_a_hosts_mute_to_its_owner():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("r")
    alice_in, bob_in = Inbox(), Inbox()
    alice = await room.join("alice", "Alice", emit=alice_in.append)
    await room.join("bob", "Bob", emit=bob_in.append)
    await alice.publish_offer(OFFER)
    audio = next(t for t in alice.tracks.values() if t.kind == "audio")
    alice.set_muted(audio.sid, True)
    assert bob_in.of(TrackMuted)[-1].muted and not alice_in.of(TrackMuted)
    alice.set_muted(audio.sid, True)  # no change: nothing more said
    assert len(bob_in.of(TrackMuted)) == 1
    alice.set_muted(audio.sid, False, by_server=True)
    assert alice_in.of(TrackMuted)[-1].muted is False  # the owner learns a host did it
    alice.update(name="Alice B.")
    assert bob_in.of(ParticipantUpdated)[-1].participant.name == "Alice B."
    assert alice_in.of(ParticipantUpdated)[-1].participant.name == "Alice B."
    await sfu.close()


async def test_totals_never_go_down_and_drops_are_counted_by_reason():
    sfu = SFU(transport_factory=FakeTransport)
    room = sfu.get_or_create_room("r")
    alice = await room.join("alice")
    await room.join("bob")
    await alice.publish_offer(OFFER)
    audio = next(t for t in alice.tracks.values() if t.kind == "audio")
    for i in range(5):
        audio.on_rtp(build_rtp(111, i, 960 * i, 7, b"opus"), i * 0.02)
    audio.on_rtp(build_rtp(97, 9, 0, 7, b"?"), 0.2)  # not its payload type
    before = sfu.stats()
    assert before["packets_in"] == 5 and before["drops"]["wrong_payload_type"] == 1
    await room.remove(alice)
    after = sfu.stats()
    for name in ("packets_in", "bytes_in", "packets_out", "bytes_out"):
        assert after[name] >= before[name], name
    assert after["drops"]["wrong_payload_type"] == 1
    assert sfu.layers() == []  # no video received
    await sfu.close()


def test_stats_retire_and_total_drops():
    stats = Stats()
    drops = [0] * len(DropReason)
    drops[DropReason.PAUSED] = 3
    stats.retire(drops, packets_in=2)
    stats.retire(None, packets_in=1)
    assert stats.retired["packets_in"] == 3
    totals = drop_totals(stats.retired_drops, drops)
    assert totals["paused"] == 6 and set(totals) == {r.label for r in DropReason}
