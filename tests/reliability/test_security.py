"""Nobody gets in without credentials, and no secret leaks (figures: refusals, scanned bytes, hits = 0).

A real `softswitch serve` with a REST auth token, a SIP user (alice) and a trunk with digest credentials:
- REST API: no credentials, a wrong token, a wrong account id, a wrong scheme: 401 every time; the right ones: 200.
- Inbound calls from a [[users]] entry must pass digest auth: no Authorization, a wrong password, a replayed
  Authorization (same nonce and nc, new Call-ID) and a stale nonce (older than the 300 s TTL, `stale=true`) are
  answered 407, another user's valid credentials on a call From alice 403; none reaches the app; the right
  credentials are admitted.
- alice's admitted call Dials the trunk (SIPp challenges with 401; the engine answers with the trunk's credentials),
  with sipHeaders forwarded raw (alice authenticated).
- Then every artefact the run produced is scanned for the three secrets: the engine's JSON log, its SQLite files,
  what the trunk received (SIPp's message trace), every request the app received (headers and bodies) and every
  REST response body. Webhook signatures are checked with the public plivo SDK.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sipharness import Sipp, free_port, free_port_block, render_scenario

from engine.config import load_config
from engine.sip_users import inbound_auth_for
from sip.auth import Credentials, build_authorization, pick_challenge
from tests.helpers.daemon import HOST, daemon_env, start_daemon
from tests.helpers.webapp import WebApp
from tests.reliability.caller import Caller
from tests.reliability.common import scan_for_secrets

TOKEN = "tok-Secr3t-7a9c4e2b"
ALICE = "alice-Secr3t-55d1"
TRUNK_PASSWORD = "trunkpass"  # fixed by tests/sipp/uas_trunk_auth_401.xml
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
USERS = f'[{{username = "alice", password = "{ALICE}"}}, {{username = "bob", password = "bob-Secr3t-0e2"}}]'


def invite(port: int, local_port: int, auth: str | None = None, user: str = "alice") -> tuple[bytes, str]:
    call_id = f"{uuid.uuid4().hex}@sec"
    lines = [
        f"INVITE sip:300@{HOST}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{HOST}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:300@{HOST}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{user}@{HOST}:{local_port}>",
    ]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), call_id


def exchange(port: int, data: bytes, sock: socket.socket, call_id: str, timeout: float = 3.0) -> tuple[int, str]:
    """Send one INVITE, return (first final status, the raw response); ACK non-2xx finals."""
    sock.sendto(data, (HOST, port))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            reply = sock.recv(65535).decode(errors="replace")
        except TimeoutError:
            break
        if call_id not in reply or not reply.startswith("SIP/2.0 "):
            continue
        status = int(reply.split(" ", 2)[1])
        if status >= 200:
            head = reply.split("\r\n\r\n", 1)[0].split("\r\n")
            to = next(v.split(":", 1)[1].strip() for v in head if v.lower().startswith("to:"))
            via = next(v.split(":", 1)[1].strip() for v in head if v.lower().startswith("via:"))
            frm = next(v.split(":", 1)[1].strip() for v in head if v.lower().startswith("from:"))
            ack = (f"ACK sip:300@{HOST}:{port} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {frm}\r\nTo: {to}\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
            sock.sendto(ack.encode(), (HOST, port))
            return status, reply
    return 0, ""


def challenge_of(reply: str) -> list[str]:
    head = reply.split("\r\n\r\n", 1)[0].split("\r\n")
    return [v.split(":", 1)[1].strip() for v in head if v.lower().startswith("proxy-authenticate:")]


def digest_cases(port: int, server: Any, uri: str) -> dict[str, tuple[int, str]]:
    """Each negative case and the positive one, over raw UDP: {case: (final status, reply)}."""
    out: dict[str, tuple[int, str]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        lp = sock.getsockname()[1]
        data, cid = invite(port, lp)
        out["no_credentials"] = first = exchange(port, data, sock, cid)
        chal = pick_challenge(challenge_of(first[1]), proxy=True)
        wrong = build_authorization(chal, Credentials("alice", "not-the-password"), "INVITE", uri)
        data, cid = invite(port, lp, wrong)
        out["wrong_password"] = exchange(port, data, sock, cid)
        as_bob = build_authorization(chal, Credentials("bob", "bob-Secr3t-0e2"), "INVITE", uri)
        data, cid = invite(port, lp, as_bob)  # bob's valid credentials on a call From alice
        out["other_users_credentials"] = exchange(port, data, sock, cid)
        data, cid = invite(port, lp)
        fresh = pick_challenge(challenge_of(exchange(port, data, sock, cid)[1]), proxy=True)
        right = build_authorization(fresh, Credentials("alice", ALICE), "INVITE", uri)
        data, cid = invite(port, lp, right)
        out["right_credentials"] = exchange(port, data, sock, cid)
        data, cid = invite(port, lp, right)  # the same header again: same nonce, same nc, new call
        out["replayed"] = exchange(port, data, sock, cid)
        old = server.challenges(time.monotonic() - 400)  # a nonce the engine issued 400 s ago (TTL 300 s)
        stale_chal = pick_challenge([c.to_header() for c in old], proxy=True)
        stale = build_authorization(stale_chal, Credentials("alice", ALICE), "INVITE", uri)
        data, cid = invite(port, lp, stale)
        out["stale_nonce"] = exchange(port, data, sock, cid)
    return out


async def rest_status(base: str, auth: str | None, account: str = AUTH_ID) -> tuple[int, str]:
    headers = {"Authorization": auth} if auth else {}
    async with aiohttp.ClientSession(headers=headers) as s, s.get(f"{base}/v1/Account/{account}/Call/") as r:
        return r.status, await r.text()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def need_sipp() -> None:
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed")


async def test_no_entry_without_credentials_and_no_secret_anywhere(
    tmp_path: Path, figures: dict[str, Any], need_sipp: None
) -> None:
    sipp_dir = tmp_path / "trunk"
    sipp_dir.mkdir()
    trunk = Sipp(render_scenario("uas_trunk_auth_401.xml", sipp_dir), sipp_dir, name="trunk")
    await trunk.start()
    async with WebApp() as app:
        app.route("/answer", '<Response><Dial sipHeaders="Tenant=acme"><Number>15550001111</Number></Dial>'
                             "</Response>")
        app.route("/hangup", "")
        app.route("/reject", "<Response><Hangup/></Response>")  # the raw digest probes (To 300)
        sip_port, http_port, rtp = free_port(), free_port(), free_port_block(40)
        rtp += rtp % 2
        env = daemon_env(
            tmp_path, sip_port, http_port, rtp, 38,
            SOFTSWITCH_HTTP__AUTH_TOKEN=TOKEN, SOFTSWITCH_USERS=USERS,
            SOFTSWITCH_TRUNKS=(f'[{{name = "carrier", uri = "sip:{HOST}:{trunk.port}", default = true, '
                               f'username = "trunkuser", password = "{TRUNK_PASSWORD}"}}]'),
            SOFTSWITCH_INBOUND__ANSWER_URL=app.url("/answer"), SOFTSWITCH_INBOUND__HANGUP_URL=app.url("/hangup"),
            SOFTSWITCH_INBOUND__NUMBERS__300__ANSWER_URL=app.url("/reject"),
        )
        daemon = await start_daemon(tmp_path, env=env, sip_port=sip_port, http_port=http_port)
        try:
            base = daemon.base_url
            rest = {
                "none": await rest_status(base, None),
                "wrong_token": await rest_status(base, basic(AUTH_ID, "wrong")),
                "wrong_account_id": await rest_status(base, basic("MAYYYYYYYYYYYYYYYYYY", TOKEN)),
                "other_account_in_path": await rest_status(base, basic(AUTH_ID, TOKEN), "MAYYYYYYYYYYYYYYYYYY"),
                "bearer_scheme": await rest_status(base, f"Bearer {TOKEN}"),
                "right": await rest_status(base, basic(AUTH_ID, TOKEN)),
            }
            config = load_config(None, env={k: v for k, v in env.items() if k.startswith("SOFTSWITCH_")})
            server = inbound_auth_for(config)
            assert server is not None
            digest = await asyncio.to_thread(digest_cases, sip_port, server.server, f"sip:300@{HOST}:{sip_port}")
            answers_digest = len(app.requests_to("/reject"))
            # alice's real call, through our own stack answering the 407 itself, Dials the trunk
            async with Caller() as caller:
                caller.ua.invite = _with_credentials(caller.ua.invite, Credentials("alice", ALICE))  # type: ignore
                call = await caller.call(daemon.uri, from_user="alice", timeout=30, hangup_after=1.0)
            await app.wait_for("/hangup", count=1, timeout=15)
            trunk_result = await trunk.wait(20)
        finally:
            daemon.stop()
        requests = list(app.requests)
    for case, (status, body) in rest.items():
        if case == "right":
            assert status == 200, body
        else:
            assert status == 401, (case, status, body)
    for case, (status, reply) in digest.items():
        if case == "right_credentials":
            assert status not in (0, 403, 407), (case, reply)
        elif case == "other_users_credentials":  # bob's valid digest on a call From alice: caller-ID spoofing
            assert status == 403, (case, status, reply)
        else:
            assert status == 407, (case, status, reply)
    assert 'stale=true' in digest["stale_nonce"][1].replace("stale=TRUE", "stale=true")
    assert answers_digest == 1  # only the right credentials reached the app
    assert call.answered, call.describe()
    invites = [m for m in trunk_result.messages.split("\n\n") if "INVITE sip:" in m]
    assert any("Authorization: Digest" in m for m in trunk_result.messages.split("---")), "trunk saw no digest"
    assert "X-Tenant: acme" in trunk_result.messages  # alice authenticated: sipHeaders forwarded raw
    unsigned = [r.path for r in requests if not r.signature_valid(TOKEN)]
    assert not unsigned, f"webhook requests whose signature the plivo SDK refuses: {unsigned}"
    texts = {f"app request {i} {r.path}": json.dumps(r.headers) + r.body.decode(errors="replace")
             for i, r in enumerate(requests)}
    texts |= {f"REST {case}": body for case, (_, body) in rest.items()}
    texts["trunk trace"] = trunk_result.messages
    artefacts = [daemon.log_path, *tmp_path.glob("softswitch.db*"), tmp_path / "recordings"]
    hits = scan_for_secrets([TOKEN, ALICE, TRUNK_PASSWORD, "bob-Secr3t-0e2"], *artefacts, texts=texts)
    scanned = sum(p.stat().st_size for a in artefacts if a.exists()
                  for p in ([a] if a.is_file() else a.rglob("*")) if p.is_file())
    figures.update({
        "rest_refused": sum(1 for c, (s, _) in rest.items() if c != "right" and s == 401),
        "rest_cases": len(rest) - 1,
        "digest_refused": sum(1 for c, (s, _) in digest.items() if c != "right_credentials" and s in (403, 407)),
        "digest_cases": len(digest) - 1,
        "webhooks_signed_valid": len(requests) - len(unsigned), "webhooks": len(requests),
        "bytes_scanned": scanned + sum(len(t) for t in texts.values()), "secret_hits": len(hits),
        "trunk_invites": len(invites),
    })
    assert not hits, hits


def _with_credentials(invite: Any, credentials: Credentials) -> Any:
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs["credentials"] = credentials
        return await invite(*args, **kwargs)

    return wrapped
