"""The one table of call-end causes: SIP status ⇄ Q.850 / FreeSWITCH-style name ⇄ Plivo code ⇄ DialStatus.

What lives here: ``Cause`` (what every callback and call record says about why a call or a leg ended), the table
``CAUSES`` (one row per distinct cause, keyed by a short stable id), and the mappings the rest of the engine needs:
``from_sip_status`` (a final SIP response on an outbound leg), ``from_leg_end`` (sip/leg.py's ``EndCause``),
``from_hangup_reason`` (the ``<Hangup reason>`` verb) and ``sip_status_for`` (which SIP response rejects an
unanswered inbound call that ends with a cause). Nothing else in the engine may invent a cause name or code.
What does not: deciding *when* a call ends or which leg's cause wins (engine/calls and the verbs do that), sending
anything, logging. This module is pure data and pure functions.

Fields posted to apps (spec §2.5, §3): ``HangupCause`` = ``Cause.name`` (the FreeSWITCH / Q.850 name FW always sent:
NORMAL_CLEARING, USER_BUSY, ...), ``HangupCauseName`` = ``Cause.label`` (hosted Plivo's text: "Normal Hangup"),
``HangupCauseCode`` = ``Cause.code`` (hosted Plivo's number), ``HangupSource`` = ``Cause.hangup_source``. Dial
action URLs get ``DialHangupCause`` / ``DialHangupCauseCode`` / ``DialHangupCauseName`` / ``DialStatus``.

Numbering decisions (documented for the README):
- Codes follow hosted Plivo's published groups: 0 unknown, 1000s cancels, 2000s destination, 3000s rejections by the
  far end (3000 No Answer = SIP 480, 3010 Busy Line = 486, 3020 Rejected, 3040 Forbidden = 403, 3050 Unallocated
  number = 404/484, 3070 Request timeout = 408 / Timer B, 3080 carrier 5xx, 3090 carrier 503, 3100 Busy everywhere
  = 600, 3110 Declined = 603, 3120 User does not exist anywhere = 604), 4000s normal ends, 5000s system errors, 6000s
  timeouts (6000 time limit, 6010 ring timeout, 6020 media timeout), 7011-7014 errors reaching the answer / action /
  transfer / redirect URL, 8011-8014 invalid XML from those URLs, 9000 lost race.
- XML and answer-url errors use Plivo's own 7011-7014 / 8011-8014, not a 3000s block: in hosted Plivo's table the
  3000s are far-end rejections, so apps that already switch on ``HangupCauseCode`` keep working. Their names
  (ANSWER_URL_ERROR, INVALID_ANSWER_XML, ...) are ours: FreeSWITCH has no such causes.
- Client rule §0.2: ``sip_auth_failed`` 4240 (DialStatus failed) and ``sip_auth_timeout`` 4250 (DialStatus timeout),
  names in lower case exactly as the rule spells them.
- ``<Hangup reason="rejected">`` is CALL_REJECTED 3020 → SIP 603 Decline; ``reason="busy"`` is USER_BUSY 3010 → SIP
  486 Busy Here (both with source "Answer XML"). A bare ``<Hangup/>`` as the first element rejects (§3).
- A leg that was answered always reports DialStatus ``completed``, however it ended later.
- ``HangupSource`` keeps Plivo's vocabulary ("Plivo" for the engine itself) so apps written for Plivo still match.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "CAUSES",
    "DIAL_STATUSES",
    "HANGUP_SOURCES",
    "Cause",
    "by_code",
    "by_name",
    "call_status_for",
    "from_hangup_reason",
    "from_leg_end",
    "from_sip_status",
    "sip_status_for",
]

DIAL_STATUSES = ("completed", "busy", "failed", "timeout", "no-answer")
HANGUP_SOURCES = ("Caller", "Call recipient", "Plivo", "Carrier", "API Request", "Answer XML", "Error", "Unknown")

DEFAULT_REJECT_STATUS = 480
"""SIP final response for a cause with no better one (480 Temporarily Unavailable, as FreeSWITCH does)."""


@dataclass(frozen=True)
class Cause:
    """Why a call or a leg ended, in every vocabulary an app or a SIP peer expects."""

    name: str
    """``HangupCause``: the FreeSWITCH / Q.850-style name (NORMAL_CLEARING, USER_BUSY, sip_auth_failed...)."""
    code: int
    """``HangupCauseCode``: hosted Plivo's numeric code (4000, 4010, 3010...)."""
    label: str
    """``HangupCauseName``: hosted Plivo's text for the code ("Normal Hangup", "End Of XML Instructions")."""
    dial_status: str
    """``DialStatus`` when this ends a Dial attempt: completed, busy, failed, timeout or no-answer."""
    sip_status: int | None
    """SIP final response that rejects an unanswered inbound call with this cause; None: no better than 480."""
    q850: int | None = None
    """Q.850 cause value (for a ``Reason: Q.850;cause=N`` header), when there is one."""
    hangup_source: str = "Unknown"
    """``HangupSource`` when nothing more precise is known (callers may override with ``with_source``)."""

    def with_source(self, source: str) -> Cause:
        """This cause, ended by ``source`` (one of HANGUP_SOURCES)."""
        if source not in HANGUP_SOURCES:
            raise ValueError(f"unknown hangup source {source!r}")
        return replace(self, hangup_source=source)

    def hangup_params(self) -> dict[str, str]:
        """The hangup-callback fields: HangupCause, HangupCauseName, HangupCauseCode, HangupSource."""
        return {
            "HangupCause": self.name,
            "HangupCauseName": self.label,
            "HangupCauseCode": str(self.code),
            "HangupSource": self.hangup_source,
        }

    def dial_params(self) -> dict[str, str]:
        """The Dial action-URL fields: DialStatus, DialHangupCause, DialHangupCauseName, DialHangupCauseCode."""
        return {
            "DialStatus": self.dial_status,
            "DialHangupCause": self.name,
            "DialHangupCauseName": self.label,
            "DialHangupCauseCode": str(self.code),
        }


