"""Config: embedded defaults, a file over them, SOFTSWITCH_<SECTION>__<KEY> overrides, one-line errors."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from importlib import resources
from pathlib import Path

import pytest

from engine.config import Config, ConfigError, InboundApp, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "softswitch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: str | Path | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    message = str(info.value)
    assert message == info.value.message
    assert "\n" not in message, message
    return message


# --- defaults -----------------------------------------------------------------------------------------------


def test_engine_without_config_runs_on_the_documented_defaults() -> None:
    config = load_config(env={})
    assert isinstance(config, Config)
    assert config.sip.listen == ("udp:127.0.0.1:5080", "tcp:127.0.0.1:5080")
    assert config.sip.listen_specs() == [("udp", "127.0.0.1", 5080), ("tcp", "127.0.0.1", 5080)]
    assert (config.sip.public_address, config.sip.domain) == ("127.0.0.1", "127.0.0.1")
    assert (config.sip.rtp_port_min, config.sip.rtp_port_max) == (20000, 29999)
    assert config.http.listen == "127.0.0.1:8088"
    assert config.http.listen_address() == ("127.0.0.1", 8088)
    assert config.http.auth_id == "MAXXXXXXXXXXXXXXXXXX"
    assert config.http.auth_token == "change-me"
    assert config.inbound.answer_url == "http://127.0.0.1:8000/answer"
    assert config.inbound.answer_method == "POST"
    assert (config.inbound.hangup_url, config.inbound.fallback_url) == ("", "")
    assert dict(config.inbound.numbers) == {}
    [trunk] = config.trunks
    assert (trunk.name, trunk.uri, trunk.prefixes, trunk.default) == (
        "carrier",
        "sip:127.0.0.1:5090",
        (),
        True,
    )
    assert (trunk.username, trunk.password, trunk.whatsapp) == (None, None, False)
    [user] = config.users
    assert (user.username, user.password) == ("alice", "alice-secret-1")
    assert (config.limits.max_calls, config.limits.max_cps) == (2000, 1000)
    assert (config.storage.path, config.storage.recordings_dir) == ("var/softswitch.db", "var/recordings")


def test_configs_softswitch_toml_is_a_byte_identical_copy_of_the_embedded_defaults() -> None:
    embedded = resources.files("engine").joinpath("defaults.toml").read_bytes()
    assert (REPO / "configs" / "softswitch.toml").read_bytes() == embedded
    assert (REPO / "engine" / "defaults.toml").read_bytes() == embedded


def test_loading_the_defaults_file_explicitly_gives_the_same_config() -> None:
    assert load_config(REPO / "configs" / "softswitch.toml", env={}) == load_config(env={})


def test_trunk_example_config_loads() -> None:
    config = load_config(REPO / "configs" / "trunk.example.toml", env={})
    carrier = next(t for t in config.trunks if t.default)
    assert carrier.username and carrier.password
    assert [u.username for u in config.users] == ["alice", "bob"]


def test_config_is_frozen() -> None:
    config = load_config(env={})
    with pytest.raises(FrozenInstanceError):
        config.sip.domain = "x"  # type: ignore[misc]


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTSWITCH_LIMITS__MAX_CPS", "7")
    assert load_config().limits.max_cps == 7


# --- a file over the defaults -------------------------------------------------------------------------------


def test_file_keys_override_one_by_one_and_keep_the_other_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [sip]
        listen = ["udp:127.0.0.1:5099"]
        [limits]
        max_calls = 10
        """,
    )
    config = load_config(path, env={})
    assert config.sip.listen_specs() == [("udp", "127.0.0.1", 5099)]
    assert config.sip.rtp_port_min == 20000  # untouched key of a touched section
    assert config.limits == type(config.limits)(max_calls=10, max_cps=1000)
    assert config.http == load_config(env={}).http  # untouched section


