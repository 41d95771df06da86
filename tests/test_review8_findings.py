"""Review 8 of the day's changes (rollback after close, detach, escalation chains, signed governance,
approval re-checks, entity index): each finding shown failing first, then fixed."""

from __future__ import annotations

from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from connectors.lab import lab
from policies.signing import CASE_STEP, public_key_text
from signoff.audit import case_events
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import (
    ApprovalRequest,
    CaseStatus,
    CloseRequest,
    DetachRequest,
    RetryRequest,
    StepState,
    Verdict,
)
from signoff.undo import undo_id
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.test_hostile_approvals import _token, approver_keys, signed_policy  # noqa: F401 (fixtures)
from tests.test_retry_failed_step import OUTAGE, flaky_edr  # noqa: F401 (fixture)
from workflows.case import CaseWorkflow


def _approve(step_id: str, who: str) -> ApprovalRequest:
    return ApprovalRequest(step=step_id, approver=who, reason="confirmed C2")


async def test_a_step_on_a_detached_alerts_target_is_not_run_again_by_a_retry(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, flaky_edr: None  # noqa: F811
) -> None:
    """Finding 1: a detach after a failed attempt left the steps aimed only at the detached alert's
    entities in the attempt a retry runs again: the retry asked for approval of (and, approved,
    ran) an action on a host that is no longer part of the case, although the detach promises that
    steps not yet run whose target came only from that alert are skipped."""
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="network_intrusion")
        ip, host = f"198.51.100.{len(inp.case_id) + 40}", f"host-{inp.case_id}-other-org"
        OUTAGE.add(host)
        # The host came with a second alert, wrongly correlated into this case.
        handle = await start_case(client, task_queue, inp, alert("n1", ("ip", ip)), alert("n2", ("host", host)))
        await wait_for(handle, awaiting("block_ip"), "waiting")
        assert step(await handle.query(CaseWorkflow.status), "isolate_host").target.id == host
        await handle.execute_update(CaseWorkflow.approve, _approve("block_ip", "alice"))
        await handle.execute_update(CaseWorkflow.approve, _approve("isolate_host", "bob"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.action_failed, "action_failed")
        assert "isolate_host" in view.retryable_steps

        reply = await handle.execute_update(CaseWorkflow.detach_alert, DetachRequest(
            alert_uid="n2", requested_by="carol", reason="host of another org"))
        view = await handle.query(CaseWorkflow.status)
        assert "isolate_host" not in view.retryable_steps, (reply, view.retryable_steps)

        OUTAGE.discard(host)
        await handle.execute_update(CaseWorkflow.retry, RetryRequest(requested_by="carol", reason="EDR back"))
        view = await wait_for(handle, awaiting("block_ip"), "waiting for a fresh approval")
        assert "isolate_host" not in view.retries[-1].steps
        assert step(view, "isolate_host").state != StepState.awaiting_approval  # nobody is asked to approve it
        await handle.execute_update(CaseWorkflow.approve, _approve("block_ip", "alice"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained")
        assert lab().read("host", host)["network"] == "connected"  # the other org's host was never touched
        await handle.terminate("test done")
        history = await handle.fetch_history()
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_an_approval_voided_before_its_step_ran_is_not_exported_as_accepted(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    """Finding 2: an approval the case voided before its step ran (its key revoked in the policy in
    force) stayed ACCEPTED in `signoff explain` and an `approval` in the audit export, so the record
    of the executed step shows three accepted approvals where two counted, one of them by a revoked
    key, and nothing on the approval says it did not count."""
    client, k = dev_env.client, approver_keys
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("r1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        for who in ("carol", "dave"):
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                step="revoke_sessions", approver=who, reason="ahead", token=_token(k[who], cid, "revoke_sessions", who)))
        policy = yaml.safe_load(signed_policy.read_text())
        policy["approvers"]["carol"].pop("public_key")  # carol's laptop is stolen
        policy["approvers"]["erin"]["public_key"] = public_key_text(k["erin"])
        signed_policy.write_text(yaml.safe_dump(policy))
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
            step="disable_account", approver="alice", reason="go", token=_token(k["alice"], cid, "disable_account", "alice")))
        await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.awaiting_approval
                       and step(v, "disable_account").state == StepState.executed, "voided")
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
            step="revoke_sessions", approver="erin", reason="now", token=_token(k["erin"], cid, "revoke_sessions", "erin")))
        await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.executed, "runs")
        await handle.execute_update(CaseWorkflow.close, CloseRequest(
            analyst="dave", verdict=Verdict.true_positive, reason="confirmed",
            token=_token(k["dave"], cid, CASE_STEP, "dave", decision="close")))
        await handle.result()

        h = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(h)
        mine = {a["approver"]: a for a in ex["approvals"] if a["step"] == "revoke_sessions"}
        assert mine["dave"]["outcome"] == "accepted" and mine["erin"]["outcome"] == "accepted"
        assert mine["carol"]["outcome"] == "voided", mine["carol"]
        assert "revoked or replaced" in mine["carol"]["refusal"]
        assert "VOIDED" in render_explanation(ex)
        exported = [e for e in case_events(h) if e["detail"].get("step") == "revoke_sessions" and e["actor"] == "carol"]
        assert [e["kind"] for e in exported] == ["approval_voided"], exported


async def test_a_rollback_after_close_runs_once_even_after_retention_deleted_its_workflow(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """Finding 3: once Temporal's retention deleted the finished undo workflow (`<case>-undo`; it
    archived itself, like the case), a new `signoff rollback` of the case started a second undo
    from the case's archive: a host contained again since (a later incident) was released again,
    although the rollback had already run and a repeat must only say what happened."""
    from tests.test_audit import _forget
    from tests.test_rollback_after_close import (
        _ask,
        _contained_then_closed,
        _edit_policy,
        _rollback,
        _undo_calls,
    )

    _edit_policy(policy_file)
    client = dev_env.client
    async with settled_worker(client, task_queue):
        case, _ = await _contained_then_closed(client, task_queue)
        host = f"host-{case.id}"
        first = await _ask(client, task_queue, case.id, _rollback("carol"))
        assert "isolate_host=restored" in first, first
        assert lab().read("host", host)["network"] == "connected"
        await client.get_workflow_handle(undo_id(case.id)).result()
        await _forget(client, undo_id(case.id))  # retention; the undo archived itself when it ended

        lab().write("host", host, {"network": "isolated"}, key="ir-later-incident")  # contained again since
        again = await _ask(client, task_queue, case.id, _rollback("alice", reason="just to be sure"))
        assert "was already rolled back after it closed" in again and "nothing was run again" in again, again
        assert lab().read("host", host)["network"] == "isolated"  # the later containment stands
        assert len(_undo_calls("host", host)) == 1
