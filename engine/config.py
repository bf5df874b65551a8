"""Typed, validated configuration: embedded defaults, a TOML file over them, then environment overrides.

What lives here: the frozen config dataclasses, loading and merging, the ``SOFTSWITCH_<SECTION>__<KEY>``
overrides, and every check on values. A config that cannot be used raises ``ConfigError`` whose message is one
line naming where the value came from (file or environment variable), the section and the key.
What does not: anything that acts on the config (sockets, HTTP, logging). This module never logs, and never
puts a secret (password, auth_token) into an error message or a repr.

Merge rules: keys of [sip], [http], [inbound], [limits] and [storage] override the defaults one by one;
[[trunks]] and [[users]], when a file has them, replace the default lists whole. Environment overrides:

    SOFTSWITCH_SIP__LISTEN='["udp:0.0.0.0:5080"]'      a key of a table (TOML value, else a plain string)
    SOFTSWITCH_INBOUND__NUMBERS__14155550100__ANSWER_URL=http://...      a key of one number's application
    SOFTSWITCH_TRUNKS__CARRIER__PASSWORD=...           a key of the trunk named "carrier" (added if missing)
    SOFTSWITCH_USERS__ALICE__PASSWORD=...              a key of the user "alice" (added if missing)
    SOFTSWITCH_TRUNKS='[{name = "t", uri = "sip:..."}]'   the whole list (also SOFTSWITCH_USERS)

Variables starting ``SOFTSWITCH_`` without ``__`` are not config overrides (``SOFTSWITCH_TRUNKS`` and
``SOFTSWITCH_USERS`` excepted) and are left alone.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, get_type_hints
from urllib.parse import urlsplit

__all__ = [
    "Config",
    "ConfigError",
    "HttpConfig",
    "InboundApp",
    "InboundConfig",
    "LimitsConfig",
    "SipConfig",
    "StorageConfig",
    "TrunkConfig",
    "UserConfig",
    "load_config",
    "parse_listen",
]

ENV_PREFIX = "SOFTSWITCH_"
DEFAULTS_LABEL = "engine/defaults.toml"
SECRET_KEYS = frozenset({"password", "auth_token"})
TRANSPORTS = ("udp", "tcp")
METHODS = ("GET", "POST")


class ConfigError(ValueError):
    """A config that cannot be used. ``message`` is one line: where, [section], key, what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- the typed config ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SipConfig:
    listen: tuple[str, ...]
    """Where SIP is received: ``udp:HOST:PORT`` / ``tcp:HOST:PORT``."""
    public_address: str
    """The address written into Via, Contact and SDP."""
    domain: str
    """SIP domain of the registered users."""
    rtp_port_min: int
    rtp_port_max: int

    def listen_specs(self) -> list[tuple[str, str, int]]:
        """``(transport, host, port)`` for each listen entry; IPv6 hosts come without brackets."""
        return [parse_listen(spec) for spec in self.listen]


@dataclass(frozen=True)
class HttpConfig:
    listen: str
    """``HOST:PORT`` of the REST API, /health, /metrics."""
    auth_id: str
    auth_token: str = field(repr=False)
    """HTTP Basic password of the REST API and the webhook signing key."""

    def listen_address(self) -> tuple[str, int]:
        """``(host, port)`` of ``listen``; an IPv6 host comes without brackets."""
        return split_host_port(self.listen)


@dataclass(frozen=True)
class InboundApp:
    """The application that answers a call: where its XML comes from and where its callbacks go."""

    answer_url: str
    answer_method: str = "POST"
    hangup_url: str = ""
    """Empty: no hangup callback."""
    fallback_url: str = ""
    """Empty: no fallback."""


@dataclass(frozen=True)
class InboundConfig(InboundApp):
    """The application for inbound calls, with per-called-number applications in ``numbers``."""

    numbers: Mapping[str, InboundApp] = field(default_factory=lambda: types.MappingProxyType({}))

    def app_for(self, number: str) -> InboundApp:
        """The application of the called ``number`` (exact match), else the default one."""
        return self.numbers.get(number, self)