def test_file_trunks_replace_the_default_trunks_and_users_stay(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[trunks]]
        name = "carrier2"
        uri = "sip:127.0.0.1:5092;transport=tcp"
        prefixes = ["1415", "+44"]
        username = "trunkuser"
        password = "trunkpass"
        [[trunks]]
        name = "wa"
        uri = "sips:wa.example.net"
        default = true
        whatsapp = true
        """,
    )
    config = load_config(path, env={})
    assert [t.name for t in config.trunks] == ["carrier2", "wa"]
    first, second = config.trunks
    assert first.prefixes == ("1415", "+44")
    assert (first.username, first.password, first.default, first.whatsapp) == (
        "trunkuser",
        "trunkpass",
        False,
        False,
    )
    assert (second.default, second.whatsapp, second.username) == (True, True, None)
    assert [u.username for u in config.users] == ["alice"]


def test_file_can_empty_the_trunk_and_user_lists(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "trunks = []\nusers = []\n"), env={})
    assert (config.trunks, config.users) == ((), ())


def test_per_number_inbound_apps(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [inbound]
        answer_url = "https://app.example.com/answer"
        hangup_url = "https://app.example.com/hangup"
        [inbound.numbers."14155550100"]
        answer_url = "https://app.example.com/sales"
        answer_method = "GET"
        """,
    )
    inbound = load_config(path, env={}).inbound
    sales = inbound.app_for("14155550100")
    assert sales == InboundApp(answer_url="https://app.example.com/sales", answer_method="GET")
    assert sales.hangup_url == ""  # a number's app is complete on its own: no inheritance
    assert inbound.app_for("14155550199") is inbound
    assert inbound.app_for("14155550199").hangup_url == "https://app.example.com/hangup"


# --- environment overrides ----------------------------------------------------------------------------------


def test_env_list_as_toml_array() -> None:
    config = load_config(env={"SOFTSWITCH_SIP__LISTEN": '["udp:127.0.0.1:5099", "tcp:[::1]:5098"]'})
    assert config.sip.listen_specs() == [("udp", "127.0.0.1", 5099), ("tcp", "::1", 5098)]


def test_env_list_as_comma_separated_string() -> None:
    config = load_config(env={"SOFTSWITCH_SIP__LISTEN": "udp:127.0.0.1:5099, tcp:127.0.0.1:5099"})
    assert config.sip.listen == ("udp:127.0.0.1:5099", "tcp:127.0.0.1:5099")
    assert load_config(env={"SOFTSWITCH_SIP__LISTEN": "udp:127.0.0.1:5099"}).sip.listen == (
        "udp:127.0.0.1:5099",
    )


def test_env_plain_string_and_quoted_toml_string() -> None:
    assert load_config(env={"SOFTSWITCH_HTTP__LISTEN": "127.0.0.1:9000"}).http.listen_address() == (
        "127.0.0.1",
        9000,
    )
    assert load_config(env={"SOFTSWITCH_HTTP__LISTEN": '"127.0.0.1:9001"'}).http.listen == "127.0.0.1:9001"


def test_env_string_that_looks_like_a_number_stays_a_string() -> None:
    assert load_config(env={"SOFTSWITCH_HTTP__AUTH_ID": "12345"}).http.auth_id == "12345"
    assert load_config(env={"SOFTSWITCH_SIP__DOMAIN": "2024-01-01"}).sip.domain == "2024-01-01"


def test_env_integer() -> None:
    assert load_config(env={"SOFTSWITCH_LIMITS__MAX_CALLS": "10"}).limits.max_calls == 10


@pytest.mark.parametrize(
    ("text", "expected"), [("true", True), ("false", False), ("yes", True), ("0", False)]
)
def test_env_boolean(text: str, expected: bool) -> None:
    config = load_config(env={"SOFTSWITCH_TRUNKS__CARRIER__WHATSAPP": text})
    assert config.trunks[0].whatsapp is expected


def test_env_sets_a_key_of_a_named_trunk_case_insensitively() -> None:
    config = load_config(
        env={
            "SOFTSWITCH_TRUNKS__CARRIER__USERNAME": "trunkuser",
            "SOFTSWITCH_TRUNKS__Carrier__PASSWORD": "tp",
        }
    )
    assert (config.trunks[0].username, config.trunks[0].password) == ("trunkuser", "tp")
    assert load_config(env={"SOFTSWITCH_TRUNKS__CARRIER__PREFIXES": "1415,1650"}).trunks[0].prefixes == (
        "1415",
        "1650",
    )


def test_env_adds_a_trunk_and_a_user_that_do_not_exist() -> None:
    config = load_config(
        env={
            "SOFTSWITCH_TRUNKS__BACKUP__URI": "sip:127.0.0.1:5094",
            "SOFTSWITCH_USERS__BOB__PASSWORD": "bob-pw",
        }
    )
    assert [(t.name, t.uri, t.default) for t in config.trunks][1] == ("backup", "sip:127.0.0.1:5094", False)
    assert [(u.username, u.password) for u in config.users] == [
        ("alice", "alice-secret-1"),
        ("bob", "bob-pw"),
    ]


