"""Test helpers that look at the engine from outside, byte for byte: raw SIP INVITEs over UDP (every response with
its headers, so a test can read Retry-After), OPTIONS probes and a strict parser of the Prometheus text format
served at /metrics.

What lives here: ``invite_burst`` (send N INVITEs at once, collect every response until each has a final one, ACK
the non-2xx finals as RFC 3261 §17.1.1.3 says, CANCEL-free: tests give admitted calls XML that rejects them),
``Reply``, ``parse_prometheus`` and ``Metrics``. The socket work runs in a thread so the engine under test can
share the test's event loop.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
import uuid
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    """Header names lower-cased (last value wins)."""


@dataclass
class Exchange:
    call_id: str
    replies: list[Reply] = field(default_factory=list)

    @property
    def final(self) -> Reply | None:
        return next((r for r in self.replies if r.status >= 200), None)


def _invite(port: int, local_port: int, call_id: str, tag: str, branch: str) -> bytes:
    sdp = (
        "v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {local_port + 2} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    return (
        f"INVITE sip:100@{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+15550001111@{HOST}>;tag={tag}\r\n"
        f"To: <sip:100@{HOST}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:probe@{HOST}:{local_port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def _ack(port: int, local_port: int, call_id: str, tag: str, branch: str, to: str) -> bytes:
    return (
        f"ACK sip:100@{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+15550001111@{HOST}>;tag={tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _parse(data: bytes) -> tuple[int, dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _burst(port: int, n: int, timeout: float) -> list[Exchange]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        local_port = s.getsockname()[1]
        calls: dict[str, tuple[Exchange, str, str]] = {}
        for _ in range(n):
            call_id, tag, branch = f"{uuid.uuid4().hex}@probe", uuid.uuid4().hex[:8], "z9hG4bK" + uuid.uuid4().hex
            calls[call_id] = (Exchange(call_id), tag, branch)
            s.sendto(_invite(port, local_port, call_id, tag, branch), (HOST, port))
        deadline = time.monotonic() + timeout
        while any(e.final is None for e, _, _ in calls.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                data = s.recv(65535)
            except TimeoutError:
                break
            if not data.startswith(b"SIP/2.0 "):
                continue
            status, headers = _parse(data)
            entry = calls.get(headers.get("call-id", ""))
            if entry is None:
                continue
            exchange, tag, branch = entry
            if exchange.final is not None and status >= 200:
                continue  # a retransmission of the final response: our ACK crossed it
            exchange.replies.append(Reply(status, headers))
            if status >= 300:
                s.sendto(_ack(port, local_port, exchange.call_id, tag, branch, headers["to"]), (HOST, port))
        return [e for e, _, _ in calls.values()]


async def invite_burst(port: int, n: int = 1, timeout: float = 10.0) -> list[Exchange]:
    """Send `n` INVITEs at once from one UDP socket; every exchange once each has a final response (or timeout).
    Admitted calls must be rejected by their XML (e.g. <Hangup reason="busy"/>): 2xx are not ACKed here."""
    return await asyncio.to_thread(_burst, port, n, timeout)


def _options(port: int, timeout: float) -> Reply | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        local_port = s.getsockname()[1]
        call_id = f"{uuid.uuid4().hex}@probe"
        s.sendto((
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode(), (HOST, port))
        s.settimeout(timeout)
        try:
            status, headers = _parse(s.recv(65535))
        except TimeoutError:
            return None
        return Reply(status, headers)


async def options_probe(port: int, timeout: float = 5.0) -> Reply | None:
    """One OPTIONS request, as a load balancer's health probe sends it (Kamailio's dispatcher); its response."""
    return await asyncio.to_thread(_options, port, timeout)


# --- Prometheus text format (0.0.4) ---------------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


class Metrics(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """Samples keyed by (name, labels); ``m.value("name", label=value)`` -> the sample (0 when absent)."""

    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        return self.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= ls)


def parse_prometheus(text: str) -> Metrics:
    """Parse and check the text exposition strictly: HELP/TYPE before samples, valid names, labels and values,
    no duplicate series, histogram buckets cumulative with +Inf equal to _count. AssertionError otherwise."""
    metrics = Metrics()
    metrics.types = {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert parts[2] not in metrics.types, f"TYPE twice: {line}"
                metrics.types[parts[2]] = parts[3]
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, raw_labels, raw_value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in metrics.types or metrics.types.get(family) == "histogram", f"sample before TYPE: {line}"
        labels: list[tuple[str, str]] = []
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = _LABEL.match(raw_labels, pos)
                assert lm, f"bad labels: {line!r}"
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
        value = math.inf if raw_value == "+Inf" else float(raw_value)
        key = (name, frozenset(labels))
        assert key not in metrics, f"duplicate series: {line}"
        metrics[key] = value
    for family, kind in metrics.types.items():
        if kind != "histogram":
            continue
        buckets = sorted(((float(dict(ls)["le"].replace("+Inf", "inf")), v) for (n, ls), v in metrics.items()
                          if n == f"{family}_bucket"))
        assert buckets and math.isinf(buckets[-1][0]), f"{family}: no +Inf bucket"
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{family}: buckets not cumulative"
        assert counts[-1] == metrics.value(f"{family}_count"), f"{family}: +Inf bucket != _count"
    return metrics
