"""The only place in sip/ with sockets: UDP listeners (read with the loop's add_reader) and asyncio TCP
listeners/connections.

Moves bytes, nothing else: datagrams and framed stream messages go up to one callback as
`(bytes, Address)`, and `send(bytes, Address)` puts bytes on the wire (opening a TCP connection when none is open
to that peer). Framing errors close the TCP connection and are counted; nothing raises out of here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from .events import Address
from .message import SipParseError, StreamFramer

log = structlog.get_logger("sip.transport")

MessageHandler = Callable[[bytes, Address], None]
_MAX_SOURCES = 4096
# Datagrams read per wake-up of a UDP listener. asyncio's datagram transport reads one per event-loop iteration: a
# flood then waits in the kernel (and overflows it) while the loop looks idle, which hides overload from the
# engine's loop-lag guard and costs a loop iteration per message. Bounded, so a flood cannot starve the rest.
_UDP_READS_PER_WAKEUP = 32
_UDP_MAX_DATAGRAM = 65535


@dataclass(slots=True)
class TransportStats:
    received: int = 0
    sent: int = 0
    send_errors: int = 0
    framing_errors: int = 0
    tcp_connections: int = 0
    keepalives: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class _UdpListener:
    """One UDP socket read with the loop's add_reader, several datagrams per wake-up, and written with sendto.

    Not asyncio's datagram transport: it reads one datagram per event-loop iteration, so a flood waits in the
    kernel (and overflows it) while the loop looks idle: overload the engine's loop-lag guard could not see, and a
    loop iteration per message. Sends go straight to the socket: a datagram the kernel cannot take now (EAGAIN) is
    dropped and counted (SIP retransmits), where the transport would queue it."""

    def __init__(self, owner: TransportSet, sock: socket.socket) -> None:
        self.owner = owner
        self.sock = sock
        self.bound: tuple[str, int] = sock.getsockname()[:2]
        # One Address per peer (they are immutable), not one per datagram; cleared when a flood of sources fills it.
        self._sources: dict[object, Address] = {}

    def sendto(self, wire: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(wire, addr)
        except (OSError, OverflowError, UnicodeError):  # full buffer, unreachable, a name that does not resolve
            self.owner.stats.send_errors += 1

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        owner = self.owner
        owner.stats.received += 1
        if len(data) <= 4 and not data.strip():
            owner.stats.keepalives += 1  # CRLF keep-alive (RFC 5626)
            return
        source = self._sources.get(addr)
        if source is None:
            if len(self._sources) >= _MAX_SOURCES:
                self._sources.clear()
            source = self._sources[addr] = Address("udp", addr[0], addr[1])
        owner.deliver(data, source)

    def drain(self) -> None:
        """The socket is readable: up to _UDP_READS_PER_WAKEUP datagrams now."""
        recvfrom = self.sock.recvfrom
        for _ in range(_UDP_READS_PER_WAKEUP):
            try:
                data, addr = recvfrom(_UDP_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket (port unreachable ...): retransmissions handle it
                self.owner.stats.send_errors += 1
                continue
            self.datagram_received(data, addr)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: TransportSet, peer: Address | None = None) -> None:
        self.owner = owner
        self.peer = peer
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.peer is None:
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Address("tcp", host, port)
        self.owner._tcp[self.peer] = self
        self.owner.stats.tcp_connections += 1

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            self.owner.stats.framing_errors += 1
            log.warning("tcp_framing_error", peer=str(self.peer), reason=exc.reason)
            if self.transport is not None:
                self.transport.close()
            return
        for message in messages:
            self.owner.stats.received += 1
            self.owner.deliver(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner._tcp.get(self.peer) is self:
            del self.owner._tcp[self.peer]
        if not self.closed.done():
            self.closed.set_result(None)


class TransportSet:
    """All listening sockets of one user agent, and the TCP connections it has open."""

    def __init__(self, on_message: MessageHandler) -> None:
        self._on_message = on_message
        self._udp: list[_UdpListener] = []
        self._servers: list[tuple[asyncio.Server, tuple[str, int]]] = []
        self._tcp: dict[Address, _TcpConnection] = {}
        self._connecting: dict[Address, asyncio.Task[None]] = {}
        self._pending: dict[Address, list[bytes]] = {}
        self.stats = TransportStats()

    def deliver(self, data: bytes, source: Address) -> None:
        try:
            self._on_message(data, source)
        except Exception:  # one bad message never takes the listener down
            self.stats.extra["handler_errors"] = self.stats.extra.get("handler_errors", 0) + 1
            log.exception("sip_handler_error", source=str(source))

    async def listen(self, transport: str, host: str, port: int) -> tuple[str, int]:
        """Open a listener; returns the bound (host, port) (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        if transport == "udp":
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.bind(address)
                listener = _UdpListener(self, sock)
                loop.add_reader(sock.fileno(), listener.drain)
            except BaseException:
                sock.close()
                raise
            self._udp.append(listener)
            return listener.bound
        if transport == "tcp":
            server = await loop.create_server(lambda: _TcpConnection(self), host, port, reuse_address=True)
            sock = server.sockets[0].getsockname()
            bound = (sock[0], sock[1])
            self._servers.append((server, bound))
            return bound
        raise ValueError(f"unsupported transport {transport!r}")

    def local(self, transport: str) -> tuple[str, int] | None:
        """The bound address of the first listener of a transport (for Via and Contact)."""
        if transport == "udp" and self._udp:
            return self._udp[0].bound
        if transport == "tcp" and self._servers:
            return self._servers[0][1]
        return None

    def send(self, wire: bytes, dest: Address) -> None:
        if not 0 < dest.port < 65536:
            # A peer's Via or Contact may name any number: refused here, logged (sendto would raise OverflowError).
            self.stats.send_errors += 1
            log.info("sip_send_bad_port", dest=str(dest))
            return
        if dest.transport == "udp":
            if not self._udp:
                self.stats.send_errors += 1
                return
            self._udp[0].sendto(wire, (dest.host, dest.port))
            self.stats.sent += 1
            return
        conn = self._tcp.get(dest)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(wire)
            self.stats.sent += 1
            return
        self._pending.setdefault(dest, []).append(wire)
        if dest not in self._connecting:
            self._connecting[dest] = asyncio.get_running_loop().create_task(self._connect(dest))

    async def _connect(self, dest: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _TcpConnection(self, dest), dest.host, dest.port), timeout=10
            )
            assert conn.transport is not None
            for wire in self._pending.pop(dest, []):
                conn.transport.write(wire)
                self.stats.sent += 1
        except (TimeoutError, OSError) as exc:
            dropped = len(self._pending.pop(dest, []))
            self.stats.send_errors += dropped
            log.warning("tcp_connect_failed", peer=str(dest), error=str(exc), dropped=dropped)
        finally:
            self._connecting.pop(dest, None)

    async def close(self) -> None:
        for task in list(self._connecting.values()):
            task.cancel()
        loop = asyncio.get_running_loop()
        for listener in self._udp:
            loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        for server, _ in self._servers:
            server.close()
        for conn in list(self._tcp.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server, _ in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1)
        self._udp.clear()
        self._servers.clear()
