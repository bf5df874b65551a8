"""Logs: one JSON event per line on stderr, call_uuid carried, secrets never written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import structlog

from engine.logs import add_secret, clear_secrets, configure_logging


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    structlog.contextvars.clear_contextvars()
    clear_secrets()
    yield
    structlog.contextvars.clear_contextvars()
    clear_secrets()
    structlog.reset_defaults()
    for handler in [h for h in root.handlers if h.get_name() == "softswitch"]:
        root.removeHandler(handler)
    root.setLevel(level)


def events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    captured = capsys.readouterr()
    assert captured.out == ""  # logs go to stderr only
    return [json.loads(line) for line in captured.err.splitlines()]


def test_json_event_per_line_with_level_iso_timestamp_and_bound_call_uuid(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True)
    log = structlog.get_logger()
    structlog.contextvars.bind_contextvars(call_uuid="3f1c0a6e-call-a")
    log.info("call.answered", leg="a")
    log.bind(call_uuid="9b2d-call-b").warning("call.ended", cause="NORMAL_CLEARING")
    first, second = events(capsys)
    assert (
        first["event"] == "call.answered" and first["call_uuid"] == "3f1c0a6e-call-a" and first["leg"] == "a"
    )
    assert first["level"] == "info"
    assert datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert (second["event"], second["call_uuid"], second["level"]) == ("call.ended", "9b2d-call-b", "warning")


def test_not_a_tty_means_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()  # pytest's captured stderr is not a TTY
    structlog.get_logger().info("engine.started", sip="udp:127.0.0.1:5080")
    [event] = events(capsys)
    assert event["event"] == "engine.started"


def test_level_filters_events(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", json=True)
    log = structlog.get_logger()
    log.info("quiet")
    log.error("loud")
    assert [e["event"] for e in events(capsys)] == ["loud"]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("chatty")


def test_secret_keys_are_redacted_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    structlog.get_logger().info(
        "trunk.challenge",
        password="trunkpass",
        auth_token="tok-1",
        token="tok-2",
        Secret="tok-3",
        sipAuthPassword="tok-4",
        headers={"Authorization": 'Digest username="u", response="abc"', "Proxy-Authorization": "Digest x"},
        creds=[{"password": "tok-5"}],
        username="trunkuser",
    )
    [event] = events(capsys)
    for key in ("password", "auth_token", "token", "Secret", "sipAuthPassword"):
        assert event[key] == "***"
    assert event["headers"] == {"Authorization": "***", "Proxy-Authorization": "***"}
    assert event["creds"] == [{"password": "***"}]
    assert event["username"] == "trunkuser"


def test_registered_secret_values_are_cut_from_every_string(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    add_secret("trunkpass-123")
    add_secret("change-me")
    add_secret("")  # ignored, or every string would vanish
    log = structlog.get_logger()
    log.info("sip.sent user=u pass=trunkpass-123", raw=b"X-Debug: change-me\r\n", note=["a change-me b"])
    try:
        raise RuntimeError("login failed with trunkpass-123")
    except RuntimeError:
        log.exception("trunk.failed")
    logging.getLogger("httpx").warning("POST http://app/answer?token=%s", "change-me")
    text = capsys.readouterr().err
    assert "trunkpass-123" not in text and "change-me" not in text
    sent, failed, stdlib = (json.loads(line) for line in text.splitlines())
    assert sent["event"] == "sip.sent user=u pass=***"
    assert sent["note"] == ["a *** b"]
    assert "***" in sent["raw"]
    assert "RuntimeError: login failed with ***" in failed["exception"]
    assert stdlib["event"] == "POST http://app/answer?token=***" and stdlib["logger"] == "httpx"


def test_stdlib_logs_carry_the_call_uuid(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    structlog.contextvars.bind_contextvars(call_uuid="c-1")
    logging.getLogger("engine.webhooks").warning("retrying")
    [event] = events(capsys)
    assert (event["event"], event["call_uuid"], event["level"]) == ("retrying", "c-1", "warning")


def test_configuring_twice_does_not_duplicate_stdlib_output(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    configure_logging(json=True)
    logging.getLogger("x").warning("once")
    assert len(events(capsys)) == 1


def test_console_renderer_also_redacts(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=False)
    add_secret("alice-secret-1")
    structlog.get_logger().info("user.registered", user="alice", password="pw-xyz", note="alice-secret-1")
    err = capsys.readouterr().err
    assert "user.registered" in err and "alice" in err
    assert "pw-xyz" not in err and "alice-secret-1" not in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])
