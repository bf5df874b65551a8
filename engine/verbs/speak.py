"""`<Speak>` (spec §4.4): say text (or SSML) with text-to-speech, `loop` times (0 = until something ends the call).

The body is required and must not be empty (FW speaks nothing; spec [INF] says reject). SSML children (§1.2: break,
cont, emphasis, lang, p, phoneme, prosody, s, say-as, sub, w) are checked against the plivo SDK's own SSML tables
(which tag may hold which, and which attributes each takes) and kept as markup: `text` is then the serialised inner
SSML (entities escaped, `<cont>` unwrapped into spaces as the SDK does) and `ssml` is True. A plain-text body is kept
as text (unescaped) with `ssml` False - callers must use the flag, not sniff for '<'.

`voice` is WOMAN, MAN or Polly.<Name> (case-insensitive, normalised to WOMAN / MAN / Polly.Name); `language` is one
of the spec's list, matched case-insensitively (and with '_' for '-') and normalised to its canonical spelling.
What does not live here: rendering (media/tts).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar
from xml.sax.saxutils import escape

from lxml import etree

from media.tts import TtsError

from .base import NEXT, Attr, Outcome, ParseChild, Verb, XmlError, report, show

if TYPE_CHECKING:
    from lxml.etree import _Element

LANGUAGES = (
    "da-DK", "nl-NL", "en-AU", "en-GB", "en-US", "fr-FR", "fr-CA", "de-DE", "it-IT", "pl-PL", "pt-PT", "pt-BR",
    "ru-RU", "es-ES", "es-US", "sv-SE",
)  # fmt: skip
_LANGUAGE_BY_KEY = {code.lower(): code for code in LANGUAGES}
_POLLY = re.compile(r"(?i)polly\.([A-Za-z][A-Za-z0-9_-]*)")

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_INLINE = frozenset({"break", "emphasis", "lang", "phoneme", "prosody", "say-as", "sub", "w"})
# SSML tag -> (children it may hold, attributes it takes); from the plivo SDK's plivo/xml/*Element.py
SSML: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "break": (frozenset(), frozenset({"strength", "time"})),
    "cont": (_INLINE | {"p", "s", "cont"}, frozenset()),
    "emphasis": (_INLINE, frozenset({"level"})),
    "lang": (_INLINE | {"p", "s"}, frozenset({XML_LANG})),
    "p": (_INLINE | {"s"}, frozenset()),
    "phoneme": (frozenset(), frozenset({"alphabet", "ph"})),
    "prosody": (_INLINE | {"p", "s"}, frozenset({"volume", "rate", "pitch"})),
    "s": (_INLINE, frozenset()),
    "say-as": (frozenset(), frozenset({"interpret-as", "format"})),
    "sub": (frozenset(), frozenset({"alias"})),
    "w": (frozenset({"break", "emphasis", "phoneme", "prosody", "say-as", "sub"}), frozenset({"role"})),
}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse_voice(value: str) -> str:
    """WOMAN, MAN or Polly.<Name>; ValueError otherwise."""
    if value.upper() in ("WOMAN", "MAN"):
        return value.upper()
    match = _POLLY.fullmatch(value)
    if match:
        return f"Polly.{match.group(1)}"
    raise ValueError(f"expected WOMAN, MAN or Polly.<Name>, got {show(value)}")


def parse_language(value: str) -> str:
    """One of LANGUAGES (case and '_'/'-' insensitive), in its canonical spelling; ValueError otherwise."""
    code = _LANGUAGE_BY_KEY.get(value.replace("_", "-").lower())
    if code is None:
        raise ValueError(f"expected one of {', '.join(LANGUAGES)}, got {show(value)}")
    return code


class Speak(Verb):
    """Say the body (text or SSML)."""

    TAG = "Speak"
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {
        "voice": Attr("custom", default="WOMAN", parse=parse_voice),
        "language": Attr("custom", default="en-US", parse=parse_language),
        "loop": Attr("int", default=1, min=0),  # 0 means forever (FW: 10000 loops)
    }
    CHILDREN = frozenset(SSML)
    TEXT = "required"
    ANSWERS = True

    def __init__(self, attrs: dict[str, Any], text: str, children: list[Verb], line: int | None,
                 ssml: bool = False) -> None:
        super().__init__(attrs, text, children, line)
        self.ssml = ssml

    @classmethod
    def from_element(cls, el: _Element, parse_child: ParseChild, errors: list[XmlError] | None = None) -> Verb:
        """Attributes as usual; the body is plain text, or SSML markup checked here (never built as verbs)."""
        start = len(errors) if errors is not None else 0
        attrs = cls.parse_attributes(el, errors)
        ssml = any(isinstance(child.tag, str) for child in el)
        for child in el:
            if isinstance(child.tag, str):
                if child.tag in SSML:
                    _check_ssml(child, cls.TAG, errors)
                else:  # the factory words it like every other misplaced or unknown element (and reports it)
                    parse_child(child, cls.TAG)
        if ssml:
            text = _inner_markup(el)
        else:
            text = (el.text or "").strip()
        if not text:
            report(errors, XmlError("text body required (empty <Speak> says nothing)", element=cls.TAG,
                                    line=el.sourceline))
        verb = cls(attrs, text, [], el.sourceline, ssml=ssml)
        if errors is None or len(errors) == start:
            try:
                verb.validate()
            except XmlError as exc:
                report(errors, exc)
        return verb


    async def run(self, call: Any) -> Outcome:
        try:
            pcm = await call.engine.tts.render(self.text, self.attrs["voice"], self.attrs["language"])
        except TtsError as exc:
            call.log.error("speak_failed", error=str(exc))
            call.timeline.add("speak_failed", error=str(exc))
            return NEXT
        await call.play_pcm(pcm, loop=self.attrs["loop"])
        return NEXT

def _check_ssml(el: _Element, parent: str, errors: list[XmlError] | None) -> None:
    """Check one SSML element and everything below it: allowed in `parent` (an SSML tag or Speak), known attributes."""
    tag = el.tag
    if not isinstance(tag, str):
        return
    line = el.sourceline
    allowed = Speak.CHILDREN if parent == Speak.TAG else SSML[parent][0]
    if tag not in allowed:
        hint = f"<{parent}> takes no child elements" if not allowed else f"allowed: {', '.join(sorted(allowed))}"
        report(errors, XmlError(f"not nestable in <{parent}> ({hint})", element=tag, line=line))
        return
    for name, value in el.attrib.items():
        name = str(name)
        shown = "xml:lang" if name == XML_LANG else name
        if name not in SSML[tag][1]:
            known = ", ".join(sorted("xml:lang" if a == XML_LANG else a for a in SSML[tag][1])) or "none"
            report(errors, XmlError(f"unknown SSML attribute (known: {known})", element=tag, attribute=shown,
                                    line=line))
        elif _CONTROL.search(str(value)) or "\n" in str(value) or "\r" in str(value):
            report(errors, XmlError("control characters (including CR/LF) are not allowed", element=tag,
                                    attribute=shown, line=line))
    for child in el:
        if isinstance(child.tag, str):
            _check_ssml(child, tag, errors)


def _inner_markup(el: _Element) -> str:
    """The children of `el` serialised as SSML text (its own text escaped), `<cont>` unwrapped to spaces."""
    parts = [escape(el.text or "")]
    for child in el:
        if isinstance(child.tag, str):
            parts.append(etree.tostring(child, encoding="unicode", with_tail=True))
        else:
            parts.append(escape(child.tail or ""))
    markup = "".join(parts)
    for tag in ("<cont>", "</cont>", "<cont/>"):
        markup = markup.replace(tag, " ")
    return markup.strip()
