"""Micro-benchmark for the SIP message parser (not a test): parse, serialise and both, for a typical INVITE.

Run: python3 bench/sip_parse.py [-n ITERATIONS] [-r ROUNDS] [--profile]

Figures are also given as a ratio to a trivial baseline measured in the same run (`bytes.split(b"\\r\\n")` of the
same message), so they can be compared across machines and survive a noisy one.

What each figure includes (see the sip.message docstring):
  * "full checks" is `parse_message(data)`, what the UA runs on every message it receives: framing, start line,
    header split, header names, duplicates, mandatory headers (presence, CSeq, Max-Forwards, Content-Length) and the
    Via/From/To/Contact/Date syntax checks.
  * "deep checks deferred" is `parse_message(data, validate=False)`: the same minus the Via/From/To/Contact/Date
    syntax checks, which `Message.validate()` runs. Nothing in the stack uses it on received traffic today.
  * "serialise, unchanged" is `to_bytes()` of a message as parsed: the bytes it was parsed from, no work.
    "serialise, changed" is `to_bytes()` after a header was set: a full serialisation.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip.message import parse_message  # noqa: E402

SDP = (
    b"v=0\r\n"
    b"o=- 3815263377 3815263377 IN IP4 192.0.2.10\r\n"
    b"s=softswitch\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+15551234567@gw.example.com:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-proxy-7f3a91c2;rport\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bK-ua-1d2e3f4a5b\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:192.0.2.20:5060;lr;ftag=a8f3c>\r\n"
    b"Record-Route: <sip:edge.example.com;lr>\r\n"
    b'From: "Alice Example" <sip:alice@example.com>;tag=a8f3c-77\r\n'
    b"To: <sip:+15551234567@gw.example.com>\r\n"
    b"Call-ID: 5e2b7c1a-4d3f-4a8e-9b1c-2f6d8e0a9b3c@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:0f1e2d3c>\"\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"User-Agent: baresip v3.10.1 (x86_64/linux)\r\n"
    b"X-Account-ID: 7731\r\n"
    b"X-Trace: 0b9c1e44\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def _measure(fns: dict[str, Callable[[], object]], n: int, rounds: int) -> dict[str, float]:
    """Best seconds per call for each function. Rounds interleave the functions, so a slow patch of a noisy machine
    hits them all alike and the minimum picks each one's quiet moment. The garbage collector stays on: the parser's
    allocations trigger it in real use too."""
    best = dict.fromkeys(fns, float("inf"))
    clock = time.perf_counter
    for _ in range(rounds):
        for label, fn in fns.items():
            t0 = clock()
            for _ in range(n):
                fn()
            elapsed = clock() - t0
            if elapsed < best[label]:
                best[label] = elapsed
    return {label: seconds / n for label, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="calls per timed run (default 2000)")
    ap.add_argument("-r", "--rounds", type=int, default=40, help="interleaved rounds, best kept (default 40)")
    ap.add_argument("--profile", action="store_true", help="run parse+serialise under cProfile and print the top")
    args = ap.parse_args(argv)

    data = INVITE
    msg = parse_message(data)
    again = parse_message(msg.to_bytes())
    assert list(again.headers) == list(msg.headers) and again.body == msg.body, "round trip changed the message"
    changed = parse_message(data)
    changed.headers.set("X-Trace", "0b9c1e45")
    assert changed.to_bytes() != data and msg.to_bytes() == data

    def parse() -> object:
        return parse_message(data)

    def parse_deferred() -> object:
        return parse_message(data, validate=False)

    def serialise() -> object:
        return msg.to_bytes()

    def serialise_changed() -> object:
        return changed.to_bytes()

    def both() -> object:
        return parse_message(data).to_bytes()

    def both_deferred() -> object:
        return parse_message(data, validate=False).to_bytes()

    def baseline() -> object:
        return data.split(b"\r\n")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.n * 10):
            both()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        return 0

    n, r = args.n, args.rounds
    per = _measure({
        "parse+serialise, deep checks deferred": both_deferred,
        "parse+validate+serialise (full checks)": both,
        "parse, deep checks deferred": parse_deferred,
        "parse (full checks)": parse,
        "serialise, unchanged": serialise,
        "serialise, changed": serialise_changed,
        "baseline": baseline,
    }, n, r)
    base = per.pop("baseline")
    print(f"message: {len(data)} bytes, {len(msg.headers)} headers, body {len(msg.body)} bytes; "
          f"{r} rounds x {n} calls, best kept; Python {sys.version.split()[0]}")
    width = max(map(len, per)) + 2
    for label, seconds in per.items():
        print(f"{label + ':':{width}}{1 / seconds:>10,.0f} msg/s ({seconds * 1e6:5.2f} us/msg; "
              f"{seconds / base:4.1f}x baseline split)")
    print(f"{'baseline split:':{width}}{1 / base:>10,.0f} msg/s ({base * 1e6:5.2f} us/msg; data.split(b'\\r\\n'))")
    print("deep checks deferred = framing, start line, header split, header names, duplicates, mandatory headers;\n"
          "full checks = that plus Via/From/To/Contact/Date syntax (what the UA runs on every received message).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
