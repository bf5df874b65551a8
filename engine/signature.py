"""Webhook request signing: Plivo's V3 signature (``X-Plivo-Signature-V3`` + ``X-Plivo-Signature-V3-Nonce``).

What lives here: ``sign_v3`` and ``make_nonce``, a byte-exact re-implementation of what the public plivo SDK's
``plivo.utils.signature_v3.validate_v3_signature`` (plivo 4.63.0) recomputes, so an app that validates our requests
with that function accepts them. The algorithm, as the SDK does it:

- the URL is cut to ``scheme://netloc/path`` (its query, ``;params`` and fragment go);
- GET: the URL's query parameters are merged over ``params`` (the URL wins), then appended as
  ``?k1=v1&k2=v2`` sorted by key (values unescaped; a key with several values gives one ``k=v`` per value,
  values sorted). Nothing is appended when there are no parameters;
- POST: the URL's own query (sorted the same way) is kept as ``?q``; when there are body parameters, a ``?``
  (no query) or ``?q.`` (with query) is followed by the body parameters as ``k1v1k2v2...`` sorted by key;
- the string signed is ``base_url + "." + nonce``, with HMAC-SHA256 keyed by the auth token, base64-encoded.

Query strings are percent-decoded as UTF-8. For ASCII this is exactly the SDK; for non-ASCII the SDK (on Python 3)
cannot decide at all: its ``parse_qs`` over bytes raises UnicodeEncodeError for any non-ASCII value in the URL's
query. An app on that SDK whose GET parameters (or POST URL query) carry non-ASCII text (a CallerName "Jörg") must
pass the URL without its query and the decoded query as ``params``: that validates against these signatures.
Non-ASCII POST body parameters validate as they are.

What does not live here: sending requests, choosing which URL or parameters are sent (engine/webhooks.py does that
and must sign exactly the URL it requests and the form it posts). This module never logs: the auth token and
signatures must not reach a log.
"""

from __future__ import annotations

import base64
import functools
import hmac
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlparse, urlunparse

__all__ = ["NONCE_HEADER", "SIGNATURE_HEADER", "ParamValue", "make_nonce", "sign_v3", "signed_base_url"]

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

ParamValue = str | Sequence[str]
"""A parameter value: one string, or several (a key repeated in a form or query)."""


def make_nonce() -> str:
    """A fresh nonce for one request: 20 random decimal digits, as hosted Plivo sends them."""
    return f"{secrets.randbelow(10**20):020d}"  # one call to the OS's generator, not twenty


def _query_map(query: str) -> dict[str, list[str]]:
    return parse_qs(query, keep_blank_values=True, errors="replace")


def _values(value: ParamValue) -> list[str] | str:
    if isinstance(value, str):
        return value
    return sorted(value)


def _sorted_query_string(params: Mapping[str, ParamValue]) -> str:
    parts: list[str] = []
    for key in sorted(params):
        value = _values(params[key])
        if isinstance(value, list):
            parts.append("&".join(f"{key}={v}" for v in value))
        else:
            parts.append(f"{key}={value}")
    return "&".join(parts)


def _sorted_params_string(params: Mapping[str, ParamValue]) -> str:
    try:  # one value per key, the common case: keys are unique, so the items sort by key alone
        return "".join([key + value for key, value in sorted(params.items())])  # type: ignore[operator]
    except TypeError:  # a key with several values
        pass
    parts: list[str] = []
    for key in sorted(params):
        value = _values(params[key])
        if isinstance(value, list):
            parts.append("".join(f"{key}{v}" for v in value))
        else:
            parts.append(f"{key}{value}")
    return "".join(parts)


def _get_url(url: str, params: Mapping[str, ParamValue], empty_post_params: bool = True) -> str:
    parsed = urlparse(url)
    base = urlunparse((parsed.scheme, parsed.netloc, parsed.path, "", "", ""))
    merged: dict[str, ParamValue] = dict(params)
    merged.update(_query_map(parsed.query))
    query = _sorted_query_string(merged)
    if query or not empty_post_params:
        base += "?" + query
    if query and not empty_post_params:
        base += "."
    return base


@functools.lru_cache(maxsize=1024)
def _post_url(url: str, with_params: bool) -> str:
    """The URL part of a POST's signed string: it depends on the URL alone (and a few URLs serve many calls)."""
    return _get_url(url, {}, empty_post_params=not with_params)


def signed_base_url(url: str, params: Mapping[str, ParamValue] | None, method: str) -> str:
    """The string the signature covers, before ``"." + nonce``: what the SDK's validator rebuilds."""
    method = method.upper()
    params = params or {}
    if method == "GET":
        return _get_url(url, params)
    if method == "POST":
        return _post_url(url, bool(params)) + _sorted_params_string(params)
    raise ValueError(f"cannot sign a {method} request: only GET and POST")


def sign_v3(url: str, nonce: str, auth_token: str, params: Mapping[str, ParamValue] | None, method: str) -> str:
    """The ``X-Plivo-Signature-V3`` value for a request to ``url`` (exactly as requested, query included) with
    ``params`` (the POST form; for GET the query is already in ``url``, extra ``params`` are merged under it)."""
    message = f"{signed_base_url(url, params, method)}.{nonce}".encode()
    return base64.b64encode(hmac.digest(auth_token.encode("utf-8"), message, "sha256")).decode("ascii")
