"""The REST API (engine/rest.py) driven by the real plivo SDK: `plivo.RestClient` pointed at the engine (its base
URL constants overridden), placing calls through SIPp trunks, listing and reading them, transferring and hanging them
up; plus Plivo-shaped errors for raw HTTP requests."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import aiohttp
import plivo
import pytest
from engine_env import AUTH_TOKEN, EngineEnv, Phone, carrier_trunk
from plivo import exceptions as plivo_errors
from plivo.rest import client as plivo_client

pytestmark = pytest.mark.integration

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"  # engine/defaults.toml's http.auth_id (EngineEnv keeps it)
FROM = "+15550001111"
TO = "15551230000"


@pytest.fixture
def sdk_at(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`sdk_at(env, token=...)` -> a plivo RestClient whose API base URL is the engine's."""

    def make(env: EngineEnv, auth_id: str = AUTH_ID, token: str = AUTH_TOKEN) -> Any:
        assert env.engine is not None
        base = f"{env.engine.base_url}/v1/Account"
        for name in ("PLIVO_API_BASE_URI", "API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1",
                     "API_VOICE_BASE_URI_FALLBACK_2"):
            monkeypatch.setattr(plivo_client, name, base)
        return plivo.RestClient(auth_id, token)

    return make


def basic(login: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{login}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def sdk(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The SDK is synchronous (requests): run it off the event loop the engine runs on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_sdk_create_list_get_transfer_hangup(tmp_path: Path, make_sipp, sdk_at) -> None:
    trunk = await make_sipp("uas_trunk_auth_401_183_wait_bye.xml")  # exits 0 only if our BYE comes within 10 s
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port)) as env:
        env.xml("/answer", '<Speak>Please hold.</Speak><Wait length="30"/>')
        env.xml("/transfer", '<Speak>You were transferred.</Speak><Wait length="30"/>')
        env.app.route("/ring", "")
        client = sdk_at(env)
        created = await sdk(client.calls.create, from_=FROM, to_=TO, answer_url=env.app.url("/answer"),
                            hangup_url=env.app.url("/hangup"), ring_url=env.app.url("/ring"),
                            sip_headers="Tenant=acme", time_limit=60)
        assert created.message == "call fired" and created.api_id
        request_uuid = created.request_uuid
        [answer] = await env.app.wait_for("/answer", timeout=10)
        assert answer.signature_valid(AUTH_TOKEN)
        call_uuid = answer.params["CallUUID"]
        assert answer.params["ALegRequestUUID"] == request_uuid and answer.params["CallStatus"] == "in-progress"

        live = await sdk(client.live_calls.list_ids)
        assert live.calls == [call_uuid]
        details = await sdk(client.live_calls.get, call_uuid)
        assert (details.call_uuid, details.request_uuid, details.direction) == (call_uuid, request_uuid, "outbound")
        assert details.call_status == "in-progress" and details.to == TO and details["from"] == FROM.lstrip("+")
        got = await sdk(client.calls.get, call_uuid)
        assert got.call_uuid == call_uuid and got.call_status == "in-progress"
        by_request = await sdk(client.calls.get, request_uuid)  # a request_uuid finds its live call too
        assert by_request.call_uuid == call_uuid

        moved = await sdk(client.calls.update, call_uuid, legs="aleg", aleg_url=env.app.url("/transfer"),
                          aleg_method="GET")
        assert moved.message == "call transferred"
        [transfer] = await env.app.wait_for("/transfer", timeout=5)
        assert transfer.method == "GET" and transfer.params["CallUUID"] == call_uuid
        assert transfer.signature_valid(AUTH_TOKEN)
        assert transfer.time - answer.time < 8  # the 30 s Wait was broken off

        await sdk(client.calls.delete, call_uuid)
        hp = await env.hangup_callback()
        assert (hp["HangupCause"], hp["HangupSource"], hp["CallStatus"]) == ("NORMAL_CLEARING", "API Request",
                                                                             "completed")
        assert hp["RequestUUID"] == request_uuid and hp["CallUUID"] == call_uuid
        result = await trunk.wait(10)
        assert result.returncode == 0, result.describe()  # our BYE reached the trunk

        with pytest.raises(plivo_errors.ResourceNotFoundError):
            await sdk(client.live_calls.get, call_uuid)
        record = await sdk(client.calls.get, call_uuid)  # now from the call records
        assert record.call_direction == "outbound" and record.request_uuid == request_uuid
        assert record.hangup_cause_code == 4000 and record.hangup_source == "API Request"
        assert record.call_status == "completed" and record.answer_time and record.end_time
        listed = await sdk(client.calls.list, limit=5)
        assert [c.call_uuid for c in listed] == [call_uuid]
        assert (await sdk(client.live_calls.list_ids)).calls == []


