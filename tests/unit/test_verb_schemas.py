"""Per-verb schemas: every verb's defaults, and every attribute's type/range/allowed-value errors naming the element,
the attribute and the line; cross-attribute rules; the Dial credentials never leaking into a message."""

from __future__ import annotations

from typing import Any

import pytest

from engine.verbs.base import Attr, Verb, XmlError
from engine.verbs.dial import Dial, Number, User, parse_sip_headers
from engine.verbs.registry import REGISTRY
from engine.verbs.speak import Speak
from engine.xml import parse_document, validate_document


def doc(body: str) -> str:
    """`body` inside <Response>, starting on line 2."""
    return f"<Response>\n{body}\n</Response>"


def first(body: str) -> Verb:
    return parse_document(doc(body)).verbs[0]


def error_of(body: str) -> XmlError:
    with pytest.raises(XmlError) as info:
        parse_document(doc(body))
    return info.value


# -- defaults -------------------------------------------------------------------------------------------------------
DEFAULTS: list[tuple[str, dict[str, Any]]] = [
    ("<Speak>Hello</Speak>", {"voice": "WOMAN", "language": "en-US", "loop": 1}),
    ("<Play>https://example.com/a.mp3</Play>", {"loop": 1}),
    ("<Wait/>", {"length": 1, "silence": False, "minSilence": 2000, "beep": False}),
    ("<Hangup/>", {"reason": None, "schedule": None}),
    ("<PreAnswer/>", {}),
    ("<Redirect>https://example.com/next</Redirect>", {"method": "POST"}),
    ("<DTMF>12</DTMF>", {"async": True}),
    ("<GetDigits/>", {
        "action": None, "method": "POST", "timeout": 5, "digitTimeout": 2, "finishOnKey": "#", "numDigits": 99,
        "retries": 1, "redirect": True, "playBeep": False, "validDigits": "1234567890*#", "invalidDigitsSound": None,
        "log": True,
    }),
    ('<GetInput action="/in" inputType="dtmf"/>', {
        "action": "/in", "method": "POST", "inputType": "dtmf", "executionTimeout": 15, "digitEndTimeout": "auto",
        "speechEndTimeout": "auto", "finishOnKey": "#", "numDigits": None, "speechModel": "default", "hints": None,
        "language": "en-US", "interimSpeechResultsCallback": None, "interimSpeechResultsCallbackMethod": "POST",
        "log": True, "redirect": True, "profanityFilter": False,
    }),
    ("<Record/>", {
        "action": None, "method": "POST", "fileFormat": "mp3", "redirect": True, "timeout": 15, "maxLength": 60,
        "playBeep": True, "finishOnKey": "#", "recordSession": False, "startOnDialAnswer": False,
        "recordChannelType": "stereo", "transcriptionType": None, "transcriptionUrl": None,
        "transcriptionMethod": "POST", "transcriptionReportType": None, "callbackUrl": None, "callbackMethod": "POST",
    }),
    ("<Dial><Number>14155551234</Number></Dial>", {
        "action": None, "method": "POST", "hangupOnStar": False, "timeLimit": 14400, "timeout": None,
        "callerId": None, "callerName": None, "confirmSound": None, "confirmTimeout": 120, "confirmKey": None,
        "dialMusic": "", "callbackUrl": None, "callbackMethod": "POST", "redirect": True, "digitsMatch": (),
        "digitsMatchBLeg": (), "sipHeaders": (), "type": "voice", "sipAuthUsername": None, "sipAuthPassword": None,
    }),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), DEFAULTS, ids=[b.split(">")[0].split()[0][1:] for b, _ in DEFAULTS])
def test_defaults(body: str, expected: dict[str, Any]) -> None:
    verb = first(body)
    assert verb.attrs == expected
    assert list(verb.attrs) == list(type(verb).ATTRIBUTES)  # schema order, every attribute present


def test_number_and_user_defaults() -> None:
    dial = first("<Dial><Number>14155551234</Number><User>sip:alice@example.com</User></Dial>")
    number, user = dial.children
    assert isinstance(number, Number) and isinstance(user, User)
    assert number.attrs == {"sendDigits": None, "sendOnPreanswer": False, "callerId": None, "callerName": None,
                            "sendDigitsMode": None}
    assert user.attrs == {"sendDigits": None, "sendOnPreanswer": False, "callerId": None, "callerName": None,
                          "sipHeaders": ()}
    assert number.text == "14155551234" and user.text == "sip:alice@example.com"


def test_attribute_access_by_name() -> None:
    wait = first('<Wait length="5" beep="true"/>')
    assert wait.length == 5 and wait.beep is True and wait.silence is False
    with pytest.raises(AttributeError):
        _ = wait.nonexistent


def test_answers_flags_follow_spec_1_4() -> None:
    answers = {tag: cls.ANSWERS for tag, cls in REGISTRY.items() if tag not in ("Number", "User")}
    assert answers == {"Speak": True, "Play": True, "Wait": False, "Hangup": False, "PreAnswer": False,
                       "Redirect": True, "GetDigits": True, "GetInput": True, "Record": True, "DTMF": True,
                       "Dial": False}


