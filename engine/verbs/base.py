"""The `Verb` base class, attribute schemas and the outcomes a verb returns to the interpreter.

A verb is parsed once from its XML element (`from_element`, raising a precise `XmlError` naming the element,
attribute and line) and run with `await verb.run(call)`, returning an `Outcome`. Schemas are declarative
(`Attr`) so `softswitch check-xml` and the interpreter share one validator: `from_element` either raises the first
error (the interpreter) or, given an `errors` list, records every error it can find and goes on (the linter). Both
walk the same code in the same order, so a document is valid for one exactly when it is valid for the other.

Values that are secret (`Attr(secret=True)`, e.g. Dial's sipAuthPassword) never appear in an error message or in a
verb's repr.

What does not live here: lxml parsing of whole documents (engine.xml), the tag -> verb table and nesting rules
(engine.verbs.registry), SIP, media, HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lxml.etree import _Element


class XmlError(ValueError):
    """A document the engine will not run; the message names element, attribute and line."""

    def __init__(self, message: str, *, element: str | None = None, attribute: str | None = None,
                 line: int | None = None, column: int | None = None) -> None:
        where = []
        if element:
            where.append(f"<{element}>")
        if attribute:
            where.append(f"attribute {attribute!r}")
        if line:
            where.append(f"line {line}")
        if column:
            where.append(f"column {column}")
        super().__init__(f"{' '.join(where)}: {message}" if where else message)
        self.element = element
        self.attribute = attribute
        self.line = line
        self.column = column
        self.detail = message


# -- outcomes ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Next:
    """Go on with the next element."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """Replace the document with the one at `url` (fetched with `method` and `params` + session params)."""

    url: str
    method: str = "POST"
    params: dict[str, str] = field(default_factory=dict)
    # An action URL (redirect="true"): when it returns nothing usable, go on with the next element of the current
    # document instead of ending the call (seed example 1, spec §0.4). A <Redirect> element ends the call instead.
    continue_on_failure: bool = False


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call with this cause name (engine.causes), e.g. NORMAL_CLEARING, CALL_REJECTED, USER_BUSY."""

    cause: Any  # an engine.causes.Cause, or a HangupCause name
    source: str = "Answer XML"


Outcome = Next | Redirect | Hangup

NEXT = Next()


# -- value checks shared by schemas -----------------------------------------------------------------------------------
KEYS = "0123456789*#"  # the keys an attribute such as finishOnKey or validDigits may name
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # XML 1.0 forbids most; &#13;/&#10; survive as refs
_LINE_BREAK = re.compile(r"[\r\n]")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


def show(raw: str, limit: int = 60) -> str:
    """`raw` quoted for an error message, cut to `limit` characters (a 100 KB attribute must not flood a log)."""
    return repr(raw if len(raw) <= limit else raw[:limit] + "...")


def parse_url(value: str) -> str:
    """An http(s) URL or a relative reference (resolved against the document's URL at run time); ValueError if not.

    Relative references are accepted everywhere (spec §0.4): `/dial-status/`, `next.xml`, `//host/path`.
    """
    if not value:
        raise ValueError("empty URL")
    if any(ch.isspace() for ch in value):
        raise ValueError(f"URL contains whitespace: {show(value)}")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError(f"not a URL: {show(value)}") from None
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"expected an http(s) URL, got {show(value)}")
    if parts.scheme and not parts.netloc:
        raise ValueError(f"URL has no host: {show(value)}")
    return value


def report(errors: list[XmlError] | None, error: XmlError) -> None:
    """Raise `error` (interpreter mode) or record it and carry on (linter mode)."""
    if errors is None:
        raise error
    errors.append(error)


def _suggest(name: str, known: dict[str, Attr]) -> str:
    """' (did you mean 'sipAuthUsername'? ...)' when `name` is a snake_case or wrong-case spelling of a known name."""
    camel = re.sub(r"[_-]([A-Za-z0-9])", lambda m: m.group(1).upper(), name).lower()
    for candidate in known:
        if candidate.lower() in (name.lower(), camel):
            return f"did you mean {candidate!r}? attribute names are camelCase and case-sensitive"
    return ""


