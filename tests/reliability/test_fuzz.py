"""SIP fuzzing: the parser (property-based, hypothesis) and a running engine's UDP and TCP listeners (seeded mutations).

Figures: cases run, how many were answerable malformed requests and how many of those got their 4xx (must be all),
drops, valid ones; crashes (an exception escaping the parser, the UA or a transport: must be 0); transactions, legs
and calls left after the timers ran out (must be 0: nothing stuck). Quick sizes run in CI; SOFTSWITCH_LONG=1 runs
the long ones (docs/reliability.md); `python -m tests.reliability.fuzz_atheris` is the coverage-guided parser run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any

from engine_env import EngineEnv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.message import SipParseError, StreamFramer, parse_message
from sip.transaction import TimerConfig
from tests.reliability.common import pick
from tests.reliability.fuzzcases import METHODS, error_answer, expected, mutate, request

_parser_cases = {"n": 0, "errors": 0, "answerable": 0}


@settings(max_examples=pick(3000, 200_000), deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(METHODS), seed=st.integers(0, 2**32 - 1), splice=st.binary(max_size=48),
       at=st.integers(0, 4000), stream=st.booleans())
def test_parser_never_raises_anything_but_a_parse_error_and_answerable_errors_are_4xx(
    method: str, seed: int, splice: bytes, at: int, stream: bool, figures: dict[str, Any]
) -> None:
    data, _ = request(method, 5080, 5999)
    data = mutate(data, random.Random(seed))
    if splice:
        i = at % (len(data) + 1)
        data = data[:i] + splice + data[i:]
    _parser_cases["n"] += 1
    try:
        parse_message(data, stream=stream)
    except SipParseError as exc:
        _parser_cases["errors"] += 1
        verdict, status, _ = expected(data, stream)
        if verdict == "4xx":
            _parser_cases["answerable"] += 1
            assert error_answer(status) and status == exc.status
    framer = StreamFramer()
    with contextlib.suppress(SipParseError):
        for frame in framer.feed(data + b"\r\n\r\n"):
            with contextlib.suppress(SipParseError):
                parse_message(frame, stream=True)
    figures.update({"cases": _parser_cases["n"], "parse_errors": _parser_cases["errors"],
                    "answerable_errors": _parser_cases["answerable"], "crashes": 0})


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)


def _reply_for(data: bytes, call_id: str) -> int | None:
    """The status of `data` when it is a response for `call_id` (compared as bytes: fuzzed Call-IDs may hold bytes
    that are not UTF-8, which the parser keeps as surrogate escapes and writes back as they came)."""
    if not data.startswith(b"SIP/2.0 "):
        return None
    want_id, _, want_via = call_id.partition("\n")  # garbage Call-IDs repeat across cases: the Via tells them apart
    want = want_id.encode("utf-8", "surrogateescape")
    via = want_via.encode("utf-8", "surrogateescape")
    head = data.split(b"\r\n\r\n", 1)[0]
    same_id = same_via = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key in (b"call-id", b"i") and value.strip(b" \t") == want:
            same_id = True
        elif key in (b"via", b"v") and not same_via:
            same_via = not via or value.strip(b" \t") == via
    if same_id and same_via:
        status = head.split(b" ", 2)[1]
        return int(status) if status.isdigit() else None
    return None


async def _wait_reply(queue: asyncio.Queue[bytes], call_id: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            data = await asyncio.wait_for(queue.get(), left)
        except TimeoutError:
            return None
        status = _reply_for(data, call_id)
        if status is not None and status >= 300:
            return status


async def _options_ok(port: int) -> bool:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Udp, local_addr=("127.0.0.1", 0))
    try:
        data, call_id = request("OPTIONS", port, transport.get_extra_info("sockname")[1])
        for _ in range(3):
            transport.sendto(data, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                while True:
                    reply = await asyncio.wait_for(proto.replies.get(), 1.0)
                    if reply.startswith(b"SIP/2.0 200") and call_id.encode() in reply:
                        return True
        return False
    finally:
        transport.close()


async def _tcp_case(port: int, seed: int) -> tuple[str, bool]:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # close with a reset: 20,000 connections in TIME_WAIT would leave later tests without free ports
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        local_port = writer.get_extra_info("sockname")[1]
        data, _ = request(rng.choice(METHODS), port, local_port, "TCP")
        data = mutate(data, rng)
        try:  # what the engine's TCP transport does first: cut the stream by Content-Length
            frames = StreamFramer().feed(data)
        except SipParseError:
            frames = None  # framing lost: the connection is closed, nothing can be answered
        if not frames:
            verdict, call_id = ("framing-closed" if frames is None else "incomplete"), ""
        else:
            verdict, _, call_id = expected(frames[0], stream=True)
        writer.write(data)
        await writer.drain()
        if verdict != "4xx":
            return verdict, True
        replies = StreamFramer()  # the engine's responses, cut by their Content-Length
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                break
            if not chunk:
                break
            for reply in replies.feed(chunk):
                status = _reply_for(reply, call_id)
                if status is not None and status >= 300:
                    return verdict, error_answer(status)
        return verdict, False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_running_engine_answers_malformed_requests_with_4xx_and_nothing_sticks(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    udp_cases, tcp_cases = pick(4000, 200_000), pick(400, 20_000)
    counts = {"udp_cases": 0, "tcp_cases": 0, "answerable": 0, "answered_4xx": 0, "answered_elsewhere": 0,
              "dropped": 0, "valid": 0, "tcp_framing_closed": 0, "tcp_incomplete": 0}
    missed: list[str] = []
    async with EngineEnv(tmp_path, t1=0.05) as env:
        assert env.engine is not None
        ua = env.engine.ua
        ua.layer.config = TimerConfig(t1=0.05, t2=0.4, t4=0.5)  # every transaction timer runs out within ~3.5 s
        env.xml("/answer", "<Response><Hangup/></Response>")  # a fuzzed INVITE that parses is rejected at once
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Udp, local_addr=("127.0.0.1", 0))
        local_port = transport.get_extra_info("sockname")[1]
        started = time.monotonic()
        try:
            for n in range(udp_cases):
                rng = random.Random(n)
                data, _ = request(rng.choice(METHODS), env.sip_port, local_port)
                data = mutate(data, rng)[:65000]
                verdict, status, call_id = expected(data, local_port=local_port)
                answered_before = ua.stats["malformed_answered"]
                transport.sendto(data, ("127.0.0.1", env.sip_port))
                counts["udp_cases"] += 1
                if verdict == "4xx-elsewhere":  # the 4xx goes to the Via's port: the engine's counter must show it
                    counts["answerable"] += 1
                    counts["answered_elsewhere"] += 1
                    for _ in range(100):
                        if ua.stats["malformed_answered"] > answered_before:
                            break
                        await asyncio.sleep(0.002)
                    if ua.stats["malformed_answered"] > answered_before:
                        counts["answered_4xx"] += 1
                    else:
                        missed.append(f"udp seed {n}: expected {status} sent to the Via port, none sent")
                elif verdict == "4xx":
                    counts["answerable"] += 1
                    got = await _wait_reply(proto.replies, call_id, 2.0)
                    if got is not None and error_answer(got):
                        counts["answered_4xx"] += 1
                    else:
                        missed.append(f"udp seed {n}: expected {status}, got {got}: {data[:200]!r}")
                else:
                    counts["dropped" if verdict == "drop" else "valid"] += 1
                    await asyncio.sleep(0)
                if n % 500 == 499:
                    assert await _options_ok(env.sip_port), f"engine stopped answering after {n + 1} cases"
            for n in range(tcp_cases):
                verdict, ok = await _tcp_case(env.sip_port, 10_000_000 + n)
                counts["tcp_cases"] += 1
                if verdict == "4xx":
                    counts["answerable"] += 1
                    counts["answered_4xx"] += int(ok)
                    if not ok:
                        missed.append(f"tcp seed {10_000_000 + n}")
                elif verdict in ("framing-closed", "incomplete"):
                    counts["tcp_" + verdict.replace("-", "_")] += 1
                else:
                    counts["dropped" if verdict == "drop" else "valid"] += 1
        finally:
            transport.close()
        elapsed = time.monotonic() - started
        assert await _options_ok(env.sip_port)
        # every timer runs out: nothing may be left
        deadline = time.monotonic() + 15
        while (ua.layer.active or env.engine.calls or env.engine.live_calls() or ua.legs) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        left = {"transactions": ua.layer.active, "calls": len(env.engine.calls), "legs": len(ua.legs),
                "tasks": env.engine.live_calls()}
        crashes = ua.stats["tu_errors"] + ua.transports.stats.extra.get("handler_errors", 0)
        figures.update(counts)
        figures.update({"crashes": crashes, "stuck": sum(left.values()), "seconds": round(elapsed, 1),
                        "malformed_answered_stat": ua.stats["malformed_answered"],
                        "malformed_dropped_stat": ua.stats["malformed_dropped"]})
        if missed:
            figures["missed"] = missed[:20]
    assert crashes == 0
    assert left == {"transactions": 0, "calls": 0, "legs": 0, "tasks": 0}, left
    assert not missed, missed[:10]
    assert counts["answered_4xx"] == counts["answerable"] > 0