def test_schema_attribute_names_are_camel_case() -> None:
    for cls in REGISTRY.values():
        for name in cls.ATTRIBUTES:
            assert "_" not in name and name[0].islower(), (cls.TAG, name)


# -- bad values: (body, element, attribute, line, fragment of the detail) -------------------------------------------
BAD: list[tuple[str, str, str | None, int, str]] = [
    # Speak
    ('<Speak voice="Robot">x</Speak>', "Speak", "voice", 2, "expected WOMAN, MAN or Polly.<Name>"),
    ('<Speak voice="Polly.">x</Speak>', "Speak", "voice", 2, "expected WOMAN, MAN or Polly.<Name>"),
    ('<Speak language="xx-YY">x</Speak>', "Speak", "language", 2, "expected one of da-DK"),
    ('<Speak loop="-1">x</Speak>', "Speak", "loop", 2, "must be >= 0"),
    ('<Speak loop="once">x</Speak>', "Speak", "loop", 2, "expected an integer, got 'once'"),
    ('<Speak loop="1.5">x</Speak>', "Speak", "loop", 2, "expected an integer"),
    ('<Speak loop="1_000">x</Speak>', "Speak", "loop", 2, "expected an integer"),
    # Play
    ('<Play loop="-2">https://a/b.mp3</Play>', "Play", "loop", 2, "must be >= 0"),
    ('<Play loop="x">https://a/b.mp3</Play>', "Play", "loop", 2, "expected an integer"),
    # Wait
    ('<Wait length="0"/>', "Wait", "length", 2, "must be >= 1, got '0'"),
    ('<Wait length="five"/>', "Wait", "length", 2, "expected an integer"),
    ('<Wait silence="yes"/>', "Wait", "silence", 2, 'expected "true" or "false", got \'yes\''),
    ('<Wait minSilence="0"/>', "Wait", "minSilence", 2, "must be >= 1"),
    ('<Wait minSilence="x"/>', "Wait", "minSilence", 2, "expected an integer"),
    ('<Wait beep="1"/>', "Wait", "beep", 2, 'expected "true" or "false"'),
    # Hangup
    ('<Hangup reason="normal"/>', "Hangup", "reason", 2, "expected one of 'rejected', 'busy', got 'normal'"),
    ('<Hangup schedule="0"/>', "Hangup", "schedule", 2, "must be >= 1"),
    ('<Hangup schedule="soon"/>', "Hangup", "schedule", 2, "expected an integer"),
    # Redirect
    ('<Redirect method="PUT">/next</Redirect>', "Redirect", "method", 2, "expected GET or POST, got 'PUT'"),
    # DTMF
    ('<DTMF async="yes">12</DTMF>', "DTMF", "async", 2, 'expected "true" or "false"'),
    # GetDigits
    ('<GetDigits action="ftp://x/y"/>', "GetDigits", "action", 2, "expected an http(s) URL"),
    ('<GetDigits action=""/>', "GetDigits", "action", 2, "empty URL"),
    ('<GetDigits action="http://a b/"/>', "GetDigits", "action", 2, "URL contains whitespace"),
    ('<GetDigits method="DELETE"/>', "GetDigits", "method", 2, "expected GET or POST"),
    ('<GetDigits timeout="0"/>', "GetDigits", "timeout", 2, "must be >= 1"),
    ('<GetDigits digitTimeout="0"/>', "GetDigits", "digitTimeout", 2, "must be >= 1"),
    ('<GetDigits finishOnKey="a"/>', "GetDigits", "finishOnKey", 2, "only keys 0-9, * and #"),
    ('<GetDigits finishOnKey="12"/>', "GetDigits", "finishOnKey", 2, "expected a single key"),
    ('<GetDigits numDigits="0"/>', "GetDigits", "numDigits", 2, "must be >= 1"),
    ('<GetDigits numDigits="100"/>', "GetDigits", "numDigits", 2, "must be <= 99"),
    ('<GetDigits retries="0"/>', "GetDigits", "retries", 2, "must be >= 1"),
    ('<GetDigits redirect="yes"/>', "GetDigits", "redirect", 2, 'expected "true" or "false"'),
    ('<GetDigits playBeep="True"/>', "GetDigits", "playBeep", 2, 'expected "true" or "false", got \'True\''),
    ('<GetDigits validDigits="12a"/>', "GetDigits", "validDigits", 2, "only keys 0-9, * and #"),
    ('<GetDigits invalidDigitsSound="javascript:alert(1)"/>', "GetDigits", "invalidDigitsSound", 2,
     "expected an http(s) URL"),
    ('<GetDigits log="no"/>', "GetDigits", "log", 2, 'expected "true" or "false"'),
    # GetInput
    ('<GetInput inputType="dtmf"/>', "GetInput", "action", 2, "required attribute missing"),
    ('<GetInput action="/in"/>', "GetInput", "inputType", 2, "required attribute missing"),
    ('<GetInput action="/in" inputType="voice"/>', "GetInput", "inputType", 2,
     "expected one of 'dtmf', 'speech', 'dtmf speech'"),
    ('<GetInput action="mailto:a@b" inputType="dtmf"/>', "GetInput", "action", 2, "expected an http(s) URL"),
    ('<GetInput action="/in" inputType="dtmf" method="put"/>', "GetInput", "method", 2, "expected GET or POST"),
    ('<GetInput action="/in" inputType="dtmf" executionTimeout="4"/>', "GetInput", "executionTimeout", 2,
     "must be >= 5"),
    ('<GetInput action="/in" inputType="dtmf" executionTimeout="61"/>', "GetInput", "executionTimeout", 2,
     "must be <= 60"),
    ('<GetInput action="/in" inputType="dtmf" digitEndTimeout="1"/>', "GetInput", "digitEndTimeout", 2,
     "expected auto or an integer from 2 to 10"),
    ('<GetInput action="/in" inputType="dtmf" digitEndTimeout="11"/>', "GetInput", "digitEndTimeout", 2,
     "expected auto or an integer from 2 to 10"),
    ('<GetInput action="/in" inputType="dtmf" speechEndTimeout="never"/>', "GetInput", "speechEndTimeout", 2,
     "expected auto or an integer from 2 to 10"),
    ('<GetInput action="/in" inputType="dtmf" finishOnKey="##"/>', "GetInput", "finishOnKey", 2,
     "expected a single key"),
    ('<GetInput action="/in" inputType="dtmf" numDigits="0"/>', "GetInput", "numDigits", 2, "must be >= 1"),
    ('<GetInput action="/in" inputType="dtmf" speechModel="fancy"/>', "GetInput", "speechModel", 2,
     "expected one of 'default', 'command_and_search', 'phone_call'"),
    ('<GetInput action="/in" inputType="dtmf" language="english!"/>', "GetInput", "language", 2,
     "expected a language tag"),
    ('<GetInput action="/in" inputType="dtmf" interimSpeechResultsCallback="file:///x"/>', "GetInput",
     "interimSpeechResultsCallback", 2, "expected an http(s) URL"),
    ('<GetInput action="/in" inputType="dtmf" interimSpeechResultsCallbackMethod="PUT"/>', "GetInput",
     "interimSpeechResultsCallbackMethod", 2, "expected GET or POST"),
    ('<GetInput action="/in" inputType="dtmf" log="1"/>', "GetInput", "log", 2, 'expected "true" or "false"'),
    ('<GetInput action="/in" inputType="dtmf" redirect="0"/>', "GetInput", "redirect", 2, 'expected "true"'),
    ('<GetInput action="/in" inputType="dtmf" profanityFilter="maybe"/>', "GetInput", "profanityFilter", 2,
     'expected "true" or "false"'),
    # Record
    ('<Record action="ftp://x"/>', "Record", "action", 2, "expected an http(s) URL"),
    ('<Record method="PATCH"/>', "Record", "method", 2, "expected GET or POST"),
    ('<Record fileFormat="ogg"/>', "Record", "fileFormat", 2, "expected one of 'mp3', 'wav', got 'ogg'"),
    ('<Record redirect="nope"/>', "Record", "redirect", 2, 'expected "true" or "false"'),
    ('<Record timeout="0"/>', "Record", "timeout", 2, "must be >= 1"),
    ('<Record maxLength="1"/>', "Record", "maxLength", 2, "must be >= 2"),
    ('<Record playBeep="on"/>', "Record", "playBeep", 2, 'expected "true" or "false"'),
    ('<Record finishOnKey="x"/>', "Record", "finishOnKey", 2, "only keys 0-9, * and #"),
    ('<Record recordSession="y"/>', "Record", "recordSession", 2, 'expected "true" or "false"'),
    ('<Record startOnDialAnswer="y"/>', "Record", "startOnDialAnswer", 2, 'expected "true" or "false"'),
    ('<Record recordChannelType="quad"/>', "Record", "recordChannelType", 2, "expected one of 'mono', 'stereo'"),
    ('<Record transcriptionType="manual"/>', "Record", "transcriptionType", 2, "expected one of 'auto', 'hybrid'"),
    ('<Record transcriptionUrl="gopher://x"/>', "Record", "transcriptionUrl", 2, "expected an http(s) URL"),
    ('<Record transcriptionMethod="PUT"/>', "Record", "transcriptionMethod", 2, "expected GET or POST"),
    ('<Record callbackUrl="http://"/>', "Record", "callbackUrl", 2, "URL has no host"),
    ('<Record callbackMethod="PUT"/>', "Record", "callbackMethod", 2, "expected GET or POST"),
    # Dial
    ('<Dial action="ftp://x"><Number>1</Number></Dial>', "Dial", "action", 2, "expected an http(s) URL"),
    ('<Dial method="PUT"><Number>1</Number></Dial>', "Dial", "method", 2, "expected GET or POST"),
    ('<Dial hangupOnStar="1"><Number>1</Number></Dial>', "Dial", "hangupOnStar", 2, 'expected "true" or "false"'),
    ('<Dial timeLimit="0"><Number>1</Number></Dial>', "Dial", "timeLimit", 2, "must be >= 1"),
    ('<Dial timeLimit="-5"><Number>1</Number></Dial>', "Dial", "timeLimit", 2, "must be >= 1"),
    ('<Dial timeLimit="1h"><Number>1</Number></Dial>', "Dial", "timeLimit", 2, "expected an integer"),
    ('<Dial timeout="0"><Number>1</Number></Dial>', "Dial", "timeout", 2, "must be >= 1"),
    ('<Dial timeout="x"><Number>1</Number></Dial>', "Dial", "timeout", 2, "expected an integer"),
    ('<Dial callerId="a b"><Number>1</Number></Dial>', "Dial", "callerId", 2, "expected a number or 'none'"),
    ('<Dial callerId="1&lt;2"><Number>1</Number></Dial>', "Dial", "callerId", 2, "expected a number or 'none'"),
    (f'<Dial callerName="{"x" * 51}"><Number>1</Number></Dial>', "Dial", "callerName", 2,
     "must be at most 50 characters long"),
    ('<Dial callerName="a&#13;&#10;Via: x"><Number>1</Number></Dial>', "Dial", "callerName", 2,
     "control characters (including CR/LF) are not allowed"),
    ('<Dial confirmSound="ftp://x"><Number>1</Number></Dial>', "Dial", "confirmSound", 2, "expected an http(s)"),
    ('<Dial confirmTimeout="0"><Number>1</Number></Dial>', "Dial", "confirmTimeout", 2, "must be >= 1"),
    ('<Dial confirmKey="12"><Number>1</Number></Dial>', "Dial", "confirmKey", 2, "expected a single key"),
    ('<Dial confirmKey="A"><Number>1</Number></Dial>', "Dial", "confirmKey", 2, "only keys 0-9, * and #"),
    ('<Dial dialMusic="ftp://x"><Number>1</Number></Dial>', "Dial", "dialMusic", 2, 'expected "", none, real or'),
    ('<Dial callbackUrl="x:y"><Number>1</Number></Dial>', "Dial", "callbackUrl", 2, "expected an http(s) URL"),
    ('<Dial callbackMethod="PUT"><Number>1</Number></Dial>', "Dial", "callbackMethod", 2, "expected GET or POST"),
    ('<Dial redirect="False"><Number>1</Number></Dial>', "Dial", "redirect", 2, 'expected "true" or "false"'),
    ('<Dial callbackUrl="/cb" digitsMatch="12a"><Number>1</Number></Dial>', "Dial", "digitsMatch", 2,
     "pattern '12a': only keys 0-9, * and #"),
    ('<Dial callbackUrl="/cb" digitsMatchBLeg="1,x"><Number>1</Number></Dial>', "Dial", "digitsMatchBLeg", 2,
     "pattern 'x'"),
    ('<Dial callbackUrl="/cb" digitsMatch=","><Number>1</Number></Dial>', "Dial", "digitsMatch", 2,
     "expected a comma list of key patterns"),
    ('<Dial sipHeaders="a b=c"><Number>1</Number></Dial>', "Dial", "sipHeaders", 2, "header name 'a b'"),
    ('<Dial sipHeaders="k=v;x=y"><Number>1</Number></Dial>', "Dial", "sipHeaders", 2, "value of header 'k'"),
    ('<Dial sipHeaders="k=a b"><Number>1</Number></Dial>', "Dial", "sipHeaders", 2, "value of header 'k'"),
    ('<Dial sipHeaders="novalue"><Number>1</Number></Dial>', "Dial", "sipHeaders", 2, "expected key=value items"),
    ('<Dial sipHeaders="=v"><Number>1</Number></Dial>', "Dial", "sipHeaders", 2, "missing header name"),
    ('<Dial sipHeaders="k="><Number>1</Number></Dial>', "Dial", "sipHeaders", 2, "missing value for header 'k'"),
    ('<Dial sipHeaders="k=a=b"><Number>1</Number></Dial>', "Dial", "sipHeaders", 2, "value of header 'k'"),
    ('<Dial type="sms"><Number>1</Number></Dial>', "Dial", "type", 2, "expected one of 'voice', 'whatsapp'"),
    ('<Dial sipAuthUsername="" sipAuthPassword="long-enough"><User>sip:a@b</User></Dial>', "Dial",
     "sipAuthUsername", 2, "must be at least 1 characters long"),
    (f'<Dial sipAuthUsername="{"u" * 129}" sipAuthPassword="long-enough"><User>sip:a@b</User></Dial>', "Dial",
     "sipAuthUsername", 2, "must be at most 128 characters long"),
    ('<Dial sipAuthUsername="bob" sipAuthPassword="short"><User>sip:a@b</User></Dial>', "Dial",
     "sipAuthPassword", 2, "must be at least 8 characters long"),
    (f'<Dial sipAuthUsername="bob" sipAuthPassword="{"p" * 129}"><User>sip:a@b</User></Dial>', "Dial",
     "sipAuthPassword", 2, "must be at most 128 characters long"),
    # Number (line 3)
    ('<Dial>\n<Number sendDigits="12x">1</Number>\n</Dial>', "Number", "sendDigits", 3, "bad DTMF character 'x'"),
    ('<Dial>\n<Number sendDigits="1@abc">1</Number>\n</Dial>', "Number", "sendDigits", 3, "bad tone length"),
    ('<Dial>\n<Number sendDigits="ww">1</Number>\n</Dial>', "Number", "sendDigits", 3, "no keys to send"),
    ('<Dial>\n<Number sendOnPreanswer="y">1</Number>\n</Dial>', "Number", "sendOnPreanswer", 3, 'expected "true"'),
    ('<Dial>\n<Number callerId="+1 415">1</Number>\n</Dial>', "Number", "callerId", 3, "expected a number"),
    (f'<Dial>\n<Number callerName="{"n" * 51}">1</Number>\n</Dial>', "Number", "callerName", 3, "at most 50"),
    ('<Dial>\n<Number sendDigitsMode="sipinfo">1</Number>\n</Dial>', "Number", "sendDigitsMode", 3,
     "expected one of 'rfc2833', 'inband'"),
    # User (line 3)
    ('<Dial>\n<User sendDigits="9?">sip:a@b</User>\n</Dial>', "User", "sendDigits", 3, "bad DTMF character '?'"),
    ('<Dial>\n<User sendOnPreanswer="n">sip:a@b</User>\n</Dial>', "User", "sendOnPreanswer", 3, 'expected "true"'),
    ('<Dial>\n<User sipHeaders="a:b">sip:a@b</User>\n</Dial>', "User", "sipHeaders", 3, "expected key=value"),
    ('<Dial>\n<User callerId="x y">sip:a@b</User>\n</Dial>', "User", "callerId", 3, "expected a number"),
    (f'<Dial>\n<User callerName="{"n" * 51}">sip:a@b</User>\n</Dial>', "User", "callerName", 3, "at most 50"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "element", "attribute", "line", "fragment"), BAD,
                         ids=[f"{e}.{a}-{i}" for i, (_, e, a, _, _) in enumerate(BAD)])
