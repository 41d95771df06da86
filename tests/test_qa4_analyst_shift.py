"""QA pass 4 (an on-call analyst's shift): what `signoff show` and the CLI's errors say to a tired human.

- An error line carrying text someone typed (a path, a step name, a reason) with `[/x]` in it crashed
  with a rich MarkupError traceback instead of printing `error: ...` (and the refusal was lost from view).
- `signoff show WRONG-ID` said "Temporal refused the request: workflow not found" and nothing more.
- `signoff show` listed every gated step as awaiting_approval, but the workflow gates them one at a
  time in playbook order: nothing said which step the case is waiting on, on whom, until when, what
  a timeout does, nor that a later step approved early waits behind the current one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from policies.loader import load_policy
from signoff.cli import app
from signoff.cli import cases as cli_cases
from signoff.models import (
    ActionTarget,
    ApprovalRecord,
    CaseStatus,
    CaseView,
    Decision,
    Reversibility,
    RiskTier,
    StepState,
    StepView,
)
from tests.auditkit import acli, address_of


def test_error_text_with_brackets_is_printed_not_parsed_as_markup(tmp_path: Path) -> None:
    missing = tmp_path / "alerts [/x].csv"
    result = CliRunner().invoke(app, ["ingest", str(missing), "--format", "guide"])
    assert not (result.exception and not isinstance(result.exception, SystemExit)), repr(result.exception)
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "alerts [/x].csv does not exist" in result.output, result.output


def _step(step_id: str, action: str, tier: RiskTier, state: StepState, quorum: int,
          reversibility: Reversibility = Reversibility.reversible,
          approvals: tuple[ApprovalRecord, ...] = ()) -> StepView:
    return StepView(step_id=step_id, action=action, tier=tier, reversibility=reversibility,
                    target=ActionTarget(kind="account", id="u-1"), state=state, approvals=approvals, quorum=quorum)


def _view(*steps: StepView, status: CaseStatus = CaseStatus.awaiting_approval) -> CaseView:
    return CaseView(case_id="c-1", alert_type="compromised_account", severity="high", title="t", status=status,
                    playbook="unregistered-test-playbook", policy_version=load_policy().digest(), alert_count=1,
                    first_seen=None, last_seen=None, rules={}, entities=(), enrichment=None, score=None,
                    decision=None, steps=steps, refusals=(), escalations=())


def test_show_says_which_step_waits_on_whom_until_when_and_what_is_queued_behind_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    approved = tuple(ApprovalRecord(step="revoke_sessions", approver=who, decision=Decision.approve, reason="ok", via="update",
                                    at=datetime(2026, 11, 28, tzinfo=UTC)) for who in ("carol", "dave"))
    view = _view(
        _step("tag", "tag_case", RiskTier.low, StepState.executed, 0),
        _step("disable_account", "disable_account", RiskTier.high, StepState.awaiting_approval, 1),
        _step("revoke_sessions", "revoke_sessions", RiskTier.critical, StepState.approved, 2,
              Reversibility.irreversible, approved),
    )
    cli_cases.print_case(view)
    shown = " ".join(capsys.readouterr().out.split())
    assert "waiting on step disable_account" in shown, shown
    assert "1 more approval(s) (quorum 1) from analyst/lead/ir_manager" in shown, shown
    assert "within 4h" in shown and "escalates to a human" in shown and "never runs on a timeout" in shown, shown
    assert "signoff approve|reject c-1 disable_account" in shown, shown
    # The step approved early does not run before the gate ahead of it is decided.
    assert "revoke_sessions (approved)" in shown and "run only after disable_account is decided" in shown, shown


def test_show_gives_the_escalation_time_the_case_recorded() -> None:
    since = datetime(2026, 11, 28, 22, 17, 5, tzinfo=UTC)
    gate = _step("disable_account", "disable_account", RiskTier.high, StepState.awaiting_approval, 1)
    gate = gate.model_copy(update={"waiting_since": since, "escalates_at": since + timedelta(hours=4)})
    text = " ".join(cli_cases.waiting_lines(_view(gate)))
    assert "not in by 2026-11-29 02:17:05Z (waiting since 2026-11-28 22:17:05Z)" in text, text
    assert "never runs on a timeout" in text, text


def test_escalated_step_says_it_keeps_waiting_with_no_deadline() -> None:
    view = _view(_step("revoke_sessions", "revoke_sessions", RiskTier.critical, StepState.escalated, 2,
                       Reversibility.irreversible), status=CaseStatus.escalated)
    text = " ".join(cli_cases.waiting_lines(view))
    assert "from lead/ir_manager" in text and "2 more approval(s)" in text, text
    assert "escalated to a human" in text and "no further deadline" in text, text


def test_a_case_waiting_only_for_a_verdict_says_how_to_close_it() -> None:
    view = _view(_step("tag", "tag_case", RiskTier.low, StepState.executed, 0), status=CaseStatus.awaiting_verdict)
    text = " ".join(cli_cases.waiting_lines(view))
    assert "waiting for an analyst's verdict" in text and "signoff close c-1" in text and "30d" in text, text
    closed = _view(_step("tag", "tag_case", RiskTier.low, StepState.executed, 0), status=CaseStatus.closed)
    assert cli_cases.waiting_lines(closed) == []


async def test_show_and_approve_of_an_unknown_case_say_how_to_find_the_id(dev_env: WorkflowEnvironment) -> None:
    address = address_of(dev_env.client)
    shown = await acli(address, "show", "guide-211-2082")
    assert shown.exit_code == 1, shown.output
    assert "no case 'guide-211-2082'" in shown.output and "signoff cases" in shown.output, shown.output
    approved = await acli(address, "approve", "guide-211-2082", "isolate_host", "--as", "bob", "--reason", "r")
    assert approved.exit_code == 1, approved.output
    assert "no case 'guide-211-2082'" in approved.output and "not open" not in approved.output, approved.output


def test_a_rolled_back_case_names_the_irreversible_actions_still_in_effect() -> None:
    view = _view(_step("tag", "tag_case", RiskTier.low, StepState.compensated, 0),
                 _step("revoke_sessions", "revoke_sessions", RiskTier.critical, StepState.executed, 2,
                       Reversibility.irreversible), status=CaseStatus.rolled_back)
    text = " ".join(cli_cases.waiting_lines(view))
    assert "did not undo revoke_sessions" in text and "irreversible" in text, text
    undone = _view(_step("tag", "tag_case", RiskTier.low, StepState.compensated, 0), status=CaseStatus.rolled_back)
    assert cli_cases.waiting_lines(undone) == []


async def test_a_decision_with_no_worker_running_is_not_sent_and_says_so(
        dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """QA: with the worker down, `signoff approve` hung with no output; interrupted, it printed a
    traceback, and the approval was applied minutes later when a worker came back."""
    import asyncio
    import os

    from signoff.worker import build_worker
    from tests.auditkit import cli_process
    from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for

    client = dev_env.client
    inp = case_input()
    async with build_worker(client, task_queue):
        handle = await start_case(client, task_queue, inp, alert("a1", ("account", f"acct-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting")
    # The worker is gone. The command answers (the guard only keeps a regression from hanging the suite).
    env = dict(os.environ, TEMPORAL_ADDRESS=address_of(client), SIGNOFF_TASK_QUEUE=task_queue)
    code, _, stderr = await asyncio.wait_for(cli_process(
        "approve", inp.case_id, "disable_account", "--as", "alice", "--reason", "worker down", env=env), 300)
    stderr = " ".join(stderr.split())
    assert code == 1, stderr
    assert "no worker answered case" in stderr and "nothing was sent" in stderr and "signoff worker" in stderr, stderr
    async with build_worker(client, task_queue):
        view = await wait_for(handle, awaiting("disable_account"), "still waiting")
        assert step(view, "disable_account").approvals == ()  # nothing arrived later
        code, _, stderr = await asyncio.wait_for(cli_process(
            "approve", inp.case_id, "disable_account", "--as", "alice", "--reason", "worker back", env=env), 300)
        assert code == 0, stderr
        await handle.terminate("test done")


async def test_an_interrupted_send_says_it_may_still_be_applied(capsys: pytest.CaptureFixture[str]) -> None:
    """The send itself interrupted (Ctrl-C, or the RPC timed out): no traceback, and the truth about it."""
    import typer
    from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateRPCTimeoutOrCancelledError

    class Described:
        status = WorkflowExecutionStatus.COMPLETED  # no worker check: straight to the send
        task_queue = "q"

    class Interrupted:  # the one part of a workflow handle this path uses
        async def describe(self) -> Described:
            return Described()

        async def execute_update(self, *args: object, **kwargs: object) -> str:
            raise WorkflowUpdateRPCTimeoutOrCancelledError()

    with pytest.raises(typer.Exit) as exited:
        await cli_cases._send(Interrupted(), "c-1", "approve", None, "id-1")
    assert exited.value.exit_code == 130
    text = " ".join(capsys.readouterr().err.split())
    assert "was sent and may still be applied" in text and "signoff show c-1" in text, text


def test_show_says_which_playbook_steps_had_no_target() -> None:
    """A phishing case with only a url entity: tag and note ran, and nothing said why no response was planned."""
    from signoff.models import Entity

    view = _view(_step("tag", "tag_case", RiskTier.low, StepState.executed, 0),
                 _step("note", "add_note", RiskTier.low, StepState.executed, 0), status=CaseStatus.awaiting_verdict)
    view = view.model_copy(update={"playbook": "phishing", "entities": (Entity(type="url", value="213"),)})
    text = " ".join(cli_cases.waiting_lines(view))
    assert "steps not planned, for want of a target" in text, text
    assert "quarantine_email (no mail_message entity)" in text and "block_sender (no mailbox entity)" in text, text
    planned = view.model_copy(update={"entities": (Entity(type="url", value="213"),
                                                   Entity(type="mail_message", value="m1"))})
    assert "quarantine_email" not in " ".join(cli_cases.waiting_lines(planned))  # plannable now: not claimed


async def test_an_approval_queued_behind_an_earlier_step_says_so(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """QA: `approve ... revoke_sessions` answered "quorum 2/2 reached, step revoke_sessions will run"
    while the case still waited on disable_account, so it did not run."""
    from signoff.worker import build_worker
    from tests.casekit import alert, awaiting, case_input, start_case, wait_for

    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue}
    async with build_worker(client, task_queue):
        inp = case_input()
        handle = await start_case(client, task_queue, inp, alert("a1", ("account", f"acct-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting")
        first = await acli(address, "approve", inp.case_id, "revoke_sessions", "--as", "carol", "--reason", "r", env=env)
        assert first.exit_code == 0 and "runs only after" not in first.output, first.output  # 1/2: nothing to run yet
        second = await acli(address, "approve", inp.case_id, "revoke_sessions", "--as", "dave", "--reason", "r", env=env)
        text = " ".join(second.output.split())
        assert second.exit_code == 0 and "quorum 2/2" in text, text
        # the case says it itself now (clearer-replies); the CLI adds nothing of its own then
        assert "step revoke_sessions runs after disable_account is decided" in text, text
        assert "will run" not in text and "it runs only after" not in text, text
        alone = await acli(address, "approve", inp.case_id, "disable_account", "--as", "alice", "--reason", "r", env=env)
        assert alone.exit_code == 0 and "runs after" not in alone.output, alone.output
        await handle.terminate("test done")
