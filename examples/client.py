"""An aiortc participant: publishes a test pattern and a tone, reports what it receives.

    visio-sfu token --room demo --identity alice    # prints a token
    python examples/client.py --token <TOKEN> --index 0
    python examples/client.py --token <TOKEN-OF-BOB> --index 1 --record bob-sees.mp4

Each publisher's video has its own colour and its audio its own tone, so each line printed
says whose media arrived ("video from alice: 45 frames 320x240, colour of publisher 0").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiortc.contrib.media import MediaRecorder

from visio_client import Client, RemoteTrack
from visio_client.media import PatternVideoTrack, ToneAudioTrack, colour_index


async def consume(remote: RemoteTrack, names: dict, recorder: MediaRecorder | None) -> None:
    """Count decoded frames of one remote track and print a line every 2 seconds."""
    frames, shown = 0, 0.0
    loop = asyncio.get_running_loop()
    while True:
        frame = await remote.track.recv()
        frames += 1
        if loop.time() - shown >= 2:
            shown = loop.time()
            who = names.get(remote.participant_sid, remote.participant_sid)
            if remote.kind == "video":
                print(
                    f"video from {who}: {frames} frames {frame.width}x{frame.height}, "
                    f"colour of publisher {colour_index(frame)}",
                    flush=True,
                )
            else:
                print(f"audio from {who}: {frames} frames", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7880")
    parser.add_argument("--token", required=True, help="access token (visio-sfu token ...)")
    parser.add_argument("--index", type=int, default=0, help="colour and tone to publish")
    parser.add_argument("--record", help="also record the first remote video to this file")
    parser.add_argument("--seconds", type=float, default=0, help="leave after this long")
    args = parser.parse_args()

    client = Client(args.url, args.token)
    joined = await client.connect()
    print(f"joined room {joined['room']['name']} as {joined['participant']['identity']}")
    names = {p["sid"]: p["identity"] for p in joined["participants"]}
    recorder = MediaRecorder(args.record) if args.record else None
    tasks = []

    def on_track(remote: RemoteTrack) -> None:
        for event in client.events:
            if event.get("type") == "participant_joined":
                p = event["participant"]
                names[p["sid"]] = p["identity"]
        if recorder is not None and remote.kind == "video" and not tasks:
            recorder.addTrack(remote.track)
            tasks.append(asyncio.ensure_future(recorder.start()))
        else:
            tasks.append(asyncio.ensure_future(consume(remote, names, recorder)))

    client.on_track = on_track
    await client.publish(PatternVideoTrack(args.index), ToneAudioTrack(args.index))
    print("publishing; Ctrl-C to leave", flush=True)
    try:
        if args.seconds:
            await asyncio.sleep(args.seconds)
        else:
            await asyncio.Event().wait()
    finally:
        if recorder is not None:
            await recorder.stop()
        for t in tasks:
            t.cancel()
        await client.leave()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