def test_env_replaces_a_whole_list() -> None:
    config = load_config(env={"SOFTSWITCH_USERS": '[{username = "carol", password = "carol-pw"}]'})
    assert [u.username for u in config.users] == ["carol"]


def test_env_per_number_app() -> None:
    config = load_config(
        env={"SOFTSWITCH_INBOUND__NUMBERS__14155550100__ANSWER_URL": "http://127.0.0.1:8000/n"}
    )
    assert config.inbound.app_for("14155550100").answer_url == "http://127.0.0.1:8000/n"


def test_env_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_calls = 5\n")
    assert load_config(path, env={"SOFTSWITCH_LIMITS__MAX_CALLS": "6"}).limits.max_calls == 6


def test_softswitch_variables_without_double_underscore_are_not_overrides() -> None:
    assert load_config(
        env={"SOFTSWITCH_CONFIG": "/etc/x.toml", "SOFTSWITCH_LOG_LEVEL": "debug"}
    ) == load_config(env={})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SOFTSWITCH_LIMITS__MAX_CALLS": "abc"},
            'SOFTSWITCH_LIMITS__MAX_CALLS: [limits] max_calls: expected an integer, got "abc"',
        ),
        ({"SOFTSWITCH_SIPP__LISTEN": "x"}, "SOFTSWITCH_SIPP__LISTEN: unknown section [sipp]"),
        ({"SOFTSWITCH_SIP__LISTN": "x"}, "SOFTSWITCH_SIP__LISTN: [sip] listn: unknown key"),
        ({"SOFTSWITCH_SIP_LISTEN": "x"}, "did you mean SOFTSWITCH_SIP__LISTEN?"),
        (
            {"SOFTSWITCH_TRUNKS__CARRIER__URL": "x"},
            "SOFTSWITCH_TRUNKS__CARRIER__URL: [[trunks]] 'carrier' url: unknown key",
        ),
        (
            {"SOFTSWITCH_TRUNKS__CARRIER__DEFAULT": "maybe"},
            '[[trunks]] #1 default: expected true or false, got "maybe"',
        ),
        (
            {"SOFTSWITCH_SIP__RTP_PORT_MIN": "30000"},
            "SOFTSWITCH_SIP__RTP_PORT_MIN: [sip] rtp_port_min: must be less than",
        ),
        ({"SOFTSWITCH_USERS": "nope"}, "SOFTSWITCH_USERS: [[users]]: expected a TOML array of inline tables"),
        (
            {"SOFTSWITCH_TRUNKS__BACKUP__PREFIXES": "1"},
            "SOFTSWITCH_TRUNKS__BACKUP__PREFIXES: [[trunks]] #2: missing required key uri",
        ),
    ],
)
def test_bad_env_override_is_one_line_naming_the_variable(env: dict[str, str], expected: str) -> None:
    assert expected in load_error(env=env)


# --- validation ---------------------------------------------------------------------------------------------

