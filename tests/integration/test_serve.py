"""`softswitch serve` as a user runs it: a real process on loopback ports, real SIP datagrams and TCP streams."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free on both UDP and TCP at the moment of asking."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)


def options(port: int, branch: str, call_id: str, local_port: int, extra: str = "") -> bytes:
    return (
        f"OPTIONS sip:softswitch@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p{branch}\r\n"
        f"To: <sip:softswitch@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def daemon(tmp_path: Path):
    port = free_port()
    env = dict(os.environ)
    env["SOFTSWITCH_SIP__LISTEN"] = f'["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]'
    env["SOFTSWITCH_HTTP__LISTEN"] = f"127.0.0.1:{free_port()}"
    env["SOFTSWITCH_STORAGE__PATH"] = str(tmp_path / "softswitch.db")
    env["PYTHONPATH"] = str(ROOT)
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--log-json"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 15
    while "softswitch_started" not in (tmp_path / "serve.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("serve did not start: " + (tmp_path / "serve.log").read_text())
        time.sleep(0.05)
    yield proc, port, tmp_path / "serve.log"
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def udp_exchange(port: int, payload: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def udp_options(port: int, tag: str, extra: str = "") -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        s.sendto(options(port, tag, f"{tag}@probe", s.getsockname()[1], extra), ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def test_options_over_udp_and_tcp_get_200(daemon) -> None:
    proc, port, _ = daemon
    reply = udp_options(port, "udp1")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS" in reply
    allow = next(line for line in reply.split(b"\r\n") if line.startswith(b"Allow: "))
    assert b"REGISTER" in allow  # the daemon's registrar serves it
    assert b"Call-ID: udp1@probe" in reply
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(options(port, "tcp1", "tcp1@probe", 5999).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
    assert data.startswith(b"SIP/2.0 200 OK\r\n") and b"Call-ID: tcp1@probe" in data


@pytest.mark.parametrize(
    ("extra", "method", "status"),
    [
        ("", "FOOBAR", b"501"),
        ("", "SUBSCRIBE", b"405"),
        ("", "BYE-in-unknown-dialog", b"481"),
        ("Require: 100rel\r\n", "OPTIONS", b"420"),
    ],
)
def test_unsupported_requests_get_the_right_status(daemon, extra: str, method: str, status: bytes) -> None:
    _, port, _ = daemon
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        msg = options(port, "u" + str(abs(hash(method + extra))), "x@probe", s.getsockname()[1], extra)
        if method == "BYE-in-unknown-dialog":
            msg = msg.replace(b"OPTIONS", b"BYE").replace(b">\r\nCall-ID", b">;tag=nosuch\r\nCall-ID")
        elif method != "OPTIONS":
            msg = msg.replace(b"OPTIONS", method.encode())
        s.sendto(msg, ("127.0.0.1", port))
        reply = s.recv(65535)
    assert reply.split(b"\r\n")[0].split(b" ")[1] == status


def test_max_forwards_zero_gets_483(daemon) -> None:
    _, port, _ = daemon
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        msg = options(port, "mf0", "mf0@probe", s.getsockname()[1]).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
        s.sendto(msg, ("127.0.0.1", port))
        reply = s.recv(65535)
    assert reply.startswith(b"SIP/2.0 483 ")


def test_malformed_input_is_answered_or_dropped_and_the_server_stays_up(daemon) -> None:
    _, port, log_path = daemon
    # Missing CSeq: answerable? no (no CSeq to copy) -> dropped; bad Content-Length -> 400 with the reason.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        lp = s.getsockname()[1]
        bad_cl = options(port, "badcl", "badcl@probe", lp).replace(b"Content-Length: 0", b"Content-Length: 99")
        s.sendto(bad_cl, ("127.0.0.1", port))
        reply = s.recv(65535)
        assert reply.startswith(b"SIP/2.0 400 Bad Request - Content-Length 99")
        for garbage in (b"\x00\xff" * 300, b"INVITE sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 200\r\n\r\n",
                        options(port, "nocseq", "n@probe", lp).replace(b"CSeq: 1 OPTIONS\r\n", b""),
                        b"OPTIONS sip:a@b SIP/2.0\r\nVia: " + b"x" * 70000):
            s.sendto(garbage[:65000], ("127.0.0.1", port))
    reply = udp_options(port, "after")
    assert reply is not None and reply.startswith(b"SIP/2.0 200 OK")
    text = log_path.read_text()
    assert "sip_malformed_dropped" in text and "sip_malformed_answered" in text


def test_invite_to_an_unreachable_app_is_rejected_after_retries(daemon) -> None:
    """The default answer_url (127.0.0.1:8000) is not running here: the caller hears ringing, then a 500 once
    the answer_url retries are exhausted — never silence, never a 200."""
    _, port, log_path = daemon
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(30.0)
        msg = options(port, "inv1", "inv1@probe", s.getsockname()[1]).replace(b"OPTIONS", b"INVITE")
        s.sendto(msg, ("127.0.0.1", port))
        statuses = []
        while True:
            reply = s.recv(65535)
            statuses.append(int(reply.split(b" ")[1]))
            if statuses[-1] >= 200:
                break
    assert 180 in statuses
    assert statuses[-1] == 500
    assert "answer_fetch_failed" in log_path.read_text()


def test_sigterm_stops_cleanly(daemon) -> None:
    proc, port, log_path = daemon
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert "softswitch_stopped" in log_path.read_text()


def test_bad_config_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[sip]\nrtp_port_min = "abc"\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(cfg)], env=env,
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "rtp_port_min" in lines[0] and "[sip]" in lines[0]
