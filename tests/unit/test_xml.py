"""Whole documents: the hardened parser, the <Response> root, nesting, unknown and unsupported elements, the client's
seed examples (§0.4) as written by hand and as emitted by the real plivo SDK, and the linter (validate_document)."""

from __future__ import annotations

import pytest
from lxml import etree
from plivo import plivoxml

from engine import xml
from engine.verbs import registry
from engine.verbs.base import XmlError
from engine.verbs.dial import Dial, Number, User
from engine.verbs.getdigits import GetDigits
from engine.verbs.hangup import HangupVerb
from engine.verbs.play import Play
from engine.verbs.preanswer import PreAnswer
from engine.verbs.redirect import RedirectVerb
from engine.verbs.speak import Speak
from engine.verbs.wait import Wait
from engine.xml import MAX_BYTES, MAX_DEPTH, Document, make_parser, parse_document, validate_document


def error_of(data: bytes | str) -> XmlError:
    with pytest.raises(XmlError) as info:
        parse_document(data)
    return info.value


def tags(document: Document) -> list[str]:
    return [verb.TAG for verb in document.verbs]


# -- hardened parser ------------------------------------------------------------------------------------------------
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><Speak loop="&lol9;">&lol9;</Speak></Response>"""


def test_billion_laughs_is_refused_before_parsing() -> None:
    error = error_of(BILLION_LAUGHS)
    assert error.detail == "DOCTYPE and ENTITY declarations are not allowed (no DTDs, no entities)"
    assert error.line == 2


def test_xxe_is_refused() -> None:
    error = error_of('<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><Speak>&x;</Speak></Response>')
    assert "DOCTYPE" in error.detail and error.line == 1
    assert "root:" not in str(error)


def test_external_dtd_and_parameter_entities_are_refused() -> None:
    for data in ('<!DOCTYPE Response SYSTEM "http://evil.example/x.dtd"><Response/>',
                 '<!DOCTYPE r [<!ENTITY % p SYSTEM "http://evil.example/p">%p;]><Response/>',
                 "<!doctype Response><Response/>",
                 '<Response><!ENTITY x "y"></Response>'):
        assert "DOCTYPE and ENTITY declarations are not allowed" in error_of(data).detail


def test_the_parser_itself_never_resolves_entities_or_fetches() -> None:
    # defence in depth: even if the DOCTYPE check were bypassed, the parser expands and fetches nothing
    root = etree.fromstring(b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>', make_parser())
    assert root.text is None and b"root:" not in etree.tostring(root)
    root = etree.fromstring(b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/none.dtd"><r>ok</r>', make_parser())
    assert root.text == "ok"


def test_ten_megabyte_document_is_refused_by_size() -> None:
    data = b"<Response>" + b"<Wait/>" * (10 * 1024 * 1024 // 7) + b"</Response>"
    error = error_of(data)
    assert error.detail.startswith("document larger than 100 KB")
    assert validate_document(data)[0].detail == error.detail


def test_size_limit_is_100_kb_exactly() -> None:
    head, tail = b"<Response><Speak>", b"</Speak></Response>"
    fits = head + b"a" * (MAX_BYTES - len(head) - len(tail)) + tail
    assert len(fits) == MAX_BYTES and tags(parse_document(fits)) == ["Speak"]
    assert error_of(fits.replace(b"<Speak>", b"<Speak> ")).detail.startswith("document larger than 100 KB")


def test_size_counts_utf8_bytes_of_str_input() -> None:
    data = "<Response><Speak>" + "é" * (MAX_BYTES // 2) + "</Speak></Response>"
    assert error_of(data).detail.startswith("document larger than 100 KB")


def test_deep_nesting_1000_levels() -> None:
    data = "<Response>" + "<PreAnswer>" * 1000 + "</PreAnswer>" * 1000 + "</Response>"
    assert error_of(data).detail == f"document nested deeper than {MAX_DEPTH} levels"


def test_nesting_just_past_the_limit_names_the_element() -> None:
    data = "<Response>\n" + "<PreAnswer>" * MAX_DEPTH + "</PreAnswer>" * MAX_DEPTH + "\n</Response>"
    error = error_of(data)
    assert (error.detail, error.element, error.line) == (f"document nested deeper than {MAX_DEPTH} levels",
                                                         "PreAnswer", 2)


def test_invalid_utf8() -> None:
    error = error_of(b"<Response>\n<Speak>caf\xe9</Speak>\n</Response>")
    assert error.detail == "document is not valid UTF-8 (byte 0xe9 at offset 21)" and error.line == 2


def test_utf8_with_bom_and_declaration_is_fine() -> None:
    data = '\ufeff<?xml version="1.0" encoding="UTF-8"?>\n<Response><Speak>café ☎</Speak></Response>'.encode()
    assert parse_document(data).verbs[0].text == "café ☎"


def test_other_declared_encodings_are_refused() -> None:
    error = error_of(b'<?xml version="1.0" encoding="ISO-8859-1"?><Response/>')
    assert error.detail == "encoding 'ISO-8859-1' declared; documents must be UTF-8"


def test_utf16_is_refused_as_invalid_utf8() -> None:
    assert "not valid UTF-8" in error_of("<Response/>".encode("utf-16")).detail


@pytest.mark.parametrize("data", [b"", "", b"   \n\t  ", "\ufeff"])
def test_empty_body(data: bytes | str) -> None:
    assert error_of(data).detail == "empty document"


def test_syntax_error_carries_lxml_line_and_column() -> None:
    error = error_of("<Response>\n  <Speak>hi</Speek>\n</Response>")
    assert error.detail == "malformed XML: Opening and ending tag mismatch: Speak line 2 and Speek"
    assert (error.line, error.column) == (2, 20)
    assert str(error).startswith("line 2 column 20: malformed XML")


def test_undefined_entity_is_a_syntax_error() -> None:
    error = error_of("<Response>\n<Speak>&nbsp;</Speak></Response>")
    assert error.detail == "malformed XML: Entity 'nbsp' not defined" and error.line == 2


def test_not_xml_at_all() -> None:
    assert error_of('{"verb": "speak"}').detail.startswith("malformed XML:")


def test_comments_and_processing_instructions_are_dropped() -> None:
    document = parse_document("<Response><!-- hello --><?pi x?><Speak>Hi<!-- c --> there</Speak></Response>")
    assert tags(document) == ["Speak"] and document.verbs[0].text == "Hi there"


def test_cdata_text_is_plain_text() -> None:
    speak = parse_document("<Response><Speak><![CDATA[Press <1> & go]]></Speak></Response>").verbs[0]
    assert speak.text == "Press <1> & go" and speak.ssml is False


# -- the root -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "element"), [
    ("<Foo/>", "Foo"), ("<response/>", "response"), ("<Speak>hi</Speak>", "Speak"), ("<Dial/>", "Dial"),
])  # fmt: skip
def test_root_must_be_response(data: str, element: str) -> None:
    error = error_of(data)
    assert error.detail == f"the root element must be <Response> (No Response Tag Present), got <{element}>"
    assert (error.element, error.line) == (element, 1)


def test_namespaced_root_is_refused() -> None:
    error = error_of('<Response xmlns="urn:x"><Speak>x</Speak></Response>')
    assert "namespaced elements are not supported" in error.detail


def test_empty_response_is_valid() -> None:
    assert parse_document("<Response/>").verbs == ()
    assert parse_document("<Response>\n  \n</Response>").verbs == ()
    assert validate_document("<Response/>") == []


def test_response_takes_no_attributes_or_text() -> None:
    error = error_of('<Response version="2"><Hangup/></Response>')
    assert (error.element, error.attribute, error.detail) == ("Response", "version", "takes no attributes")
    error = error_of("<Response>Hello<Hangup/></Response>")
    assert (error.element, error.detail) == ("Response", "unexpected text 'Hello'")
    error = error_of("<Response>\n<Hangup/>\nbye\n</Response>")
    assert (error.element, error.line, error.detail) == ("Response", 2, "unexpected text between elements: 'bye'")


# -- nesting (spec §1.2) --------------------------------------------------------------------------------------------
NESTING: list[tuple[str, str, int, str]] = [
    ("<Number>1</Number>", "Number", 2, "not nestable in <Response> (allowed: Conference, DTMF, Dial, GetDigits"),
    ("<User>sip:a@b</User>", "User", 2, "not nestable in <Response>"),
    ("<Dial>\n<Speak>x</Speak>\n</Dial>", "Speak", 3, "not nestable in <Dial> (allowed: Number, User)"),
    ("<Dial>\n<Dial><Number>1</Number></Dial>\n</Dial>", "Dial", 3, "not nestable in <Dial>"),
    ("<GetDigits>\n<Dial><Number>1</Number></Dial>\n</GetDigits>", "Dial", 3,
     "not nestable in <GetDigits> (allowed: Play, Speak, Wait)"),
    ("<GetDigits>\n<GetDigits/>\n</GetDigits>", "GetDigits", 3, "not nestable in <GetDigits>"),
    ("<GetInput action='/x' inputType='dtmf'>\n<DTMF>1</DTMF>\n</GetInput>", "DTMF", 3,
     "not nestable in <GetInput> (allowed: Play, Speak, Wait)"),
    ("<PreAnswer>\n<PreAnswer/>\n</PreAnswer>", "PreAnswer", 3,
     "not nestable in <PreAnswer> (allowed: DTMF, GetDigits, Message, Play, Redirect, Speak, Wait)"),
    ("<PreAnswer>\n<Dial><Number>1</Number></Dial>\n</PreAnswer>", "Dial", 3, "not nestable in <PreAnswer>"),
    ("<PreAnswer>\n<Record/>\n</PreAnswer>", "Record", 3, "not nestable in <PreAnswer>"),
    ("<PreAnswer>\n<Hangup/>\n</PreAnswer>", "Hangup", 3, "not nestable in <PreAnswer>"),
    ("<PreAnswer>\n<GetInput action='/x' inputType='dtmf'/>\n</PreAnswer>", "GetInput", 3,
     "not nestable in <PreAnswer>"),
    ("<Play>\n<Speak>x</Speak>\n</Play>", "Speak", 3, "not nestable in <Play> (<Play> takes no child elements)"),
    ("<Wait>\n<Play>/a.mp3</Play>\n</Wait>", "Play", 3, "not nestable in <Wait> (<Wait> takes no child elements)"),
    ("<Dial>\n<Number>1<Play>/a</Play></Number>\n</Dial>", "Play", 3, "not nestable in <Number>"),
    ("<Record>\n<Speak>x</Speak>\n</Record>", "Speak", 3, "not nestable in <Record>"),
    ("<Hangup>\n<Wait/>\n</Hangup>", "Wait", 3, "not nestable in <Hangup>"),
    ("<Speak>Hi\n<Play>/a</Play></Speak>", "Play", 3, "not nestable in <Speak> (allowed: break, cont, emphasis"),
    ("<break/>", "break", 2, "not nestable in <Response>"),
    ("<Response/>", "Response", 2, "not nestable in <Response>"),
    ("<Dial>\n<Message>hi</Message>\n</Dial>", "Message", 3, "not nestable in <Dial>"),
    # SSML inside Speak, per the SDK's tables
    ("<Speak>a\n<break><s>x</s></break></Speak>", "s", 3, "not nestable in <break> (<break> takes no child"),
    ("<Speak>a\n<p><p>x</p></p></Speak>", "p", 3, "not nestable in <p> (allowed: break, emphasis, lang, phoneme"),
    ("<Speak>a\n<w><lang>x</lang></w></Speak>", "lang", 3, "not nestable in <w>"),
    ("<Speak>a\n<foo>x</foo></Speak>", "foo", 3, "unknown element"),
    ("<Speak>a\n<Speak>x</Speak></Speak>", "Speak", 3, "not nestable in <Speak>"),
    ("<Speak>a\n<p><Play>/a</Play></p></Speak>", "Play", 3, "not nestable in <p>"),
    ("<Speak>a\n<p><foo/></p></Speak>", "foo", 3, "not nestable in <p>"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "element", "line", "fragment"), NESTING)
def test_nesting_errors(body: str, element: str, line: int, fragment: str) -> None:
    error = error_of(f"<Response>\n{body}\n</Response>")
    assert (error.element, error.line) == (element, line), str(error)
    assert fragment in error.detail, str(error)


def test_ssml_attribute_errors() -> None:
    error = error_of('<Response>\n<Speak>a<break foo="1"/></Speak></Response>')
    assert (error.element, error.attribute, error.line) == ("break", "foo", 2)
    assert error.detail == "unknown SSML attribute (known: strength, time)"
    error = error_of('<Response><Speak>a<lang lang="fr">b</lang></Speak></Response>')
    assert (error.element, error.attribute) == ("lang", "lang")
    assert error.detail == "unknown SSML attribute (known: xml:lang)"
    error = error_of('<Response><Speak>a<sub alias="x&#10;y">b</sub></Speak></Response>')
    assert (error.element, error.attribute) == ("sub", "alias") and "control characters" in error.detail


def test_allowed_nesting() -> None:
    document = parse_document("""<Response>
      <PreAnswer>
        <Speak>One</Speak><Play>/a.mp3</Play><Wait/><DTMF>1</DTMF>
        <GetDigits action="/d"><Speak>Press</Speak><Play>/p.mp3</Play><Wait length="2"/></GetDigits>
        <Redirect>/next</Redirect>
      </PreAnswer>
      <GetInput action="/in" inputType="speech"><Speak>Say</Speak><Play>/b.mp3</Play><Wait/></GetInput>
      <Dial><Number>14155551234</Number><User>sip:alice@example.com</User><Number>14155550000</Number></Dial>
    </Response>""")
    pre, get_input, dial = document.verbs
    assert isinstance(pre, PreAnswer) and [c.TAG for c in pre.children] == [
        "Speak", "Play", "Wait", "DTMF", "GetDigits", "Redirect"]
    assert isinstance(pre.children[4], GetDigits) and [c.TAG for c in pre.children[4].children] == [
        "Speak", "Play", "Wait"]
    assert [c.TAG for c in get_input.children] == ["Speak", "Play", "Wait"]
    assert isinstance(dial, Dial) and [type(c) for c in dial.children] == [Number, User, Number]
    assert [v.line for v in document.verbs] == [2, 7, 8]


# -- unknown and unsupported elements ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "element", "detail"), [
    ("<Foo/>", "Foo", "unknown element"),
    ("<Gather/>", "Gather", "unknown element"),
    ("<Say>hi</Say>", "Say", "unknown element"),
    ("<speak>hi</speak>", "speak", "unknown element; did you mean <Speak>? element names are case-sensitive"),
    ("<HANGUP/>", "HANGUP", "unknown element; did you mean <Hangup>? element names are case-sensitive"),
    ("<Dial><Sip>sip:a@b</Sip></Dial>", "Sip", "unknown element"),
])  # fmt: skip
def test_unknown_elements(body: str, element: str, detail: str) -> None:
    error = error_of(f"<Response>\n{body}\n</Response>")
    assert (error.element, error.line, error.detail) == (element, 2, detail)
    assert str(error) == f"<{element}> line 2: {detail}"


@pytest.mark.parametrize(("body", "element", "detail"), [
    ("<Conference>room</Conference>", "Conference", "not supported by softswitch"),
    ("<MultiPartyCall role='agent'>mpc</MultiPartyCall>", "MultiPartyCall", "not supported by softswitch"),
    ("<Stream>wss://x/s</Stream>", "Stream", "not supported by softswitch"),
    ("<Message src='1' dst='2'>hi</Message>", "Message", "not supported by softswitch"),
    ("<PreAnswer><Message>hi</Message></PreAnswer>", "Message", "not supported by softswitch"),
    ("<SIPTransfer>sip:a@b</SIPTransfer>", "SIPTransfer",
     "not supported by softswitch (a plivoframework-only element)"),
    ("<Notify>/n</Notify>", "Notify", "not supported by softswitch (a plivoframework-only element)"),
    ("<GetSpeech/>", "GetSpeech", "not supported by softswitch (a plivoframework-only element)"),
    ("<PreAnswer><SIPTransfer>sip:a@b</SIPTransfer></PreAnswer>", "SIPTransfer",
     "not supported by softswitch (a plivoframework-only element)"),
])  # fmt: skip
def test_unsupported_elements(body: str, element: str, detail: str) -> None:
    error = error_of(f"<Response>\n{body}\n</Response>")
    assert (error.element, error.line, error.detail) == (element, 2, detail)


def test_namespaced_child_element_is_refused() -> None:
    error = error_of('<Response xmlns:x="urn:x">\n<x:Speak>hi</x:Speak></Response>')
    assert "namespaced elements are not supported" in error.detail and error.line == 2


def test_registry_is_the_single_table() -> None:
    assert set(registry.REGISTRY) == {"Speak", "Play", "Wait", "Hangup", "PreAnswer", "Redirect", "GetDigits",
                                      "GetInput", "Record", "DTMF", "Dial", "Number", "User"}
    assert registry.REGISTRY["Hangup"] is HangupVerb and registry.REGISTRY["Redirect"] is RedirectVerb
    for tag, cls in registry.REGISTRY.items():
        assert tag == cls.TAG and cls.__doc__ and cls.__module__.startswith("engine.verbs.")
    implemented = {"Dial", "DTMF", "GetDigits", "GetInput", "Hangup", "Play", "PreAnswer", "Record", "Redirect",
                   "Speak", "Wait"}
    assert registry.UNSUPPORTED | implemented == registry.RESPONSE_CHILDREN


def test_build_on_a_single_element() -> None:
    el = etree.fromstring('<Wait length="3"/>', make_parser())
    verb = registry.build(el, "Response")
    assert isinstance(verb, Wait) and verb.length == 3
    with pytest.raises(XmlError, match="not nestable in <Dial>"):
        registry.build(el, "Dial")


# -- the client's seed examples (§0.4) ------------------------------------------------------------------------------
SEED_SEQUENTIAL_FALLBACK = """<Response>
    <Dial timeout="15" action="/dial-status/">
        <Number>14155551234</Number>
    </Dial>
    <Dial timeout="15" action="/dial-status/">
        <Number>14155555678</Number>
    </Dial>
    <Speak>Sorry, nobody is available. Goodbye.</Speak>
