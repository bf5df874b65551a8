"""Registrar (RFC 3261 §10.3) without sockets: a fake user agent with a fake clock records every response."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pytest
import structlog

from engine.config import Config, load_config
from engine.registrar import BindingTable, OutOfOrder, Registrar, TooManyContacts
from sip.auth import Challenge, Credentials, build_authorization, pick_challenge
from sip.events import Address
from sip.message import Headers, Request
from sip.transaction import ServerTransaction

PASSWORD = "alice-secret-1"
BOB_PASSWORD = "bob-secret-2"
R_URI = "sip:127.0.0.1:5080"
SOURCE = Address("udp", "127.0.0.1", 40000)


def config() -> Config:
    return load_config(None, env={
        "SOFTSWITCH_USERS": f'[{{username = "alice", password = "{PASSWORD}"}}, '
                            f'{{username = "bob", password = "{BOB_PASSWORD}"}}]',
    })


@dataclass
class Sent:
    status: int
    reason: str
    headers: Headers

    def contacts(self) -> dict[str, int]:
        out = {}
        for value in self.headers.get_all("Contact"):
            uri, _, params = value.partition(">;")
            expires = dict(p.split("=", 1) for p in params.split(";"))["expires"]
            out[uri.lstrip("<")] = int(expires)
        return out


@dataclass
class FakeUA:
    clock: float = 1000.0
    sent: list[Sent] = field(default_factory=list)

    def now(self) -> float:
        return self.clock

    def respond(self, tx: ServerTransaction, request: Request, status: int, reason: str = "", *,
                headers: Headers | None = None, body: bytes = b"", to_tag: str | None = None) -> None:
        self.sent.append(Sent(status, reason, headers or Headers()))


class Client:
    """Builds REGISTERs like a phone: one Call-ID, CSeq counting up, answering the last challenge."""

    def __init__(self, registrar: Registrar, ua: FakeUA, user: str = "alice", password: str = PASSWORD) -> None:
        self.registrar, self.ua = registrar, ua
        self.user, self.password = user, password
        self.call_id = secrets.token_hex(8)
        self.cseq = 0
        self.challenge: Challenge | None = None
        self.nc = 0

    def send(self, *contacts: str, expires: int | None = None, to_user: str | None = None, auth: bool = True,
             cseq: int | None = None, extra: list[tuple[str, str]] | None = None) -> Sent:
        self.cseq = cseq if cseq is not None else self.cseq + 1
        items = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK{secrets.token_hex(6)}"),
            ("From", f"<sip:{self.user}@127.0.0.1>;tag=abc"),
            ("To", f"<sip:{to_user or self.user}@127.0.0.1>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
        ]
        items += [("Contact", c) for c in contacts]
        if expires is not None:
            items.append(("Expires", str(expires)))
        if auth and self.challenge is not None:
            self.nc += 1
            value = build_authorization(self.challenge, Credentials(self.user, self.password), "REGISTER", R_URI,
                                        nc=self.nc)
            items.append(("Authorization", value))
        items += extra or []
        request = Request("REGISTER", R_URI, Headers(items))
        self.registrar.on_register(request, ServerTransaction.__new__(ServerTransaction), SOURCE)
        sent = self.ua.sent[-1]
        if sent.status == 401:
            self.challenge = pick_challenge(sent.headers.get_all("WWW-Authenticate"), proxy=False)
            self.nc = 0
        return sent

    def register(self, *contacts: str, expires: int | None = None, **kwargs: object) -> Sent:
        """Send; on 401 answer the challenge once (as a phone does)."""
        sent = self.send(*contacts, expires=expires, **kwargs)  # type: ignore[arg-type]
        if sent.status == 401:
            sent = self.send(*contacts, expires=expires, **kwargs)  # type: ignore[arg-type]
        return sent


@pytest.fixture
def ua() -> FakeUA:
    return FakeUA()


@pytest.fixture
def registrar(ua: FakeUA) -> Registrar:
    return Registrar(ua, config())


def test_first_register_is_challenged_md5_first_then_sha256_same_nonce(registrar: Registrar, ua: FakeUA) -> None:
    sent = Client(registrar, ua).send("<sip:alice@10.0.0.1:5062>")
    assert sent.status == 401
    values = sent.headers.get_all("WWW-Authenticate")
    challenges = [Challenge.parse(v) for v in values]
    assert [c.algorithm for c in challenges] == ["MD5", "SHA-256"]
    assert {c.realm for c in challenges} == {"127.0.0.1"}
    assert len({c.nonce for c in challenges}) == 1 and challenges[0].qop == ("auth",)
    assert registrar.contacts("alice") == []


def test_right_password_registers_with_expiry_lists_contact(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    sent = client.register("<sip:alice@10.0.0.1:5062>")
    assert sent.status == 200
    assert sent.contacts() == {"sip:alice@10.0.0.1:5062": 3600}
    assert sent.headers.get("Date")
    assert registrar.contacts("alice") == ["sip:alice@10.0.0.1:5062"]
    assert client.challenge is not None and client.challenge.algorithm == "SHA-256"  # our client picks the strongest


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_each_offered_algorithm_is_accepted(registrar: Registrar, ua: FakeUA, algorithm: str) -> None:
    client = Client(registrar, ua)
    first = client.send("<sip:alice@10.0.0.1:5062>")
    [client.challenge] = [Challenge.parse(v) for v in first.headers.get_all("WWW-Authenticate")
                          if Challenge.parse(v).algorithm == algorithm]
    assert client.send("<sip:alice@10.0.0.1:5062>").status == 200


def test_algorithms_are_configurable(ua: FakeUA) -> None:
    registrar = Registrar(ua, config(), algorithms=("SHA-256",))
    sent = Client(registrar, ua).send("<sip:alice@10.0.0.1:5062>")
    assert [Challenge.parse(v).algorithm for v in sent.headers.get_all("WWW-Authenticate")] == ["SHA-256"]


def test_wrong_password_is_challenged_again(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua, password="not-the-password")
    assert client.register("<sip:alice@10.0.0.1:5062>").status == 401
    assert registrar.contacts("alice") == []


def test_expired_nonce_with_right_password_gets_stale_challenge(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    assert client.register("<sip:alice@10.0.0.1:5062>").status == 200
    ua.clock += 301  # nonce_ttl is 300 s
    sent = client.send("<sip:alice@10.0.0.1:5062>")
    assert sent.status == 401
    assert all(Challenge.parse(v).stale for v in sent.headers.get_all("WWW-Authenticate"))
    assert client.send("<sip:alice@10.0.0.1:5062>").status == 200  # no password prompt needed


def test_replayed_nonce_count_is_challenged(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    assert client.register("<sip:alice@10.0.0.1:5062>").status == 200
    client.nc = 0  # reuse nc=1 of the same nonce
    assert client.send("<sip:alice@10.0.0.1:5062>").status == 401


def test_to_user_must_be_the_authenticated_user(registrar: Registrar, ua: FakeUA) -> None:
    sent = Client(registrar, ua).register("<sip:bob@10.0.0.9>", to_user="bob")
    assert sent.status == 403
    assert registrar.contacts("bob") == [] and registrar.contacts("alice") == []


def test_unknown_user_with_credentials_is_forbidden(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua, user="mallory", password="guess")
    assert client.send("<sip:mallory@10.0.0.9>").status == 401  # the same first answer as for anyone
    assert client.send("<sip:mallory@10.0.0.9>").status == 403


def raw_register(registrar: Registrar, challenge: Challenge | None, to: str, *, digest_uri: str = R_URI,
                 nc: int = 1) -> None:
    """A REGISTER for `to` answering `challenge` as alice (for what Client cannot express)."""
    items = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK{secrets.token_hex(6)}"), ("From", f"<{to}>;tag=a"),
        ("To", f"<{to}>"), ("Call-ID", secrets.token_hex(8)), ("CSeq", "1 REGISTER"),
        ("Contact", "<sip:alice@10.0.0.1>"),
    ]
    if challenge is not None:
        value = build_authorization(challenge, Credentials("alice", PASSWORD), "REGISTER", digest_uri, nc=nc)
        items.append(("Authorization", value))
    registrar.on_register(Request("REGISTER", R_URI, Headers(items)), ServerTransaction.__new__(ServerTransaction),
                          SOURCE)


def test_foreign_domain_is_not_found(registrar: Registrar, ua: FakeUA) -> None:
    raw_register(registrar, None, "sip:alice@example.org")
    assert ua.sent[-1].status == 401
    challenge = pick_challenge(ua.sent[-1].headers.get_all("WWW-Authenticate"), proxy=False)
    raw_register(registrar, challenge, "sip:alice@example.org")
    assert ua.sent[-1].status == 404
    raw_register(registrar, challenge, "sip:alice@127.0.0.1:5080", nc=2)  # the port of the AOR does not matter
    assert ua.sent[-1].status == 200


def test_two_contacts_each_with_its_own_expiry_and_remaining_seconds(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    sent = client.register("<sip:alice@10.0.0.1:5062>;expires=120", "<sip:alice@10.0.0.2:5062>", expires=600)
    assert sent.contacts() == {"sip:alice@10.0.0.1:5062": 120, "sip:alice@10.0.0.2:5062": 600}
    ua.clock += 100.5
    sent = client.register()  # a query: no Contact
    assert sent.status == 200 and sent.contacts() == {"sip:alice@10.0.0.1:5062": 20, "sip:alice@10.0.0.2:5062": 500}
    ua.clock += 20
    assert registrar.contacts("alice") == ["sip:alice@10.0.0.2:5062"]
    ua.clock += 480
    assert registrar.contacts("alice") == []


def test_contacts_from_two_devices_ring_together(registrar: Registrar, ua: FakeUA) -> None:
    desk, mobile = Client(registrar, ua), Client(registrar, ua)
    assert desk.register("<sip:alice@10.0.0.1:5062>").status == 200
    sent = mobile.register("<sip:alice@10.0.0.2:5064;transport=tcp>")
    assert set(sent.contacts()) == {"sip:alice@10.0.0.1:5062", "sip:alice@10.0.0.2:5064;transport=tcp"}
    assert registrar.contacts("alice") == ["sip:alice@10.0.0.1:5062", "sip:alice@10.0.0.2:5064;transport=tcp"]


def test_q_orders_contacts(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    sent = client.register("<sip:alice@10.0.0.1>;q=0.5", "<sip:alice@10.0.0.2>;q=1.0", "<sip:alice@10.0.0.3>;q=9")
    assert registrar.contacts("alice") == ["sip:alice@10.0.0.2", "sip:alice@10.0.0.3", "sip:alice@10.0.0.1"]
    assert "<sip:alice@10.0.0.1>;expires=3600;q=0.5" in sent.headers.get_all("Contact")


def test_expires_default_max_and_interval_too_brief(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    assert client.register("<sip:alice@10.0.0.1>", expires=999999).contacts() == {"sip:alice@10.0.0.1": 7200}
    sent = client.register("<sip:alice@10.0.0.1>;expires=30")
    assert (sent.status, sent.headers.get("Min-Expires")) == (423, "60")
    assert client.register("<sip:alice@10.0.0.1>", expires=59).status == 423
    assert registrar.contacts("alice") == ["sip:alice@10.0.0.1"]  # a refused request changes nothing
    assert client.register("<sip:alice@10.0.0.1>", expires=60).contacts() == {"sip:alice@10.0.0.1": 60}
    assert client.register("<sip:alice@10.0.0.1>;expires=bogus").contacts() == {"sip:alice@10.0.0.1": 3600}


def test_min_expires_is_adjustable(registrar: Registrar, ua: FakeUA) -> None:
    registrar.min_expires = 1
    client = Client(registrar, ua)
    assert client.register("<sip:alice@10.0.0.1>", expires=1).contacts() == {"sip:alice@10.0.0.1": 1}
    ua.clock += 1.01
    assert registrar.contacts("alice") == []


def test_expires_zero_removes_one_binding(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    client.register("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>")
    sent = client.register("<sip:alice@10.0.0.1>;expires=0")
    assert sent.status == 200 and sent.contacts() == {"sip:alice@10.0.0.2": 3600}
    sent = client.register("<sip:alice@10.0.0.2>", expires=0)
    assert sent.status == 200 and sent.headers.get_all("Contact") == []
    assert registrar.contacts("alice") == []


def test_star_with_expires_zero_removes_all(registrar: Registrar, ua: FakeUA) -> None:
    desk, mobile = Client(registrar, ua), Client(registrar, ua)
    desk.register("<sip:alice@10.0.0.1>")
    mobile.register("<sip:alice@10.0.0.2>")
    assert desk.register("*", expires=3600).status == 400
    assert desk.register("*", "<sip:alice@10.0.0.3>", expires=0).status == 400
    assert desk.register("*").status == 400
    assert len(registrar.contacts("alice")) == 2
    sent = desk.register("*", expires=0)
    assert sent.status == 200 and sent.headers.get_all("Contact") == []
    assert registrar.contacts("alice") == []


def test_same_call_id_lower_or_equal_cseq_is_refused_and_changes_nothing(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    assert client.register("<sip:alice@10.0.0.1>", cseq=10).status == 200  # 401, then 200, both at CSeq 10
    for cseq in (10, 5):
        client.send("<sip:alice@10.0.0.1>", expires=0, cseq=cseq)
        assert ua.sent[-1].status == 400 and "CSeq" in ua.sent[-1].reason
    assert registrar.contacts("alice") == ["sip:alice@10.0.0.1"]
    assert client.send("<sip:alice@10.0.0.1>", expires=0, cseq=11).status == 200
    assert registrar.contacts("alice") == []


def test_another_call_id_may_update_with_any_cseq(registrar: Registrar, ua: FakeUA) -> None:
    first, second = Client(registrar, ua), Client(registrar, ua)
    first.register("<sip:alice@10.0.0.1>", cseq=100)
    assert second.register("<sip:alice@10.0.0.1>", expires=0, cseq=1).status == 200
    assert registrar.contacts("alice") == []


def test_bad_contacts_are_refused(registrar: Registrar, ua: FakeUA) -> None:
    client = Client(registrar, ua)
    assert client.register("<tel:+15551234567>").status == 400
    assert client.register("<sip:alice@10.0.0.1").status == 400
    assert client.register("<sip:alice@127.0.0.1:5080>").status == 403  # the engine itself: would loop
    assert client.register("<sip:alice@127.0.0.1>").status == 200  # port 5060, not ours
    assert registrar.contacts("alice") == ["sip:alice@127.0.0.1"]


def test_too_many_contacts(ua: FakeUA) -> None:
    registrar = Registrar(ua, config(), max_contacts=2)
    client = Client(registrar, ua)
    assert client.register("<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2>").status == 200
    assert client.register("<sip:alice@10.0.0.3>").status == 403
    assert client.register("<sip:alice@10.0.0.1>;expires=0", "<sip:alice@10.0.0.3>").status == 200
    assert set(registrar.contacts("alice")) == {"sip:alice@10.0.0.2", "sip:alice@10.0.0.3"}


def test_digest_uri_must_be_the_request_uri(registrar: Registrar, ua: FakeUA) -> None:
    raw_register(registrar, None, "sip:alice@127.0.0.1")
    challenge = pick_challenge(ua.sent[-1].headers.get_all("WWW-Authenticate"), proxy=False)
    raw_register(registrar, challenge, "sip:alice@127.0.0.1", digest_uri="sip:elsewhere")
    assert ua.sent[-1].status == 400


def test_passwords_never_logged_or_answered(registrar: Registrar, ua: FakeUA) -> None:
    with structlog.testing.capture_logs() as logs:
        Client(registrar, ua).register("<sip:alice@10.0.0.1>")
        Client(registrar, ua, password="wrong").register("<sip:alice@10.0.0.1>")
        Client(registrar, ua, user="bob", password=BOB_PASSWORD).register("<sip:alice@10.0.0.1>", to_user="alice")
    assert any(e["event"] == "registered" for e in logs)
    assert any(e["event"] == "register_auth_failed" for e in logs)
    text = repr(logs) + repr([(s.status, s.reason, list(s.headers)) for s in ua.sent])
    for secret in (PASSWORD, BOB_PASSWORD):
        assert secret not in text
    assert "response=" not in repr(logs)  # no Authorization value either
    assert PASSWORD not in repr(registrar) and PASSWORD not in repr(registrar.digest)


def test_binding_table_is_atomic() -> None:
    table = BindingTable(max_contacts=2)
    table.update("alice", "c1", 1, [("sip:a@h1", 60, None)], now=0.0)
    with pytest.raises(OutOfOrder):
        table.update("alice", "c1", 1, [("sip:a@h2", 60, None), ("sip:a@h1", 0, None)], now=1.0)
    with pytest.raises(TooManyContacts):
        table.update("alice", "c2", 1, [("sip:a@h2", 60, None), ("sip:a@h3", 60, None)], now=1.0)
    assert [b.uri for b in table.current("alice", 1.0)] == ["sip:a@h1"]
    assert table.current("alice", 60.0) == [] and not table.has("alice")


def test_contacts_needs_no_clock_when_nobody_registered() -> None:
    class NoClock(FakeUA):
        def now(self) -> float:
            raise AssertionError("clock read")

    assert Registrar(NoClock(), config()).contacts("alice") == []


def test_algorithm_order_is_the_configured_one_whatever_the_spelling(ua: FakeUA) -> None:
    registrar = Registrar(ua, config(), algorithms=("sha-256", "md5"))
    sent = Client(registrar, ua).send("<sip:alice@10.0.0.1>")
    assert [Challenge.parse(v).algorithm for v in sent.headers.get_all("WWW-Authenticate")] == ["SHA-256", "MD5"]
