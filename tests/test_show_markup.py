"""`signoff show` prints alert text and signal senders' names as text, never as rich markup."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from signoff.cli import cases as cli_cases
from signoff.models import ApprovalRecord, CaseStatus, CaseView, Decision, Entity


def test_hostile_text_in_a_case_is_printed_literally(capsys: pytest.CaptureFixture[str]) -> None:
    """QA: an alert titled "Login failed for user [/oops]" made `signoff show` crash (MarkupError)."""
    refusal = ApprovalRecord(step="isolate_host", approver="mallory[/bogus]", decision=Decision.approve,
                             reason="[bold]x", at=datetime(2026, 11, 28, tzinfo=UTC), via="signal",
                             accepted=False, refusal="'mallory[/bogus]' is not an approver")
    view = CaseView(case_id="ocsf-1", alert_type="suspicious_activity", severity="high",
                    title="Login failed for user [/oops] [red]", status=CaseStatus.awaiting_verdict,
                    playbook="triage_only", policy_version="v1", alert_count=1, first_seen=None, last_seen=None,
                    rules={"rule [/x]": 1}, entities=(Entity(type="account", value="[/bad]"),), enrichment=None,
                    score=None, decision=None, steps=(), refusals=(refusal,), escalations=("note [/y]",))
    cli_cases.print_case(view)
    shown = capsys.readouterr().out
    for text in ("Login failed for user [/oops] [red]", "rule [/x] x1", "account:[/bad]", "'mallory[/bogus]'",
                 "note [/y]"):
        assert text in shown, (text, shown)
