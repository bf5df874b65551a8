"""A running user agent fed garbage over real UDP and TCP sockets: it answers what can be answered with a 4xx,
drops (and counts) the rest, never lets an exception escape, and still answers the next valid request."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.message import Response, parse_message
from sip.ua import UserAgent

pytestmark = pytest.mark.integration

CORPUS = sorted((Path(__file__).resolve().parents[1] / "data" / "rfc4475").glob("*.dat"))


def options(port: int, local_port: int, tag: str, transport: str = "UDP") -> bytes:
    return (
        f"OPTIONS sip:softswitch@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={tag}\r\n"
        f"To: <sip:softswitch@127.0.0.1:{port}>\r\n"
        f"Call-ID: {tag}@probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.got = asyncio.Event()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies.append(data)
        self.got.set()


async def start_ua() -> UserAgent:
    ua = UserAgent()
    await ua.start([("udp", "127.0.0.1", 0), ("tcp", "127.0.0.1", 0)])
    return ua


async def alive_over_udp(ua: UserAgent, tag: str) -> bool:
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        transport.sendto(options(ua.port("udp"), port, tag), ("127.0.0.1", ua.port("udp")))
        await asyncio.wait_for(probe.got.wait(), 2)
        return any(r.startswith(b"SIP/2.0 200 ") and f"{tag}@probe".encode() in r for r in probe.replies)
    finally:
        transport.close()


def crlf(data: bytes) -> bytes:
    if b"\r\n" in data:
        return data
    return data.replace(b"\n", b"\r\n")


@pytest.mark.skipif(not CORPUS, reason="RFC 4475 corpus not present")
async def test_rfc4475_corpus_over_udp_gets_answers_or_counted_drops() -> None:
    assert len(CORPUS) >= 40
    ua = await start_ua()
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))
    try:
        for path in CORPUS:
            transport.sendto(crlf(path.read_bytes())[:65000], ("127.0.0.1", ua.port("udp")))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)
        for reply in probe.replies:
            assert isinstance(parse_message(reply), Response)  # everything we sent back is well-formed SIP
        statuses = [int(r.split(b" ")[1]) for r in probe.replies]
        # Torture messages addressed to odd hosts get answered too (they come back to us via rport/sent-by).
        assert ua.stats["malformed_answered"] + ua.stats["malformed_dropped"] >= 10
        assert ua.transports.stats.extra.get("handler_errors", 0) == 0
        assert ua.stats["tu_errors"] == 0
        assert all(s >= 100 for s in statuses)
        assert await alive_over_udp(ua, "aftercorpus")
    finally:
        transport.close()
        await ua.stop()


async def test_answerable_garbage_gets_400_with_the_reason_and_the_rest_is_dropped() -> None:
    ua = await start_ua()
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))
    lp = transport.get_extra_info("sockname")[1]
    dest = ("127.0.0.1", ua.port("udp"))
    try:
        good = options(ua.port("udp"), lp, "g1")
        cases = {
            "bad_cl": good.replace(b"Content-Length: 0", b"Content-Length: 50"),
            "dup_callid": good.replace(b"CSeq:", b"Call-ID: other@x\r\nCSeq:"),
            "cseq_mismatch": good.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"),
            "bad_mf": good.replace(b"Max-Forwards: 70", b"Max-Forwards: lots"),
        }
        for name, data in cases.items():
            transport.sendto(data.replace(b"g1@probe", f"{name}@probe".encode()), dest)
        dropped = [b"\x00\x01\x02" * 100, b"hello", b"SIP/2.0 200 OK\r\n\r\n", good.replace(b"Via:", b"Xia:"),
                   good[: len(good) // 2]]
        for data in dropped:
            transport.sendto(data, dest)
        await asyncio.sleep(0.4)
        by_call = {parse_message(r).call_id: r for r in probe.replies}
        for name in cases:
            reply = by_call[f"{name}@probe"]
            assert reply.startswith(b"SIP/2.0 400 Bad Request - "), reply[:80]
        assert ua.stats["malformed_answered"] == len(cases)
        assert ua.stats["malformed_dropped"] == len(dropped)
        assert await alive_over_udp(ua, "afterbad")
    finally:
        transport.close()
        await ua.stop()


async def test_tcp_framing_garbage_closes_that_connection_only() -> None:
    ua = await start_ua()
    port = ua.port("tcp")
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: banana\r\n\r\n")
        await w1.drain()
        assert await asyncio.wait_for(r1.read(), 2) == b""  # closed by the server
        w1.close()
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        lp = w2.get_extra_info("sockname")[1]
        msg = options(port, lp, "tcpok", "TCP")
        # Split the request across writes and precede it with keep-alive CRLFs: framing must cope.
        for chunk in (b"\r\n\r\n", msg[:17], msg[17:100], msg[100:]):
            w2.write(chunk)
            await w2.drain()
            await asyncio.sleep(0.01)
        head = await asyncio.wait_for(r2.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"SIP/2.0 200 OK") and b"tcpok@probe" in head
        assert ua.transports.stats.framing_errors == 1
        w2.close()
    finally:
        await ua.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_requests_never_break_the_listener(data: st.DataObject) -> None:
    """Hypothesis mutates a valid INVITE (flips, cuts, splices); each datagram goes over a real socket."""
    base = (
        b"INVITE sip:100@127.0.0.1:5080 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKmut;rport\r\n"
        b"Max-Forwards: 70\r\nFrom: \"c\" <sip:c@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\n"
        b"Call-ID: mut@probe\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 10\r\n\r\n"
        b"v=0\r\ns=-\r\n"
    )
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(1, 6))):
        op = rng.choice(("flip", "cut", "dup", "insert"))
        pos = rng.randrange(len(mutated)) if mutated else 0
        if op == "flip" and mutated:
            mutated[pos] = rng.randrange(256)
        elif op == "cut":
            del mutated[pos: pos + rng.randrange(1, 40)]
        elif op == "dup":
            mutated[pos:pos] = mutated[pos: pos + rng.randrange(1, 80)]
        else:
            mutated[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
    asyncio.run(_send_and_probe(bytes(mutated)))


async def _send_and_probe(payload: bytes) -> None:
    ua = await start_ua()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(payload, ("127.0.0.1", ua.port("udp")))
        await asyncio.sleep(0.01)
        assert ua.transports.stats.extra.get("handler_errors", 0) == 0
        assert ua.stats["tu_errors"] == 0
        assert await alive_over_udp(ua, "alive")
    finally:
        for leg in ua.legs:
            await leg.hangup()
        await ua.stop()


async def test_a_via_port_out_of_range_does_not_close_the_udp_listener() -> None:
    """Found by tests/reliability (long fuzz run): a response routed to `Via: ...:99999` without rport made asyncio's
    datagram transport raise OverflowError, which it treats as fatal: it closed the socket and the UA went deaf."""
    ua = await start_ua()
    try:
        for port in (99999, 65536, 0):
            evil = options(ua.port("udp"), port, f"evil{port}").replace(b";rport", b"")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(evil, ("127.0.0.1", ua.port("udp")))
            await asyncio.sleep(0.05)
        assert await alive_over_udp(ua, "after-evil")
        assert ua.transports.stats.send_errors == 3
    finally:
        await ua.stop()