def test_bad_attribute_values(body: str, element: str, attribute: str | None, line: int, fragment: str) -> None:
    error = error_of(body)
    assert (error.element, error.attribute, error.line) == (element, attribute, line), str(error)
    assert fragment in error.detail, str(error)
    assert str(error).startswith(f"<{element}> attribute {attribute!r} line {line}: ")


@pytest.mark.parametrize(("body", "element", "attribute", "line", "fragment"), BAD,
                         ids=[f"{e}.{a}-{i}" for i, (_, e, a, _, _) in enumerate(BAD)])
def test_linter_reports_the_same_first_error(body: str, element: str, attribute: str | None, line: int,
                                             fragment: str) -> None:
    errors = validate_document(doc(body))
    assert errors and str(errors[0]) == str(error_of(body))


def test_every_schema_attribute_has_a_bad_value_case() -> None:
    covered = {(element, attribute) for _, element, attribute, _, _ in BAD}
    free_text = {("GetInput", "hints"), ("Record", "transcriptionReportType")}  # any text is valid
    for tag, cls in REGISTRY.items():
        for name, spec in cls.ATTRIBUTES.items():
            if (tag, name) in free_text:
                continue
            assert (tag, name) in covered, f"no bad-value case for <{tag}> {name} ({spec.kind})"