@dataclass(frozen=True)
class TrunkConfig:
    name: str
    uri: str
    """``sip:`` / ``sips:`` URI the INVITE goes to (``;transport=tcp`` for TCP)."""
    prefixes: tuple[str, ...] = ()
    default: bool = False
    username: str | None = None
    """Digest username for trunks that challenge (401/407); set with ``password``."""
    password: str | None = field(default=None, repr=False)
    whatsapp: bool = False
    """This trunk carries WhatsApp voice calls."""


@dataclass(frozen=True)
class UserConfig:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class LimitsConfig:
    max_calls: int
    max_cps: int
    max_loop_lag_ms: int = 100
    """New calls are refused (503) while the event loop runs later than this on average (0: never)."""


@dataclass(frozen=True)
class StorageConfig:
    path: str
    """SQLite database: call records and the callback outbox."""
    recordings_dir: str


@dataclass(frozen=True)
class Config:
    sip: SipConfig
    http: HttpConfig
    inbound: InboundConfig
    trunks: tuple[TrunkConfig, ...]
    users: tuple[UserConfig, ...]
    limits: LimitsConfig
    storage: StorageConfig

    def secrets(self) -> tuple[str, ...]:
        """Every secret value (auth_token, trunk and user passwords), e.g. for ``engine.logs.add_secret``."""
        values = [self.http.auth_token]
        values += [t.password for t in self.trunks if t.password]
        values += [u.password for u in self.users]
        return tuple(v for v in values if v)


_TABLES: dict[str, type] = {
    "sip": SipConfig,
    "http": HttpConfig,
    "inbound": InboundConfig,
    "limits": LimitsConfig,
    "storage": StorageConfig,
}
_ARRAYS: dict[str, tuple[type, str]] = {"trunks": (TrunkConfig, "name"), "users": (UserConfig, "username")}
_SECTIONS = ("sip", "http", "inbound", "trunks", "users", "limits", "storage")


# --- listen specs and URLs ----------------------------------------------------------------------------------