</Response>"""
SEED_SPEAK_HANGUP = "<Response><Speak>Hello, thanks for calling.</Speak><Hangup/></Response>"
SEED_SCHEDULED_HANGUP = """<Response>
    <Speak>This call will end in 60 seconds.</Speak>
    <Hangup schedule="60"/>
    <Play loop="0">https://s3.amazonaws.com/plivocloud/music.mp3</Play>
</Response>"""
SEED_CLOSED = "<Response><Speak>We are closed. Call again tomorrow.</Speak><Hangup/></Response>"
SEED_OPEN = "<Response><Speak>Connecting you now.</Speak><Dial><Number>14155551234</Number></Dial></Response>"
SEED_BLOCKED = '<Response><Hangup reason="rejected"/></Response>'
SEED_WAIT = '<Response><Speak>One</Speak><Wait length="5"/><Speak>Two</Speak></Response>'
SEED_VOICEMAIL_DROP = '<Response><Wait length="5" beep="true"/><Speak>Hi, this is a message.</Speak></Response>'
SEED_PREANSWER = """<Response>
    <PreAnswer><Speak>Please hold while we connect you.</Speak></PreAnswer>
    <Dial><Number>14155551234</Number></Dial>
</Response>"""


def test_seed_1_sequential_fallback() -> None:
    document = parse_document(SEED_SEQUENTIAL_FALLBACK, source_url="http://app.example/answer/")
    assert tags(document) == ["Dial", "Dial", "Speak"]
    first, second, _ = document.verbs
    assert (first.timeout, first.action, first.redirect) == (15, "/dial-status/", True)
    assert [n.text for n in first.children + second.children] == ["14155551234", "14155555678"]
    assert document.resolve(first.action) == "http://app.example/dial-status/"


def test_seed_2_and_4_speak_then_hangup_or_dial() -> None:
    assert tags(parse_document(SEED_SPEAK_HANGUP)) == ["Speak", "Hangup"]
    assert tags(parse_document(SEED_CLOSED)) == ["Speak", "Hangup"]
    assert tags(parse_document(SEED_OPEN)) == ["Speak", "Dial"]


def test_seed_3_scheduled_hangup_then_endless_play() -> None:
    speak, hangup, play = parse_document(SEED_SCHEDULED_HANGUP).verbs
    assert isinstance(hangup, HangupVerb) and hangup.schedule == 60 and hangup.reason is None
    assert isinstance(play, Play) and play.loop == 0 and play.text.endswith("music.mp3")
    assert speak.text == "This call will end in 60 seconds."


def test_seed_5_blocked_caller() -> None:
    (hangup,) = parse_document(SEED_BLOCKED).verbs
    assert hangup.reason == "rejected" and hangup.ANSWERS is False


def test_seed_6_waits() -> None:
    assert [v.attrs.get("length") for v in parse_document(SEED_WAIT).verbs] == [None, 5, None]
    wait, speak = parse_document(SEED_VOICEMAIL_DROP).verbs
    assert (wait.length, wait.beep, wait.silence) == (5, True, False) and isinstance(speak, Speak)


def test_seed_7_preanswer_then_dial() -> None:
    pre, dial = parse_document(SEED_PREANSWER).verbs
    assert isinstance(pre, PreAnswer) and not pre.ANSWERS and not dial.ANSWERS
    assert [c.TAG for c in pre.children] == ["Speak"]


# -- the same seeds, written by the real plivo SDK --------------------------------------------------------------------
def sdk_seeds() -> dict[str, str]:
    x = plivoxml
    fallback = x.ResponseElement()
    for number in ("14155551234", "14155555678"):
        fallback.add(x.DialElement(timeout=15, action="/dial-status/").add(x.NumberElement(number)))
    fallback.add(x.SpeakElement("Sorry, nobody is available."))
    return {
        "sequential": fallback.to_string(),
        "speak-hangup": x.ResponseElement().add(x.SpeakElement("Hi")).add(x.HangupElement()).to_string(),
        "scheduled": x.ResponseElement().add(x.SpeakElement("This call will end in 60 seconds."))
        .add(x.HangupElement(schedule=60)).add(x.PlayElement("https://example.com/music.mp3", loop=0)).to_string(),
        "open": x.ResponseElement().add(x.SpeakElement("Connecting"))
        .add(x.DialElement().add(x.NumberElement("14155551234"))).to_string(),
        "blocked": x.ResponseElement().add(x.HangupElement(reason="rejected")).to_string(),
        "wait": x.ResponseElement().add(x.SpeakElement("One")).add(x.WaitElement(length=5))
        .add(x.SpeakElement("Two")).to_string(),
        "voicemail": x.ResponseElement().add(x.WaitElement(length=5, beep=True)).add(x.SpeakElement("Hi"))
        .to_string(),
        "preanswer": x.ResponseElement().add(x.PreAnswerElement().add(x.SpeakElement("Hold on")))
        .add(x.DialElement().add(x.NumberElement("14155551234"))).to_string(),
    }


@pytest.mark.parametrize("name", list(sdk_seeds()))
def test_sdk_seed_documents_parse(name: str) -> None:
    xml = sdk_seeds()[name]
    assert validate_document(xml) == []
    assert parse_document(xml).verbs


def test_sdk_kitchen_sink_every_supported_attribute() -> None:
    """Every attribute name the SDK writes for the verbs softswitch implements is one our schemas accept."""
    x = plivoxml
    response = x.ResponseElement()
    pre = x.PreAnswerElement()
    pre.add_speak("Early", voice="MAN", language="en-GB", loop=2)
    pre.add_play("https://a.example/b.mp3", loop=0)
    pre.add_wait(length=2)
    pre.add_dtmf("12", async_=False)
    digits = x.GetDigitsElement(action="/d", method="GET", timeout=7, digit_timeout=3, finish_on_key="*",
                                num_digits=4, retries=2, redirect=False, play_beep=True, valid_digits="123",
                                invalid_digits_sound="/bad.mp3", log=False)
    digits.add_speak("Press").add_play("/p.wav").add_wait(length=1)
    pre.add(digits).add_redirect("/next", method="GET")
    response.add(pre)
    response.add(x.GetInputElement(
        action="/gi", method="POST", input_type="dtmf speech", execution_timeout=20, digit_end_timeout=3,
        speech_end_timeout=4, finish_on_key="#", num_digits=5, speech_model="phone_call", hints="yes,no",
        language="en-US", interim_speech_results_callback="/i", interim_speech_results_callback_method="GET",
        log=True, redirect=True, profanity_filter=True).add_speak("Say"))
    response.add(x.RecordElement(
        action="/r", method="GET", file_format="wav", redirect=False, timeout=5, max_length=30, play_beep=False,
        finish_on_key="1234567890*#", record_session=False, start_on_dial_answer=True, transcription_type="auto",
        transcription_url="/t", transcription_method="GET", transcription_report_type="x", callback_url="/cb",
        callback_method="GET", record_channel_type="mono"))
    dial = x.DialElement(action="/a", method="GET", hangup_on_star=True, time_limit=600, timeout=20,
                         caller_id="14155550000", caller_name="Bob", confirm_sound="/c", confirm_timeout="10",
                         confirm_key="5", dial_music="real", callback_url="/cb", callback_method="GET",
                         redirect=False, digits_match="*1,#2", digits_match_b_leg="9", sip_headers="a=b,c=d")
    dial.add(x.NumberElement("14155551234", send_digits="ww12", send_on_preanswer=True, send_digits_mode="rfc2833"))
    dial.add(x.UserElement("sip:alice@example.com", send_digits="1", send_on_preanswer=False, sip_headers="k=v"))
    response.add(dial)
    response.add(x.WaitElement(length=5, silence=True, min_silence=500, beep=False))
    response.add(x.HangupElement(reason="busy", schedule=60))
    speak = x.SpeakElement("Hi", voice="Polly.Joanna", language="en-US", loop=1)
    speak.add_break(strength="strong", time="1s").add_emphasis("wow", level="strong")
    speak.add_lang("Bonjour", xmllang="fr-FR").add_p("para").add_phoneme("tomato", alphabet="ipa", ph="t")
    speak.add_prosody("slow", volume="loud", rate="slow", pitch="low").add_s("sentence")
    speak.add_say_as("123", interpret_as="digits", format="x").add_sub("W3C", alias="World Wide Web")
    speak.add_w("read", role="amazon:VBD").add_cont("continued")
    response.add(speak)
    xml = response.to_string()

    assert validate_document(xml) == []
    document = parse_document(xml)
    assert tags(document) == ["PreAnswer", "GetInput", "Record", "Dial", "Wait", "Hangup", "Speak"]
    get_input, record, parsed_dial = document.verbs[1:4]
    assert (get_input.inputType, get_input.digitEndTimeout, get_input.speechModel) == ("dtmf speech", 3,
                                                                                     "phone_call")
    assert (record.fileFormat, record.startOnDialAnswer, record.recordChannelType) == ("wav", True, "mono")
    assert parsed_dial.digitsMatch == ("*1", "#2") and parsed_dial.sipHeaders == (("a", "b"), ("c", "d"))
    ssml = document.verbs[-1]
    assert ssml.ssml and '<lang xml:lang="fr-FR">Bonjour</lang>' in ssml.text and "continued" in ssml.text


def test_sdk_conference_is_refused_precisely() -> None:
    xml = plivoxml.ResponseElement().add(plivoxml.ConferenceElement("room1")).to_string()
    error = error_of(xml)
    assert (error.element, error.line, error.detail) == ("Conference", 2, "not supported by softswitch")


# -- relative URLs (§0.4) -------------------------------------------------------------------------------------------
def test_relative_urls_are_accepted_and_resolved_later() -> None:
    document = parse_document("""<Response>
        <Play>music/hold.mp3</Play>
        <GetDigits action="../digits" invalidDigitsSound="/sounds/bad.wav"><Play>//cdn.example.com/p.mp3</Play>
        </GetDigits>
        <Record action="/recorded" callbackUrl="cb?x=1" transcriptionUrl="/t"/>
        <Dial action="/dial-status/" callbackUrl="/cb" confirmSound="confirm.xml" dialMusic="/music.xml">
            <Number>1</Number></Dial>
        <Redirect>/next</Redirect>
    </Response>""", source_url="http://app.example/answer/")
    play, digits, record, dial, redirect = document.verbs
    assert play.text == "music/hold.mp3"  # kept as written
    assert document.resolve(play.text) == "http://app.example/answer/music/hold.mp3"
    assert document.resolve(digits.action) == "http://app.example/digits"
    assert document.resolve(digits.children[0].text) == "http://cdn.example.com/p.mp3"
    assert document.resolve(record.callbackUrl) == "http://app.example/answer/cb?x=1"
    assert document.resolve(dial.dialMusic) == "http://app.example/music.xml"
    assert document.resolve(redirect.text) == "http://app.example/next"
    assert document.resolve("https://other.example/x") == "https://other.example/x"
    assert Document((), "").resolve("/x") == "/x"


# -- the linter --------------------------------------------------------------------------------------------------------
def test_validate_document_collects_every_error_with_lines() -> None:
    data = """<Response>
  <Speak loop="x" voice="Robot">hi</Speak>
  <Dial timeout="0" callerName="ok">
    <Play>/a.mp3</Play>
    <Number sendDigits="zz">1</Number>
  </Dial>
  <Foo/>
  <Conference>room</Conference>
  <Hangup reason="normal"/>
  <Wait length="2"/>
