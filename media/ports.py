"""RTP port pairs from the configured range (`sip.rtp_port_min` .. `sip.rtp_port_max`).

`PortAllocator.allocate(host)` binds a UDP socket on an even port (RTP) and its odd neighbour (RTCP, kept bound so
no one else takes it, but never read or written: we do not do RTCP, see media/session.py) and returns them as a
`PortPair`. Ports are handed out round-robin from a random starting point, so a port just released (whose peer may
still be sending) is the last to be reused. Ports that fail to bind (taken by another process) are skipped; when the
whole range is busy `PortsExhausted` says so, with the counts. `PortPair.release()` closes both sockets and returns
the pair to the pool.

This module must not read or send packets; it only owns port numbers and their sockets.
"""

from __future__ import annotations

import random
import socket


class PortsExhausted(RuntimeError):
    """Every RTP port pair of the range is in use (by us or by another process)."""


_RTCP_RCVBUF = 4096  # the reserved RTCP socket is never read; keep the kernel from queueing much for it


class PortPair:
    """A bound RTP socket (even port) and the RTCP socket reserving the odd port above it."""

    def __init__(self, allocator: PortAllocator | None, host: str, rtp_socket: socket.socket,
                 rtcp_socket: socket.socket | None) -> None:
        self.allocator = allocator
        self.host = host
        self.rtp_socket = rtp_socket
        self.rtcp_socket = rtcp_socket
        self.rtp_port: int = rtp_socket.getsockname()[1]
        self.released = False

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1

    def release(self) -> None:
        """Close both sockets (stop reading them first) and give the pair back. Idempotent."""
        if self.released:
            return
        self.released = True
        self.rtp_socket.close()
        if self.rtcp_socket is not None:
            self.rtcp_socket.close()
        if self.allocator is not None:
            self.allocator._free(self.rtp_port)

    def __enter__(self) -> PortPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortPair({self.host}:{self.rtp_port}/{self.rtcp_port})"


class PortAllocator:
    """Hands out even RTP ports in [port_min, port_max] (the odd RTCP port above each must also be in range)."""

    def __init__(self, port_min: int = 20000, port_max: int = 29999, *, reserve_rtcp: bool = True,
                 seed: int | None = None) -> None:
        if not 1024 <= port_min <= port_max <= 65535:
            raise ValueError(f"RTP port range must satisfy 1024 <= min <= max <= 65535, got {port_min}-{port_max}")
        first = port_min + (port_min & 1)  # round up to even
        last = port_max - 1 if reserve_rtcp else port_max  # last even port whose odd partner fits
        self.evens = list(range(first, last + 1, 2))
        if not self.evens:
            raise ValueError(f"RTP port range {port_min}-{port_max} holds no even/odd port pair")
        self.port_min = port_min
        self.port_max = port_max
        self.reserve_rtcp = reserve_rtcp
        self._in_use: set[int] = set()
        self._cursor = random.Random(seed).randrange(len(self.evens))
        self.bind_failures = 0

    @property
    def capacity(self) -> int:
        return len(self.evens)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def allocate(self, host: str = "0.0.0.0") -> PortPair:
        """Bind the next free pair on `host`; raises PortsExhausted when none is left."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        count = len(self.evens)
        failed = 0
        for _ in range(count):
            port = self.evens[self._cursor]
            self._cursor = (self._cursor + 1) % count
            if port in self._in_use:
                continue
            pair = self._bind_pair(family, host, port)
            if pair is None:
                failed += 1
                self.bind_failures += 1
                continue
            self._in_use.add(port)
            return PortPair(self, host, *pair)
        raise PortsExhausted(
            f"no free RTP port pair in {self.port_min}-{self.port_max} on {host}: {len(self._in_use)} of "
            f"{count} pairs in use here, {failed} taken by other processes")

    def _bind_pair(self, family: int, host: str, port: int) -> tuple[socket.socket, socket.socket | None] | None:
        rtp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, port))
        except OSError:
            rtp.close()
            return None
        rtp.setblocking(False)
        if not self.reserve_rtcp:
            return rtp, None
        rtcp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            rtcp.bind((host, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            return None
        try:
            rtcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RTCP_RCVBUF)
        except OSError:  # pragma: no cover - only an optimisation
            pass
        return rtp, rtcp

    def _free(self, port: int) -> None:
        self._in_use.discard(port)