# -- body (text) errors ---------------------------------------------------------------------------------------------
BAD_BODIES: list[tuple[str, str, int, str]] = [
    ("<Speak></Speak>", "Speak", 2, "text body required"),
    ("<Speak>   </Speak>", "Speak", 2, "text body required"),
    ("<Speak/>", "Speak", 2, "text body required"),
    ("<Play/>", "Play", 2, "text body required"),
    ("<Play>ftp://x/a.mp3</Play>", "Play", 2, "body must be the audio file's URL"),
    ("<Play>not a url</Play>", "Play", 2, "URL contains whitespace"),
    ("<Redirect/>", "Redirect", 2, "text body required"),
    ("<Redirect>javascript:alert(1)</Redirect>", "Redirect", 2, "body must be the URL to redirect to"),
    ("<DTMF/>", "DTMF", 2, "text body required"),
    ("<DTMF>12x</DTMF>", "DTMF", 2, "bad DTMF character 'x'"),
    ("<DTMF>wW</DTMF>", "DTMF", 2, "no keys to send"),
    ("<Dial>\n<Number/>\n</Dial>", "Number", 3, "text body required"),
    ("<Dial>\n<Number>1-415-555</Number>\n</Dial>", "Number", 3, "body must be a phone number"),
    ("<Dial>\n<Number>,123</Number>\n</Dial>", "Number", 3, "body must be a phone number"),
    ("<Dial>\n<Number>sip:bob@x</Number>\n</Dial>", "Number", 3, "body must be a phone number"),
    ("<Dial>\n<User>alice@example.com</User>\n</Dial>", "User", 3, "body must be a sip: URI"),
    ("<Dial>\n<User>sip:alice@exa mple.com</User>\n</Dial>", "User", 3, "body must be a sip: URI"),
    ("<Dial>\n<User>sip:a@b&gt;;x=&lt;y</User>\n</Dial>", "User", 3, "body must be a sip: URI"),
    ("<Dial/>", "Dial", 2, "needs at least one <Number> or <User>"),
    ("<Dial>text</Dial>", "Dial", 2, "takes no text"),
    ("<Dial><Number>1</Number>trailing</Dial>", "Dial", 2, "unexpected text between child elements: 'trailing'"),
    ("<Hangup>now</Hangup>", "Hangup", 2, "takes no text, got 'now'"),
    ("<Wait>5</Wait>", "Wait", 2, "takes no text"),
    ("<PreAnswer>hello</PreAnswer>", "PreAnswer", 2, "takes no text"),
    ("<GetDigits>Press 1</GetDigits>", "GetDigits", 2, "takes no text"),
    ("<Record>x</Record>", "Record", 2, "takes no text"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "element", "line", "fragment"), BAD_BODIES)
