"""``GET /metrics``: the engine's counters in the Prometheus text exposition format (version 0.0.4).

Written by hand (no prometheus_client): every value already lives in the engine as a plain counter, so a scrape
only reads them and formats text; there is no registry to keep in sync and nothing on the call path. Series:

=============================================  =======  ===========================================================
name                                           type     labels / meaning
=============================================  =======  ===========================================================
softswitch_active_calls                        gauge    calls in progress (inbound and outbound)
softswitch_calls_total                         counter  {direction, outcome}: ended calls; outcome = the CallStatus
                                                        of the hangup callback (completed, busy, failed, no-answer,
                                                        timeout, cancel)
softswitch_sip_messages_total                  counter  {direction="rx|tx", kind="request|response", method,
                                                        status}: first transmissions (requests: method set, status
                                                        ""; responses: status set, method ""); unknown methods are
                                                        counted as method="other"
softswitch_sip_retransmissions_total           counter  retransmissions by the transaction layer (timers A, E, G
                                                        and 2xx resends)
softswitch_sip_malformed_total                 counter  {action="answered|dropped"}: unparsable messages
softswitch_webhook_requests_total              counter  HTTP requests to apps (answer, action, callbacks, outbox)
softswitch_webhook_failures_total              counter  of those, the ones without a 2xx (errors included)
softswitch_webhook_timeouts_total              counter  of those, the ones that timed out
softswitch_webhook_callbacks_total             counter  {result="delivered|queued|lost"}: callback outcomes
softswitch_webhook_latency_seconds             histo    request latency (buckets, _sum, _count)
softswitch_callback_outbox_depth               gauge    callbacks waiting in the outbox for a retry
softswitch_admission_admitted_total            counter  new calls admitted
softswitch_admission_rejected_total            counter  {reason="draining|max_calls|max_cps|overload"}: new
                                                        calls refused (INVITE 503, REST API 429)
softswitch_admission_limit                     gauge    {limit="max_calls|max_cps|max_loop_lag_seconds"}: the
                                                        configured limits
softswitch_draining                            gauge    1 from SIGTERM until exit
softswitch_event_loop_lag_seconds              gauge    how late the event loop runs (moving average; overload)
softswitch_overloaded                          gauge    1 while new calls are refused for overload
=============================================  =======  ===========================================================

What does not live here: counting (sip.ua, engine.webhooks, engine.admission and Engine.record_end count), HTTP
serving (engine.http_api).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from .admission import REASONS

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["CONTENT_TYPE", "Exposition", "add_routes", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SIP_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK",
                         "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"})
"""Methods counted under their own name; any other (a peer can send any token) is "other": bounded series."""
DIRECTIONS = ("inbound", "outbound")
OUTCOMES = ("completed", "busy", "failed", "no-answer", "timeout", "cancel")

log = structlog.get_logger("engine.metrics")

Labels = Mapping[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Builds one exposition: ``metric(...)`` / ``histogram(...)`` per family, then ``text()``."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, float]]) -> None:
        self._head(name, kind, help_text)
        for labels, value in samples:
            self._sample(name, labels, value)

    def histogram(self, name: str, help_text: str, cumulative: Iterable[tuple[float, int]], total: float,
                  count: int, labels: Labels | None = None) -> None:
        """``cumulative``: ``(upper bound, observations <= bound)`` ending with ``(inf, count)``."""
        self._head(name, "histogram", help_text)
        base = dict(labels or {})
        for bound, n in cumulative:
            self._sample(f"{name}_bucket", {**base, "le": _number(float(bound))}, n)
        self._sample(f"{name}_sum", base, total)
        self._sample(f"{name}_count", base, count)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"

    def _head(self, name: str, kind: str, help_text: str) -> None:
        help_line = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines.append(f"# HELP {name} {help_line}")
        self._lines.append(f"# TYPE {name} {kind}")

    def _sample(self, name: str, labels: Labels, value: float) -> None:
        if labels:
            inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            self._lines.append(f"{name} {_number(value)}")


def _sip_messages(stats: Mapping[str, int]) -> list[tuple[Labels, float]]:
    totals: dict[tuple[str, str, str, str], int] = {}
    for key, n in stats.items():
        direction, _, rest = key.partition("_")
        if direction not in ("rx", "tx"):
            continue
        kind, _, value = rest.partition("_")
        if kind == "request":
            method = value if value in SIP_METHODS else "other"
            labels = (direction, kind, method, "")
        elif kind == "response" and value.isdigit():
            labels = (direction, kind, "", value)
        else:
            continue
        totals[labels] = totals.get(labels, 0) + n
    return [({"direction": d, "kind": k, "method": m, "status": s}, n) for (d, k, m, s), n in sorted(totals.items())]


async def render(engine: Engine) -> str:
    """The whole exposition for ``engine`` (reads counters; one COUNT query for the outbox depth)."""
    out = Exposition()
    out.metric("softswitch_active_calls", "gauge", "Calls in progress.", [({}, len(engine.calls))])
    ended = dict(engine.calls_ended)
    for direction in DIRECTIONS:  # every usual series exists from the start, so rate() works from the first call
        for outcome in OUTCOMES:
            ended.setdefault((direction, outcome), 0)
    out.metric("softswitch_calls_total", "counter", "Ended calls by direction and outcome (the CallStatus).",
               [({"direction": d, "outcome": o}, n) for (d, o), n in sorted(ended.items())])

    stats = engine.ua.stats
    out.metric("softswitch_sip_messages_total", "counter", "SIP messages received and sent (first transmissions).",
               _sip_messages(stats))
    out.metric("softswitch_sip_retransmissions_total", "counter", "SIP retransmissions by the transaction layer.",
               [({}, engine.ua.layer.retransmissions)])
    out.metric("softswitch_sip_malformed_total", "counter", "Unparsable SIP messages, answered (400) or dropped.",
               [({"action": a}, stats.get(f"malformed_{a}", 0)) for a in ("answered", "dropped")])

    webhooks = engine.webhooks
    if webhooks is not None:
        m = webhooks.metrics
        out.metric("softswitch_webhook_requests_total", "counter", "HTTP requests to apps.", [({}, m.requests)])
        out.metric("softswitch_webhook_failures_total", "counter", "HTTP requests to apps without a 2xx.",
                   [({}, m.failures)])
        out.metric("softswitch_webhook_timeouts_total", "counter", "HTTP requests to apps that timed out.",
                   [({}, m.timeouts)])
        out.metric("softswitch_webhook_callbacks_total", "counter", "Callbacks delivered, queued in the outbox, lost.",
                   [({"result": "delivered"}, m.callbacks_delivered), ({"result": "queued"}, m.callbacks_queued),
                    ({"result": "lost"}, m.callbacks_lost)])
        out.histogram("softswitch_webhook_latency_seconds", "Latency of HTTP requests to apps.",
                      m.latency.cumulative(), m.latency.sum, m.latency.count)

    store = engine.store
    if store is not None and not store.closed:
        try:
            depth = await store.depth()
        except Exception as exc:  # a scrape must not fail because the database is busy or closing
            log.warning("metrics_outbox_depth_failed", error=str(exc))
        else:
            out.metric("softswitch_callback_outbox_depth", "gauge", "Callbacks waiting in the outbox.",
                       [({}, depth)])

    admission = engine.admission
    out.metric("softswitch_admission_admitted_total", "counter", "New calls admitted.", [({}, admission.admitted)])
    out.metric("softswitch_admission_rejected_total", "counter", "New calls refused (INVITE 503, REST 429).",
               [({"reason": r}, admission.rejected.get(r, 0)) for r in REASONS])
    out.metric("softswitch_admission_limit", "gauge", "Configured limits.",
               [({"limit": "max_calls"}, admission.max_calls), ({"limit": "max_cps"}, admission.max_cps),
                ({"limit": "max_loop_lag_seconds"}, admission.max_lag)])
    out.metric("softswitch_draining", "gauge", "1 while draining for shutdown.", [({}, int(admission.draining))])
    out.metric("softswitch_event_loop_lag_seconds", "gauge", "How late the event loop runs (moving average).",
               [({}, round(engine.loop_lag.value, 4))])
    out.metric("softswitch_overloaded", "gauge", "1 while new calls are refused for overload.",
               [({}, int(admission.check_overload()))])
    return out.text()


def add_routes(app: web.Application, engine: Engine) -> None:
    """Register ``GET /metrics`` (for ``Engine.http_route_builders``)."""

    async def metrics(request: web.Request) -> web.Response:
        body = await render(engine)
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