async def test_sdk_cancel_while_ringing(tmp_path: Path, make_sipp, sdk_at) -> None:
    trunk = await make_sipp("uas_noanswer.xml")
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port, auth=False)) as env:
        env.app.route("/ring", "")
        client = sdk_at(env)
        created = await sdk(client.calls.create, from_=FROM, to_=TO, answer_url=env.app.url("/answer"),
                            hangup_url=env.app.url("/hangup"), ring_url=env.app.url("/ring"))
        [ring] = await env.app.wait_for("/ring", timeout=5)
        assert ring.params["CallStatus"] == "ringing" and ring.params["RequestUUID"] == created.request_uuid
        details = await sdk(client.calls.get, ring.params["CallUUID"])
        assert details.call_status == "ringing"
        await sdk(client.calls.cancel, created.request_uuid)  # DELETE /Request/{request_uuid}/
        hp = await env.hangup_callback()
        assert (hp["HangupCause"], hp["HangupCauseCode"], hp["HangupSource"], hp["CallStatus"]) == (
            "ORIGINATOR_CANCEL", "1000", "API Request", "cancel")
        result = await trunk.wait(10)
        assert result.returncode == 0, result.describe()  # it got our CANCEL and the ACK for its 487
        assert env.app.requests_to("/answer") == []


async def test_sdk_wrong_credentials_raise_the_auth_error(tmp_path: Path, sdk_at) -> None:
    async with EngineEnv(tmp_path) as env:
        wrong = sdk_at(env, token="not-the-token")
        with pytest.raises(plivo_errors.AuthenticationError):
            await sdk(wrong.calls.create, from_=FROM, to_=TO, answer_url=env.app.url("/answer"))
        other_account = sdk_at(env, auth_id="MAYYYYYYYYYYYYYYYYYY")
        with pytest.raises(plivo_errors.AuthenticationError):
            await sdk(other_account.live_calls.list_ids)
        client = sdk_at(env)
        with pytest.raises(plivo_errors.ResourceNotFoundError):
            await sdk(client.calls.delete, "0b7c4f6e-0000-4000-8000-000000000000")
        with pytest.raises(plivo_errors.ValidationError, match="only legs=aleg"):
            await sdk(client.calls.update, "0b7c4f6e-0000-4000-8000-000000000000", legs="bleg",
                      bleg_url=env.app.url("/x"))
        assert not env.engine.calls  # type: ignore[union-attr]


