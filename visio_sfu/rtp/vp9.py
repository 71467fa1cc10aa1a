"""VP9 RTP payload descriptor on bytes (RFC 9628): which spatial and temporal layer a packet
carries, where frames start and end, and keyframes. No decoding.

The first byte is ``|I|P|L|F|B|E|V|Z|``: I picture id present (7 or 15 bits), P inter-picture
predicted, L layer indices present, F flexible mode, B start of a layer frame, E end of a layer
frame, V scalability structure present, Z not used for inter-layer prediction. With L, the
layer byte ``|TID:3|U|SID:3|D|`` follows the picture id.
"""

from __future__ import annotations

Payload = bytes | bytearray | memoryview

I_BIT = 0x80
P_BIT = 0x40
L_BIT = 0x20
F_BIT = 0x10
B_BIT = 0x08
E_BIT = 0x04
V_BIT = 0x02


def vp9_layers(payload: Payload) -> tuple[int, int, int, bool] | None:
    """(first byte, spatial layer id, temporal layer id, switching-up point) of a VP9 packet;
    (flags, 0, 0, False) when it has no layer indices; None when the descriptor is cut short."""
    n = len(payload)
    if n < 2:
        return None
    flags = payload[0]
    i = 1
    if flags & I_BIT:
        i += 2 if payload[1] & 0x80 else 1
    if not flags & L_BIT:
        return (flags, 0, 0, False) if i < n else None
    if i >= n:
        return None
    layer = payload[i]
    return flags, (layer >> 1) & 0x07, layer >> 5, bool(layer & 0x10)


def vp9_is_keyframe(payload: Payload) -> bool:
    """True for the first packet of a VP9 keyframe: the start (B) of a spatial layer 0 frame
    that is not inter-picture predicted (P = 0)."""
    d = vp9_layers(payload)
    return d is not None and d[1] == 0 and d[0] & (P_BIT | B_BIT) == B_BIT
