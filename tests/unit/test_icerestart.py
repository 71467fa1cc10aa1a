"""visio_sfu/icerestart.py without peers: credentials read from a description, candidates of a
generation not applied yet kept for it (bounded), and the mux's routing of a renewed ufrag.
(Restarts with real clients: tests/browser/test_ice_restart_browser.py and the others.)"""

from __future__ import annotations

from tests.unit.test_udpmux import FakeConnection
from visio_sfu import icerestart
from visio_sfu.udpmux import UdpMux


def test_ice_credentials_are_the_first_of_the_description():
    sdp = "v=0\r\nm=audio 9 x\r\na=ice-ufrag:abcd\r\na=ice-pwd:p4ssw0rd\r\na=ice-ufrag:zzzz\r\n"
    assert icerestart.ice_credentials(sdp) == ("abcd", "p4ssw0rd")
    assert icerestart.ice_credentials("a=ice-ufrag:abcd\n") is None  # no password
    assert icerestart.ice_credentials("") is None


def test_trickled_candidates_wait_for_their_generation():
    buffer = icerestart.TrickleBuffer()
    assert not buffer.early("old", "old") and not buffer.early(None, "old")
    assert not buffer.early("new", None)  # nothing applied yet: a first negotiation
    assert buffer.early("new", "old")
    for i in range(icerestart.MAX_WAITING + 10):
        buffer.keep("new" if i % 2 else "other", {"candidate": str(i)})
    kept = buffer.take("new")
    assert len(kept) == icerestart.MAX_WAITING // 2 and kept[-1] == {"candidate": "73"}
    assert buffer.take("new") == [] and buffer.take("other") == []  # taken, the rest dropped


async def test_a_renewed_ufrag_is_routed_and_the_old_one_is_not():
    mux = await UdpMux(0, host="127.0.0.1").start()
    try:
        a = FakeConnection("initial", "p" * 22)
        mux.reserve(a)
        mux.candidates(a, 1, ["127.0.0.1"])
        old = a.local_username
        protocol = mux._by_ufrag[old.encode()]
        icerestart.renew_local(a, mux)
        assert a.local_username != old and len(a.local_username) == 8
        assert len(a._local_password) == 24
        assert mux._by_ufrag == {a.local_username.encode(): protocol}
    finally:
        mux.close()