async def test_form_post_busy_call_hangup_goes_to_answer_url(tmp_path: Path, make_sipp) -> None:
    trunk = await make_sipp("uas_reject_486.xml")
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port, auth=False)) as env:
        env.xml("/answer", "<Speak>never</Speak>")
        assert env.engine is not None
        url = f"{env.engine.base_url}/v1/Account/{AUTH_ID}/Call/"
        async with aiohttp.ClientSession(headers=basic(AUTH_ID, AUTH_TOKEN)) as http:
            form = {"from": FROM, "to": TO, "answer_url": env.app.url("/answer"), "answer_method": "GET",
                    "time_limit": "60"}
            async with http.post(url, data=form) as resp:
                assert resp.status == 201
                body = await resp.json()
        assert body["message"] == "call fired" and body["request_uuid"] and body["api_id"]
        [hangup] = await env.app.wait_for("/answer", timeout=10)  # hangup_url defaults to answer_url
        assert hangup.method == "POST" and hangup.signature_valid(AUTH_TOKEN)  # with hangup_method (POST)
        assert (hangup.params["CallStatus"], hangup.params["HangupCause"]) == ("busy", "USER_BUSY")
        assert hangup.params["RequestUUID"] == body["request_uuid"]
        result = await trunk.wait(10)
        assert result.returncode == 0, result.describe()


async def test_errors_have_plivo_shape(tmp_path: Path) -> None:
    async with EngineEnv(tmp_path) as env:
        assert env.engine is not None
        base = f"{env.engine.base_url}/v1/Account/{AUTH_ID}"
        auth = basic(AUTH_ID, AUTH_TOKEN)
        cases = [
            ("POST", f"{base}/Call/", {"json": {"from": FROM, "to": TO}}, auth, 400, "answer_url parameter is missing"),
            ("POST", f"{base}/Call/", {"data": "not json", "headers": {"Content-Type": "application/json"}}, auth,
             400, "not valid JSON"),
            ("POST", f"{base}/Call/", {"json": {"from": FROM, "to": TO, "answer_url": "x"}}, None, 401,
             "authentication failed"),
            ("PUT", f"{base}/Call/", {}, auth, 405, "not allowed"),
            ("GET", f"{base}/Call/nope/", {}, auth, 404, "call not found"),
            ("GET", f"{base}/Call/?status=bogus", {}, auth, 400, "status"),
            ("GET", f"{base}/Call/?status=live&limit=0", {}, auth, 400, "limit"),
            ("GET", f"{base}/Call/nope/Play/", {}, auth, 404, "not found"),
            ("POST", f"{base}/Call/nope/", {"json": {"legs": "aleg", "aleg_url": env.app.url("/t")}}, auth, 404,
             "call not found"),
            ("POST", f"{base}/Call/nope/", {"json": {"legs": "aleg"}}, auth, 400, "aleg_url parameter is missing"),
        ]
        async with aiohttp.ClientSession() as http:
            for method, url, kwargs, creds, status, text in cases:
                headers = {**kwargs.pop("headers", {}), **(creds or {})}
                async with http.request(method, url, headers=headers, **kwargs) as resp:
                    body = await resp.json()
                    assert resp.status == status, (method, url, body)
                    assert set(body) == {"api_id", "error"} and text in body["error"], (method, url, body)
            async with http.get(f"{env.engine.base_url}/health") as resp:  # other paths keep their own shape
                assert resp.status == 200 and "status" in await resp.json()
        assert not env.engine.calls and env.app.requests == []


async def test_bulk_to_fires_one_call_per_destination(tmp_path: Path, sdk_at) -> None:
    async with EngineEnv(tmp_path, SOFTSWITCH_TRUNKS="[]") as env:  # no trunk: each call fails before its INVITE
        client = sdk_at(env)
        created = await sdk(client.calls.create, from_=FROM, to_="15551230001<15551230002",
                            answer_url=env.app.url("/answer"), hangup_url=env.app.url("/hangup"))
        assert isinstance(created.request_uuid, list) and len(set(created.request_uuid)) == 2
        hangups = await env.app.wait_for("/hangup", count=2, timeout=10)
        assert {h.params["RequestUUID"] for h in hangups} == set(created.request_uuid)
        assert {h.params["To"] for h in hangups} == {"15551230001", "15551230002"}
        assert all(h.params["CallStatus"] == "failed" and h.signature_valid(AUTH_TOKEN) for h in hangups)


