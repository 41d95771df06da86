"""A rollback that itself needs sign-off (policy `rollback_quorum`): undoing a containment
(reconnecting a host) is high-impact, so a production policy can ask for two different people
before anything is undone. Real time-skipping server; the policy file is a test copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from connectors.lab import lab
from policies.loader import PolicyError, load_policy
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import ApprovalRequest, CaseStatus, RollbackRequest, StepState
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from workflows.case import CaseWorkflow


def _with_quorum(policy_file: Path, quorum: int) -> None:
    raw = yaml.safe_load(policy_file.read_text())
    raw["rollback_quorum"] = quorum
    policy_file.write_text(yaml.safe_dump(raw))


def test_a_quorum_nobody_can_meet_is_refused_and_the_default_keeps_the_policy_version(policy_file: Path) -> None:
    before = load_policy(policy_file).digest()
    _with_quorum(policy_file, 1)
    assert load_policy(policy_file).digest() == before  # an explicit default changes no recorded version
    _with_quorum(policy_file, 5)  # alice, bob, carol, dave hold rollback roles: 4 people
    with pytest.raises(PolicyError) as info:
        load_policy(policy_file)
    assert "rollback_quorum is 5 but only 4 approver(s) ['alice', 'bob', 'carol', 'dave']" in str(info.value)


async def test_a_rollback_runs_only_when_enough_different_people_ask(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _with_quorum(policy_file, 2)
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host)))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="beaconing"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated")
        assert lab().read("host", host)["network"] == "isolated"

        # The first request is counted; nothing is undone, the case goes on as it was.
        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        assert msg.startswith("rollback requested by carol (1/2, asked: carol)") and "1 more person" in msg, msg
        view = await handle.query(CaseWorkflow.status)
        assert [v.requested_by for v in view.rollback_votes] == ["carol"] and view.rollback is None
        assert view.status != CaseStatus.rolled_back and step(view, "isolate_host").state == StepState.executed
        assert lab().read("host", host)["network"] == "isolated"

        # The same person asking again is refused before anything is written; so is someone without the role.
        for who in ("carol", "erin"):
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by=who, reason="again"))
            assert info.value.cause is not None
        # A signal from the same person is kept and refused, never counted twice.
        await handle.signal(CaseWorkflow.rollback_signal, {"requested_by": "carol", "reason": "once more"})
        view = await wait_for(handle, lambda v: any(r.via == "rollback_signal" for r in v.refusals), "refused")
        assert "has already asked for this rollback" in view.refusals[-1].refusal
        assert len(view.rollback_votes) == 1

        # A second person: the rollback runs and restores the captured state.
        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="dave", reason="agreed"))
        assert msg.startswith("rollback rolled_back"), msg
        assert "still in effect" not in msg  # nothing irreversible ran here
        view = await handle.query(CaseWorkflow.status)
        assert view.status == CaseStatus.rolled_back and view.rollback_votes == ()
        assert view.rollback is not None and view.rollback.requested_by == "dave"
        assert lab().read("host", host)["network"] == "connected"

        # The history tells it: carol's request counted, dave's ran the compensations.
        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history, view)
        accepted = [(r["requested_by"], r["outcome"]) for r in ex["rollbacks"] if r["outcome"] != "refused"]
        assert accepted == [("carol", "counted"), ("dave", "accepted")], ex["rollbacks"]
        text = render_explanation(ex)
        assert "Rollback requested:" in text and "counted towards the policy's rollback quorum" in text
        compensated = sum(1 for s in view.steps if s.compensation is not None)
        assert compensated >= 2  # isolate_host and the tag, at least
        assert [r["compensations"] for r in ex["rollbacks"] if r["outcome"] == "accepted"] == [compensated]
        await handle.terminate("test done")


async def test_the_rollback_reply_names_what_it_could_not_undo_and_what_never_ran(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    """QA: "rollback rolled_back: ..., revoke_sessions=executed" hid that the sessions stay revoked,
    and a gated step skipped by the rollback was not mentioned at all."""
    client = time_env.client

    def approve(step_id: str, who: str) -> ApprovalRequest:
        return ApprovalRequest(step=step_id, approver=who, reason="confirmed")

    async with settled_worker(client, task_queue):
        inp = case_input()
        handle = await start_case(client, task_queue, inp, alert("a1", ("account", f"acct-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "waiting")
        for step_id, who in (("disable_account", "bob"), ("revoke_sessions", "carol"), ("revoke_sessions", "dave")):
            await handle.execute_update(CaseWorkflow.approve, approve(step_id, who))
        await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained")
        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        assert msg.startswith("rollback rolled_back") and "still in effect (irreversible): revoke_sessions" in msg, msg
        await handle.terminate("test done")

        inp = case_input()
        handle = await start_case(client, task_queue, inp, alert("a2", ("account", f"acct-{inp.case_id}")))
        await wait_for(handle, awaiting("disable_account"), "waiting")
        await handle.execute_update(CaseWorkflow.approve, approve("disable_account", "bob"))
        await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed")
        msg = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        assert "never ran: " in msg and "revoke_sessions" in msg.split("never ran: ")[1], msg
        assert "still in effect" not in msg, msg
        await handle.terminate("test done")
