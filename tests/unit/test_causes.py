"""The cause table: SIP status ⇄ Q.850/FreeSWITCH name ⇄ Plivo code ⇄ DialStatus, row by row."""

from __future__ import annotations

import pytest

from engine.causes import (
    CAUSES,
    DIAL_STATUSES,
    HANGUP_SOURCES,
    Cause,
    by_code,
    by_name,
    call_status_for,
    from_hangup_reason,
    from_leg_end,
    from_sip_status,
    sip_status_for,
)
from sip.leg import EndCause

# (what happened, the cause the engine reports) -> expected (name, code, DialStatus)
ROWS: list[tuple[str, Cause, str, int | None, str]] = [
    ("answered, then the callee hung up", from_leg_end(EndCause("bye"), answered=True), "NORMAL_CLEARING", 4000,
     "completed"),
    ("answered, then we hung up", from_leg_end(EndCause("bye", by="local"), answered=True), "NORMAL_CLEARING",
     4000, "completed"),
    ("ring timeout", CAUSES["ring_timeout"], "NO_ANSWER", 6010, "no-answer"),
    ("486 Busy Here", from_sip_status(486), "USER_BUSY", 3010, "busy"),
    ("600 Busy Everywhere", from_sip_status(600), "USER_BUSY", 3100, "busy"),
    ("408 Request Timeout", from_sip_status(408), "RECOVERY_ON_TIMER_EXPIRE", 3070, "timeout"),
    ("Timer B", from_leg_end(EndCause("timeout", 408, "no response (Timer B)"), answered=False),
     "RECOVERY_ON_TIMER_EXPIRE", 3070, "timeout"),
    ("404 Not Found", from_sip_status(404), "UNALLOCATED_NUMBER", 3050, "failed"),
    ("484 Address Incomplete", from_sip_status(484), "UNALLOCATED_NUMBER", 3050, "failed"),
    ("604 Does Not Exist Anywhere", from_sip_status(604), "UNALLOCATED_NUMBER", 3120, "failed"),
    ("403 Forbidden", from_sip_status(403), "CALL_REJECTED", 3040, "failed"),
    ("603 Decline", from_sip_status(603), "CALL_REJECTED", 3110, "failed"),
    ("480 Temporarily Unavailable", from_sip_status(480), "NO_ANSWER", 3000, "no-answer"),
    ("500 Server Internal Error", from_sip_status(500), "NORMAL_TEMPORARY_FAILURE", 3080, "failed"),
    ("502 Bad Gateway", from_sip_status(502), "NORMAL_TEMPORARY_FAILURE", 3080, "failed"),
    ("503 Service Unavailable", from_sip_status(503), "NORMAL_TEMPORARY_FAILURE", 3090, "failed"),
    ("504 Server Time-out", from_sip_status(504), "NORMAL_TEMPORARY_FAILURE", 3080, "failed"),
    ("credentials rejected", from_leg_end(EndCause("auth_failed", 401), answered=False), "sip_auth_failed", 4240,
     "failed"),
    ("403 after the authenticated retry", from_leg_end(EndCause("auth_failed", 403), answered=False),
     "sip_auth_failed", 4240, "failed"),
    ("no final response to the authenticated retry", from_leg_end(EndCause("auth_timeout", 408), answered=False),
     "sip_auth_timeout", 4250, "timeout"),
    ("end of XML", CAUSES["end_of_xml"], "NORMAL_CLEARING", 4010, "completed"),
    ("normal hangup", CAUSES["normal_hangup"], "NORMAL_CLEARING", 4000, "completed"),
    ("caller cancelled", from_leg_end(EndCause("cancelled", 487, "caller cancelled"), answered=False, leg="a"),
     "ORIGINATOR_CANCEL", 1000, "no-answer"),
    ("time limit", CAUSES["allotted_timeout"], "ALLOTTED_TIMEOUT", 6000, "completed"),
    ("lost the simultaneous-ring race", CAUSES["lose_race"], "LOSE_RACE", 9000, "no-answer"),
    ("user not registered", CAUSES["user_not_registered"], "USER_NOT_REGISTERED", 2020, "failed"),
    ('<Hangup reason="rejected"/>', from_hangup_reason("rejected"), "CALL_REJECTED", 3020, "failed"),
    ('<Hangup reason="busy"/>', from_hangup_reason("busy"), "USER_BUSY", 3010, "busy"),
    ("<Hangup/> as the first element", from_hangup_reason(None, first_element=True), "CALL_REJECTED", 3020,
     "failed"),
    ("<Hangup/> later in the document", from_hangup_reason(None), "NORMAL_CLEARING", 4000, "completed"),
    ("answer_url unreachable (and fallback)", CAUSES["answer_url_error"], "ANSWER_URL_ERROR", 7011, "failed"),
    ("invalid answer XML", CAUSES["invalid_answer_xml"], "INVALID_ANSWER_XML", 8011, "failed"),
    ("action URL unreachable", CAUSES["action_url_error"], "ACTION_URL_ERROR", 7012, "failed"),
    ("invalid action XML", CAUSES["invalid_action_xml"], "INVALID_ACTION_XML", 8012, "failed"),
    ("invalid redirect XML", CAUSES["invalid_redirect_xml"], "INVALID_REDIRECT_XML", 8014, "failed"),
]


