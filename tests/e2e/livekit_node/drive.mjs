// LiveKit's Node server SDK (livekit-server-sdk, unmodified) driving visio-sfu's RoomService
// over Twirp with JSON bodies: node drive.mjs <url> <api key> <api secret> <room>
// Prints one JSON line of what it saw; tests/e2e/test_livekit_api.py checks it.
import { DataPacket_Kind, RoomServiceClient } from 'livekit-server-sdk';

const [url, key, secret, room] = process.argv.slice(2);
const svc = new RoomServiceClient(url, key, secret);
const out = {};
const created = await svc.createRoom({ name: room, metadata: 'm1', maxParticipants: 4 });
out.created = { name: created.name, sid: created.sid, metadata: created.metadata,
                max: created.maxParticipants };
out.listed = (await svc.listRooms()).map((r) => [r.name, r.numParticipants]);
out.participants = (await svc.listParticipants(room)).map((p) => p.identity);
out.meta = (await svc.updateRoomMetadata(room, 'm2')).metadata;
const who = await svc.updateParticipant(room, 'web', { metadata: 'from node',
                                                        attributes: { team: 'blue' } });
out.updated = { metadata: who.metadata, attributes: who.attributes };
await svc.sendData(room, new TextEncoder().encode('{"hello":"node"}'), DataPacket_Kind.RELIABLE,
                   { topic: 'node' });
try {
  await svc.getParticipant(room, 'nobody');
  out.missing = 'no error';
} catch (e) {
  out.missing = { code: e.code, status: e.status, message: e.message };
}
await svc.removeParticipant(room, 'web');
await svc.deleteRoom(room);
out.after = (await svc.listRooms()).map((r) => r.name);
console.log(JSON.stringify(out));