def test_bad_bodies(body: str, element: str, line: int, fragment: str) -> None:
    error = error_of(body)
    assert (error.element, error.attribute, error.line) == (element, None, line), str(error)
    assert fragment in error.detail, str(error)


# -- cross-attribute rules ------------------------------------------------------------------------------------------
CROSS: list[tuple[str, str, str | None, str]] = [
    ('<Wait beep="true" silence="true"/>', "Wait", "beep", 'beep="true" cannot be combined with silence="true"'),
    ('<Dial sipAuthUsername="bob"><User>sip:a@b</User></Dial>', "Dial", "sipAuthPassword",
     "required when sipAuthUsername is given"),
    ('<Dial sipAuthPassword="Secret-Pass-1"><User>sip:a@b</User></Dial>', "Dial", "sipAuthUsername",
     "sipAuthPassword is given without sipAuthUsername"),
    ('<Dial digitsMatch="*1"><Number>1</Number></Dial>', "Dial", "digitsMatch", "needs callbackUrl"),
    ('<Dial digitsMatchBLeg="*1"><Number>1</Number></Dial>', "Dial", "digitsMatchBLeg", "needs callbackUrl"),
    ('<Record recordSession="true" startOnDialAnswer="true"/>', "Record", "startOnDialAnswer",
     'cannot be "true" together with recordSession="true"'),
    ('<GetDigits validDigits=""/>', "GetDigits", "validDigits", "must list at least one key"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "element", "attribute", "fragment"), CROSS)
