"""V3 signatures: what engine.signature computes is what the public plivo SDK's validator accepts."""

from __future__ import annotations

import itertools
import re

import pytest
from plivo.utils.signature_v3 import validate_v3_signature

from engine.signature import make_nonce, sign_v3, signed_base_url

TOKEN = "MAtok3n-For-Signing-123"

URLS = [
    "http://127.0.0.1:8000/answer",
    "http://127.0.0.1:8000/answer/",
    "https://app.example/answer?app=1&lang=en",
    "https://app.example/answer?a=1&a=2&space=a+b&pct=a%20b&empty=",
    "http://app.example",
    "http://app.example/p;matrix?q=1",
]
PARAMS: list[dict[str, str]] = [
    {},
    {"CallUUID": "3f1c0a6e-0000-4000-8000-000000000001", "From": "14155550100", "To": "14155550199"},
    {"CallStatus": "ringing", "Direction": "inbound", "Empty": "", "Odd": "x y&z=1", "CallerName": "Jörg"},
]


@pytest.mark.parametrize(("url", "params"), list(itertools.product(URLS, PARAMS)))
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_sdk_validator_accepts_our_signature(url: str, params: dict[str, str], method: str) -> None:
    nonce = make_nonce()
    signature = sign_v3(url, nonce, TOKEN, params, method)
    assert validate_v3_signature(method, url, nonce, TOKEN, signature, params=dict(params))


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_wrong_token_nonce_or_params_fail(method: str) -> None:
    url = "http://127.0.0.1:8000/answer?x=1"
    params = {"CallUUID": "abc", "From": "1415"}
    nonce = make_nonce()
    signature = sign_v3(url, nonce, TOKEN, params, method)
    assert not validate_v3_signature(method, url, nonce, TOKEN + "x", signature, params=dict(params))
    assert not validate_v3_signature(method, url, make_nonce(), TOKEN, signature, params=dict(params))
    assert not validate_v3_signature(method, url + "&y=2", nonce, TOKEN, signature, params=dict(params))
    if method == "POST":  # GET parameters travel in the URL; for POST the form is signed too
        assert not validate_v3_signature(method, url, nonce, TOKEN, signature, params={**params, "From": "1"})


def test_get_signature_covers_the_query_the_app_sees() -> None:
    # GET: the query string carries the parameters; an app may validate with the full URL and no params,
    # or with the URL without its query and the parsed query as params.
    url = "http://127.0.0.1:8000/answer?CallUUID=abc&From=1415&To=1650"
    nonce = make_nonce()
    signature = sign_v3(url, nonce, TOKEN, None, "GET")
    assert validate_v3_signature("GET", url, nonce, TOKEN, signature)
    params = {"CallUUID": "abc", "From": "1415", "To": "1650"}
    assert validate_v3_signature("GET", "http://127.0.0.1:8000/answer", nonce, TOKEN, signature, params=params)


def test_non_ascii_get_query_validates_when_passed_as_params() -> None:
    # The SDK cannot parse a non-ASCII query itself (UnicodeEncodeError on Python 3); passing the decoded query
    # as params works, and matches our signature.
    url = "http://127.0.0.1:8000/answer?CallerName=J%C3%B6rg&From=1415"
    nonce = make_nonce()
    signature = sign_v3(url, nonce, TOKEN, None, "GET")
    params = {"CallerName": "Jörg", "From": "1415"}
    assert validate_v3_signature("GET", "http://127.0.0.1:8000/answer", nonce, TOKEN, signature, params=params)


def test_repeated_keys_are_signed_as_the_sdk_sorts_them() -> None:
    params = {"Digits": ["2", "1"], "From": "1415"}
    nonce = make_nonce()
    for method in ("GET", "POST"):
        signature = sign_v3("http://h/p", nonce, TOKEN, params, method)
        assert validate_v3_signature(method, "http://h/p", nonce, TOKEN, signature, params=dict(params))


def test_base_url_shapes_match_the_sdk_rules() -> None:
    assert signed_base_url("http://h/p?b=2&a=1", None, "GET") == "http://h/p?a=1&b=2"
    assert signed_base_url("http://h/p", {}, "POST") == "http://h/p"
    assert signed_base_url("http://h/p", {"b": "2", "a": "1"}, "POST") == "http://h/p?a1b2"
    assert signed_base_url("http://h/p?q=1", {"a": "1"}, "POST") == "http://h/p?q=1.a1"
    assert signed_base_url("http://h/p?q=1", {}, "POST") == "http://h/p?q=1"
    with pytest.raises(ValueError):
        signed_base_url("http://h/p", {}, "PUT")


def test_nonce_is_fresh_digits() -> None:
    nonces = {make_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(re.fullmatch(r"\d{20}", n) for n in nonces)
