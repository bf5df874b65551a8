"""Finding and splitting outside double-quoted strings (SIP quoted-string, RFC 3261 §25.1), shared by the message
and address parsers. Pure string functions."""

from __future__ import annotations


def find_unquoted(text: str, ch: str, start: int = 0) -> int:
    """Index of the first `ch` outside double-quoted strings (backslash escapes honoured), or -1."""
    if '"' not in text:
        return text.find(ch, start)
    quoted = False
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ch:
            return i
        i += 1
    return -1


def split_unquoted(text: str, sep: str) -> list[str]:
    """text.split(sep), except inside double-quoted strings; empty pieces are kept."""
    if '"' not in text:
        return text.split(sep)
    out: list[str] = []
    start = 0
    while True:
        i = find_unquoted(text, sep, start)
        if i < 0:
            out.append(text[start:])
            return out
        out.append(text[start:i])
        start = i + 1


def quoted_end(text: str, start: int) -> int:
    """Index of the quote closing the quoted-string opened at `start`, or -1."""
    i = start + 1
    while True:
        i = text.find('"', i)
        if i < 0:
            return -1
        k = i - 1
        while text[k] == "\\":
            k -= 1
        if (i - 1 - k) % 2 == 0:
            return i
        i += 1
