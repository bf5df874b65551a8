"""The one factory that turns an XML element into its `Verb`: `REGISTRY` (tag -> class) and `build()`.

`build(el, parent_tag)` decides, in this order, whether the element may stand where it is:
1. namespaced elements are refused;
2. a tag softswitch has never heard of is "unknown element" (with a "did you mean <Speak>?" hint for case slips);
3. an element the spec lists but softswitch does not implement is refused with "not supported by softswitch":
   - Conference, MultiPartyCall, Stream and Message (spec §4.12, §4.15-§4.17): conferencing, multi-party calls,
     WebSocket media streaming and SMS need subsystems softswitch does not have. Refusing them at parse time (instead
     of skipping them, or failing mid-call) means an app that relies on them fails loudly and before any verb has
     run, so it can fall back (fallback_url) rather than half-run;
   - SIPTransfer, Notify and GetSpeech: plivoframework-only (§4.18), not part of Plivo XML today.
   Conference/MultiPartyCall/Stream/Message are first checked for placement (a <Message> in <Dial> is "not
   nestable"), the FW-only three are refused wherever they are;
4. the parent must allow it (spec §1.2, the SDK's `_nestable` tables): "not nestable in <Y>";
5. the verb class validates its own attributes, text and children (`Verb.from_element`).

`collect(el, parent_tag, errors)` is the same walk in linter mode: every error is appended to `errors`, elements
that cannot be placed are skipped (None), and the walk goes on. Nothing else decides nesting: the interpreter and the
verbs never look at tags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Verb, XmlError, report
from .dial import Dial, Number, User
from .dtmf import DTMF
from .getdigits import GetDigits
from .getinput import GetInput
from .hangup import HangupVerb
from .play import Play
from .preanswer import PreAnswer
from .record import Record
from .redirect import RedirectVerb
from .speak import SSML, Speak
from .wait import Wait

if TYPE_CHECKING:
    from lxml.etree import _Element

ROOT = "Response"

REGISTRY: dict[str, type[Verb]] = {
    cls.TAG: cls
    for cls in (Speak, Play, Wait, HangupVerb, PreAnswer, RedirectVerb, GetDigits, GetInput, Record, DTMF, Dial,
                Number, User)
}

# spec §1.1: what <Response> may hold (the SDK's ResponseElement._nestable), implemented or not
RESPONSE_CHILDREN = frozenset({
    "Conference", "Dial", "DTMF", "GetDigits", "GetInput", "Hangup", "Message", "Play", "PreAnswer", "Record",
    "Redirect", "Speak", "Wait", "MultiPartyCall", "Stream",
})  # fmt: skip
UNSUPPORTED = frozenset({"Conference", "MultiPartyCall", "Stream", "Message"})
FW_ONLY = frozenset({"SIPTransfer", "Notify", "GetSpeech"})
KNOWN = frozenset(REGISTRY) | UNSUPPORTED | FW_ONLY | frozenset(SSML) | {ROOT}


def allowed_children(parent_tag: str) -> frozenset[str]:
    """The tags `parent_tag` may contain (spec §1.2)."""
    if parent_tag == ROOT:
        return RESPONSE_CHILDREN
    cls = REGISTRY.get(parent_tag)
    return cls.CHILDREN if cls is not None else frozenset()


def placement_error(el: _Element, parent_tag: str) -> XmlError | None:
    """Why `el` cannot stand inside `parent_tag`, or None if it can (steps 1-4 of the module docstring)."""
    tag, line = el.tag, el.sourceline
    if not isinstance(tag, str) or tag.startswith("{"):
        return XmlError("namespaced elements are not supported (drop the xmlns declaration)", element=str(tag),
                        line=line)
    if tag not in KNOWN:
        near = [k for k in sorted(KNOWN) if k.lower() == tag.lower()]
        hint = f"; did you mean <{near[0]}>? element names are case-sensitive" if near else ""
        return XmlError(f"unknown element{hint}", element=tag, line=line)
    if tag in FW_ONLY:
        return XmlError("not supported by softswitch (a plivoframework-only element)", element=tag, line=line)
    allowed = allowed_children(parent_tag)
    if tag not in allowed:
        if not allowed:
            return XmlError(f"not nestable in <{parent_tag}> (<{parent_tag}> takes no child elements)", element=tag,
                            line=line)
        return XmlError(f"not nestable in <{parent_tag}> (allowed: {', '.join(sorted(allowed))})", element=tag,
                        line=line)
    if tag in UNSUPPORTED:
        return XmlError("not supported by softswitch", element=tag, line=line)
    return None


def build(el: _Element, parent_tag: str) -> Verb:
    """The verb for `el` inside `parent_tag`; raises the first XmlError found."""
    verb = _build(el, parent_tag, None)
    assert verb is not None  # without an error list every problem raises
    return verb


def collect(el: _Element, parent_tag: str, errors: list[XmlError]) -> Verb | None:
    """Like `build`, but appends every error to `errors`; None when `el` cannot be placed at all."""
    return _build(el, parent_tag, errors)


def _build(el: _Element, parent_tag: str, errors: list[XmlError] | None) -> Verb | None:
    error = placement_error(el, parent_tag)
    if error is not None:
        report(errors, error)
        return None
    cls = REGISTRY[str(el.tag)]
    return cls.from_element(el, lambda child, parent: _build(child, parent, errors), errors)
