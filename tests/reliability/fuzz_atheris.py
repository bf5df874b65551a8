"""Coverage-guided fuzzing of the SIP parser with atheris (libFuzzer): the long run docs/reliability.md reports.

    pip install atheris          # not a test dependency: CI runs the hypothesis fuzzers of test_fuzz.py
    python -m tests.reliability.fuzz_atheris -atheris_runs=2000000 [corpus_dir]

Seeds: the RFC 4475 torture messages (tests/data/rfc4475) and one valid request of each method. Each input goes
through parse_message (datagram and stream rules) and StreamFramer. A finding is any exception other than
SipParseError, or an answerable SipParseError (request line, Via, From, To, Call-ID and CSeq recovered, not an ACK)
whose status is not a 4xx (or 505/513, fuzzcases.error_answer): the harness raises, libFuzzer stops and writes the
crashing input (var/fuzz-findings/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from sip.message import SipParseError, StreamFramer, parse_message

from tests.reliability.fuzzcases import error_answer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def check(data: bytes) -> None:
    for stream in (False, True):
        try:
            parse_message(data, stream=stream)
        except SipParseError as exc:
            req = exc.request
            if req is not None and req.method != "ACK" and all(
                req.headers.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq")
            ):
                assert error_answer(exc.status), (exc.status, exc.reason)
    try:
        for frame in StreamFramer().feed(data):
            try:
                parse_message(frame, stream=True)
            except SipParseError:
                pass
    except SipParseError:
        pass


def seeds(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "tests" / "data" / "rfc4475").glob("*.dat")):
        (folder / path.name).write_bytes(path.read_bytes())
    from tests.reliability.fuzzcases import METHODS, request

    for method in METHODS:
        (folder / f"valid_{method}.sip").write_bytes(request(method, 5080, 5999)[0])


def main() -> None:
    args = list(sys.argv)
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:
        folder = ROOT / "var" / "fuzz-corpus"
        seeds(folder)
        args.append(str(folder))
    if not any(a.startswith("-artifact_prefix=") for a in args):
        (ROOT / "var" / "fuzz-findings").mkdir(parents=True, exist_ok=True)
        args.append(f"-artifact_prefix={ROOT / 'var' / 'fuzz-findings'}/")
    atheris.Setup(args, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
