"""sip.transport's UDP listener: several datagrams per wake-up (bounded), sends straight to the socket, errors
counted and never fatal to the listener."""

from __future__ import annotations

import asyncio
import socket

from sip import transport as transport_mod
from sip.events import Address
from sip.transport import TransportSet

HOST = "127.0.0.1"


async def test_a_burst_is_read_in_bounded_batches_and_every_datagram_arrives() -> None:
    got: list[tuple[bytes, Address]] = []
    ts = TransportSet(lambda data, source: got.append((data, source)))
    host, port = await ts.listen("udp", HOST, 0)
    listener = ts._udp[0]
    loop = asyncio.get_running_loop()
    loop.remove_reader(listener.sock.fileno())  # drive the reads by hand to see the batches
    n = transport_mod._UDP_READS_PER_WAKEUP + 8
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for i in range(n):
            peer.sendto(b"OPTIONS %d" % i, (host, port))
        await asyncio.sleep(0.05)
        listener.drain()
        assert len(got) == transport_mod._UDP_READS_PER_WAKEUP  # bounded: a flood cannot hold the loop
        listener.drain()
        assert [d for d, _ in got] == [b"OPTIONS %d" % i for i in range(n)]  # all of them, in order
        assert {s for _, s in got} == {Address("udp", HOST, peer.getsockname()[1])}
        assert got[0][1] is got[-1][1]  # one Address per peer
    loop.add_reader(listener.sock.fileno(), listener.drain)
    await ts.close()


async def test_sends_reach_the_peer_and_send_errors_are_counted_not_fatal() -> None:
    got: list[bytes] = []
    ts = TransportSet(lambda data, source: got.append(data))
    host, port = await ts.listen("udp", HOST, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind((HOST, 0))
        peer.settimeout(2)
        ts.send(b"hello", Address("udp", HOST, peer.getsockname()[1]))
        assert peer.recvfrom(100)[0] == b"hello"
        ts.send(b"x", Address("udp", HOST, 70000))  # not a port
        ts._udp[0].sendto(b"x", (HOST, 70000))  # the listener's own guard: OverflowError counted, not raised
        assert ts.stats.send_errors == 2
        peer.sendto(b"still listening", (host, port))  # the listener lives on
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [b"still listening"]
    await ts.close()