def _c(name: str, code: int, label: str, dial: str, sip: int | None, q850: int | None, source: str) -> Cause:
    return Cause(name, code, label, dial, sip, q850, source)


# Order matters for ``by_name`` / ``sip_status_for``: the first row with a name is that name's canonical row.
CAUSES: dict[str, Cause] = {
    # normal ends
    "normal_hangup": _c("NORMAL_CLEARING", 4000, "Normal Hangup", "completed", 480, 16, "Unknown"),
    "end_of_xml": _c("NORMAL_CLEARING", 4010, "End Of XML Instructions", "completed", 480, 16, "Plivo"),
    "mpc_ended": _c("NORMAL_CLEARING", 4020, "Multiparty Call Ended", "completed", 480, 16, "Plivo"),
    "mpc_kicked": _c("NORMAL_CLEARING", 4030, "Kicked Out Of Multiparty Call", "completed", 480, 16, "API Request"),
    # <Hangup reason=...> (rows before the SIP-status rows: they are the canonical CALL_REJECTED / USER_BUSY)
    "rejected": _c("CALL_REJECTED", 3020, "Rejected", "failed", 603, 21, "Answer XML"),
    "busy": _c("USER_BUSY", 3010, "Busy Line", "busy", 486, 17, "Answer XML"),
    # cancels
    "originator_cancel": _c("ORIGINATOR_CANCEL", 1000, "Canceled", "no-answer", 487, None, "Caller"),
    "api_cancel": _c("ORIGINATOR_CANCEL", 1000, "Canceled", "no-answer", 487, None, "API Request"),
    "lose_race": _c("LOSE_RACE", 9000, "Lost Race", "no-answer", 487, 26, "Plivo"),
    # what the far end answered (final SIP responses on an outbound leg)
    "no_answer": _c("NO_ANSWER", 3000, "No Answer", "no-answer", 480, 19, "Call recipient"),
    "busy_here": _c("USER_BUSY", 3010, "Busy Line", "busy", 486, 17, "Call recipient"),
    "busy_everywhere": _c("USER_BUSY", 3100, "Busy everywhere", "busy", 600, 17, "Call recipient"),
    "call_rejected": _c("CALL_REJECTED", 3020, "Rejected", "failed", 603, 21, "Carrier"),
    "forbidden": _c("CALL_REJECTED", 3040, "Forbidden", "failed", 403, 21, "Carrier"),
    "declined": _c("CALL_REJECTED", 3110, "Declined", "failed", 603, 21, "Call recipient"),
    "unallocated_number": _c("UNALLOCATED_NUMBER", 3050, "Unallocated number", "failed", 404, 1, "Carrier"),
    "does_not_exist_anywhere": _c(
        "UNALLOCATED_NUMBER", 3120, "User does not exist anywhere", "failed", 604, 1, "Carrier"
    ),
    "request_timeout": _c("RECOVERY_ON_TIMER_EXPIRE", 3070, "Request timeout", "timeout", 408, 102, "Carrier"),
    "carrier_error": _c(
        "NORMAL_TEMPORARY_FAILURE", 3080, "Internal server error from carrier", "failed", 503, 41, "Carrier"
    ),
    "carrier_congestion": _c(
        "NORMAL_TEMPORARY_FAILURE", 3090, "Network congestion from carrier", "failed", 503, 41, "Carrier"
    ),
    "routing_error": _c("EXCHANGE_ROUTING_ERROR", 5020, "Routing Error", "failed", 483, 25, "Carrier"),
    # client rule §0.2: outbound SIP authentication
    "sip_auth_failed": _c("sip_auth_failed", 4240, "SIP Auth Failed", "failed", None, 21, "Carrier"),
    "sip_auth_timeout": _c("sip_auth_timeout", 4250, "SIP Auth Timeout", "timeout", None, 102, "Carrier"),
    # destination problems found by the engine
    "destination_barred": _c(
        "OUTGOING_CALL_BARRED", 2040, "Destination Number Barred", "failed", 403, 52, "Plivo"
    ),
    "user_not_registered": _c("USER_NOT_REGISTERED", 2020, "Endpoint Not Registered", "failed", 480, 20, "Plivo"),
    "invalid_destination": _c(
        "INVALID_NUMBER_FORMAT", 2000, "Invalid Destination Address", "failed", 484, 28, "Plivo"
    ),
    # timeouts decided by the engine
    "allotted_timeout": _c("ALLOTTED_TIMEOUT", 6000, "Scheduled Hangup", "completed", None, None, "Plivo"),
    "ring_timeout": _c("NO_ANSWER", 6010, "Ring Timeout Reached", "no-answer", 480, 19, "Plivo"),
    "media_timeout": _c("MEDIA_TIMEOUT", 6020, "Media Timeout", "completed", None, None, "Plivo"),
    # network and engine errors
    "network_error": _c("NETWORK_OUT_OF_ORDER", 5000, "Network Error", "failed", 503, 38, "Error"),
    "ack_timeout": _c("RECOVERY_ON_TIMER_EXPIRE", 5000, "Network Error", "failed", 408, 102, "Error"),
    "internal_error": _c("SYSTEM_SHUTDOWN", 5010, "Internal Error", "failed", 503, None, "Plivo"),
    # a call the engine process died under (SIGKILL, power loss): recorded at the next start (engine/recovery.py)
    "crash": _c("CRASH", 5030, "Engine Crashed", "failed", 503, None, "Plivo"),
    # the app's URLs and XML (spec §2.7: after the fallback also failed)
    "answer_url_error": _c("ANSWER_URL_ERROR", 7011, "Error Reaching Answer URL", "failed", 500, None, "Error"),
    "action_url_error": _c("ACTION_URL_ERROR", 7012, "Error Reaching Action URL", "failed", 500, None, "Error"),
    "transfer_url_error": _c(
        "TRANSFER_URL_ERROR", 7013, "Error Reaching Transfer URL", "failed", 500, None, "Error"
    ),
    "redirect_url_error": _c(
        "REDIRECT_URL_ERROR", 7014, "Error Reaching Redirect URL", "failed", 500, None, "Error"
    ),
    "invalid_answer_xml": _c("INVALID_ANSWER_XML", 8011, "Invalid Answer XML", "failed", 500, None, "Error"),
    "invalid_action_xml": _c("INVALID_ACTION_XML", 8012, "Invalid Action XML", "failed", 500, None, "Error"),
    "invalid_transfer_xml": _c("INVALID_TRANSFER_XML", 8013, "Invalid Transfer XML", "failed", 500, None, "Error"),
    "invalid_redirect_xml": _c("INVALID_REDIRECT_XML", 8014, "Invalid Redirect XML", "failed", 500, None, "Error"),
    "unknown": _c("NORMAL_UNSPECIFIED", 0, "Unknown", "failed", 480, 31, "Unknown"),
}