def test_cross_attribute_rules(body: str, element: str, attribute: str | None, fragment: str) -> None:
    error = error_of(body)
    assert (error.element, error.attribute, error.line) == (element, attribute, 2), str(error)
    assert fragment in error.detail


# -- accepted values and normalisation ------------------------------------------------------------------------------
def test_methods_are_case_insensitive_and_upper_cased() -> None:
    assert first('<Redirect method="get">/x</Redirect>').method == "GET"
    assert first('<Record method=" post "/>').method == "POST"


def test_finish_on_key_empty_or_none_disables_it() -> None:
    assert first('<GetDigits finishOnKey=""/>').finishOnKey == ""
    assert first('<GetDigits finishOnKey="none"/>').finishOnKey == ""
    assert first('<GetDigits finishOnKey="*"/>').finishOnKey == "*"
    assert first('<Record finishOnKey="1234567890*#"/>').finishOnKey == "1234567890*#"
    assert first('<Record finishOnKey="none"/>').finishOnKey == ""


def test_loop_zero_means_forever_and_is_accepted() -> None:
    assert first("<Speak loop=\"0\">x</Speak>").loop == 0
    assert first('<Play loop="0">https://a/b.mp3</Play>').loop == 0


def test_speak_voice_and_language_normalised() -> None:
    speak = first('<Speak voice="woman" language="en-us">x</Speak>')
    assert (speak.voice, speak.language) == ("WOMAN", "en-US")
    speak = first('<Speak voice="polly.Joanna-Neural" language="pt_BR">x</Speak>')
    assert (speak.voice, speak.language) == ("Polly.Joanna-Neural", "pt-BR")
    for language in ("da-DK", "nl-NL", "en-AU", "en-GB", "en-US", "fr-FR", "fr-CA", "de-DE", "it-IT", "pl-PL",
                     "pt-PT", "pt-BR", "ru-RU", "es-ES", "es-US", "sv-SE"):
        assert first(f'<Speak language="{language}">x</Speak>').language == language


def test_speak_plain_text_is_kept_unescaped() -> None:
    speak = first("<Speak>  Press 1 &amp; then &lt;hash&gt;  </Speak>")
    assert isinstance(speak, Speak)
    assert speak.text == "Press 1 & then <hash>" and speak.ssml is False


