"""`softswitch check-xml` and `softswitch demo` as users run them.

check-xml: exit codes (0 valid, 1 invalid, 2 unreadable), one line per error naming line, element and attribute, URLs
served by a real local HTTP server (GET, POST with parameters, HTTP errors), stdin and --json; every document of the
bundled example app passes it.
demo: `python -m engine.cli demo` as a subprocess exits 0 and its timeline names every seed example.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from engine.cli import main
from engine.example_app import NUMBERS, ExampleApp, business_open
from tests.helpers.webapp import WebApp

ROOT = Path(__file__).resolve().parents[2]

VALID = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Speak>Hello.</Speak>
  <Dial timeout="15" action="/dial-status/"><Number>15551230000</Number></Dial>
  <Hangup/>
</Response>
"""

INVALID = """<Response>
  <Speak lop="2">Hello.</Speak>
  <Dial timeout="abc" sip_auth_username="x"><Number>15551230000</Number></Dial>
  <Foo/>
</Response>
"""


def run_cli(*args: str, stdin: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


async def run_cli_async(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    """The CLI as a subprocess while this event loop keeps serving (the local app answers it)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "engine.cli", *args, env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- check-xml: files ---------------------------------------------------------------------------------------------
def test_valid_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "answer.xml"
    doc.write_text(VALID)
    assert main(["check-xml", str(doc)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"{doc}: valid (3 elements)"


def test_invalid_file_prints_each_error_with_line_element_attribute_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "bad.xml"
    doc.write_text(INVALID)
    assert main(["check-xml", str(doc)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"{doc}:2: <Speak> attribute 'lop': unknown attribute (known: voice, language, loop)",
        f"{doc}:3: <Dial> attribute 'timeout': expected an integer, got 'abc'",
        f"{doc}:3: <Dial> attribute 'sip_auth_username': did you mean 'sipAuthUsername'? attribute names are "
        "camelCase and case-sensitive",
        f"{doc}:4: <Foo>: unknown element",
        f"{doc}: 4 errors",
    ]


def test_malformed_xml_gives_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "broken.xml"
    doc.write_text("<Response>\n  <Speak>hi\n</Response>\n")
    assert main(["check-xml", str(doc)]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{doc}:3:") and "malformed XML" in first


def test_missing_file_exits_2_and_other_targets_are_still_checked(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.xml"
    good.write_text(VALID)
    bad = tmp_path / "bad.xml"
    bad.write_text(INVALID)
    assert main(["check-xml", str(tmp_path / "nope.xml"), str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert f"{tmp_path / 'nope.xml'}: cannot check: No such file or directory" in captured.err
    assert f"{bad}: 4 errors" in captured.out and f"{good}: valid (3 elements)" in captured.out


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "bad.xml"
    doc.write_text(INVALID)
    assert main(["check-xml", "--json", str(doc)]) == 1
    [report] = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    assert report["errors"][1] == {"line": 3, "column": None, "element": "Dial", "attribute": "timeout",
                                   "detail": "expected an integer, got 'abc'"}


def test_stdin_and_the_console_script_path() -> None:
    result = run_cli("check-xml", "-", stdin=INVALID.encode())
    assert result.returncode == 1, result.stderr
    assert "-:3: <Dial> attribute 'timeout': expected an integer, got 'abc'" in result.stdout
    ok = run_cli("check-xml", "-", stdin=VALID.encode())
    assert ok.returncode == 0 and ok.stdout.strip() == "-: valid (3 elements)"


def test_no_target_is_a_usage_error() -> None:
    result = run_cli("check-xml")
    assert result.returncode == 2 and "FILE|URL" in result.stderr


# -- check-xml: URLs ----------------------------------------------------------------------------------------------
async def test_url_get_post_params_and_http_errors() -> None:
    async with WebApp() as app:
        app.route("/answer", VALID)
        app.route("/bad", INVALID)
        app.route("/by-caller", lambda req: (200, VALID if req.params.get("From") == "15557770000" else INVALID))
        app.fail("/down", status=500)

        code, out, _ = await run_cli_async("check-xml", app.url("/answer"))
        assert code == 0 and out.strip() == f"{app.url('/answer')}: valid (3 elements)"
        assert app.requests_to("/answer")[0].method == "GET"

        code, out, _ = await run_cli_async("check-xml", app.url("/bad"))
        assert code == 1
        assert f"{app.url('/bad')}:3: <Dial> attribute 'timeout': expected an integer, got 'abc'" in out

        code, out, _ = await run_cli_async("check-xml", "--method", "POST", "--param", "From=15557770000",
                                           "--param", "CallUUID=abc", app.url("/by-caller"))
        assert code == 0, out
        [req] = app.requests_to("/by-caller")
        assert req.method == "POST" and req.form == {"From": "15557770000", "CallUUID": "abc"}

        code, out, err = await run_cli_async("check-xml", app.url("/down"))
        assert code == 2 and "HTTP 500" in err

        code, out, err = await run_cli_async("check-xml", app.url("/nowhere"))
        assert code == 2 and "HTTP 404" in err

        port = app.port
    code, out, err = await run_cli_async("check-xml", "--timeout", "2", f"http://127.0.0.1:{port}/answer")
    assert code == 2 and "cannot check" in err  # the server is gone: connection refused


async def test_every_document_of_the_bundled_example_app_passes_check_xml() -> None:
    """The example app (engine.example_app) as check-xml sees it: each seed by path, and /answer by called number."""
    app = await ExampleApp(port=0).start()
    try:
        urls = [app.url(f"/seed/{seed}") for seed in ("1", "2", "3", "5", "6", "6-voicemail", "7")]
        urls += [app.url("/seed/4?at=2024-01-06T12:00"), app.url("/seed/4?at=2024-01-08T10:00")]
        code, out, err = await run_cli_async("check-xml", *urls)
        assert code == 0, out + err
        assert out.count(": valid (") == len(urls)
        for number in (*NUMBERS, "999"):
            code, out, err = await run_cli_async("check-xml", "--method", "POST", "--param", f"To={number}",
                                                 app.url("/answer"))
            assert code == 0, (number, out, err)
        code, _, err = await run_cli_async("check-xml", app.url("/seed/4?at=yesterday"))
        assert code == 2 and "HTTP 400" in err
        assert {r.path for r in app.requests} >= {"/answer", "/seed/1", "/seed/4"}
    finally:
        await app.stop()


def test_business_hours() -> None:
    assert business_open(datetime(2024, 1, 8, 10, 0)) and business_open(datetime(2024, 1, 12, 16, 59))
    assert not business_open(datetime(2024, 1, 6, 12, 0))  # Saturday
    assert not business_open(datetime(2024, 1, 8, 17, 0)) and not business_open(datetime(2024, 1, 8, 8, 59))


# -- demo ---------------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_demo_runs_every_seed_example_and_exits_0() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Speak)")
    result = run_cli("demo", timeout=60)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    out = result.stdout
    for key in ("1", "2", "3", "4-closed", "4-open", "5", "6", "6-voicemail", "7"):
        assert f"── seed {key}: " in out and f"=> seed {key}: as expected" in out
    assert "demo: 9 of 9 examples behaved as expected" in out
    # the timeline shows SIP on the wire, verbs and callbacks
    for fragment in ("SIP      caller → engine  INVITE", "carrier → engine  401 Unauthorized", "verb     Speak",
                     "verb     Dial", "603 Rejected", "183 Session Progress", "callback hangup NORMAL_CLEARING",
                     "callback dial action /dial-status/  DialStatus=busy", "beep detected"):
        assert fragment in out, fragment
    assert "FAIL" not in out


@pytest.mark.integration
def test_demo_only_and_unknown_example() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Speak)")
    result = run_cli("demo", "--only", "5", "--json", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "── seed 5: " in result.stdout and "── seed 2: " not in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == [{"seed": "5", "call_uuid": summary[0]["call_uuid"], "ok": True}]
    unknown = run_cli("demo", "--only", "42")
    assert unknown.returncode == 2 and "no example matches" in unknown.stderr