_BY_NAME: dict[str, Cause] = {}
_BY_CODE: dict[int, Cause] = {}
for _cause in CAUSES.values():
    _BY_NAME.setdefault(_cause.name, _cause)
    _BY_CODE.setdefault(_cause.code, _cause)

# Exact SIP statuses with their own row; ranges are handled in from_sip_status.
_SIP_STATUS: dict[int, str] = {
    401: "sip_auth_failed",  # a challenge we had no credentials for (with credentials sip/leg.py says auth_failed)
    403: "forbidden",
    404: "unallocated_number",
    407: "sip_auth_failed",
    408: "request_timeout",
    480: "no_answer",
    484: "unallocated_number",
    486: "busy_here",
    487: "originator_cancel",
    503: "carrier_congestion",
    600: "busy_everywhere",
    603: "declined",
    604: "does_not_exist_anywhere",
}

_LEG_KINDS: dict[str, str] = {
    "auth_failed": "sip_auth_failed",
    "auth_timeout": "sip_auth_timeout",
    "timeout": "request_timeout",
    "ack_timeout": "ack_timeout",
    "transport_error": "network_error",
    "shutdown": "internal_error",
}


def by_name(name: str) -> Cause:
    """The canonical cause for a HangupCause name (the first table row with it); KeyError if none."""
    return _BY_NAME[name]