def test_speak_ssml_is_kept_as_markup() -> None:
    speak = first('<Speak voice="Polly.Joanna">Hi &amp; welcome<break time="1s"/>'
                  '<say-as interpret-as="digits">123</say-as> <lang xml:lang="fr-FR">Bonjour</lang>'
                  "<cont>more</cont></Speak>")
    assert isinstance(speak, Speak) and speak.ssml is True and speak.children == []
    assert speak.text == ('Hi &amp; welcome<break time="1s"/><say-as interpret-as="digits">123</say-as> '
                          '<lang xml:lang="fr-FR">Bonjour</lang> more')


def test_speak_ssml_only_body_is_not_empty() -> None:
    speak = first('<Speak><break time="2s"/></Speak>')
    assert speak.text == '<break time="2s"/>' and speak.ssml is True


def test_wait_and_hangup_values() -> None:
    wait = first('<Wait length="5" silence="true" minSilence="500"/>')
    assert (wait.length, wait.silence, wait.minSilence, wait.beep) == (5, True, 500, False)
    hangup = first('<Hangup reason="rejected" schedule="60"/>')
    assert (hangup.reason, hangup.schedule) == ("rejected", 60)
    assert first('<Hangup reason="busy"/>').reason == "busy"


def test_get_input_end_timeouts() -> None:
    verb = first('<GetInput action="/in" inputType="dtmf speech" digitEndTimeout="2" speechEndTimeout="10"/>')
    assert (verb.inputType, verb.digitEndTimeout, verb.speechEndTimeout) == ("dtmf speech", 2, 10)
    assert first('<GetInput action="/in" inputType="speech" digitEndTimeout="AUTO"/>').digitEndTimeout == "auto"


def test_dial_values() -> None:
    dial = first('<Dial timeLimit="100000" timeout="30" callerId="none" callerName="Front desk" confirmKey="#" '
                 'dialMusic="none" callbackUrl="/cb" digitsMatch=" *1 , #2 " type="whatsapp" '
                 'sipHeaders="CustomerId=123, PH-Internal=x,,Trace.id=a_b-c~1," hangupOnStar="true">'
                 "<Number>14155551234</Number></Dial>")
    assert isinstance(dial, Dial)
    assert dial.timeLimit == 86400  # cut to 24 h (DOCS)
    assert (dial.timeout, dial.callerId, dial.callerName, dial.confirmKey) == (30, "none", "Front desk", "#")
    assert (dial.dialMusic, dial.digitsMatch, dial.type, dial.hangupOnStar) == ("none", ("*1", "#2"), "whatsapp",
                                                                                 True)
    # raw pairs in order; reserved prefixes are dropped at dial time, not here
    assert dial.sipHeaders == (("CustomerId", "123"), ("PH-Internal", "x"), ("Trace.id", "a_b-c~1"))


@pytest.mark.parametrize("music", ["", "real", "REAL", "none", "https://example.com/ring.xml", "/ring.xml"])
def test_dial_music_values(music: str) -> None:
    assert first(f'<Dial dialMusic="{music}"><Number>1</Number></Dial>').dialMusic in (music, music.lower())


def test_whatsapp_dial_with_number_is_not_a_parse_error() -> None:
    dial = first('<Dial type="whatsapp"><Number>14155551234</Number></Dial>')  # reported at run time (spec §0.1)
    assert dial.type == "whatsapp"


def test_dial_credentials_pair() -> None:
    dial = first('<Dial sipAuthUsername="alice" sipAuthPassword="p4ssw0rd!"><User>sip:alice@example.com</User>'
                 "</Dial>")
    assert (dial.sipAuthUsername, dial.sipAuthPassword) == ("alice", "p4ssw0rd!")
    assert first(f'<Dial sipAuthUsername="a" sipAuthPassword="{"x" * 128}"><Number>1</Number></Dial>')


@pytest.mark.parametrize(("body", "expected"), [
    ("14155551234", "14155551234"),
    ("  14155551234  ", "14155551234"),
    ("14155551234,ignored", "14155551234"),
    ("14155551234|sofia/gateway/evil/1", "14155551234"),
    ("+14155551234", "+14155551234"),
    ("1000#", "1000#"),
])  # fmt: skip
def test_number_body_truncated_at_comma_or_pipe(body: str, expected: str) -> None:
    assert first(f"<Dial><Number>{body}</Number></Dial>").children[0].text == expected


@pytest.mark.parametrize("digits", ["1w2w3", "ww1234", "1W2", "123@1000", "12#*", "1A", "12+34@200"])
def test_send_digits_syntax(digits: str) -> None:
    dial = first(f'<Dial><Number sendDigits="{digits}">1</Number><User sendDigits="{digits}">sip:a@b</User></Dial>')
    assert [leg.sendDigits for leg in dial.children] == [digits, digits]


@pytest.mark.parametrize("uri", ["sip:alice@example.com", "sip:alice1234@phone.plivo.com", "sips:bob@10.0.0.1:5061",
                                 "sip:alice@127.0.0.1;transport=tcp", "SIP:carol@example.com", "sip:example.com"])
def test_user_sip_uris(uri: str) -> None:
    assert first(f"<Dial><User>{uri}</User></Dial>").children[0].text == uri


