"""Logging: structlog to stderr, one JSON event per line (console renderer on a TTY), secrets redacted.

``configure_logging()`` once at start; then ``structlog.get_logger()`` anywhere, with ``call_uuid`` bound
through ``structlog.contextvars.bind_contextvars(call_uuid=...)`` (or ``log.bind``) so every event of a call
carries it. Standard-library loggers (httpx, asyncio, ...) go through the same renderer and redaction.

Redaction, on every event: a key named password, auth_token, token, secret, authorization or
proxy-authorization (any case, ``_`` or ``-``), or any key containing "password" or "secret", has its value
replaced by ``***``, also inside nested dicts and lists; every value registered with ``add_secret`` (config
passwords, the auth token) is replaced by ``***`` wherever it appears inside a string or bytes value.
This module must not read config or decide what to log; it only shapes and guards what others log.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

__all__ = ["REDACTED", "add_secret", "clear_secrets", "configure_logging", "redact_secrets"]

REDACTED = "***"
_SECRET_KEY_NAMES = frozenset(
    {"password", "auth-token", "token", "secret", "authorization", "proxy-authorization"}
)
_SECRET_KEY_PARTS = ("password", "secret")
_NOISY_LOGGERS = ("httpx", "httpcore")
_HANDLER_NAME = "softswitch"

_secrets: set[str] = set()
_secret_text: re.Pattern[str] | None = None
_secret_bytes: re.Pattern[bytes] | None = None


def add_secret(value: str) -> None:
    """Redact ``value`` from every string (and bytes) value of every later event. Empty values are ignored."""
    global _secret_text, _secret_bytes
    if not value or value in _secrets:
        return
    _secrets.add(value)
    ordered = sorted(
        _secrets, key=len, reverse=True
    )  # longest first: a secret inside another is not half-hidden
    _secret_text = re.compile("|".join(re.escape(s) for s in ordered))
    _secret_bytes = re.compile(b"|".join(re.escape(s.encode()) for s in ordered))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secret_text, _secret_bytes
    _secrets.clear()
    _secret_text = _secret_bytes = None


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _is_secret_name(key)


@functools.lru_cache(maxsize=4096)
def _is_secret_name(key: str) -> bool:
    """Cached: events use a few dozen distinct keys, and this runs for every key of every event."""
    name = key.lower().replace("_", "-")
    return name in _SECRET_KEY_NAMES or any(part in name for part in _SECRET_KEY_PARTS)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _secret_text.sub(REDACTED, value) if _secret_text is not None else value
    if isinstance(value, bytes):
        return _secret_bytes.sub(REDACTED.encode(), value) if _secret_bytes is not None else value
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: secret-named keys become ``***``; registered secret values are cut out."""
    text = _secret_text
    for key, value in event_dict.items():
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        elif type(value) is str:  # the common case, inline
            if text is not None:
                event_dict[key] = text.sub(REDACTED, value)
        elif not isinstance(value, int | float | bool | None):
            event_dict[key] = _redact(value)
    return event_dict


class _Stderr:
    """``sys.stderr`` looked up at every write, so a replaced stderr (pytest's capture) is the one used."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_stderr = cast(TextIO, _Stderr())


def _shared_factory(logger: Any) -> Any:
    def factory(*args: Any) -> Any:
        return logger

    return factory


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r} (debug, info, warning, error, critical)")
    return number


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    """Send structlog and standard-library logs to stderr at ``level``: JSON lines when stderr is not a TTY
    (or ``json=True``), the console renderer otherwise. Timestamps are ISO 8601 UTC; every event has a
    ``level``."""
    number = _level_number(level)
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    # In JSON the traceback becomes an "exception" string before redaction, so secrets are cut from it too.
    tail: list[Any] = [structlog.processors.format_exc_info] if json else []
    tail += [redact_secrets, renderer]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        # One WriteLogger for every bound logger (the factory's default is a new one per logger: one more object
        # per `bind`, i.e. several per call kept in the collector's heap); its lock serialises the lines anyway.
        logger_factory=_shared_factory(structlog.WriteLogger(file=_stderr)),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(_stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in _NOISY_LOGGERS:  # one INFO line per HTTP request is too much at scale
        logging.getLogger(name).setLevel(max(number, logging.WARNING))
