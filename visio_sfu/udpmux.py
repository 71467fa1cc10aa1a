"""UdpMux: one UDP port for every peer connection of the process.

Without it each PeerTransport gathers its ICE candidates on sockets of its own, on ephemeral
ports: a firewall must open the whole range. With a mux (``transport.set_udp_mux``), every
PeerTransport's host candidate is the mux's one port (on each address it advertises: the
host's, or a public address behind a 1:1 NAT), and the datagrams that arrive are handed to the
right connection:

- a STUN request carries ``USERNAME: <our ufrag>:<theirs>``: the connection of that ufrag,
  if its MESSAGE-INTEGRITY verifies with that connection's password; the sender's address is
  that connection's from then on (a forged request takes nobody's media, an address moves
  only to a connection whose password the sender knows: an ICE restart, a NAT rebinding);
- a STUN response goes to the connection that sent the request (by transaction id);
- anything else (DTLS, SRTP) goes to the connection that holds the sender's address; an
  address nobody holds becomes the connection's that sends to it (its checks' first answers);
  sending never takes an address from another connection.

aioice runs each connection's ICE as before (full ICE, checks both ways) on a StunProtocol whose
transport is the mux's socket; only gathering changes (``candidates``). Datagrams from an
address nobody holds are dropped and counted.

ICE over TCP (``tcp=True``, RFC 6544 passive, RFC 4571 framing), for networks that let no UDP
through: the same port number in TCP; each connection's candidates then include a passive TCP
one. A client's TCP connection is one more address of the connection its first STUN request
names (verified as above; a TCP connection that does not send one within TCP_FIRST_FRAME
seconds is closed); what aioice sends to that address goes down that TCP stream, framed.

IPv6 (``host6``): a second socket on the same port number; its datagrams are routed as the
IPv4 socket's are, and what goes to an IPv6 address leaves by it (one sendto each).

Batched sends: what the connections send while one datagram is handled (a publisher's packet
forwarded to every subscriber, on the fast receive path) is collected and sent with one
``sendmmsg`` system call after it (``visio_sfu/_batch.c``, built at install time; without it,
or with ``batch=False``, one ``sendto`` per datagram).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from typing import Any

from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import StunProtocol

try:
    from ._batch import Batch, invalidate, send_batch  # type: ignore[import-not-found]
except ImportError:  # not built (no compiler at install time): one sendto per datagram
    Batch = send_batch = None

    def invalidate() -> None:
        """No compiled Routes to tell."""


logger = logging.getLogger(__name__)


def invalidate_routes() -> None:
    """Something the compiled Routes check changed (``_batch.invalidate``): a connection's
    protocol got another transport (a test's impairment wraps it), say. Each Route checks its
    pair, session, transport and address again before its next packet, instead of per packet."""
    invalidate()


class Watched(dict[Any, Any]):
    """A dict whose every change calls ``invalidate_routes``: the media port's owner table and
    an ICE connection's nominated pairs, which the Routes check only after a change."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        invalidate()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        invalidate()

    def __ior__(self, other: Any) -> Watched:  # type: ignore[misc]
        super().__ior__(other)
        invalidate()
        return self

    def pop(self, *args: Any) -> Any:
        try:
            return super().pop(*args)
        finally:
            invalidate()

    def popitem(self) -> tuple[Any, Any]:
        try:
            return super().popitem()
        finally:
            invalidate()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        try:
            return super().setdefault(key, default)
        finally:
            invalidate()

    def update(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().update(*args, **kwargs)
        finally:
            invalidate()

    def clear(self) -> None:
        super().clear()
        invalidate()


#: addresses one connection may hold at once (its candidates, a TURN relay, a NAT rebinding)
MAX_ADDRESSES = 16
#: STUN transactions remembered (their responses find the connection that asked)
MAX_TRANSACTIONS = 4096
#: ICE-TCP: connections at once, seconds for a new one to send its first (STUN) frame, seconds
#: of silence after which one is closed (consent checks come every 5 s), bytes queued for one
#: before what it is sent is dropped (a datagram's fate, over a slow TCP path)
MAX_TCP = 1024
TCP_FIRST_FRAME = 10.0
TCP_IDLE = 60.0
TCP_QUEUE = 1 << 20
MAX_TCP_UNPROVEN = 8  # per IP address: TCP connections that have not sent their request yet
#: bytes the UDP socket's transport may queue (the kernel's buffer full) before datagrams drop
SEND_QUEUE = 1 << 20
#: characters of the ICE username fragment a connection on the mux gets (aioice's 4 would
#: collide between connections, and are guessable)
UFRAG_LENGTH = 8
_UFRAG_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
#: the mux socket's buffers: every peer's media goes through it
BUFFER = 8 * 1024 * 1024


def stun_username(data: bytes) -> bytes | None:
    """The USERNAME attribute of a STUN message, without parsing the rest (None: none)."""
    if len(data) < 20 or data[0] > 1:
        return None
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    pos = 20
    while pos + 4 <= end:
        kind = int.from_bytes(data[pos : pos + 2], "big")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if kind == 0x0006:
            return data[pos + 4 : pos + 4 + length]
        pos += 4 + length + (-length % 4)
    return None


class _MuxTransport(asyncio.DatagramTransport):
    """What one connection's StunProtocol sends through: the mux's socket."""

    def __init__(self, mux: UdpMux, protocol: StunProtocol) -> None:
        super().__init__()
        self._mux = mux
        self._owner = mux._owner
        self._protocol = protocol
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Every packet to a subscriber comes here (the hot path: a lookup and a send)."""
        mux = self._mux
        if mux._tcp_closed and addr in mux._tcp_closed:  # its stream is gone: nowhere
            mux.send_errors += 1
            return
        if self._owner.get(addr) is None:  # nobody's: ours (never taken from another)
            mux._claim(addr, self._protocol)
        if data[0] < 2 and len(data) >= 20 and not data[0] & 1 and not data[1] & 0x10:
            mux._asked(bytes(data[8:20]), self._protocol)  # a STUN request: its answer is ours
        tcp = mux._tcp
        if tcp and addr in tcp:  # an ICE-TCP client: down its stream, framed
            mux._send_tcp(tcp[addr], data)
            return
        if mux.transport6 is not None and ":" in addr[0]:  # IPv6: its own socket, one by one
            mux._send_each(((data, addr),))
            return
        batch = mux.batch
        if batch is not None and batch.open:  # a datagram is being handled: sent after it
            if batch.add(data, addr):
                return
            if len(batch):  # full: what it holds goes now, and this one starts it again
                mux._flush()
                if batch.add(data, addr):
                    return
        mux._send_each(((data, addr),))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._mux.sockname
        return default  # no "socket": a connection must not resize the shared one

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._mux._forget(self._protocol)
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class UdpMux(asyncio.DatagramProtocol):
    """One UDP socket shared by every PeerTransport (see the module's doc)."""

    def __init__(
        self,
        port: int,
        host: str = "0.0.0.0",
        advertise: list[str] | None = None,
        batch: bool = True,
        tcp: bool = False,
        host6: str | None = None,
    ) -> None:
        """``port``: the port to listen on (0: any free one); ``advertise``: the addresses
        written in the candidates (a public address behind NAT); None: the host addresses
        aioice finds (``transport.set_ice_addresses`` chooses them). ``batch``: send what one
        datagram causes with one sendmmsg (if ``visio_sfu._batch`` was built). ``tcp``: ICE
        over TCP on the same port number too. ``host6``: an IPv6 address to listen on too, on
        the same port number ("::": every one); if the host has no IPv6, IPv4 only (logged)."""
        self.port = port
        self.host = host
        self.advertise = list(advertise) if advertise else None
        self.transport: asyncio.DatagramTransport | None = None
        self.host6 = host6
        self.transport6: asyncio.DatagramTransport | None = None  # the IPv6 socket, if any
        self._queued6: Any = None
        self.sockname: tuple[str, int] = (host, port)
        self._by_ufrag: dict[bytes, StunProtocol] = {}
        self._owner: dict[Any, StunProtocol] = Watched()  # remote address -> its connection
        self._held: dict[int, list[Any]] = {}  # id(protocol) -> the addresses it holds
        self._transactions: dict[bytes, StunProtocol] = {}  # STUN transaction id -> asker
        self.unknown = 0  # datagrams from an address no connection holds
        self.moved = 0  # addresses that changed connection (an ICE restart, a NAT)
        self.refused = 0  # STUN requests whose integrity did not verify
        self.errors = 0  # datagrams a connection failed on (malformed STUN...)
        self.send_errors = 0  # datagrams not sent (no socket, its buffer full)
        #: the datagrams to send after the one being handled (PeerTransport's Route puts its
        #: packets in too, protected in C), or None when not batching
        self.batch: Any = Batch() if batch and Batch is not None else None
        self.batching = self.batch is not None
        self._queued: Any = None  # the transport's get_write_buffer_size
        self._fd = -1
        self.batches = 0  # sendmmsg calls
        self.batched = 0  # datagrams sent by them
        self.tcp = tcp
        self._tcp: dict[Any, asyncio.StreamWriter] = {}  # ICE-TCP clients by address
        self._tcp_closed: dict[Any, StunProtocol] = {}  # their addresses, once closed
        self._tcp_pending: set[Any] = set()  # connections yet to send their first frame
        self._tcp_unproven: dict[str, int] = {}  # per IP: connections yet to send a request
        self._server: asyncio.Server | None = None
        self.tcp_clients = 0  # TCP connections accepted since start

    async def start(self) -> UdpMux:
        """Bind the socket; OSError if the port is taken."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
                except OSError:
                    pass
        self.sockname = transport.get_extra_info("sockname")[:2]
        if self.tcp:
            try:
                self._server = await asyncio.start_server(
                    self._tcp_client, self.host, self.sockname[1], limit=70_000
                )
            except OSError:
                transport.close()
                self.transport = None
                raise
        if self.host6 is not None:
            await self._start6(loop)
        self._fd = sock.fileno() if sock is not None else -1
        self._queued = getattr(transport, "get_write_buffer_size", None)
        if self._fd < 0:
            self.batching, self.batch = False, None
        self.port = self.sockname[1]
        logger.info("media on UDP port %d for every peer", self.port)
        return self

    async def _start6(self, loop: asyncio.AbstractEventLoop) -> None:
        """The IPv6 socket, on the IPv4 one's port number (IPv6 only: the IPv4 socket has the
        rest); without IPv6 on the host, none."""
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as exc:
            logger.warning("media port: no IPv6 (%s): IPv4 only", exc)
            return
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
                except OSError:
                    pass
            sock.bind((self.host6, self.port or self.sockname[1]))
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Ipv6Side(self), sock=sock)
        except OSError as exc:
            sock.close()
            logger.warning("media port: IPv6 %s not bound (%s): IPv4 only", self.host6, exc)
            return
        self.transport6 = transport
        self._queued6 = getattr(transport, "get_write_buffer_size", None)

    def close(self) -> None:
        """Close the socket (the connections still using it stop receiving)."""
        if self.transport6 is not None:
            self.transport6.close()
            self.transport6 = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._tcp.values()):
            writer.close()
        self._tcp.clear()

    @property
    def connections(self) -> int:
        """Connections that gathered on this mux and are still open."""
        return len(self._by_ufrag)

    # -- gathering ---------------------------------------------------------------------------
    def reserve(self, connection: Any) -> None:
        """Before its description is made: give an aioice Connection a username fragment no
        connection on this mux has, long enough not to be guessed."""
        ufrag = connection.local_username
        while len(ufrag) < UFRAG_LENGTH or ufrag.encode() in self._by_ufrag:
            ufrag = "".join(secrets.choice(_UFRAG_CHARS) for _ in range(UFRAG_LENGTH))
        connection._local_username = ufrag  # (aioice's property has no setter)

    def renew(self, connection: Any) -> None:
        """An ICE restart: a new username fragment for a connection on this mux, which routes
        requests naming it to the connection from now on (the old one to nobody)."""
        old = connection.local_username.encode()
        protocol = self._by_ufrag.get(old)
        connection._local_username = ""
        self.reserve(connection)
        if protocol is not None and protocol.receiver is connection:
            del self._by_ufrag[old]
            self._by_ufrag[connection.local_username.encode()] = protocol

    def candidates(self, connection: Any, component: int, addresses: list[str]) -> list[Candidate]:
        """Host candidates of an aioice Connection on this mux (instead of sockets of its
        own): one StunProtocol for it, on the shared socket, and a candidate per address."""
        protocol = StunProtocol(connection)
        protocol.connection_made(_MuxTransport(self, protocol))
        self._by_ufrag[connection.local_username.encode()] = protocol
        self._held[id(protocol)] = []
        hosts = self.advertise or [a for a in addresses if ":" not in a]
        if self.transport6 is not None and not self.advertise:
            hosts += [a for a in addresses if ":" in a and not a.lower().startswith("fe80")]
        hosts = hosts or ["127.0.0.1"]
        kinds: list[tuple[str, str | None, int]] = [("udp", None, 65535)]
        if self._server is not None:  # and passive TCP ones, below UDP in priority
            kinds.append(("tcp", "passive", 32767))
        out = [
            Candidate(
                foundation=candidate_foundation("host", transport, host),
                component=component,
                transport=transport,
                priority=candidate_priority(component, "host", local_pref=local_pref),
                host=host,
                port=self.port,
                type="host",
                tcptype=tcptype,
            )
            for transport, tcptype, local_pref in kinds
            for host in hosts
        ]
        protocol.local_candidate = out[0]  # what aioice pairs with; every one reaches it
        connection._protocols.append(protocol)
        return out

    # -- addresses ---------------------------------------------------------------------------
    def _claim(self, addr: Any, protocol: StunProtocol) -> None:
        held = self._held.get(id(protocol))
        if held is None:
            return  # closed
        previous = self._owner.get(addr)
        if previous is not None and previous is not protocol:
            self.moved += 1
            old = self._held.get(id(previous))
            if old is not None and addr in old:
                old.remove(addr)
        if addr not in held:
            held.append(addr)
            if len(held) > MAX_ADDRESSES:
                self._owner.pop(held.pop(0), None)
        self._owner[addr] = protocol

    def _asked(self, transaction: bytes, protocol: StunProtocol) -> None:
        table = self._transactions
        table[transaction] = protocol
        if len(table) > MAX_TRANSACTIONS:
            del table[next(iter(table))]

    def _forget(self, protocol: StunProtocol) -> None:
        for addr in self._held.pop(id(protocol), []):
            if self._owner.get(addr) is protocol:
                del self._owner[addr]
        for ufrag, p in list(self._by_ufrag.items()):
            if p is protocol:
                del self._by_ufrag[ufrag]
        for transaction, p in list(self._transactions.items()):
            if p is protocol:
                del self._transactions[transaction]
        for addr, p in list(self._tcp_closed.items()):
            if p is protocol:
                del self._tcp_closed[addr]

    # -- receiving -----------------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Any) -> None:
        addr = addr[:2]
        protocol = self._owner.get(addr)
        if data and data[0] < 2:  # STUN: a request names its connection
            protocol = self._stun(data, addr, protocol)
        if protocol is None:
            self.unknown += 1
            return
        # batching: what handling it sends is collected, then sent with one sendmmsg
        batch = self.batch if self.batching else None
        if batch is None:
            self._handle(protocol, data, addr)
            return
        batch.begin()
        try:
            self._handle(protocol, data, addr)
        finally:
            waiting = batch.end()
        if waiting:
            self._flush()

    def _handle(self, protocol: StunProtocol, data: bytes, addr: Any) -> None:
        try:
            protocol.datagram_received(data, addr)
        except Exception:  # aioice on a malformed STUN message (struct.error...): dropped
            self.errors += 1
            logger.debug("datagram from %s dropped", addr, exc_info=True)

    def _flush(self) -> None:
        """Send what the batch holds (256 at most): one sendmmsg."""
        batch = self.batch  # (only called while there is one)
        if self.transport is None:
            self.send_errors += len(batch)
            batch.clear()
            return
        queued = self._queued
        if queued is not None and queued():  # datagrams queued: after them, in order
            self._send_each(batch.take(0))
            return
        skipped: list[int] = []
        try:
            sent = batch.send(self._fd, skipped)
        except Exception:  # not a descriptor any more: one by one
            sent = 0
        else:
            self.batches += 1
            self.batched += sent - len(skipped)
            self.send_errors += len(skipped)  # destinations the kernel refused
        if sent < len(batch):  # the socket's buffer full: the rest queued, in order
            self._send_each(batch.take(sent))
        else:
            batch.clear()

    def _send_each(self, items: Any) -> None:
        """sendto each datagram: the transport queues what the kernel will not take yet, up
        to SEND_QUEUE bytes; past that they are dropped (stale media is worse than none)."""
        transport: asyncio.DatagramTransport | None
        for data, addr in items:
            if self.transport6 is not None and ":" in addr[0]:
                transport, queued = self.transport6, self._queued6
            else:
                transport, queued = self.transport, self._queued
            if transport is None or (queued is not None and queued() > SEND_QUEUE):
                self.send_errors += 1
                continue
            try:
                transport.sendto(data, addr)
            except Exception:
                self.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is gone (closed, or an error asyncio would not survive): nothing is
        sent through its old descriptor any more."""
        self.transport = None
        self.batching = False
        self._fd = -1

    def _stun(self, data: bytes, addr: Any, owner: StunProtocol | None) -> StunProtocol | None:
        if len(data) < 20:
            return owner
        if data[0] & 1:  # a response: to the connection that asked
            return self._transactions.pop(data[8:20], None) or owner
        if data[1] & 0x10:  # an indication (keepalive): the address's connection
            return owner
        username = stun_username(data)
        ours = self._by_ufrag.get(username.split(b":", 1)[0]) if username else None
        if ours is None:
            return None  # a request for nobody here
        if ours is not owner:
            # the sender proves it knows the connection's password before the address is its
            key = ours.receiver.local_password.encode()
            try:
                verified = stun.parse_message(data).check_message_integrity(key)
            except Exception:  # malformed: aioice's parser raises ValueError, struct.error...
                verified = False
            if not verified:
                self.refused += 1
                return None
            self._claim(addr, ours)
        return ours

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1

    # -- ICE over TCP --------------------------------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client's TCP connection: its frames are datagrams from its address, once its
        first frame proved it (a STUN request that verifies); until then it holds nothing."""
        peer = writer.get_extra_info("peername")
        addr = tuple(peer[:2]) if peer else None
        ip = addr[0] if addr else ""
        if (
            addr is None
            or len(self._tcp) + len(self._tcp_pending) >= MAX_TCP
            or addr in self._tcp
            or addr in self._tcp_pending
            or addr in self._owner  # a UDP peer's address and port: never the same peer
            or self._tcp_unproven.get(ip, 0) >= MAX_TCP_UNPROVEN
        ):
            writer.close()
            return
        self._tcp_pending.add(addr)
        self._tcp_unproven[ip] = self._tcp_unproven.get(ip, 0) + 1
        owner: StunProtocol | None = None  # the connection it proved it belongs to
        self.tcp_clients += 1
        try:
            async with asyncio.timeout(TCP_FIRST_FRAME):  # the whole first frame
                data = await reader.readexactly(int.from_bytes(await reader.readexactly(2)))
            if len(data) < 20 or data[0] > 1 or data[0] & 1 or data[1] & 0x10:
                return  # not a STUN request: closed
            if addr in self._owner:  # a UDP peer took the address meanwhile
                return
            self._tcp[addr] = writer  # (its answer goes down this stream)
            self.datagram_received(data, addr)
            owner = self._owner.get(addr)
            if owner is None:  # it named no connection, or did not verify
                return
            self._tcp_closed.pop(addr, None)
            while self.transport is not None:
                async with asyncio.timeout(TCP_IDLE):
                    head = await reader.readexactly(2)
                    data = await reader.readexactly(int.from_bytes(head))
                if data:
                    self.datagram_received(data, addr)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self._tcp_pending.discard(addr)
            left = self._tcp_unproven.get(ip, 1) - 1
            if left > 0:
                self._tcp_unproven[ip] = left
            else:
                self._tcp_unproven.pop(ip, None)
            if self._tcp.get(addr) is writer:
                del self._tcp[addr]
            if owner is not None and self._owner.get(addr) is owner:
                del self._owner[addr]
                held = self._held.get(id(owner))
                if held is not None and addr in held:
                    held.remove(addr)
                # aioice may go on sending there until its consent fails: not over UDP to an
                # address nobody proved (on a shared NAT it may be someone else's)
                self._tcp_closed[addr] = owner
                if len(self._tcp_closed) > MAX_TRANSACTIONS:
                    del self._tcp_closed[next(iter(self._tcp_closed))]
            writer.close()

    def _send_tcp(self, writer: asyncio.StreamWriter, data: Any) -> None:
        if writer.transport.get_write_buffer_size() > TCP_QUEUE or writer.is_closing():
            self.send_errors += 1  # the path is slower than the stream: dropped, as UDP would
            return
        writer.write(len(data).to_bytes(2, "big") + bytes(data))


class _Ipv6Side(asyncio.DatagramProtocol):
    """The IPv6 socket's protocol: what arrives goes where the IPv4 socket's would."""

    def __init__(self, mux: UdpMux) -> None:
        self._mux = mux

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._mux.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._mux.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._mux.transport6 = None


_original_candidates = None


def install() -> None:
    """Let aioice connections marked with a mux (``connection._visio_mux``) gather on it;
    others gather as before (process-wide, idempotent)."""
    global _original_candidates
    import aioice.ice

    if _original_candidates is not None:
        return
    _original_candidates = aioice.ice.Connection.get_component_candidates

    async def get_component_candidates(
        self: Any, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        mux = getattr(self, "_visio_mux", None)
        if mux is None or mux.transport is None:
            return await _original_candidates(self, component, addresses, timeout)
        return mux.candidates(self, component, addresses)

    aioice.ice.Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]