BAD_FILES = [
    ('[sip]\nrtp_port_min = "abc"\n', '[sip] rtp_port_min: expected an integer, got "abc"'),
    ("[sipp]\nlisten = []\n", "[sipp]: unknown section"),
    ("[sip]\nlistn = []\n", "[sip] listn: unknown key"),
    ("sip = 5\n", "[sip]: expected a table"),
    ("[[sip]]\nlisten = []\n", "[sip]: expected a table"),
    ("[trunks]\nname = 'x'\n", "[[trunks]]: expected an array of tables"),
    ('[sip]\nlisten = "udp:127.0.0.1:5080"\n', "[sip] listen: expected an array of strings"),
    ("[sip]\nlisten = []\n", "[sip] listen: needs at least one entry"),
    ('[sip]\nlisten = ["tls:127.0.0.1:5061"]\n', '[sip] listen: expected "udp:HOST:PORT" or "tcp:HOST:PORT"'),
    ('[sip]\nlisten = ["udp:127.0.0.1"]\n', '[sip] listen: expected HOST:PORT, got "udp:127.0.0.1"'),
    ('[sip]\nlisten = ["udp:127.0.0.1:70000"]\n', "[sip] listen: port must be a number in 1-65535"),
    ('[sip]\nlisten = ["udp::1:5080"]\n', "[sip] listen: an IPv6 host needs brackets"),
    (
        '[sip]\nlisten = ["udp:127.0.0.1:5080", "udp:127.0.0.1:5080"]\n',
        '"udp:127.0.0.1:5080" is listed twice',
    ),
    ('[sip]\npublic_address = ""\n', "[sip] public_address: expected a host name or address"),
    ("[sip]\nrtp_port_min = 20001\n", "[sip] rtp_port_min: must be even"),
    ("[sip]\nrtp_port_min = 1000\n", "[sip] rtp_port_min: must be in 1024-65535"),
    ("[sip]\nrtp_port_max = 70000\n", "[sip] rtp_port_max: must be in 1024-65535"),
    ("[sip]\nrtp_port_min = 30000\n", "[sip] rtp_port_min: must be less than rtp_port_max"),
    ("[sip]\nrtp_port_min = true\n", "[sip] rtp_port_min: expected an integer, got true"),
    ('[http]\nlisten = "127.0.0.1"\n', "[http] listen: expected HOST:PORT"),
    ('[http]\nlisten = "127.0.0.1:0"\n', "[http] listen: port must be a number in 1-65535"),
    ('[http]\nauth_id = ""\n', "[http] auth_id: must not be empty"),
    ('[http]\nauth_token = ""\n', "[http] auth_token: must not be empty"),
    (
        '[inbound]\nanswer_url = "ftp://x/answer"\n',
        "[inbound] answer_url: expected an http:// or https:// URL",
    ),
    ('[inbound]\nanswer_url = ""\n', "[inbound] answer_url: expected an http:// or https:// URL"),
    ('[inbound]\nanswer_method = "PUT"\n', '[inbound] answer_method: expected "GET" or "POST", got "PUT"'),
    ('[inbound]\nhangup_url = "not a url"\n', "[inbound] hangup_url: expected an http:// or https:// URL or"),
    ('[inbound]\nfallback_url = "http://"\n', "[inbound] fallback_url: expected an http:// or https:// URL"),
    (
        '[inbound.numbers."1415"]\nanswer_method = "GET"\n',
        '[inbound.numbers."1415"]: missing required key answer_url',
    ),
    ('[inbound.numbers."1415"]\nanswer_url = "x"\n', '[inbound.numbers."1415"] answer_url: expected an http'),
    (
        '[inbound.numbers."1415"]\nanswer_url = "http://a/b"\nnumbers = 1\n',
        '[inbound.numbers."1415"] numbers: unknown',
    ),
    ('[[trunks]]\nname = "a"\n', "[[trunks]] #1: missing required key uri"),
    (
        '[[trunks]]\nname = "a"\nuri = "http://x"\n',
        '[[trunks]] #1 uri: must start with sip: or sips:, got "http://x"',
    ),
    ('[[trunks]]\nname = "a"\nuri = "sip:"\n', "[[trunks]] #1 uri: must start with sip: or sips:"),
    (
        '[[trunks]]\nname = "a"\nuri = "sip:x"\nprefixes = ["14a"]\n',
        "[[trunks]] #1 prefixes: expected digits",
    ),
    (
        '[[trunks]]\nname = "a"\nuri = "sip:x"\nprefixes = [1415]\n',
        "[[trunks]] #1 prefixes: expected an array of strings",
    ),
    (
        '[[trunks]]\nname = "a"\nuri = "sip:x"\nwhatsapp = "yes"\n',
        "[[trunks]] #1 whatsapp: expected true or false",
    ),
    ('[[trunks]]\nname = "a"\nuri = "sip:x"\ngateway = "y"\n', "[[trunks]] #1 gateway: unknown key"),
    (
        '[[trunks]]\nname = "a"\nuri = "sip:x"\ndefault = true\n'
        '[[trunks]]\nname = "b"\nuri = "sip:y"\ndefault = true\n',
        '[[trunks]] #2 default: more than one default trunk ("a" and "b")',
    ),
    (
        '[[trunks]]\nname = "a"\nuri = "sip:x"\n[[trunks]]\nname = "A"\nuri = "sip:y"\n',
        '[[trunks]] #2 name: "A" is used by another trunk',
    ),
    (
        '[[trunks]]\nname = "a"\nuri = "sip:x"\nusername = "u"\n',
        "[[trunks]] #1 password: must be set and non-empty",
    ),
    (
        '[[trunks]]\nname = "a"\nuri = "sip:x"\npassword = "p"\n',
        "[[trunks]] #1 username: must be set and non-empty",
    ),
    ('[[users]]\nusername = "bob"\npassword = ""\n', "[[users]] #1 password: must not be empty"),
    ('[[users]]\nusername = "bob"\n', "[[users]] #1: missing required key password"),
    ('[[users]]\nusername = ""\npassword = "p"\n', "[[users]] #1 username: expected a name without spaces"),
    (
        '[[users]]\nusername = "b"\npassword = "p"\n[[users]]\nusername = "b"\npassword = "q"\n',
        '[[users]] #2 username: "b" is listed twice',
    ),
    ("[limits]\nmax_calls = 0\n", "[limits] max_calls: must be at least 1, got 0"),
    ("[limits]\nmax_cps = 1.5\n", "[limits] max_cps: expected an integer, got 1.5"),
    ('[storage]\npath = ""\n', "[storage] path: must not be empty"),
    ("[storage]\nrecordings_dir = 5\n", "[storage] recordings_dir: expected a string, got 5"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES, ids=[e for _, e in BAD_FILES])
def test_bad_file_is_one_line_naming_file_section_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text, name="x.toml")
    message = load_error(path)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_error_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", '[sip]\nrtp_port_min = "abc"\n', name="x.toml")
    monkeypatch.chdir(tmp_path)
    assert (
        load_error(Path("configs/x.toml"))
        == 'configs/x.toml: [sip] rtp_port_min: expected an integer, got "abc"'
    )
    assert load_error("configs/x.toml").startswith("configs/x.toml: [sip] rtp_port_min")


