"""The interpreter: fetch a call's XML, validate it whole, run its verbs in order, follow redirects, end the call.

One loop that knows no verb (style.md): it answers an inbound call before any verb whose `ANSWERS` is true
(spec §1.4), awaits `verb.run(call)`, and acts on the `Outcome` — next element, a new document (Redirect), or the
end of the call (Hangup). When the elements run out the call ends with NORMAL_CLEARING / 4010.

Failure rules (spec §2.7, [INF] choices documented in README):
* the first answer_url fetch fails (3 tries / 60 s) or returns an invalid document → fallback_url; when that
  fails too → the call ends with ANSWER_URL_ERROR (7011) or INVALID_ANSWER_XML (8011);
* a `<Redirect>` document that cannot be fetched or is invalid → the call ends with REDIRECT_URL_ERROR (7014) /
  INVALID_REDIRECT_XML (8014);
* an action URL (Dial, GetDigits, GetInput, Record with redirect=true) that returns nothing usable — an error, an
  empty body, invalid XML or an empty <Response/> — lets the engine continue with the next element of the current
  document (seed example 1, spec §0.4), the reason logged;
* more than MAX_REDIRECTS documents in one call → the call ends with EXCHANGE_ROUTING_ERROR (loop guard).
The reason is always logged with the call_uuid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import causes
from .verbs.base import Hangup, Next, Outcome, Redirect, Verb, XmlError
from .webhooks import FetchResult, WebhookError
from .xml import Document, parse_document

if TYPE_CHECKING:
    from .call import Call

MAX_REDIRECTS = 100


def _validate(body: bytes) -> Document:
    return parse_document(body)


def _document(result: FetchResult) -> Document:
    """The document `fetch_xml` validated (parsed once), with the URL it came from as its base."""
    doc: Document = result.parsed if result.parsed is not None else parse_document(result.body)
    doc.source_url = result.url
    return doc


async def fetch_first_document(call: Call) -> Document | None:
    """answer_url with retries, then fallback_url; None (and the call's end cause set) when neither works."""
    try:
        result = await call.engine.webhooks.fetch_xml(
            call.answer_url, call.answer_method, {}, session_params=call.params,
            fallback_url=call.fallback_url or None, fallback_method=call.fallback_method,
            call_uuid=call.uuid, validate=_validate, kind="answer",
        )
    except WebhookError as exc:
        invalid = bool(exc.errors) and "invalid document" in exc.errors[-1]
        call.end_cause = causes.CAUSES["invalid_answer_xml" if invalid else "answer_url_error"]
        call.log.warning("answer_fetch_failed", errors=exc.errors, cause=call.end_cause.name)
        call.timeline.add("answer_failed", errors=exc.errors[-3:])
        return None
    call.document_url = result.url
    if result.used_fallback:  # say why: the app's author needs the answer_url's errors, not just the fallback
        call.log.warning("answer_fallback_used", errors=result.errors)
        call.timeline.add("fallback_used", url=result.url, errors=result.errors[-3:])
    doc = _document(result)
    call.timeline.add("document", url=result.url, verbs=len(doc.verbs))
    return doc


async def fetch_next_document(call: Call, redirect: Redirect) -> Document | str:
    """The document a Redirect (or an action URL with redirect=true) points at, or the key of the cause in
    engine.causes that says why there is none (redirect_url_error / invalid_redirect_xml)."""
    url = call.resolve(redirect.url)
    try:
        result = await call.engine.webhooks.fetch_xml(
            url, redirect.method, dict(redirect.params), session_params=call.params, call_uuid=call.uuid,
            validate=_validate, kind="redirect", retry_unusable=False,
        )
    except WebhookError as exc:
        invalid = bool(exc.errors) and "invalid document" in exc.errors[-1]
        call.log.warning("redirect_fetch_failed", url=url, errors=exc.errors)
        call.timeline.add("redirect_failed", url=url)
        return "invalid_redirect_xml" if invalid else "redirect_url_error"
    call.document_url = result.url
    doc = _document(result)
    call.timeline.add("document", url=result.url, verbs=len(doc.verbs))
    return doc


async def run_verbs(call: Call, verbs: Sequence[Verb], start: int = 0) -> Outcome:
    """Run verbs in order from `start`; return the first outcome that is not Next (or Next when they all ran)."""
    for index in range(start, len(verbs)):
        verb = verbs[index]
        if verb.ANSWERS and call.direction == "inbound" and not call.answered:
            await call.answer()
        call.log.info("verb_start", verb=verb.TAG, line=verb.line)
        call.timeline.add("verb", verb=verb.TAG, line=verb.line)
        call.verb_index = index
        outcome = await verb.run(call)
        if not isinstance(outcome, Next):
            return outcome
    return Next()


async def interpret(call: Call, transfer: tuple[str, str] | None = None) -> None:
    """The whole call flow; returns when the call should end (its end cause set). `transfer` (url, method): start
    with that document instead of the answer_url's (a REST transfer; failures end the call with 7013 / 8013)."""
    if transfer is None:
        doc = await fetch_first_document(call)
        documents = 1
    else:
        fetched = await fetch_next_document(call, Redirect(*transfer))
        if isinstance(fetched, str):
            call.end_cause = causes.CAUSES[fetched.replace("redirect", "transfer")]
            return
        doc, documents = fetched, 2
    start = 0
    while doc is not None:
        call.first_document = documents == 1
        outcome = await run_verbs(call, doc.verbs, start)
        start = 0
        if isinstance(outcome, Hangup):
            cause = outcome.cause
            call.end_cause = cause if isinstance(cause, causes.Cause) else causes.by_name(cause)
            return
        if not isinstance(outcome, Redirect):
            call.end_cause = causes.CAUSES["end_of_xml"]
            return
        documents += 1
        if documents > MAX_REDIRECTS:
            call.log.warning("redirect_limit_reached", limit=MAX_REDIRECTS)
            call.end_cause = causes.CAUSES["routing_error"].with_source("Error")
            return
        next_doc = await fetch_next_document(call, outcome)
        if outcome.continue_on_failure and not isinstance(next_doc, str) and not next_doc.verbs:
            next_doc = "empty"  # an action answering an empty <Response/> has nothing to say: go on here
        if isinstance(next_doc, str):
            if outcome.continue_on_failure:
                # An action URL that returned nothing usable: go on with the current document (spec §0.4 ex. 1).
                call.log.info("action_unusable_continuing", url=outcome.url)
                start = call.verb_index + 1
                continue
            call.end_cause = causes.CAUSES[next_doc]
            return
        doc = next_doc


async def run_call(call: Call) -> None:
    """Run a call to its end: the interpreter in a task the leg watcher can cancel, then `call.finish()`."""
    call.watch_leg()
    call._task = asyncio.current_task()
    try:
        await call.ring()
        transfer = call.take_transfer()  # normally None: a transfer that came before the interpreter started
        while True:
            try:
                await interpret(call, transfer)
                break
            except asyncio.CancelledError:
                # A REST transfer (Call.transfer) cancelled the running verb: go on with the new URL's document.
                transfer = call.take_transfer()
                task = asyncio.current_task()
                if transfer is None or call.ended or task is None:
                    raise
                task.uncancel()
    except asyncio.CancelledError:
        if not call.ended:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # the call ended under us: finish it normally below
    except XmlError as exc:  # the first document parsed in fetch_first_document after validation: cannot happen
        call.log.error("xml_error", error=str(exc))
        call.end_cause = causes.CAUSES["invalid_answer_xml"]
    except Exception:
        call.log.exception("call_crashed")
        call.end_cause = causes.CAUSES["internal_error"]
    finally:
        call._task = None
        try:
            await call.finish()
        finally:
            call.unwatch_leg()
