"""The registrar end to end: phones (SIPp, and softswitch's own UserAgent) REGISTER with digest auth over real UDP/TCP,
then a caller's `<Dial><User>sip:alice@127.0.0.1</User></Dial>` rings every registered contact in parallel; an
expired or removed registration makes the Dial fail with USER_NOT_REGISTERED (2020). Passwords never show up."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
import structlog
from engine_env import AUTH_TOKEN, EngineEnv, Phone
from sipharness import HOST, parse_trace

from sip.auth import Challenge, Credentials, build_authorization, pick_challenge
from sip.dialog import new_branch, new_tag
from sip.events import Address
from sip.message import Headers, Request, Response
from sip.transaction import ClientTransaction
from sip.ua import UserAgent

pytestmark = pytest.mark.integration

PASSWORD = "alice-secret-1"
USERS = {"SOFTSWITCH_USERS": f'[{{username = "alice", password = "{PASSWORD}"}}]'}
DIAL_ALICE = f'<Dial action="/dial-status" timeout="15"><User>sip:alice@{HOST}</User></Dial>'


class _Final:
    """Owner of one client transaction: resolves with the final response."""

    def __init__(self) -> None:
        self.future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

    def _on_response(self, response: Response, tx: ClientTransaction) -> None:
        if response.status >= 200 and not self.future.done():
            self.future.set_result(response)

    def _on_timeout(self, tx: ClientTransaction) -> None:
        if not self.future.done():
            self.future.set_exception(TimeoutError("no final response to REGISTER"))


class OwnPhone:
    """Registers like a phone with softswitch's own stack: one Call-ID, CSeq up, answers challenges."""

    def __init__(self, ua: UserAgent, env: EngineEnv, transport: str = "udp", user: str = "alice",
                 password: str = PASSWORD) -> None:
        self.ua, self.env, self.transport = ua, env, transport
        self.credentials = Credentials(user, password)
        self.user = user
        self.call_id = secrets.token_hex(10)
        self.tag = new_tag()
        self.cseq = 0
        self.responses: list[Response] = []

    @property
    def uri(self) -> str:
        return f"sip:{HOST}:{self.env.sip_port}"

    async def send(self, contacts: list[str], expires: int | None = None,
                   challenge: Challenge | None = None) -> Response:
        self.cseq += 1
        items = [
            ("Via", f"{self.ua.via(self.transport)};branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.user}@{HOST}>;tag={self.tag}"),
            ("To", f"<sip:{self.user}@{HOST}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
        ]
        items += [("Contact", c) for c in contacts]
        if expires is not None:
            items.append(("Expires", str(expires)))
        if challenge is not None:
            items.append(("Authorization", build_authorization(challenge, self.credentials, "REGISTER", self.uri)))
        owner = _Final()
        self.ua.send_request(Request("REGISTER", self.uri, Headers(items)),
                             Address(self.transport, HOST, self.env.sip_port), owner)
        response = await asyncio.wait_for(owner.future, 10)
        self.responses.append(response)
        return response

    async def register(self, contacts: list[str], expires: int | None = None) -> Response:
        response = await self.send(contacts, expires)
        if response.status == 401:
            challenge = pick_challenge(response.headers.get_all("WWW-Authenticate"), proxy=False)
            response = await self.send(contacts, expires, challenge)
        return response


def expires_of(response: Response) -> dict[str, int]:
    out = {}
    for value in response.headers.get_all("Contact"):
        uri, _, params = value.partition(">;")
        out[uri.lstrip("<")] = int(dict(p.split("=", 1) for p in params.split(";"))["expires"])
    return out


async def sipp_register(make_sipp: Any, env: EngineEnv, contact_port: int, expires: int, name: str,
                        password: str = PASSWORD) -> list[Any]:
    """Register alice's contact sip:alice@127.0.0.1:`contact_port` with a SIPp phone; returns its traced messages."""
    reg = await make_sipp("uac_register.xml", name=name, remote=f"{HOST}:{env.sip_port}",
                          subs={"USER": "alice", "CONTACT_PORT": contact_port, "EXPIRES": expires},
                          extra=["-au", "alice", "-ap", password])
    result = await reg.wait(15)
    assert result.returncode == 0, result.describe()
    assert password not in result.messages
    return parse_trace(result.messages)


async def test_own_stack_challenge_right_and_wrong_password_over_udp_and_tcp(tmp_path: Path, make_ua) -> None:
    ua = await make_ua(transports=("udp", "tcp"))
    with structlog.testing.capture_logs() as logs:
        async with EngineEnv(tmp_path, **USERS) as env:
            phone = OwnPhone(ua, env)
            contact = f"<sip:alice@{HOST}:{ua.port('udp')}>"
            first = await phone.send([contact])
            assert first.status == 401
            challenges = [Challenge.parse(v) for v in first.headers.get_all("WWW-Authenticate")]
            assert [c.algorithm for c in challenges] == ["MD5", "SHA-256"]
            assert all(c.realm == HOST and c.qop == ("auth",) for c in challenges)
            assert env.engine is not None and env.engine.registered_contacts("alice") == []

            ok = await phone.send([contact], challenge=pick_challenge(first.headers.get_all("WWW-Authenticate"),
                                                                      proxy=False))
            assert ok.status == 200
            assert expires_of(ok) == {f"sip:alice@{HOST}:{ua.port('udp')}": 3600}

            wrong = OwnPhone(ua, env, password="not-alice-password")
            refused = await wrong.register([f"<sip:alice@{HOST}:5999>"])
            assert refused.status == 401 and len(wrong.responses) == 2
            assert env.engine.registered_contacts("alice") == [f"sip:alice@{HOST}:{ua.port('udp')}"]

            tcp_phone = OwnPhone(ua, env, transport="tcp")
            tcp_contact = f"<sip:alice@{HOST}:{ua.port('tcp')};transport=tcp>"
            both = await tcp_phone.register([tcp_contact], expires=300)
            assert both.status == 200
            assert expires_of(both) == {f"sip:alice@{HOST}:{ua.port('udp')}": 3600,
                                        f"sip:alice@{HOST}:{ua.port('tcp')};transport=tcp": 300}

            brief = await tcp_phone.register([tcp_contact], expires=5)
            assert (brief.status, brief.headers.get("Min-Expires")) == (423, "60")

            gone = await tcp_phone.register([tcp_contact], expires=0)
            assert gone.status == 200 and list(expires_of(gone)) == [f"sip:alice@{HOST}:{ua.port('udp')}"]
            star = await phone.register(["*"], expires=0)
            assert star.status == 200 and star.headers.get_all("Contact") == []
            assert env.engine.registered_contacts("alice") == []
    everything = [*phone.responses, *wrong.responses, *tcp_phone.responses]
    for response in everything:
        assert PASSWORD not in response.to_bytes().decode()
    assert any(e["event"] == "registered" for e in logs)  # the capture did see the registrar
    assert PASSWORD not in repr(logs) and "Authorization" not in repr(logs)


async def test_two_registered_contacts_ring_in_parallel_first_answer_wins(tmp_path: Path, make_sipp) -> None:
    ringing = await make_sipp("uas_noanswer.xml", name="desk")
    answering = await make_sipp("uas_answer.xml", name="mobile", extra=["-d", "500"])
    with structlog.testing.capture_logs() as logs:
        async with EngineEnv(tmp_path, **USERS) as env, Phone() as caller:
            for sipp in (ringing, answering):
                trace = await sipp_register(make_sipp, env, sipp.port, 3600, name=f"reg{sipp.port}")
                statuses = [m.status for m in trace if m.direction == "received"]
                assert statuses == [401, 200]
                assert [m for m in trace if m.status == 401][0].header("WWW-Authenticate").find("MD5") > 0
                ok = [m for m in trace if m.status == 200][0]
                assert f"sip:alice@{HOST}:{sipp.port}>;expires=" in " ".join(ok.headers("Contact"))
            assert env.engine is not None
            assert sorted(env.engine.registered_contacts("alice")) == sorted(
                f"sip:alice@{HOST}:{p}" for p in (ringing.port, answering.port))

            env.xml("/answer", DIAL_ALICE)
            env.xml("/dial-status", "")
            await caller.dial(env.uri)  # from +15557770000: not a configured user, so not challenged
            [req] = await env.app.wait_for("/dial-status", count=1, timeout=25)
            assert req.signature_valid(AUTH_TOKEN)
            assert req.params["DialStatus"] == "completed"
            assert req.params["DialBLegUUID"]
            for sipp in (ringing, answering):
                result = await sipp.wait(15)
                assert result.returncode == 0, result.describe()  # the desk phone got CANCEL and ACKed 487
                invite = [m for m in parse_trace(result.messages) if m.direction == "received"][0]
                assert invite.method == "INVITE" and invite.first_line.startswith(
                    f"INVITE sip:alice@{HOST}:{sipp.port} ")
            desk = [m.method for m in parse_trace((await ringing.wait(1)).messages) if m.direction == "received"]
            assert "CANCEL" in desk
    assert PASSWORD not in repr(logs)


async def test_expired_registration_dial_fails_user_not_registered_2020(tmp_path: Path, make_sipp) -> None:
    async with EngineEnv(tmp_path, **USERS) as env, Phone() as caller:
        assert env.engine is not None
        env.engine.registrar.min_expires = 1  # the default (60 s) would answer 423 Interval Too Brief
        trace = await sipp_register(make_sipp, env, 5999, 1, name="reg_short")
        ok = [m for m in trace if m.status == 200][0]
        assert ok.headers("Contact") == [f"<sip:alice@{HOST}:5999>;expires=1"]
        assert env.engine.registered_contacts("alice") == [f"sip:alice@{HOST}:5999"]
        await asyncio.sleep(1.5)
        assert env.engine.registered_contacts("alice") == []

        env.xml("/answer", DIAL_ALICE)
        env.xml("/dial-status", "<Hangup/>")
        await caller.dial(env.uri)
        [req] = await env.app.wait_for("/dial-status", count=1, timeout=15)
        p = req.params
        assert (p["DialStatus"], p["DialHangupCause"], p["DialHangupCauseCode"]) == (
            "failed", "USER_NOT_REGISTERED", "2020")


async def test_unregister_with_expires_zero_then_dial_fails(tmp_path: Path, make_sipp) -> None:
    async with EngineEnv(tmp_path, **USERS) as env, Phone() as caller:
        assert env.engine is not None
        await sipp_register(make_sipp, env, 5998, 3600, name="reg_on")
        assert env.engine.registered_contacts("alice") == [f"sip:alice@{HOST}:5998"]
        trace = await sipp_register(make_sipp, env, 5998, 0, name="reg_off")
        assert [m for m in trace if m.status == 200][0].headers("Contact") == []
        assert env.engine.registered_contacts("alice") == []

        env.xml("/answer", DIAL_ALICE)
        env.xml("/dial-status", "<Hangup/>")
        await caller.dial(env.uri)
        [req] = await env.app.wait_for("/dial-status", count=1, timeout=15)
        assert (req.params["DialHangupCause"], req.params["DialHangupCauseCode"]) == ("USER_NOT_REGISTERED", "2020")


async def test_sipp_with_wrong_password_is_not_registered(tmp_path: Path, make_sipp) -> None:
    async with EngineEnv(tmp_path, **USERS) as env:
        reg = await make_sipp("uac_register.xml", name="reg_wrong", remote=f"{HOST}:{env.sip_port}",
                              subs={"USER": "alice", "CONTACT_PORT": 5997, "EXPIRES": 3600},
                              extra=["-au", "alice", "-ap", "wrong-password", "-recv_timeout", "3000"])
        result = await reg.wait(15)
        assert result.returncode != 0  # the second REGISTER got 401 again, not 200
        statuses = [m.status for m in parse_trace(result.messages) if m.direction == "received"]
        assert statuses[:2] == [401, 401]
        assert env.engine is not None and env.engine.registered_contacts("alice") == []