def by_code(code: int) -> Cause:
    """The cause for a Plivo numeric code (the first table row with it); KeyError if none."""
    return _BY_CODE[code]


def from_sip_status(status: int) -> Cause:
    """The cause for a final SIP response that ended an outbound attempt (or that we sent to reject one)."""
    key = _SIP_STATUS.get(status)
    if key is not None:
        return CAUSES[key]
    if 200 <= status < 300:
        return CAUSES["normal_hangup"]
    if 300 <= status < 400:
        return CAUSES["routing_error"]  # redirects are not followed
    if 400 <= status < 500 or 600 <= status < 700:
        return CAUSES["call_rejected"]
    if 500 <= status < 600:
        return CAUSES["carrier_error"]
    return CAUSES["unknown"]


def _party(leg: str) -> str:
    return "Caller" if leg == "a" else "Call recipient"


def from_leg_end(end_cause: Any, answered: bool, *, leg: str = "b") -> Cause:
    """The cause for a SIP leg that ended (sip/leg.py ``EndCause(kind, status, reason, by)``).

    ``answered``: the leg had been answered; its DialStatus is then ``completed`` whatever ended it.
    ``leg``: "a" (the caller's leg) or "b" (a dialed leg); it picks the HangupSource of a remote BYE or CANCEL.
    A cancel we sent (ring timeout, lost race, API) is the caller's to name: this gives ORIGINATOR_CANCEL.
    """
    kind: str = end_cause.kind
    status: int = end_cause.status or 0
    remote = end_cause.by != "local"
    if kind == "bye":
        cause = CAUSES["normal_hangup"]
        cause = cause.with_source(_party(leg)) if remote else cause.with_source("Plivo")
    elif kind == "cancelled":
        cause = CAUSES["originator_cancel"]
        cause = cause.with_source(_party(leg) if remote else "Plivo")
    elif kind == "rejected":
        cause = from_sip_status(status)
        if not remote:
            cause = cause.with_source("Plivo")
    elif kind in _LEG_KINDS:
        cause = CAUSES[_LEG_KINDS[kind]]
    else:
        cause = CAUSES["unknown"]
    if answered and cause.dial_status != "completed":
        cause = replace(cause, dial_status="completed")
    return cause


def from_hangup_reason(reason: str | None, *, first_element: bool = False) -> Cause:
    """The cause of a ``<Hangup>`` verb: reason rejected → CALL_REJECTED (603), busy → USER_BUSY (486); with no
    (or another) reason, a Hangup that is the document's first element rejects (spec §3), else a normal hangup."""
    if reason == "busy":
        return CAUSES["busy"]
    if reason == "rejected" or first_element:
        return CAUSES["rejected"]
    return CAUSES["normal_hangup"].with_source("Answer XML")


def sip_status_for(cause_name: str) -> int:
    """SIP final response that rejects an unanswered inbound call ending with ``cause_name`` (a HangupCause name
    or a ``<Hangup reason>`` word): CALL_REJECTED/rejected → 603, USER_BUSY/busy → 486, unknown names → 480."""
    alias = {"rejected": "CALL_REJECTED", "busy": "USER_BUSY"}.get(cause_name, cause_name)
    cause = _BY_NAME.get(alias)
    if cause is None or cause.sip_status is None:
        return DEFAULT_REJECT_STATUS
    return cause.sip_status


def call_status_for(cause: Cause, answered: bool) -> str:
    """``CallStatus`` of a call that ended with ``cause``: completed once answered, else cancel / busy / no-answer /
    timeout / failed (spec §2.9)."""
    if answered:
        return "completed"
    if cause.name == "ORIGINATOR_CANCEL":
        return "cancel"
    return cause.dial_status if cause.dial_status != "completed" else "completed"
