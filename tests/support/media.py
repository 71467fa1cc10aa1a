"""Helpers for end-to-end tests with aiortc peers: waiting, and checking what was decoded."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from tests.support.server import ServerProcess
from visio_client import Client
from visio_client.media import (
    PatternVideoTrack,
    ToneAudioTrack,
    audio_samples,
    colour_index,
    tone_index,
)


async def until(predicate, timeout: float = 20.0, interval: float = 0.2, what: str = ""):
    """Poll ``predicate`` until true or fail with ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}")


async def check_video(remote, expected: int, frames: int = 5) -> None:
    """Decode frames of a remote video; every one must carry the publisher's colour."""
    seen = []
    for _ in range(frames):
        frame = await asyncio.wait_for(remote.track.recv(), 10)
        seen.append(colour_index(frame))
    assert seen[-3:] == [expected] * 3, f"expected colour {expected}, decoded {seen}"


async def check_audio(remote, expected: int) -> None:
    """Decode half a second of remote audio; its tone must be the publisher's."""
    chunks = []
    for _ in range(40):  # skip the first frames (decoder warm-up), keep the rest
        frame = await asyncio.wait_for(remote.track.recv(), 10)
        chunks.append(audio_samples(frame))
    signal = np.concatenate(chunks[15:])
    assert tone_index(signal, rate=48000) == expected, "wrong or no tone in the audio"


async def join(server: ServerProcess, room: str, index: int) -> Client:
    client = Client(server.url, server.token(room, f"user{index}", f"User {index}"))
    await client.connect()
    await client.publish(PatternVideoTrack(index), ToneAudioTrack(index))
    return client
