"""Batched sends: one ``sendmmsg`` system call for a fan-out, against one ``sendto`` per packet.

Issue 20 asks whether a publisher's packet, forwarded to N subscribers, costs less sent as one
``sendmmsg`` than as N ``sendto`` calls. This measures the send alone, on the media port's
kind of socket (one non-blocking UDP socket), to N receiving sockets on 127.0.0.1:

- ``sendto``: Python's ``socket.sendto`` per packet (the server with ``batch_sends = false``);
- ``sendmmsg`` through ctypes: the packets copied into one preallocated buffer, their
  ``iovec``/``mmsghdr`` entries filled, one call (the cheapest ctypes form found; building a
  ``c_char_p`` per packet instead costs a further 1.3 us);
- ``sendmmsg`` through ``visio_sfu._batch`` (C, built at install time): what the server's
  media port does (visio_sfu/udpmux.py).

CPU per packet (``time.process_time``; the receivers are emptied every 20 rounds, in both
modes alike), median of 5 alternating runs. On loopback the kernel delivers each datagram to
its receiver inside the send, so the system call's own cost is a small share; a real network
interface leaves more to save. Linux only.

    python -m benchmarks.sendmmsg [--fanout 10] [--size 1100] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import socket
import statistics
import sys
import time

SLOT = 1500  # bytes of the buffer per packet


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


class SockAddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint16),
        ("sin_addr", ctypes.c_uint32),
        ("sin_zero", ctypes.c_char * 8),
    ]


class Batcher:
    """sendmmsg on one socket through ctypes: ``send(items)`` sends [(bytes, (ip, port))]."""

    def __init__(self, sock: socket.socket, capacity: int = 64) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._sendmmsg = libc.sendmmsg
        self._sendmmsg.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(MMsgHdr),
            ctypes.c_uint,
            ctypes.c_int,
        ]
        self._fd = sock.fileno()
        self._msgs = (MMsgHdr * capacity)()
        self._iovs = (IoVec * capacity)()
        self._buffer = bytearray(capacity * SLOT)
        base = ctypes.addressof((ctypes.c_char * len(self._buffer)).from_buffer(self._buffer))
        for i in range(capacity):
            self._iovs[i].iov_base = base + i * SLOT
            header = self._msgs[i].msg_hdr
            header.msg_iov = ctypes.pointer(self._iovs[i])
            header.msg_iovlen = 1
            header.msg_namelen = ctypes.sizeof(SockAddrIn)
        self._names: dict[tuple, tuple[SockAddrIn, int]] = {}

    def _name(self, addr: tuple) -> int:
        entry = self._names.get(addr)
        if entry is None:
            packed = int.from_bytes(socket.inet_aton(addr[0]), "little")
            name = SockAddrIn(socket.AF_INET, socket.htons(addr[1]), packed)
            entry = self._names[addr] = (name, ctypes.addressof(name))
        return entry[1]

    def send(self, items: list[tuple[bytes, tuple]]) -> int:
        buffer, iovs, msgs = self._buffer, self._iovs, self._msgs
        for n, (data, addr) in enumerate(items):
            size = len(data)
            buffer[n * SLOT : n * SLOT + size] = data
            iovs[n].iov_len = size
            msgs[n].msg_hdr.msg_name = self._name(addr)
        return self._sendmmsg(self._fd, msgs, len(items), 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fanout", type=int, default=10, help="subscribers a packet goes to")
    parser.add_argument("--size", type=int, default=1100, help="bytes per packet")
    parser.add_argument("--rounds", type=int, default=2000, help="fan-outs per run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        print("sendmmsg: Linux only")
        return 0
    receivers = []
    for _ in range(args.fanout):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        r.setblocking(False)
        receivers.append(r)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setblocking(False)
    items = [(os.urandom(args.size), r.getsockname()) for r in receivers]
    batcher = Batcher(sender, max(64, args.fanout))

    def drain() -> None:
        for r in receivers:
            try:
                while True:
                    r.recv(2048)
            except BlockingIOError:
                pass

    def per_packet(mode: str) -> float:
        start = time.process_time()
        for k in range(args.rounds):
            if mode == "sendto":
                for data, addr in items:
                    sender.sendto(data, addr)
            elif mode == "_batch":
                if send_batch(sender.fileno(), items) != len(items):
                    raise OSError("sendmmsg sent fewer")
            elif batcher.send(items) != len(items):
                raise OSError(ctypes.get_errno(), "sendmmsg sent fewer")
            if k % 20 == 0:
                drain()
        return (time.process_time() - start) / args.rounds / len(items) * 1e6

    from visio_sfu.udpmux import send_batch

    figures: dict[str, list[float]] = {"sendto": [], "sendmmsg": []}
    if send_batch is not None:
        figures["_batch"] = []
    for _ in range(args.runs):
        for mode in figures:
            figures[mode].append(per_packet(mode))
    drain()
    a, b = statistics.median(figures["sendto"]), statistics.median(figures["sendmmsg"])
    print(f"fan-out {args.fanout}, {args.size} bytes, {args.rounds} rounds x {args.runs} runs")
    print(f"  sendto per packet:           {a:6.2f} us")
    print(f"  sendmmsg (ctypes) per packet: {b:6.2f} us  ({b / a:.2f}x sendto)")
    if "_batch" in figures:
        c = statistics.median(figures["_batch"])
        print(f"  sendmmsg (visio_sfu._batch):  {c:6.2f} us  ({c / a:.2f}x sendto)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
