"""Plivo XML documents: bytes from an answer/action URL -> a validated `Document` of typed verbs, or an XmlError.

`parse_document` is what the interpreter calls before running anything (spec §1.3: the whole document is validated
first; any error ends processing). `validate_document` is the linter behind `softswitch check-xml`: it walks the same
code but collects every error it can instead of stopping at the first; `validate_document(d) == []` exactly when
`parse_document(d)` succeeds, and its first error is the one `parse_document` raises.

Hardening (the document comes from a third-party web server):
- at most 100 KB (MAX_BYTES, the hosted-Plivo limit, spec §1.3), checked before anything is parsed;
- UTF-8 only: invalid UTF-8 is refused with the offending byte's offset and line, and an XML declaration naming
  another encoding is refused (it would make lxml decode the bytes differently from what we checked);
- no DOCTYPE at all: a `<!DOCTYPE` or `<!ENTITY` anywhere is refused before lxml sees the document (billion laughs,
  XXE, external DTDs); the parser is also built with resolve_entities=False, no_network=True, load_dtd=False,
  dtd_validation=False and huge_tree=False, so nothing is fetched or expanded even if that check were bypassed
  (a literal "<!DOCTYPE" inside CDATA is refused too: a price paid for a check that cannot be fooled);
- at most MAX_DEPTH (32) levels of nesting; libxml2's own 256-level limit turns into the same message;
- comments and processing instructions are dropped.

Document-model decisions (documented in the README):
- the root must be `<Response>` (FW: "No Response Tag Present"), with no attributes and no text of its own;
- `<Response/>` with no elements is valid: the call simply ends (spec §1.4, NORMAL_CLEARING);
- booleans are strict: exactly "true" or "false", anything else is an XmlError (FW treats every other value as
  false, spec §1.3 - softswitch prefers a precise error to a silent surprise);
- unknown attributes are errors, with a hint for snake_case or wrong-case spellings (FW ignored them silently);
- attribute values are stripped; control characters (CR/LF via character references) are refused everywhere;
- relative URLs are accepted wherever a URL is expected and kept as written; `Document.resolve` resolves them
  against the document's URL (RFC 3986, spec §0.4) when a verb runs;
- elements the spec lists but softswitch does not implement are refused (engine.verbs.registry explains why).

What does not live here: fetching (engine.webhooks), the nesting table and per-verb schemas (engine.verbs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

from lxml import etree

from engine.verbs import registry
from engine.verbs.base import Verb, XmlError, report, show

MAX_BYTES = 100 * 1024
MAX_DEPTH = 32
_UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_DECLARED_ENCODING = re.compile(r"\A\s*<\?xml\s[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_LXML_WHERE = re.compile(r",\s*line \d+,\s*column \d+\s*$")
_SECRETS = sorted({name for cls in registry.REGISTRY.values() for name, spec in cls.ATTRIBUTES.items() if spec.secret})
_SECRET_VALUE = re.compile(rf"({'|'.join(_SECRETS) or '(?!)'})" + r"""\s*=\s*["']?([^"'>]*)""")

__all__ = ["MAX_BYTES", "MAX_DEPTH", "Document", "XmlError", "make_parser", "parse_document", "validate_document"]


@dataclass
class Document:
    """A validated document: its top-level verbs in order, and the URL it came from (base for relative URLs)."""

    verbs: tuple[Verb, ...] = ()  # shared with the validation cache (verbs are immutable)
    source_url: str = ""

    def resolve(self, url: str) -> str:
        """`url` made absolute against the document's URL (RFC 3986); unchanged when there is no base."""
        return urljoin(self.source_url, url) if self.source_url else url


def make_parser() -> etree.XMLParser:
    """A fresh hardened lxml parser (parsers are not shared: lxml parsers are not thread-safe)."""
    return etree.XMLParser(resolve_entities=False, no_network=True, dtd_validation=False, load_dtd=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


# Validated verbs by document text. Apps answer most calls with the same few documents (a static answer XML, a
# templated one with few variants), and parsing + validating costs ~5 % of a call's CPU under load. Verbs are not
# changed after parsing (they carry their attributes and children only), so one list serves every call with the
# same bytes; each call gets its own Document (source_url differs). Only small documents are kept, the oldest go
# first, and a document that fails is never kept (its error is raised again each time).
_VALIDATED: dict[bytes | str, tuple[Verb, ...]] = {}
_VALIDATED_MAX = 256
_VALIDATED_MAX_BYTES = 16 * 1024


def parse_document(data: bytes | str, *, source_url: str = "") -> Document:
    """The document's verbs, validated; raises the first XmlError (with line, element and attribute)."""
    verbs = _VALIDATED.get(data)
    if verbs is None:
        verbs = tuple(_walk(_load(data), None))
        if len(data) <= _VALIDATED_MAX_BYTES:
            if len(_VALIDATED) >= _VALIDATED_MAX:
                del _VALIDATED[next(iter(_VALIDATED))]
            _VALIDATED[data] = verbs
    return Document(verbs, source_url)


def validate_document(data: bytes | str, *, source_url: str = "") -> list[XmlError]:
    """Every error found in the document, in the order parsing meets them; [] when it would run.

    Errors that stop parsing altogether (size, encoding, DOCTYPE, malformed XML, depth, root) come alone. After that
    each element reports all its own problems and the walk continues with its children and siblings.
    """
    try:
        root = _load(data)
    except XmlError as exc:
        return [exc]
    errors: list[XmlError] = []
    _walk(root, errors)
    return errors


def _load(data: bytes | str) -> etree._Element:
    """Bytes -> the root element, after every document-level check."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise XmlError(f"document is not valid Unicode (lone surrogate at character {exc.start})") from None
    else:
        raw = bytes(data)
    if len(raw) > MAX_BYTES:
        raise XmlError(f"document larger than 100 KB ({len(raw)} bytes; the limit is {MAX_BYTES})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise XmlError(f"document is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                       line=line) from None
    if not text.strip():
        raise XmlError("empty document")
    declared = _DECLARED_ENCODING.match(text)
    if declared and declared.group(1).lower() not in _UTF8_NAMES:
        raise XmlError(f"encoding {show(declared.group(1))} declared; documents must be UTF-8", line=1)
    dtd = _DTD.search(text)
    if dtd:
        raise XmlError("DOCTYPE and ENTITY declarations are not allowed (no DTDs, no entities)",
                       line=text.count("\n", 0, dtd.start()) + 1)
    try:
        root = etree.fromstring(raw, make_parser())
    except etree.XMLSyntaxError as exc:
        message = _LXML_WHERE.sub("", str(exc.msg or exc))
        line, column = exc.position or (0, 0)
        secret = _secret_at(text, message, line, column)
        if secret:  # e.g. "Entity 'x' not defined" would quote part of the password
            raise XmlError(f"malformed XML inside the value of {secret} (not shown)", attribute=secret,
                           line=line or None) from None
        if "excessive depth" in message.lower():  # libxml2's own limit (256) without huge_tree
            raise XmlError(f"document nested deeper than {MAX_DEPTH} levels", line=line or None) from None
        raise XmlError(f"malformed XML: {message}", line=line or None, column=column or None) from None
    if root is None:
        raise XmlError("empty document")
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:  # belt and braces: _DTD already refused these
        raise XmlError("DOCTYPE and ENTITY declarations are not allowed (no DTDs, no entities)")
    _check_depth(root)
    if root.tag != registry.ROOT:
        tag = str(root.tag)
        if tag.startswith("{"):
            raise XmlError("namespaced elements are not supported (drop the xmlns declaration)", element=tag,
                           line=root.sourceline)
        raise XmlError(f"the root element must be <Response> (No Response Tag Present), got <{tag}>",
                       element=tag, line=root.sourceline)
    return root


def _secret_at(text: str, message: str, line: int | None, column: int | None) -> str | None:
    """The secret attribute (e.g. sipAuthPassword) that lxml's error is about, if any: the error position falls in
    its value, or the message quotes a piece of its value (e.g. "Entity 'x' not defined" for a '&x;' in it)."""
    offset = None
    if line and column:
        starts = [0] + [m.end() for m in re.finditer("\n", text)]
        if line <= len(starts):
            offset = starts[line - 1] + column - 1
    quoted = re.findall(r"'([^']+)'", message)
    for match in _SECRET_VALUE.finditer(text):
        value = match.group(2)
        if offset is not None and match.start(2) - 1 <= offset <= match.end(2) + 1:
            return match.group(1)
        if any(piece in value for piece in quoted):
            return match.group(1)
    return None


def _check_depth(root: etree._Element) -> None:
    """XmlError at the first element deeper than MAX_DEPTH (the root is level 1)."""
    stack = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise XmlError(f"document nested deeper than {MAX_DEPTH} levels", element=str(el.tag),
                           line=el.sourceline)
        stack.extend((child, depth + 1) for child in el if isinstance(child.tag, str))


def _walk(root: etree._Element, errors: list[XmlError] | None) -> list[Verb]:
    """The verbs inside <Response>, in order; attributes or text on <Response> itself are errors."""
    for name in root.attrib:
        report(errors, XmlError("takes no attributes", element=registry.ROOT, attribute=str(name),
                                line=root.sourceline))
    text = (root.text or "").strip()
    if text:
        report(errors, XmlError(f"unexpected text {show(text)}", element=registry.ROOT, line=root.sourceline))
    verbs: list[Verb] = []
    for child in root:
        if isinstance(child.tag, str):
            verb = registry.build(child, registry.ROOT) if errors is None else registry.collect(
                child, registry.ROOT, errors)
            if verb is not None:
                verbs.append(verb)
        tail = (child.tail or "").strip()
        if tail:
            report(errors, XmlError(f"unexpected text between elements: {show(tail)}", element=registry.ROOT,
                                    line=child.sourceline))
    return verbs