def split_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` → ``(host, port)``; raises ValueError with the reason."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT")
        if ":" in host:
            raise ValueError("an IPv6 host needs brackets: [HOST]:PORT")
    if not host or any(c.isspace() for c in host):
        raise ValueError("expected HOST:PORT with a non-empty host")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("port must be a number in 1-65535")
    return host, int(port_text)


def parse_listen(spec: str) -> tuple[str, str, int]:
    """``udp:HOST:PORT`` / ``tcp:HOST:PORT`` → ``(transport, host, port)``; ValueError with the reason."""
    transport, sep, rest = spec.partition(":")
    if not sep or transport not in TRANSPORTS:
        raise ValueError('expected "udp:HOST:PORT" or "tcp:HOST:PORT"')
    host, port = split_host_port(rest)
    return transport, host, port


def _is_http_url(text: str) -> bool:
    if any(c.isspace() for c in text):
        return False
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


# --- messages -----------------------------------------------------------------------------------------------

_TYPE_WORDS: dict[object, str] = {
    str: "a string",
    str | None: "a string",
    int: "an integer",
    bool: "true or false",
    tuple[str, ...]: "an array of strings",
}


def _type_word(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _show(value: object, secret: bool = False) -> str:
    """A value for an error message: quoted and cut short, or only its type when it is a secret."""
    if secret:
        return _type_word(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _loc(path: tuple[Any, ...]) -> str:
    """``("trunks", 0, "uri")`` → ``[[trunks]] #1 uri``; the section part in brackets, then the key."""
    section = path[0]
    if section in _ARRAYS:
        head = f"[[{section}]]" if len(path) == 1 else f"[[{section}]] #{path[1] + 1}"
        rest = path[2:]
    elif section == "inbound" and len(path) >= 3 and path[1] == "numbers":
        head = f'[inbound.numbers."{path[2]}"]'
        rest = path[3:]
    else:
        head = f"[{section}]"
        rest = path[1:]
    return f"{head} {'.'.join(map(str, rest))}" if rest else head


class _Origins:
    """Where each raw value came from (file, environment variable or the embedded defaults), for messages."""

    def __init__(self) -> None:
        self.by_path: dict[tuple[Any, ...], str] = {}

    def set(self, path: tuple[Any, ...], label: str) -> None:
        self.by_path[path] = label

    def drop_under(self, prefix: tuple[Any, ...]) -> None:
        for path in [p for p in self.by_path if p[: len(prefix)] == prefix]:
            del self.by_path[path]

    def of(self, *paths: tuple[Any, ...]) -> str:
        """The origin of the first path (or any prefix of it) that was set explicitly, else the defaults."""
        for path in paths:
            for n in range(len(path), 0, -1):
                if path[:n] in self.by_path:
                    return self.by_path[path[:n]]
        return DEFAULTS_LABEL

    def fail(self, path: tuple[Any, ...], problem: str, *related: tuple[Any, ...]) -> NoReturn:
        raise ConfigError(f"{self.of(path, *related)}: {_loc(path)}: {problem}")

    def require(self, ok: bool, path: tuple[Any, ...], problem: str, *related: tuple[Any, ...]) -> None:
        if not ok:
            self.fail(path, problem, *related)


# --- reading and merging ------------------------------------------------------------------------------------


def _read_defaults() -> dict[str, Any]:
    text = resources.files("engine").joinpath("defaults.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _read_file(path: Path, label: str) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{label}: cannot read config file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: invalid TOML: the file is not UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{label}: invalid TOML: {e}") from None


def _check_array_shape(section: str, value: object, label: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{label}: [[{section}]]: expected an array of tables, got {_type_word(value)}")
    return value


def _merge_file(raw: dict[str, Any], data: dict[str, Any], label: str, origins: _Origins) -> None:
    for section, value in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{label}: [{section}]: unknown section (known: {', '.join(_SECTIONS)})")
        if section in _ARRAYS:
            raw[section] = _check_array_shape(section, value, label)
            origins.set((section,), label)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: [{section}]: expected a table, got {_type_word(value)}")
        for key, item in value.items():
            raw[section][key] = item
            origins.set((section, key), label)


def _parse_env_value(text: str) -> object:
    """The TOML value ``text`` spells, or ``text`` itself when it is not one TOML value."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["v"] if parsed.keys() == {"v"} else text


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True}
_BOOL_WORDS |= {"false": False, "no": False, "off": False, "0": False}


def _coerce_env(text: str, hint: object) -> object:
    """An environment string as the field type wants it; what cannot convert stays a string (the type check
    then reports it)."""
    parsed = _parse_env_value(text)
    if hint is int:
        return parsed if isinstance(parsed, int) and not isinstance(parsed, bool) else text
    if hint is bool:
        return parsed if isinstance(parsed, bool) else _BOOL_WORDS.get(text.strip().lower(), text)
    if hint == tuple[str, ...]:
        if isinstance(parsed, list):
            return parsed
        spelled = parsed if isinstance(parsed, str) else text
        return [part.strip() for part in spelled.split(",") if part.strip()]
    return parsed if isinstance(parsed, str) else text  # str and str | None


def _hints(cls: type) -> dict[str, Any]:
    """Field name → type of a config dataclass, in field order."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], origins: _Origins) -> None:
    overrides: list[tuple[int, str, list[str]]] = []
    for name in env:
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        section = parts[0].lower()
        if len(parts) == 1 and section not in _ARRAYS:
            for known in _SECTIONS:
                if section.startswith(known + "_"):
                    key = section[len(known) + 1 :].upper()
                    raise ConfigError(
                        f"{name}: not a config override; did you mean {ENV_PREFIX}{known.upper()}__{key}?"
                    )
            continue
        overrides.append((len(parts), name, parts))
    for _, name, parts in sorted(overrides):
        _apply_one_env(raw, name, [parts[0].lower(), *parts[1:]], env[name], origins)


def _apply_one_env(raw: dict[str, Any], name: str, parts: list[str], text: str, origins: _Origins) -> None:
    section = parts[0]
    if section not in _SECTIONS:
        raise ConfigError(f"{name}: unknown section [{section}] (known: {', '.join(_SECTIONS)})")

    def unknown_key(cls: type, where: str, key: str) -> NoReturn:
        known = ", ".join(f.name for f in fields(cls) if f.name != "numbers")
        raise ConfigError(f"{name}: {where} {key}: unknown key (known: {known})")

    if section in _ARRAYS:
        cls, name_key = _ARRAYS[section]
        if len(parts) == 1:
            parsed = _parse_env_value(text)
            if not isinstance(parsed, list) or not all(isinstance(item, dict) for item in parsed):
                example = f'[{{{name_key} = "..."}}]'
                raise ConfigError(
                    f"{name}: [[{section}]]: expected a TOML array of inline tables, e.g. {example}"
                )
            raw[section] = parsed
            origins.drop_under((section,))
            origins.set((section,), name)
            return
        if len(parts) != 3 or not parts[1]:
            raise ConfigError(f"{name}: expected {ENV_PREFIX}{section.upper()}__<{name_key.upper()}>__<KEY>")
        selector, key = parts[1], parts[2].lower()
        hints = _hints(cls)
        if key not in hints:
            unknown_key(cls, f"[[{section}]] {selector.lower()!r}", key)
        items: list[dict[str, Any]] = raw[section]
        index = next(
            (i for i, item in enumerate(items) if str(item.get(name_key, "")).lower() == selector.lower()),
            None,
        )
        if index is None:
            items.append({name_key: selector.lower()})
            index = len(items) - 1
            origins.set((section, index), name)
        items[index][key] = _coerce_env(text, hints[key])
        origins.set((section, index, key), name)
        return

    cls = _TABLES[section]
    if section == "inbound" and len(parts) == 4 and parts[1].lower() == "numbers" and parts[2]:
        number, key = parts[2], parts[3].lower()
        hints = _hints(InboundApp)
        if key not in hints:
            unknown_key(InboundApp, f'[inbound.numbers."{number}"]', key)
        numbers = raw["inbound"].setdefault("numbers", {})
        if number not in numbers:
            numbers[number] = {}
            origins.set(("inbound", "numbers", number), name)
        numbers[number][key] = _coerce_env(text, hints[key])
        origins.set(("inbound", "numbers", number, key), name)
        return
    if len(parts) != 2 or not parts[1]:
        raise ConfigError(f"{name}: expected {ENV_PREFIX}{section.upper()}__<KEY>")
    key = parts[1].lower()
    hints = _hints(cls)
    if key not in hints or key == "numbers":
        unknown_key(cls, f"[{section}]", key)
    raw[section][key] = _coerce_env(text, hints[key])
    origins.set((section, key), name)


# --- building and checking ----------------------------------------------------------------------------------


def _type_ok(value: object, hint: object) -> bool:
    if hint is str or hint == str | None:
        return isinstance(value, str)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool)
    if hint == tuple[str, ...]:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise TypeError(f"no type check for {hint!r}")  # pragma: no cover - a new field type needs a rule here


def _build(cls: type, data: Mapping[str, Any], path: tuple[Any, ...], origins: _Origins) -> Any:
    """One dataclass from one raw table: unknown keys, missing keys and types checked, arrays made tuples."""
    hints = _hints(cls)
    for key in data:
        if key not in hints:
            known = ", ".join(hints)
            origins.fail((*path, key), f"unknown key (known: {known})")
    for f in fields(cls):
        if f.name not in data and f.default is MISSING and f.default_factory is MISSING:
            origins.fail(path, f"missing required key {f.name}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if key == "numbers":
            values[key] = _build_numbers(value, path, origins)
            continue
        if not _type_ok(value, hint):
            origins.fail(
                (*path, key), f"expected {_TYPE_WORDS[hint]}, got {_show(value, key in SECRET_KEYS)}"
            )
        values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _build_numbers(value: object, path: tuple[Any, ...], origins: _Origins) -> Mapping[str, InboundApp]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        origins.fail((*path, "numbers"), 'expected tables like [inbound.numbers."14155550100"]')
    apps = {}
    for number, table in value.items():
        if not number.strip():
            origins.fail((*path, "numbers"), "a number must not be empty")
        apps[number] = _build(InboundApp, table, (*path, "numbers", number), origins)
    return types.MappingProxyType(apps)


def _no_space(text: str) -> bool:
    return bool(text) and not any(c.isspace() for c in text)


def _check_sip(sip: SipConfig, origins: _Origins) -> None:
    origins.require(bool(sip.listen), ("sip", "listen"), "needs at least one entry")
    for spec in sip.listen:
        try:
            parse_listen(spec)
        except ValueError as e:
            origins.fail(("sip", "listen"), f"{e}, got {_show(spec)}")
    dup = next((s for i, s in enumerate(sip.listen) if s in sip.listen[:i]), None)
    origins.require(dup is None, ("sip", "listen"), f"{_show(dup)} is listed twice")
    for key in ("public_address", "domain"):
        value = getattr(sip, key)
        origins.require(
            _no_space(value), ("sip", key), f"expected a host name or address, got {_show(value)}"
        )
    for key in ("rtp_port_min", "rtp_port_max"):
        port = getattr(sip, key)
        origins.require(1024 <= port <= 65535, ("sip", key), f"must be in 1024-65535, got {port}")
    origins.require(
        sip.rtp_port_min % 2 == 0, ("sip", "rtp_port_min"), f"must be even, got {sip.rtp_port_min}"
    )
    origins.require(
        sip.rtp_port_min < sip.rtp_port_max,
        ("sip", "rtp_port_min"),
        f"must be less than rtp_port_max ({sip.rtp_port_min} >= {sip.rtp_port_max})",
        ("sip", "rtp_port_max"),
    )


def _check_http(http: HttpConfig, origins: _Origins) -> None:
    try:
        split_host_port(http.listen)
    except ValueError as e:
        origins.fail(("http", "listen"), f"{e}, got {_show(http.listen)}")
    origins.require(bool(http.auth_id), ("http", "auth_id"), "must not be empty")
    origins.require(bool(http.auth_token), ("http", "auth_token"), "must not be empty")


def _check_app(app: InboundApp, path: tuple[Any, ...], origins: _Origins) -> None:
    origins.require(
        _is_http_url(app.answer_url),
        (*path, "answer_url"),
        f"expected an http:// or https:// URL, got {_show(app.answer_url)}",
    )
    origins.require(
        app.answer_method in METHODS,
        (*path, "answer_method"),
        f'expected "GET" or "POST", got {_show(app.answer_method)}',
    )
    for key in ("hangup_url", "fallback_url"):
        url = getattr(app, key)
        origins.require(
            url == "" or _is_http_url(url),
            (*path, key),
            f'expected an http:// or https:// URL or "", got {_show(url)}',
        )


def _check_inbound(inbound: InboundConfig, origins: _Origins) -> None:
    _check_app(inbound, ("inbound",), origins)
    for number, app in inbound.numbers.items():
        _check_app(app, ("inbound", "numbers", number), origins)


_PREFIX_RE = re.compile(r"\+?[0-9]+")


def _check_trunks(trunks: tuple[TrunkConfig, ...], origins: _Origins) -> None:
    seen: set[str] = set()
    default_name: str | None = None
    for i, trunk in enumerate(trunks):
        path: tuple[Any, ...] = ("trunks", i)
        origins.require(
            _no_space(trunk.name), (*path, "name"), f"expected a name without spaces, got {_show(trunk.name)}"
        )
        origins.require(
            trunk.name.lower() not in seen, (*path, "name"), f"{_show(trunk.name)} is used by another trunk"
        )
        seen.add(trunk.name.lower())
        origins.require(
            trunk.uri.startswith(("sip:", "sips:")) and len(trunk.uri.split(":", 1)[1]) > 0,
            (*path, "uri"),
            f"must start with sip: or sips:, got {_show(trunk.uri)}",
        )
        for prefix in trunk.prefixes:
            origins.require(
                _PREFIX_RE.fullmatch(prefix) is not None,
                (*path, "prefixes"),
                f"expected digits with an optional leading +, got {_show(prefix)}",
            )
        if trunk.default:
            origins.require(
                default_name is None,
                (*path, "default"),
                f"more than one default trunk ({_show(default_name)} and {_show(trunk.name)})",
            )
            default_name = trunk.name
        if trunk.username is not None or trunk.password is not None:
            user_path, password_path = (*path, "username"), (*path, "password")
            problem = "must be set and non-empty when {} is"
            origins.require(bool(trunk.username), user_path, problem.format("password"), password_path)
            origins.require(bool(trunk.password), password_path, problem.format("username"), user_path)


def _check_users(users: tuple[UserConfig, ...], origins: _Origins) -> None:
    seen: set[str] = set()
    for i, user in enumerate(users):
        path: tuple[Any, ...] = ("users", i)
        origins.require(
            _no_space(user.username),
            (*path, "username"),
            f"expected a name without spaces, got {_show(user.username)}",
        )
        origins.require(
            user.username.lower() not in seen, (*path, "username"), f"{_show(user.username)} is listed twice"
        )
        seen.add(user.username.lower())
        origins.require(bool(user.password), (*path, "password"), "must not be empty")


def _check_limits(limits: LimitsConfig, origins: _Origins) -> None:
    for key in ("max_calls", "max_cps"):
        value = getattr(limits, key)
        origins.require(value >= 1, ("limits", key), f"must be at least 1, got {value}")
    origins.require(limits.max_loop_lag_ms >= 0, ("limits", "max_loop_lag_ms"),
                    f"must be 0 (off) or more, got {limits.max_loop_lag_ms}")


def _check_storage(storage: StorageConfig, origins: _Origins) -> None:
    for key in ("path", "recordings_dir"):
        origins.require(bool(getattr(storage, key).strip()), ("storage", key), "must not be empty")


_CHECKS: dict[str, Callable[[Any, _Origins], None]] = {
    "sip": _check_sip,
    "http": _check_http,
    "inbound": _check_inbound,
    "trunks": _check_trunks,
    "users": _check_users,
    "limits": _check_limits,
    "storage": _check_storage,
}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The config: embedded defaults, the TOML file at ``path`` merged over them, then ``SOFTSWITCH_*``
    overrides from ``env`` (``os.environ`` when None). Raises ``ConfigError`` (one line) when anything is
    wrong."""
    origins = _Origins()
    raw = _read_defaults()
    if path is not None:
        label = str(path)
        _merge_file(raw, _read_file(Path(path), label), label, origins)
    _apply_env(raw, os.environ if env is None else env, origins)

    built: dict[str, Any] = {}
    for section in _SECTIONS:
        if section in _ARRAYS:
            cls = _ARRAYS[section][0]
            built[section] = tuple(
                _build(cls, item, (section, i), origins) for i, item in enumerate(raw[section])
            )
        else:
            built[section] = _build(_TABLES[section], raw[section], (section,), origins)
        _CHECKS[section](built[section], origins)
    return Config(**built)
