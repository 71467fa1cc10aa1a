"""Run the SFU inside your own Python program: two in-process aiortc peers meet in a room."""

import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription

from visio_client.media import PatternVideoTrack
from visio_sfu import SFU
from visio_sfu.events import ParticipantJoined, SubscriberOffer


async def main() -> None:
    sfu = SFU()
    room = sfu.get_or_create_room("demo")
    sfu.listeners.append(lambda event: print("lifecycle:", event.name))  # webhooks do this
    alice = await room.join("alice", name="Alice")  # emit=callback receives typed events
    offers: asyncio.Queue[SubscriberOffer] = asyncio.Queue()

    def bobs_events(event: object) -> None:
        if isinstance(event, SubscriberOffer):
            offers.put_nowait(event)  # answer it (below)
        elif isinstance(event, ParticipantJoined):
            print("Bob sees", event.participant.name, "join")

    bob = await room.join("bob", emit=bobs_events)

    sender = RTCPeerConnection()  # Alice's browser, here an aiortc peer
    sender.addTrack(PatternVideoTrack(0))
    await sender.setLocalDescription(await sender.createOffer())
    answer = await alice.publish_offer(sender.localDescription.sdp)
    await sender.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    receiver = RTCPeerConnection()  # Bob's: answers the SFU's subscriber offer
    got_track = asyncio.get_running_loop().create_future()
    receiver.on("track", got_track.set_result)
    offer = await offers.get()
    await receiver.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
    await receiver.setLocalDescription(await receiver.createAnswer())
    bob.subscriber.on_answer(offer.offer_id, receiver.localDescription.sdp)

    frame = await (await got_track).recv()
    print(f"Bob receives Alice's video: {frame.width}x{frame.height}")
    print(sfu.stats()["packets_out"], "packets forwarded")
    await sender.close(), await receiver.close(), await sfu.close()


if __name__ == "__main__":
    asyncio.run(main())
