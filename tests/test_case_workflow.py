"""The governed case workflow on the real time-skipping Temporal server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.executors import register, reset_cache
from activities.executors.base import ActionExecutor, State
from connectors.lab import lab
from signoff.models import (
    ApprovalRequest,
    CaseStatus,
    CloseRequest,
    RollbackRequest,
    StepState,
    Verdict,
)
from tests.casekit import (
    alert,
    awaiting,
    case_input,
    settle_governance,
    settled_worker,
    start_case,
    step,
    wait_for,
)
from workflows.case import CaseWorkflow


async def _accepted_updates(handle) -> int:  # type: ignore[no-untyped-def]
    from temporalio.api.enums.v1 import EventType

    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)


def approval(step_id: str, who: str, reason: str = "confirmed") -> ApprovalRequest:
    return ApprovalRequest(step=step_id, approver=who, reason=reason)


async def test_gate_blocks_until_quorum_then_executes(time_env: WorkflowEnvironment, task_queue: str) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input()
        account = f"acct-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("a1", ("account", account)))
        view = await wait_for(handle, awaiting("disable_account"), "disable_account waiting")
        # Low-stakes steps ran on their own; the high-impact one did not.
        assert step(view, "tag").state == StepState.executed
        assert lab().read("account", account)["enabled"] is True

        # The gate says since when it waits and when it escalates (the high tier's 4h); the step
        # behind it is not being timed yet: steps are gated one at a time.
        gate = step(view, "disable_account")
        assert gate.waiting_since is not None and gate.escalates_at == gate.waiting_since + timedelta(hours=4)
        assert step(view, "revoke_sessions").waiting_since is None

        # revoke_sessions is irreversible: top tier, quorum 2 of lead/ir_manager.
        assert step(view, "revoke_sessions").quorum == 2
        msg = await handle.execute_update(CaseWorkflow.approve, approval("revoke_sessions", "carol"))
        assert "1/2" in msg
        view = await handle.query(CaseWorkflow.status)
        assert step(view, "revoke_sessions").state == StepState.awaiting_approval

        msg = await handle.execute_update(CaseWorkflow.approve, approval("disable_account", "bob"))
        assert "quorum 1/1" in msg
        view = await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed")
        assert lab().read("account", account)["enabled"] is False
        result = step(view, "disable_account").result
        assert result is not None and result.before == {"enabled": True}

        await handle.execute_update(CaseWorkflow.approve, approval("revoke_sessions", "dave"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained")
        assert step(view, "revoke_sessions").state == StepState.executed
        assert lab().read("account", account)["sessions_revoked_at"] == f"{inp.case_id}:revoke_sessions"

        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                     reason="confirmed takeover"))
        final = await handle.result()
        assert final.status == CaseStatus.closed
        assert final.verdict is not None and final.verdict.verdict == Verdict.true_positive
        await settle_governance(client, task_queue)


async def test_each_kind_of_refused_approval_is_refused_and_recorded(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        handle = await start_case(client, task_queue, inp, alert("a1", ("account", "u-refusals")))
        await wait_for(handle, awaiting("disable_account"), "waiting")
        accepted_before = await _accepted_updates(handle)

        refused = {
            "unknown user": approval("disable_account", "mallory"),
            "wrong role": approval("revoke_sessions", "alice"),  # analyst; critical needs lead/ir_manager
            "self-approval": approval("disable_account", "bob"),  # bob requested the case
            "unknown step": approval("format_disk", "carol"),
            "no reason": approval("disable_account", "carol", reason="  "),
        }
        reasons = {}
        for kind, req in refused.items():
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update(CaseWorkflow.approve, req)
            cause = info.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == "ApprovalRefused", kind
            reasons[kind] = cause.message
        assert "not an approver in policy (approvers: alice, bob, carol, dave, erin)" in reasons["unknown user"]
        assert "needs one of" in reasons["wrong role"]
        assert "separation of duties" in reasons["self-approval"]
        assert "no step" in reasons["unknown step"]
        assert "reason is required" in reasons["no reason"]
        # A refused update is never written to history (no UpdateAccepted event; on the real dev
        # server not even a workflow task: see test_devserver.py).
        assert await _accepted_updates(handle) == accepted_before

        # Duplicate towards a quorum: carol twice on the 2-quorum step counts once.
        await handle.execute_update(CaseWorkflow.approve, approval("revoke_sessions", "carol"))
        with pytest.raises(WorkflowUpdateFailedError, match="update"):
            await handle.execute_update(CaseWorkflow.approve, approval("revoke_sessions", "carol", "again"),
                                        id="second-carol")

        # Signals cannot be refused before they are written: they are kept and marked refused.
        await handle.signal(CaseWorkflow.approve_signal, {"step": "disable_account", "approver": "mallory",
                                                          "reason": "let me in"})
        await handle.signal(CaseWorkflow.approve_signal, {"step": 42, "oops": True})  # malformed JSON from the UI
        await handle.signal(CaseWorkflow.approve_signal, "not even an object")
        view = await wait_for(handle, lambda v: len(v.refusals) >= 3, "three refusals")
        assert all(r.via == "signal" and not r.accepted for r in view.refusals)
        assert "not an approver" in view.refusals[0].refusal
        assert view.refusals[1].refusal.startswith("malformed approval")
        assert step(view, "disable_account").state == StepState.awaiting_approval
        assert len([a for a in step(view, "revoke_sessions").approvals if a.accepted]) == 1

        # A valid approval by signal (the UI's signal form) advances the case.
        await handle.signal(CaseWorkflow.approve_signal, {"step": "disable_account", "approver": "alice",
                                                          "reason": "confirmed in sign-in logs"})
        view = await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed")
        assert step(view, "disable_account").approvals[0].via == "signal"
        await handle.terminate("test done")


async def test_timeout_escalates_and_never_executes(
    time_env: WorkflowEnvironment, task_queue: str, signoff_home: Path
) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting")
        await time_env.sleep(timedelta(hours=5))  # the high tier times out after 4 h
        view = await wait_for(handle, lambda v: v.status == CaseStatus.escalated, "escalated")
        assert step(view, "isolate_host").state == StepState.escalated
        assert lab().read("host", host)["network"] == "connected"
        queue = [json.loads(line) for line in (signoff_home / "escalations.jsonl").read_text().splitlines()]
        assert any(e["case_id"] == inp.case_id and e["step_id"] == "isolate_host" for e in queue)

        # Escalation never executes, but a human can still decide afterwards.
        await handle.execute_update(CaseWorkflow.approve, approval("isolate_host", "alice"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "executed late")
        assert lab().read("host", host)["network"] == "isolated"
        await handle.terminate("test done")


async def test_reject_skips_the_step(time_env: WorkflowEnvironment, task_queue: str) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), ("account", f"u-{host}")))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        msg = await handle.execute_update(CaseWorkflow.reject, approval("isolate_host", "alice", "benign admin tool"))
        assert "will not run" in msg
        view = await wait_for(handle, awaiting("disable_account"), "next step waiting")
        assert step(view, "isolate_host").state == StepState.skipped
        assert "rejected by alice" in step(view, "isolate_host").error
        assert lab().read("host", host)["network"] == "connected"
        await handle.terminate("test done")


async def test_rollback_restores_captured_state_not_the_inverse(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host, account = f"host-{inp.case_id}", f"user-{inp.case_id}"
        lab().set("account", account, {"enabled": False})  # already disabled before the playbook ran
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), ("account", account)))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        await handle.execute_update(CaseWorkflow.approve, approval("isolate_host", "alice"))
        await handle.execute_update(CaseWorkflow.approve, approval("disable_account", "bob"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained")
        assert lab().read("host", host)["network"] == "isolated"
        assert step(view, "disable_account").result.already_in_state  # type: ignore[union-attr]

        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="mallory", reason="x"))
        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        assert msg.startswith("rollback rolled_back")
        view = await handle.query(CaseWorkflow.status)
        assert view.status == CaseStatus.rolled_back
        assert lab().read("host", host)["network"] == "connected"  # restored
        assert lab().read("account", account)["enabled"] is False  # restored to what it was: still disabled
        assert step(view, "tag").state == StepState.compensated
        assert all(s.state in (StepState.compensated, StepState.skipped) for s in view.steps if s.step_id != "watch_host")
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.false_positive,
                                                                     reason="admin tool"))
        assert (await handle.result()).status == CaseStatus.rolled_back


class _Broken(ActionExecutor):
    """A backend that accepts nothing: every write fails, as a vendor outage would."""

    action = "broken"

    async def capture(self, target):  # type: ignore[no-untyped-def]
        return lab().read(target.kind, target.id) | {}

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"network": "isolated"}

    async def write(self, target, state, idempotency_key):  # type: ignore[no-untyped-def]
        raise ApplicationError("vendor refused: host not found", type="ActionRefused", non_retryable=True)


@register("isolate_host", "broken")
def _broken() -> ActionExecutor:
    return _Broken()


@register("block_ip", "broken-undo")
def _broken_undo() -> ActionExecutor:
    class BrokenUndo(_Broken):
        def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
            return {"blocked": True}

        async def capture(self, target):  # type: ignore[no-untyped-def]
            return {"blocked": lab().read("ip", target.id)["blocked"]}

        async def write(self, target, state, idempotency_key):  # type: ignore[no-untyped-def]
            if state.get("blocked") is False:
                raise ApplicationError("firewall API down", type="ActionRefused", non_retryable=True)
            lab().write("ip", target.id, state, idempotency_key)

    return BrokenUndo()


async def test_failing_step_compensates_earlier_steps(
    time_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNOFF_BACKENDS", "isolate_host=broken")
    reset_cache()
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="network_intrusion")
        ip, host = f"198.51.100.{len(inp.case_id)}", f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("n1", ("ip", ip), ("host", host)))
        await wait_for(handle, awaiting("block_ip"), "waiting")
        await handle.execute_update(CaseWorkflow.approve, approval("block_ip", "alice"))
        await handle.execute_update(CaseWorkflow.approve, approval("isolate_host", "bob"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.action_failed, "action_failed")
        # The failed step is compensated too (it may have half-applied); its error stays on record.
        assert step(view, "isolate_host").state == StepState.compensated
        assert "vendor refused" in step(view, "isolate_host").error
        assert any("isolate_host failed" in e for e in view.escalations)
        assert step(view, "block_ip").state == StepState.compensated
        assert lab().read("ip", ip)["blocked"] is False
        await handle.terminate("test done")
    reset_cache()


async def test_failing_compensation_escalates(
    time_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNOFF_BACKENDS", "block_ip=broken-undo")
    reset_cache()
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="network_intrusion")
        ip = f"203.0.113.{len(inp.case_id)}"
        handle = await start_case(client, task_queue, inp, alert("n1", ("ip", ip)))
        await wait_for(handle, awaiting("block_ip"), "waiting")
        await handle.execute_update(CaseWorkflow.approve, approval("block_ip", "alice"))
        await wait_for(handle, lambda v: step(v, "block_ip").state == StepState.executed, "executed")
        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        assert "rollback_failed" in msg
        view = await handle.query(CaseWorkflow.status)
        assert view.status == CaseStatus.rollback_failed
        assert step(view, "block_ip").state == StepState.compensation_failed
        assert any("compensation failed" in e for e in view.escalations)
        assert lab().read("ip", ip)["blocked"] is True  # honest: not restored, and a human was told
        await handle.terminate("test done")
    reset_cache()


async def test_auto_close_only_on_the_loop_above_threshold(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    policy = yaml.safe_load(policy_file.read_text())
    policy["alert_types"]["phishing"].update(autonomy="on_the_loop", threshold=0.0)
    # Random case ids: without this, 5% of runs would draw the on-the-loop review sample.
    policy["review_sample_rate"] = 0.0
    policy_file.write_text(yaml.safe_dump(policy))
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="phishing")
        handle = await start_case(client, task_queue, inp, alert("p1", ("mailbox", "m1"), category="InitialAccess"))
        result = await handle.result()
        assert result.status == CaseStatus.auto_closed
        assert result.decision is not None and result.decision.kind == "auto_close"
        assert result.score is not None and result.decision.model_id == result.score.model_id
        assert not result.steps  # nothing ran: no playbook on an auto-closed case

        # The same case type in the loop goes to a human.
        policy["alert_types"]["phishing"].update(autonomy="in_the_loop")
        policy_file.write_text(yaml.safe_dump(policy))
        handle = await start_case(client, task_queue, case_input(alert_type="phishing"),
                                  alert("p2", ("mailbox", "m2"), category="InitialAccess"))
        view = await wait_for(handle, lambda v: v.decision is not None, "decided")
        assert view.decision is not None and view.decision.kind != "auto_close"
        await handle.terminate("test done")
