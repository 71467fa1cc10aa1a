"""visio_sfu._batch.srtp_protect_copy: libsrtp's protect in one call (the send path's
SrtpProtector can use it instead of a cffi buffer): the same SRTP packets as pylibsrtp."""

from __future__ import annotations

import os

import pytest
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

from visio_sfu.rtp.header import build_rtp

batch = pytest.importorskip("visio_sfu._batch")  # test_rewrite.py fails when it is not built

PROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))


def _sessions(profile: int, n: int) -> list[Session]:
    key = os.urandom(30 if profile == Policy.SRTP_PROFILE_AES128_CM_SHA1_80 else 28)
    return [
        Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "profile", [Policy.SRTP_PROFILE_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AEAD_AES_128_GCM]
)
def test_srtp_protect_copy_gives_what_pylibsrtp_gives(profile):
    ours, theirs = _sessions(profile, 2)
    context = int(ffi.cast("uintptr_t", ours._srtp[0]))
    for i in range(50):
        packet = build_rtp(96, 1000 + i, 3000 * i, 1234, bytes(range(256)) * 4)
        source = bytearray(packet)
        out = batch.srtp_protect_copy(PROTECT, context, source)
        assert type(out) is bytes and out == theirs.protect(packet)
        assert source == packet  # a copy was protected
    assert batch.srtp_protect_copy(PROTECT, context, bytes(1501)) is None  # too large
    assert batch.srtp_protect_copy(PROTECT, context, bytes(4)) is None  # libsrtp refuses
    with pytest.raises(TypeError):
        batch.srtp_protect_copy(PROTECT, context)
