"""`<Dial>` (spec §4.1, client rules §0.1/§0.3) and its nouns `<Number>` (§4.2) and `<User>` (§4.3).

Schema and cross-attribute rules only; ringing, bridging, confirm/dialMusic, digest auth towards the B leg and the
action/callback requests are the engine's (run()).

Parse-time decisions (documented in the README):
- `sipAuthUsername` and `sipAuthPassword` come together: either one alone is an error naming the missing one. The
  password is 8-128 characters; its value never appears in an error message or in repr(). The username is 1-128.
- `timeLimit` is an integer >= 1 (default 14400); values above 86400 are accepted and cut to 86400 (DOCS: 24 h).
  FW silently replaced values <= 0 with the default; softswitch refuses them with a precise error.
- `timeout` (ring timeout) and `confirmTimeout` are integers >= 1 (default none and 120).
- `sipHeaders` (on Dial and on each User) is `key=value` items separated by ','; blank items are skipped. Keys and
  values must each be an RFC 3261 token (letters, digits and - . ! % * _ + ` ' ~): a superset of the spec's
  [A-Za-z0-9] that still keeps ',', '=', ';', spaces, quotes and CR/LF - anything that could break or inject into a
  SIP header - out. The value is the raw tuple of (key, value) pairs in document order; reserved prefixes (PH-,
  Plivo, FS-, SipAuth, ZT-, Twilio, ClientRegion) are dropped later, at dial time (§0.3), not here.
- `type="whatsapp"` with a `<Number>` child is not a parse error: §0.1 says it is reported to the action URL / logs.
- `digitsMatch` / `digitsMatchBLeg` are comma lists of key patterns (0-9 * #) and need `callbackUrl` (where matches
  are posted).
- `dialMusic` is "" (ringback tone), `none`, `real` or a URL. `confirmKey` is one key of 0-9 * #.
- `callerId` is `none` or up to 64 of letters, digits and + * # . _ - (it goes into a SIP From header);
  `callerName` is at most 50 characters (`none` gives an empty name at dial time).
- Number body: cut at the first ',' or '|' (FW's guard against dial-string injection), then it must be digits
  (with * #, and an optional leading '+'). User body: a sip: or sips: URI.
- Number/User `sendDigits` follow media.dtmf's syntax (0-9 * # A-D, w, W, @ms); `sendDigitsMode` (SDK-only,
  undocumented) accepts `rfc2833` or `inband`, the two ways softswitch can send digits.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from sip.auth import Credentials

from .base import NEXT, Attr, Outcome, Redirect, Verb, parse_url, show
from .dtmf import check_digit_string

# RFC 3261 §25.1 token characters
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_PATTERN = re.compile(r"[0-9*#]+")
_CALLER_ID = re.compile(r"[A-Za-z0-9+*#._-]{1,64}")
_NUMBER = re.compile(r"\+?[0-9*#]+")
_SIP_URI = re.compile(r"(?i)sips?:([^\s<>\"@,|;?]+@)?[A-Za-z0-9.\-]+(:[0-9]{1,5})?(;[^\s<>\",|]*)?")


def parse_sip_headers(value: str) -> tuple[tuple[str, str], ...]:
    """'k1=v1,k2=v2' -> (('k1', 'v1'), ('k2', 'v2')); ValueError naming the bad item."""
    pairs: list[tuple[str, str]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, val = (part.strip() for part in item.partition("="))
        if not eq:
            raise ValueError(f"expected key=value items separated by ',', got {show(item)}")
        if not key:
            raise ValueError(f"missing header name in {show(item)}")
        if not _TOKEN.fullmatch(key):
            raise ValueError(f"header name {show(key)}: only letters, digits and -.!%*_+`'~ are allowed")
        if not val:
            raise ValueError(f"missing value for header {key!r}")
        if not _TOKEN.fullmatch(val):
            raise ValueError(f"value of header {key!r}: only letters, digits and -.!%*_+`'~ are allowed")
        pairs.append((key, val))
    return tuple(pairs)


def parse_send_digits(value: str) -> str:
    """A DTMF string media.dtmf can send; ValueError otherwise."""
    return check_digit_string(value)


def parse_digit_patterns(value: str) -> tuple[str, ...]:
    """'*1,#2' -> ('*1', '#2'); ValueError on anything but keys 0-9 * #."""
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    for pattern in patterns:
        if not _PATTERN.fullmatch(pattern):
            raise ValueError(f"pattern {show(pattern)}: only keys 0-9, * and # are allowed")
    if not patterns:
        raise ValueError("expected a comma list of key patterns such as '*1,#2'")
    return patterns


def parse_dial_music(value: str) -> str:
    """'' (ringback), 'none', 'real' or a URL."""
    if value.lower() in ("", "none", "real"):
        return value.lower()
    try:
        return parse_url(value)
    except ValueError as exc:
        raise ValueError(f'expected "", none, real or a URL: {exc}') from None


def parse_caller_id(value: str) -> str:
    """'none' or a SIP-safe caller id."""
    if value.lower() == "none":
        return "none"
    if not _CALLER_ID.fullmatch(value):
        raise ValueError(f"expected a number or 'none' (up to 64 of letters, digits and +*#._-), got {show(value)}")
    return value


def _leg_attributes() -> dict[str, Attr]:
    """What Number and User share (callerId/callerName: recent SDKs, spec §4.2)."""
    return {
        "sendDigits": Attr("custom", parse=parse_send_digits),
        "sendOnPreanswer": Attr("bool", default=False),
        "callerId": Attr("custom", parse=parse_caller_id),
        "callerName": Attr("str", max_length=50),
    }