def test_missing_file_and_invalid_toml_are_one_line(tmp_path: Path) -> None:
    assert (
        load_error(tmp_path / "nope.toml")
        == f"{tmp_path / 'nope.toml'}: cannot read config file: No such file or directory"
    )
    message = load_error(write(tmp_path, "[sip\nlisten = 1\n"))
    assert message.startswith(f"{tmp_path / 'softswitch.toml'}: invalid TOML: ")
    assert "line 1" in message


# --- secrets ------------------------------------------------------------------------------------------------

SECRET = "s3cr3t-Value-42"


@pytest.mark.parametrize(
    "text",
    [
        f'[http]\nauth_token = ["{SECRET}"]\n',
        f'[[users]]\nusername = "bob bob"\npassword = "{SECRET}"\n',
        f'[[users]]\nusername = "bob"\npassword = ["{SECRET}"]\n',
        f'[[trunks]]\nname = "a"\nuri = "sip:x"\npassword = "{SECRET}"\n',
        f'[[trunks]]\nname = "a"\nuri = "sip:x"\nusername = "u"\npassword = ["{SECRET}"]\n',
        f'[[trunks]]\nname = "a"\nuri = "http://x"\nusername = "u"\npassword = "{SECRET}"\n',
        f'[http]\nauth_tokn = "{SECRET}"\n',
        f'[http]\nauth_token = "{SECRET}\n',  # unterminated string: a TOML syntax error
    ],
)
def test_secrets_never_appear_in_error_messages(tmp_path: Path, text: str) -> None:
    message = load_error(write(tmp_path, text))
    assert SECRET not in message, message


def test_secrets_from_env_never_appear_in_error_messages() -> None:
    message = load_error(env={"SOFTSWITCH_USERS": f'[{{username = "", password = "{SECRET}"}}]'})
    assert SECRET not in message
    message = load_error(env={"SOFTSWITCH_USERS": f'[{{username = "x", password = "{SECRET}"'})
    assert SECRET not in message


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [http]
        auth_token = "{SECRET}-token"
        [[trunks]]
        name = "carrier"
        uri = "sip:127.0.0.1:5090"
        default = true
        username = "trunkuser"
        password = "{SECRET}-trunk"
        [[users]]
        username = "alice"
        password = "{SECRET}-user"
        """,
    )
    config = load_config(path, env={})
    text = repr(config) + str(config)
    assert SECRET not in text
    assert "trunkuser" in text and "alice" in text  # the rest of the config is still shown
    assert set(config.secrets()) == {f"{SECRET}-token", f"{SECRET}-trunk", f"{SECRET}-user"}
