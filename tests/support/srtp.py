"""SRTP sessions for the send path's tests: several of one key (one to protect through the
code under test, its twins to say what the same packets must become)."""

from __future__ import annotations

import os

from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

#: libsrtp's srtp_protect, as visio_sfu._batch takes it (an address)
PROTECT = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))


def sessions_of_one_key(profile: int, n: int) -> list[Session]:
    """``n`` outbound sessions with one random key: each protects a packet into the same bytes."""
    key = os.urandom(30 if profile == Policy.SRTP_PROFILE_AES128_CM_SHA1_80 else 28)
    return [
        Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        for _ in range(n)
    ]


def context_of(session: Session) -> int:
    """The libsrtp context of a session, as visio_sfu._batch takes it (an address)."""
    return int(ffi.cast("uintptr_t", session._srtp[0]))