# -- attribute schema -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attr:
    """One attribute: its kind, default and constraints. `kind` is one of:

    - 'str': text (`min_length`/`max_length` apply);
    - 'bool': exactly "true" or "false" (strict: anything else is an error, see engine.xml);
    - 'int': a decimal integer within `min`..`max`;
    - 'url': an http(s) URL or a relative reference (`parse_url`);
    - 'method': GET or POST, case-insensitive, returned upper-case;
    - 'enum': one of `choices`, exactly;
    - 'digits': a string of keys from 0-9*# (a set such as validDigits); "" or "none" give "";
    - 'key': one key from 0-9*#; "" or "none" give "" (disabled);
    - 'custom': `parse(value)` returns the value or raises ValueError(message).

    Every value is stripped of surrounding whitespace, and control characters (CR, LF and the like, which XML lets
    through as character references) are refused in every kind. `secret` values never appear in messages.
    """

    kind: str = "str"
    default: Any = None
    choices: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    required: bool = False
    max_length: int | None = None
    min_length: int | None = None
    secret: bool = False
    parse: Callable[[str], Any] | None = None

    def convert(self, raw: str, *, element: str, name: str, line: int | None) -> Any:
        def fail(msg: str) -> XmlError:
            return XmlError(msg, element=element, attribute=name, line=line)

        got = "" if self.secret else f", got {show(raw)}"
        if _CONTROL.search(raw) or _LINE_BREAK.search(raw):  # before stripping: "&#10;" at the end is no accident
            raise fail("control characters (including CR/LF) are not allowed")
        value = raw.strip()
        if self.kind == "bool":
            if value not in ("true", "false"):
                raise fail(f'expected "true" or "false"{got}')
            return value == "true"
        if self.kind == "int":
            if not _INTEGER.fullmatch(value):
                raise fail(f"expected an integer{got}")
            number = int(value)
            if self.min is not None and number < self.min:
                raise fail(f"must be >= {self.min}{got}")
            if self.max is not None and number > self.max:
                raise fail(f"must be <= {self.max}{got}")
            return number
        if self.kind == "method":
            if value.upper() not in ("GET", "POST"):
                raise fail(f"expected GET or POST{got}")
            return value.upper()
        if self.kind == "enum":
            if value not in self.choices:
                raise fail(f"expected one of {', '.join(repr(c) for c in self.choices)}{got}")
            return value
        if self.kind == "url":
            try:
                return parse_url(value)  # relative URLs resolve against the document's URL at run time
            except ValueError as exc:
                raise fail(str(exc)) from None
        if self.kind in ("digits", "key"):
            if value.lower() == "none":
                return ""
            bad = [ch for ch in value if ch not in KEYS]
            if bad:
                raise fail(f"only keys 0-9, * and # are allowed (or \"\" / none){got}")
            if self.kind == "key" and len(value) > 1:
                raise fail(f"expected a single key (0-9, * or #){got}")
            return value
        if self.kind == "custom":
            assert self.parse is not None, "Attr(kind='custom') needs parse="
            try:
                return self.parse(value)
            except ValueError as exc:
                raise fail("invalid value" if self.secret else str(exc)) from None
        if self.min_length is not None and len(value) < self.min_length:
            raise fail(f"must be at least {self.min_length} characters long")
        if self.max_length is not None and len(value) > self.max_length:
            raise fail(f"must be at most {self.max_length} characters long")
        return value


ParseChild = Callable[["_Element", str], "Verb | None"]