@pytest.mark.parametrize(("what", "cause", "name", "code", "dial_status"), ROWS, ids=[r[0] for r in ROWS])
def test_cause_row(what: str, cause: Cause, name: str, code: int, dial_status: str) -> None:
    assert (cause.name, cause.code, cause.dial_status) == (name, code, dial_status)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("CALL_REJECTED", 603),
        ("rejected", 603),
        ("USER_BUSY", 486),
        ("busy", 486),
        ("NO_ANSWER", 480),
        ("UNALLOCATED_NUMBER", 404),
        ("ORIGINATOR_CANCEL", 487),
        ("RECOVERY_ON_TIMER_EXPIRE", 408),
        ("NORMAL_TEMPORARY_FAILURE", 503),
        ("USER_NOT_REGISTERED", 480),
        ("NORMAL_CLEARING", 480),
        ("INVALID_ANSWER_XML", 500),
        ("sip_auth_failed", 480),
        ("NO_SUCH_CAUSE", 480),
    ],
)
def test_sip_status_that_rejects_an_unanswered_inbound_call(name: str, status: int) -> None:
    assert sip_status_for(name) == status


def test_hangup_reason_rejected_and_busy_come_from_the_answer_xml() -> None:
    rejected, busy = from_hangup_reason("rejected"), from_hangup_reason("busy")
    assert rejected.sip_status == 603 and busy.sip_status == 486
    assert rejected.hangup_source == busy.hangup_source == "Answer XML"
    assert from_hangup_reason(None).hangup_source == "Answer XML"


@pytest.mark.parametrize(
    ("kind", "status", "by", "expected"),
    [
        ("bye", 0, "remote", "NORMAL_CLEARING"),
        ("rejected", 486, "remote", "USER_BUSY"),
        ("rejected", 603, "local", "CALL_REJECTED"),
        ("cancelled", 487, "remote", "ORIGINATOR_CANCEL"),
        ("cancelled", 487, "local", "ORIGINATOR_CANCEL"),
        ("timeout", 408, "remote", "RECOVERY_ON_TIMER_EXPIRE"),
        ("auth_failed", 407, "remote", "sip_auth_failed"),
        ("auth_timeout", 408, "remote", "sip_auth_timeout"),
        ("ack_timeout", 408, "remote", "RECOVERY_ON_TIMER_EXPIRE"),
        ("transport_error", 0, "remote", "NETWORK_OUT_OF_ORDER"),
        ("shutdown", 0, "local", "SYSTEM_SHUTDOWN"),
        ("something-new", 0, "remote", "NORMAL_UNSPECIFIED"),
    ],
)
def test_every_sip_leg_end_kind_maps_to_a_cause(kind: str, status: int, by: str, expected: str) -> None:
    cause = from_leg_end(EndCause(kind, status, "", by), answered=False)
    assert cause.name == expected
    assert cause.dial_status in DIAL_STATUSES and cause.hangup_source in HANGUP_SOURCES


@pytest.mark.parametrize("kind", ["bye", "transport_error", "ack_timeout", "shutdown"])
def test_an_answered_leg_reports_dial_status_completed_however_it_ended(kind: str) -> None:
    assert from_leg_end(EndCause(kind), answered=True).dial_status == "completed"


def test_hangup_source_names_the_party_that_hung_up() -> None:
    assert from_leg_end(EndCause("bye"), answered=True, leg="a").hangup_source == "Caller"
    assert from_leg_end(EndCause("bye"), answered=True, leg="b").hangup_source == "Call recipient"
    assert from_leg_end(EndCause("bye", by="local"), answered=True).hangup_source == "Plivo"
    assert CAUSES["normal_hangup"].with_source("API Request").hangup_source == "API Request"
    with pytest.raises(ValueError):
        CAUSES["normal_hangup"].with_source("Somebody")


@pytest.mark.parametrize("status", [300, 302, 400, 410, 415, 488, 499, 606, 699, 0, 150])
def test_every_other_final_status_is_a_failed_attempt(status: int) -> None:
    assert from_sip_status(status).dial_status == "failed"


def test_plivo_hosted_codes_have_plivo_labels() -> None:
    expected = {
        0: "Unknown",
        1000: "Canceled",
        2000: "Invalid Destination Address",
        2020: "Endpoint Not Registered",
        4000: "Normal Hangup",
        4010: "End Of XML Instructions",
        4020: "Multiparty Call Ended",
        4030: "Kicked Out Of Multiparty Call",
        4240: "SIP Auth Failed",
        4250: "SIP Auth Timeout",
    }
    for code, label in expected.items():
        assert by_code(code).label == label


def test_table_is_consistent() -> None:
    for key, cause in CAUSES.items():
        assert cause.dial_status in DIAL_STATUSES, key
        assert cause.hangup_source in HANGUP_SOURCES, key
        assert cause.sip_status is None or 400 <= cause.sip_status < 700, key
    assert by_name("NORMAL_CLEARING") is CAUSES["normal_hangup"]
    assert by_name("CALL_REJECTED") is CAUSES["rejected"]


def test_callback_fields() -> None:
    assert CAUSES["end_of_xml"].hangup_params() == {
        "HangupCause": "NORMAL_CLEARING",
        "HangupCauseName": "End Of XML Instructions",
        "HangupCauseCode": "4010",
        "HangupSource": "Plivo",
    }
    assert CAUSES["sip_auth_failed"].dial_params() == {
        "DialStatus": "failed",
        "DialHangupCause": "sip_auth_failed",
        "DialHangupCauseName": "SIP Auth Failed",
        "DialHangupCauseCode": "4240",
    }


@pytest.mark.parametrize(
    ("cause", "answered", "status"),
    [
        (CAUSES["normal_hangup"], True, "completed"),
        (CAUSES["busy_here"], False, "busy"),
        (CAUSES["ring_timeout"], False, "no-answer"),
        (CAUSES["originator_cancel"], False, "cancel"),
        (CAUSES["request_timeout"], False, "timeout"),
        (CAUSES["unallocated_number"], False, "failed"),
    ],
)
def test_call_status_of_an_ended_call(cause: Cause, answered: bool, status: str) -> None:
    assert call_status_for(cause, answered) == status