</Response>"""
    errors = validate_document(data)
    assert [(e.line, e.element, e.attribute) for e in errors] == [
        (2, "Speak", "loop"), (2, "Speak", "voice"),
        (3, "Dial", "timeout"),
        (4, "Play", None),
        (5, "Number", "sendDigits"),
        (7, "Foo", None),
        (8, "Conference", None),
        (9, "Hangup", "reason"),
    ]
    assert str(errors[0]) == str(error_of(data))


def test_validate_document_skips_follow_on_cross_rule_noise() -> None:
    # the only child is misplaced: "Dial needs a Number" would be noise on top of the real error
    errors = validate_document("<Response><Dial><Play>/a</Play></Dial></Response>")
    assert [e.detail for e in errors] == ["not nestable in <Dial> (allowed: Number, User)"]


def test_validate_document_reports_cross_rules_when_all_else_is_fine() -> None:
    errors = validate_document('<Response><Wait beep="true" silence="true"/><Dial/></Response>')
    assert [(e.element, e.attribute) for e in errors] == [("Wait", "beep"), ("Dial", None)]


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", "<Response>", "<Foo/>", BILLION_LAUGHS, "<Response>" + "<PreAnswer>" * 40,
])  # fmt: skip
def test_validate_document_fatal_errors_come_alone(data: bytes | str) -> None:
    errors = validate_document(data)
    assert len(errors) == 1 and str(errors[0]) == str(error_of(data))


@pytest.mark.parametrize("data", [
    SEED_SEQUENTIAL_FALLBACK, SEED_SPEAK_HANGUP, SEED_SCHEDULED_HANGUP, SEED_CLOSED, SEED_OPEN, SEED_BLOCKED,
    SEED_WAIT, SEED_VOICEMAIL_DROP, SEED_PREANSWER,
])  # fmt: skip
def test_valid_documents_have_no_lint(data: str) -> None:
    assert validate_document(data) == []


def test_str_and_bytes_parse_alike() -> None:
    data = '<?xml version="1.0" encoding="utf-8"?><Response><Speak>Grüße</Speak></Response>'
    assert parse_document(data).verbs[0].text == parse_document(data.encode()).verbs[0].text == "Grüße"


def test_validated_verbs_are_reused_for_the_same_bytes_but_each_call_gets_its_own_document() -> None:
    body = b'<Response><Speak>cached one</Speak><Hangup reason="busy"/></Response>'
    first = xml.parse_document(body, source_url="http://a/x")
    second = xml.parse_document(body, source_url="http://b/y")
    assert first is not second
    assert [v.TAG for v in second.verbs] == ["Speak", "Hangup"]
    assert all(a is b for a, b in zip(first.verbs, second.verbs, strict=True))  # parsed and validated once
    assert (first.source_url, second.source_url) == ("http://a/x", "http://b/y")
    assert isinstance(second.verbs, tuple)  # shared by the calls that got the same bytes: no caller can change it


def test_an_invalid_document_fails_every_time_and_big_documents_are_not_kept() -> None:
    bad = b'<Response><Hangup reason="nope"/></Response>'
    for _ in range(2):
        with pytest.raises(XmlError, match="reason"):
            xml.parse_document(bad)
    assert bad not in xml._VALIDATED
    big = b"<Response>" + b"<Wait length='1'/>" * 2000 + b"</Response>"
    assert len(xml.parse_document(big).verbs) == 2000
    assert big not in xml._VALIDATED