class Number(Verb):
    """A phone number to ring (through the trunk picked by prefix)."""

    TAG = "Number"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        **_leg_attributes(),
        "sendDigitsMode": Attr("enum", choices=("rfc2833", "inband")),
    }
    TEXT = "required"
    ANSWERS = False  # a noun: never run on its own

    def validate(self) -> None:
        raw = self.text
        self.text = re.split(r"[,|]", raw, maxsplit=1)[0].strip()  # spec §4.2: FW cuts at the first ',' or '|'
        if not _NUMBER.fullmatch(self.text):
            raise self.error(f"body must be a phone number (digits, country code first), got {show(raw)}")


class User(Verb):
    """A SIP endpoint to ring, e.g. sip:alice@example.com."""

    TAG = "User"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        **_leg_attributes(),
        "sipHeaders": Attr("custom", default=(), parse=parse_sip_headers),  # this leg only; wins over Dial's
    }
    TEXT = "required"
    ANSWERS = False  # a noun: never run on its own

    def validate(self) -> None:
        if not _SIP_URI.fullmatch(self.text):
            raise self.error(f"body must be a sip: URI such as sip:alice@example.com, got {show(self.text)}")


class Dial(Verb):
    """Ring every Number/User child at once; the first to answer is bridged to the caller."""

    TAG = "Dial"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "action": Attr("url"),
        "method": Attr("method", default="POST"),
        "hangupOnStar": Attr("bool", default=False),
        "timeLimit": Attr("int", default=14400, min=1),
        "timeout": Attr("int", min=1),
        "callerId": Attr("custom", parse=parse_caller_id),
        "callerName": Attr("str", max_length=50),
        "confirmSound": Attr("url"),
        "confirmTimeout": Attr("int", default=120, min=1),
        "confirmKey": Attr("key"),
        "dialMusic": Attr("custom", default="", parse=parse_dial_music),
        "callbackUrl": Attr("url"),
        "callbackMethod": Attr("method", default="POST"),
        "redirect": Attr("bool", default=True),
        "digitsMatch": Attr("custom", default=(), parse=parse_digit_patterns),
        "digitsMatchBLeg": Attr("custom", default=(), parse=parse_digit_patterns),
        "sipHeaders": Attr("custom", default=(), parse=parse_sip_headers),
        "type": Attr("enum", default="voice", choices=("voice", "whatsapp")),
        "sipAuthUsername": Attr("str", min_length=1, max_length=128),
        "sipAuthPassword": Attr("str", min_length=8, max_length=128, secret=True),
    }
    CHILDREN = frozenset({"Number", "User"})
    ANSWERS = False

    MAX_TIME_LIMIT: ClassVar[int] = 86400

    def validate(self) -> None:
        if not self.children:
            raise self.error("needs at least one <Number> or <User> to dial")
        username, password = self.attrs["sipAuthUsername"], self.attrs["sipAuthPassword"]
        if username is not None and password is None:
            raise self.error("required when sipAuthUsername is given", "sipAuthPassword")
        if password is not None and username is None:
            raise self.error("sipAuthPassword is given without sipAuthUsername", "sipAuthUsername")
        for name in ("digitsMatch", "digitsMatchBLeg"):
            if self.attrs[name] and not self.attrs["callbackUrl"]:
                raise self.error("needs callbackUrl (where matched digits are posted)", name)
        if self.attrs["timeLimit"] > self.MAX_TIME_LIMIT:
            self.attrs["timeLimit"] = self.MAX_TIME_LIMIT  # DOCS: longer limits are cut off at 24 h

    def dial_plan(self) -> Any:
        """The Dial as engine.dialing's DialPlan. (Not built in run(): what a coroutine's frame holds stays alive
        for as long as the call is bridged.)"""
        from ..dialing import DialPlan, DialTarget  # local: engine.dialing imports engine.xml

        a = self.attrs
        targets = [
            DialTarget(
                kind="number" if child.TAG == "Number" else "user",
                destination=child.text,
                send_digits=child.attrs["sendDigits"],
                send_on_preanswer=child.attrs["sendOnPreanswer"],
                sip_headers=child.attrs.get("sipHeaders", ()),
                caller_id=child.attrs["callerId"],
                caller_name=child.attrs["callerName"],
            )
            for child in self.children
        ]
        credentials = None
        if a["sipAuthUsername"] and a["sipAuthPassword"]:
            credentials = Credentials(a["sipAuthUsername"], a["sipAuthPassword"])
        return DialPlan(
            targets=targets, timeout=a["timeout"], time_limit=a["timeLimit"], hangup_on_star=a["hangupOnStar"],
            caller_id=a["callerId"], caller_name=a["callerName"], dial_music=a["dialMusic"],
            confirm_sound=a["confirmSound"], confirm_key=a["confirmKey"] or None, confirm_timeout=a["confirmTimeout"],
            callback_url=a["callbackUrl"], callback_method=a["callbackMethod"], digits_match=a["digitsMatch"],
            digits_match_b=a["digitsMatchBLeg"], sip_headers=a["sipHeaders"], whatsapp=a["type"] == "whatsapp",
            credentials=credentials,
        )

    async def run(self, call: Any) -> Outcome:
        from ..dialing import Dialing

        a = self.attrs
        result = await Dialing(call, self.dial_plan()).run()
        params = result.params(call.uuid)
        call.log.info("dial_finished", status=params["DialStatus"], cause=result.cause.name, code=result.cause.code)
        call.timeline.add("dial_finished", status=params["DialStatus"], cause=result.cause.name)
        if not a["action"]:
            return NEXT
        if a["redirect"]:
            return Redirect(call.resolve(a["action"]), a["method"], params, continue_on_failure=True)
        call.callback(a["action"], a["method"], params, kind="dial_action")
        return NEXT