class Verb:
    """Base of every verb. Subclasses declare TAG, ATTRIBUTES, CHILDREN, TEXT and ANSWERS, and implement run()."""

    TAG: ClassVar[str] = ""
    ATTRIBUTES: ClassVar[dict[str, Attr]] = {}
    CHILDREN: ClassVar[frozenset[str]] = frozenset()
    TEXT: ClassVar[str] = "none"  # 'none', 'optional', 'required'
    ANSWERS: ClassVar[bool] = True  # the interpreter answers an inbound call before running it (spec §1.4)

    def __init__(self, attrs: dict[str, Any], text: str, children: list[Verb], line: int | None) -> None:
        self.attrs = attrs
        self.text = text
        self.children = children
        self.line = line

    def __getattr__(self, name: str) -> Any:
        attrs = self.__dict__.get("attrs")
        if attrs is not None and name in attrs:
            return attrs[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self.ATTRIBUTES and self.ATTRIBUTES[k].secret and v is not None else v)
                 for k, v in self.attrs.items()}
        return f"<{self.TAG} line={self.line} {shown}>"

    @classmethod
    def from_element(cls, el: _Element, parse_child: ParseChild, errors: list[XmlError] | None = None) -> Verb:
        """Validate `el` against the schema; `parse_child(el, parent_tag)` builds children (engine.verbs.registry).

        With `errors=None` the first problem raises XmlError. With a list, every problem found is appended, bad values
        fall back to their defaults, and a best-effort verb is returned (cross-attribute rules in `validate()` run only
        when nothing else in the element or below it was wrong, so they never report follow-on noise).
        """
        start = len(errors) if errors is not None else 0
        attrs = cls.parse_attributes(el, errors)
        children = cls.parse_children(el, parse_child, errors)  # before text: a misplaced child is the real error
        text = cls.parse_text(el, errors)
        verb = cls(attrs, text, children, el.sourceline)
        if errors is None or len(errors) == start:
            try:
                verb.validate()
            except XmlError as exc:
                report(errors, exc)
        return verb

    @classmethod
    def parse_attributes(cls, el: _Element, errors: list[XmlError] | None = None) -> dict[str, Any]:
        """The converted attributes, defaults filled in; unknown, namespaced or missing required ones are errors."""
        line = el.sourceline
        attrs: dict[str, Any] = {}
        for name, raw in el.attrib.items():
            name = str(name)
            if name.startswith("{"):
                report(errors, XmlError("namespaced attributes are not supported", element=cls.TAG,
                                        attribute=name, line=line))
                continue
            spec = cls.ATTRIBUTES.get(name)
            if spec is None:
                if not cls.ATTRIBUTES:
                    message = "takes no attributes"
                else:
                    known = ", ".join(cls.ATTRIBUTES)
                    message = _suggest(name, cls.ATTRIBUTES) or f"unknown attribute (known: {known})"
                report(errors, XmlError(message, element=cls.TAG, attribute=name, line=line))
                continue
            try:
                attrs[name] = spec.convert(str(raw), element=cls.TAG, name=name, line=line)
            except XmlError as exc:
                report(errors, exc)
        for name, spec in cls.ATTRIBUTES.items():
            if spec.required and name not in el.attrib:
                report(errors, XmlError("required attribute missing", element=cls.TAG, attribute=name, line=line))
        return {name: attrs.get(name, spec.default) for name, spec in cls.ATTRIBUTES.items()}

    @classmethod
    def parse_text(cls, el: _Element, errors: list[XmlError] | None = None) -> str:
        """The element's own text, stripped; checked against TEXT ('none' refuses text, 'required' demands it)."""
        text = (el.text or "").strip()
        if cls.TEXT == "none" and text:
            report(errors, XmlError(f"takes no text, got {show(text)}", element=cls.TAG, line=el.sourceline))
        if cls.TEXT == "required" and not text:
            report(errors, XmlError("text body required", element=cls.TAG, line=el.sourceline))
        return text

    @classmethod
    def parse_children(cls, el: _Element, parse_child: ParseChild,
                       errors: list[XmlError] | None = None) -> list[Verb]:
        """Child verbs in order (nesting is checked by `parse_child`); text between children is an error."""
        children: list[Verb] = []
        for child in el:
            if isinstance(child.tag, str):  # comments and processing instructions are skipped
                verb = parse_child(child, cls.TAG)
                if verb is not None:
                    children.append(verb)
            tail = (child.tail or "").strip()
            if tail:
                report(errors, XmlError(f"unexpected text between child elements: {show(tail)}",
                                        element=cls.TAG, line=child.sourceline))
        return children

    def validate(self) -> None:
        """Cross-attribute rules (e.g. a password needs a username); raise XmlError."""

    def error(self, message: str, attribute: str | None = None) -> XmlError:
        return XmlError(message, element=self.TAG, attribute=attribute, line=self.line)

    async def run(self, call: Any) -> Outcome:
        raise NotImplementedError(f"<{self.TAG}> cannot run yet")