async def test_transfer_breaks_off_an_inbound_calls_verb(tmp_path: Path, sdk_at) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Speak>Please wait.</Speak><Wait length="30"/><Speak>never reached</Speak>')
        env.xml("/transfer", "<Speak>You have been moved to another application.</Speak><Hangup/>")
        client = sdk_at(env)
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        [answer] = env.app.requests_to("/answer")
        call_uuid = answer.params["CallUUID"]
        assert (await sdk(client.live_calls.list_ids, call_direction="inbound")).calls == [call_uuid]
        await asyncio.sleep(0.5)
        heard_before = phone.heard.loud_frames()
        await sdk(client.calls.update, call_uuid, legs="aleg", aleg_url=env.app.url("/transfer"))
        await asyncio.wait_for(phone.ended.wait(), 15)  # the transferred document spoke, then hung up
        [transfer] = env.app.requests_to("/transfer")
        assert transfer.method == "POST" and transfer.params["CallUUID"] == call_uuid
        assert transfer.params["Direction"] == "inbound" and transfer.signature_valid(AUTH_TOKEN)
        assert transfer.time - answer.time < 10
        assert phone.heard.loud_frames() > heard_before + 25  # the new document's Speak reached the caller
        hp = await env.hangup_callback()
        assert hp["CallUUID"] == call_uuid and hp["HangupCause"] == "NORMAL_CLEARING"
        record = await env.engine.store.get_call(call_uuid)  # type: ignore[union-attr]
        assert record is not None and "transfer" in [e["event"] for e in record.timeline]


async def test_transfer_to_an_unreachable_url_ends_the_call_with_7013(tmp_path: Path, sdk_at) -> None:
    async with EngineEnv(tmp_path) as env, Phone() as phone:
        env.xml("/answer", '<Speak>Please wait.</Speak><Wait length="30"/>')
        env.app.fail("/broken", status=500)
        client = sdk_at(env)
        await phone.dial(env.uri)
        await asyncio.wait_for(phone.answered.wait(), 10)
        call_uuid = env.app.requests_to("/answer")[0].params["CallUUID"]
        await sdk(client.calls.update, call_uuid, legs="aleg", aleg_url=env.app.url("/broken"))
        await asyncio.wait_for(phone.ended.wait(), 15)
        hp = await env.hangup_callback()
        assert (hp["HangupCause"], hp["HangupCauseCode"]) == ("TRANSFER_URL_ERROR", "7013")


async def test_transfer_while_ringing_replaces_the_answer_url(tmp_path: Path, make_sipp, sdk_at) -> None:
    trunk = await make_sipp("uas_trunk_auth_401_183_wait_bye.xml")  # 183 for 1.5 s, 200, then waits for our BYE
    async with EngineEnv(tmp_path, **carrier_trunk(trunk.port)) as env:
        env.xml("/answer", '<Wait length="30"/>')
        env.xml("/transfer", '<Speak>Transferred before the answer.</Speak><Wait length="1"/>')
        env.app.route("/ring", "")
        client = sdk_at(env)
        await sdk(client.calls.create, from_=FROM, to_=TO, answer_url=env.app.url("/answer"),
                  hangup_url=env.app.url("/hangup"), ring_url=env.app.url("/ring"))
        [ring] = await env.app.wait_for("/ring", timeout=5)
        moved = await sdk(client.calls.update, ring.params["CallUUID"], legs="aleg",
                          aleg_url=env.app.url("/transfer"))
        assert moved.message == "call transferred"
        [transfer] = await env.app.wait_for("/transfer", timeout=10)
        assert transfer.params["CallStatus"] == "in-progress" and transfer.params["Direction"] == "outbound"
        hp = await env.hangup_callback()  # the transferred document ran to its end
        assert hp["HangupCauseCode"] == "4010" and hp["CallUUID"] == ring.params["CallUUID"]
        assert env.app.requests_to("/answer") == []
        result = await trunk.wait(10)
        assert result.returncode == 0, result.describe()