def test_user_sip_headers_are_per_user() -> None:
    dial = first('<Dial sipHeaders="a=1"><User sipHeaders="b=2,a=3">sip:a@b</User><User>sip:c@d</User></Dial>')
    assert dial.sipHeaders == (("a", "1"),)
    assert [u.sipHeaders for u in dial.children] == [(("b", "2"), ("a", "3")), ()]


def test_parse_sip_headers_directly() -> None:
    assert parse_sip_headers("") == ()
    assert parse_sip_headers("k1=v1,k2=v2") == (("k1", "v1"), ("k2", "v2"))
    assert parse_sip_headers(" k = v ") == (("k", "v"),)
    with pytest.raises(ValueError, match="value of header 'k'"):
        parse_sip_headers('k="quoted"')


# -- unknown attributes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "element", "attribute", "fragment"), [
    ('<Speak foo="1">x</Speak>', "Speak", "foo", "unknown attribute (known: voice, language, loop)"),
    ('<PreAnswer loop="1"/>', "PreAnswer", "loop", "takes no attributes"),
    ('<Dial sip_auth_username="bob"><Number>1</Number></Dial>', "Dial", "sip_auth_username",
     "did you mean 'sipAuthUsername'? attribute names are camelCase"),
    ('<Dial TimeOut="5"><Number>1</Number></Dial>', "Dial", "TimeOut", "did you mean 'timeout'?"),
    ('<Dial time_limit="5"><Number>1</Number></Dial>', "Dial", "time_limit", "did you mean 'timeLimit'?"),
    ('<GetDigits async="true"/>', "GetDigits", "async", "unknown attribute"),
    ('<Number gateways="x"/>', "Number", None, "not nestable in <Response>"),
    ('<Play xmlns:x="urn:x" x:loop="2">/a.mp3</Play>', "Play", "{urn:x}loop", "namespaced attributes"),
])  # fmt: skip
def test_unknown_attributes(body: str, element: str, attribute: str | None, fragment: str) -> None:
    error = error_of(body)
    assert (error.element, error.attribute, error.line) == (element, attribute, 2), str(error)
    assert fragment in error.detail


def test_fw_only_number_attributes_are_refused() -> None:
    error = error_of('<Dial><Number gateways="sofia/gateway/x/">1</Number></Dial>')
    assert (error.element, error.attribute) == ("Number", "gateways")


# -- the secret never leaks -----------------------------------------------------------------------------------------
SECRET = "Sup3r-Secret-Pw"
LEAKY: list[str] = [
    f'<Dial sipAuthPassword="{SECRET}"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="" sipAuthPassword="{SECRET}"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}" timeout="x"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}" bogus="1"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}"></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}"><Play>x</Play></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET * 9}"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}&#10;"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}&amp;&#1;"><User>sip:a@b</User></Dial>',
    '<Dial sipAuthUsername="u" sipAuthPassword="Sup3r"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}&undefined;"><User>sip:a@b</User></Dial>',
    f"<Dial sipAuthUsername=\"u\"\n  sipAuthPassword='{SECRET}&Sup3r;'><User>sip:a@b</User></Dial>",
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}<"><User>sip:a@b</User></Dial>',
    f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}" sipAuthPassword="{SECRET}"><User>sip:a@b</User></Dial>',
]


@pytest.mark.parametrize("body", LEAKY)
def test_sip_auth_password_never_appears_in_errors(body: str) -> None:
    errors = validate_document(doc(body))
    assert errors
    with pytest.raises(XmlError) as info:
        parse_document(doc(body))
    for error in [info.value, *errors]:
        for text in (str(error), error.detail, repr(error), str(error.args)):
            assert SECRET not in text and "Sup3r" not in text, text


def test_sip_auth_password_not_in_repr() -> None:
    dial = first(f'<Dial sipAuthUsername="u" sipAuthPassword="{SECRET}"><User>sip:a@b</User></Dial>')
    assert dial.sipAuthPassword == SECRET
    assert SECRET not in repr(dial) and "'sipAuthPassword': '***'" in repr(dial)


# -- base.Attr directly ---------------------------------------------------------------------------------------------
def test_attr_convert_kinds() -> None:
    def conv(attr: Attr, raw: str) -> Any:
        return attr.convert(raw, element="X", name="a", line=7)

    assert conv(Attr("int", min=0), " 42 ") == 42
    assert conv(Attr("bool"), "true") is True and conv(Attr("bool"), "false") is False
    assert conv(Attr("url"), "//cdn.example.com/a.mp3") == "//cdn.example.com/a.mp3"
    assert conv(Attr("key"), "NONE") == ""
    assert conv(Attr("digits"), "0123456789*#") == "0123456789*#"
    with pytest.raises(XmlError) as info:
        conv(Attr("int"), "9" * 80)
    assert (info.value.element, info.value.attribute, info.value.line) == ("X", "a", 7)
    assert "..." in info.value.detail  # long values are cut in messages
    with pytest.raises(XmlError, match="control characters"):
        conv(Attr("str"), "a\r\nb")
    with pytest.raises(XmlError) as info:
        conv(Attr("str", min_length=8, secret=True), "hunter2")
    assert "hunter2" not in str(info.value)
