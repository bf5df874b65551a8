"""A seeded UDP impairment relay: delay, jitter (which reorders) and loss between two SIP peers, both ways.

`tc netem` is not available on these machines (no netem qdisc in the kernel), so the suite puts this relay between the
caller and the engine. It uses distinct loopback addresses so that every SIP message — requests, responses and
in-dialog requests to Contact — crosses it without rewriting a byte:

    caller  bound on  CALLER_REAL:q   advertises  RELAY_FOR_CALLER:q   (its Via / Contact / public_address)
    engine  bound on  ENGINE_REAL:p   advertises  RELAY_FOR_ENGINE:p   ([sip] public_address)
    relay   listens   RELAY_FOR_ENGINE:p  -> forwards from RELAY_FOR_CALLER:q to ENGINE_REAL:p
            listens   RELAY_FOR_CALLER:q  -> forwards from RELAY_FOR_ENGINE:p to CALLER_REAL:q

Each datagram is held `delay ± jitter` seconds (uniform, from a seeded random.Random) and dropped with probability
`loss`; a datagram overtaken by a later one counts as reordered. RTP is not relayed (media is not under test).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

ENGINE_REAL = "127.0.0.1"
RELAY_FOR_ENGINE = "127.0.0.2"
CALLER_REAL = "127.0.0.3"
RELAY_FOR_CALLER = "127.0.0.4"


@dataclass
class RelayStats:
    forwarded: int = 0
    dropped: int = 0
    reordered: int = 0
    delays: list[float] = field(default_factory=list)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, relay: Relay, name: str) -> None:
        self.relay = relay
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._arrived(self.name, data)

    def error_received(self, exc: Exception) -> None:
        pass


class Relay:
    def __init__(self, engine_port: int, caller_port: int, *, delay: float = 0.2, jitter: float = 0.05,
                 loss: float = 0.0, seed: int = 1) -> None:
        self.engine_port = engine_port
        self.caller_port = caller_port
        self.delay = delay
        self.jitter = jitter
        self.loss = loss
        self.random = random.Random(seed)
        self.stats = RelayStats()
        self._sides: dict[str, _Side] = {}
        self._last_due: dict[str, float] = {"to_engine": 0.0, "to_caller": 0.0}

    async def start(self) -> Relay:
        loop = asyncio.get_running_loop()
        for name, host, port in (("engine_face", RELAY_FOR_ENGINE, self.engine_port),
                                 ("caller_face", RELAY_FOR_CALLER, self.caller_port)):
            _, side = await loop.create_datagram_endpoint(lambda n=name: _Side(self, n), local_addr=(host, port))
            self._sides[name] = side
        return self

    def close(self) -> None:
        for side in self._sides.values():
            if side.transport is not None:
                side.transport.close()

    def _arrived(self, face: str, data: bytes) -> None:
        if face == "engine_face":  # from the caller, to the engine: leaves through the caller face
            out, dest, direction = self._sides["caller_face"], (ENGINE_REAL, self.engine_port), "to_engine"
        else:
            out, dest, direction = self._sides["engine_face"], (CALLER_REAL, self.caller_port), "to_caller"
        if self.loss and self.random.random() < self.loss:
            self.stats.dropped += 1
            return
        hold = max(0.0, self.delay + self.random.uniform(-self.jitter, self.jitter))
        loop = asyncio.get_running_loop()
        due = loop.time() + hold
        if due < self._last_due[direction]:
            self.stats.reordered += 1
        self._last_due[direction] = max(due, self._last_due[direction])
        self.stats.delays.append(hold)
        loop.call_at(due, self._send, out, data, dest)

    def _send(self, side: _Side, data: bytes, dest: tuple[str, int]) -> None:
        if side.transport is not None and not side.transport.is_closing():
            side.transport.sendto(data, dest)
            self.stats.forwarded += 1
