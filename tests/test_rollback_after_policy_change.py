"""Who may roll back, and whose key counts, follow the policy in force on open cases too
(workflows/case_recheck.py, policies/revocation.py).

A rollback request is checked when it arrives against the case's copy of the policy; under a
`rollback_quorum` the requests wait for each other, possibly for days. When the quorum is met the
case re-reads the policy in force and drops the requests it no longer stands behind (a key
replaced, a person removed or without a rollback role): nothing is undone, the playbook goes on as
it was, a human is told, and the rollback waits for more requests. Likewise an approver whose key
was rotated after the case opened is checked against the policy in force instead of being refused.
Real dev server; the policy file is edited as a team would by pull request, the worker keeps running.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from connectors.lab import lab
from policies.signing import public_key_text, sign_case_decision
from signoff.explain import explanation_from_history
from signoff.history import decode_history
from signoff.models import (
    ApprovalRequest,
    AssignRequest,
    CaseStatus,
    CloseRequest,
    DetachRequest,
    MergeRequest,
    NoteRequest,
    RollbackRequest,
    StepState,
    Verdict,
)
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from tests.test_hostile_approvals import _token, approver_keys, signed_policy  # noqa: F401 (fixtures)
from workflows.case import CaseWorkflow


def _edit(policy: Path, change: dict[str, object]) -> None:
    raw = yaml.safe_load(policy.read_text())
    raw.update(change)
    policy.write_text(yaml.safe_dump(raw))


def _rollback(key: Ed25519PrivateKey, case_id: str, who: str) -> RollbackRequest:
    return RollbackRequest(requested_by=who, reason=f"{who}: false positive",
                           token=sign_case_decision(key, case_id=case_id, decision="rollback", approver=who))


async def _disabled_account(client: object, task_queue: str, keys: dict[str, Ed25519PrivateKey]) -> tuple:
    inp = case_input(requested_by="bob")
    cid, account = inp.case_id, f"u-{inp.case_id}"
    handle = await start_case(client, task_queue, inp, alert("r1", ("account", account)))  # type: ignore[arg-type]
    await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
        step="disable_account", approver="alice", reason="credential stuffing",
        token=_token(keys["alice"], cid, "disable_account", "alice")))
    await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed
                   and step(v, "revoke_sessions").state == StepState.awaiting_approval, "disabled")
    assert lab().read("account", account)["enabled"] is False
    return handle, cid, account


async def test_a_rollback_vote_whose_key_was_replaced_no_longer_counts_towards_the_quorum(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    client, k = dev_env.client, approver_keys
    _edit(signed_policy, {"rollback_quorum": 2})
    async with build_worker(client, task_queue):
        handle, cid, account = await _disabled_account(client, task_queue, k)
        counted = await handle.execute_update(CaseWorkflow.rollback, _rollback(k["carol"], cid, "carol"))
        assert counted.startswith("rollback requested by carol (1/2"), counted

        # Carol's laptop is stolen: her key is replaced in the policy before dave asks too.
        new_carol = Ed25519PrivateKey.generate()
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"]["carol"]["public_key"] = public_key_text(new_carol)
        signed_policy.write_text(yaml.safe_dump(raw))

        answer = await handle.execute_update(CaseWorkflow.rollback, _rollback(k["dave"], cid, "dave"))
        assert answer.startswith("rollback requested by dave (1/2, asked: dave)"), answer
        assert "carol: the key 'carol' signed with was revoked or replaced" in answer and "nothing was undone" in answer
        view = await handle.query(CaseWorkflow.status)
        assert view.rollback is None and [v.requested_by for v in view.rollback_votes] == ["dave"]
        assert view.status != CaseStatus.rolling_back and lab().read("account", account)["enabled"] is False
        # The playbook goes on as it was: the waiting step was not skipped.
        assert step(view, "revoke_sessions").state == StepState.awaiting_approval
        voided = [r for r in view.refusals if r.via == "rollback_vote"]
        assert [r.approver for r in voided] == ["carol"] and "voided before the rollback ran" in voided[0].refusal
        assert any("rollback requests no longer count" in e for e in view.escalations)

        # Carol's old key is refused now; with her new key the quorum is met and the rollback runs.
        with pytest.raises(WorkflowUpdateFailedError) as old:
            await handle.execute_update(CaseWorkflow.rollback, _rollback(k["carol"], cid, "carol"))
        assert "does not verify" in str(old.value.cause), old.value.cause
        done = await handle.execute_update(CaseWorkflow.rollback, _rollback(new_carol, cid, "carol"))
        assert done.startswith("rollback rolled_back"), done
        assert lab().read("account", account)["enabled"] is True

        history = await decode_history(await handle.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history, await handle.query(CaseWorkflow.status))
        outcomes = [(r["requested_by"], r["outcome"]) for r in ex["rollbacks"]]
        # (carol's old key did not verify with the key the case knew: checked against the policy in force
        # in the handler, refused there and so in the history)
        assert outcomes == [("carol", "voided"), ("dave", "counted"), ("carol", "refused"), ("carol", "accepted")], \
            outcomes

        # The check (a task beside the handlers, with a local activity) replays deterministically.
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await handle.fetch_history())


async def test_a_person_removed_from_the_policy_cannot_roll_back_a_case_opened_before(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    client, k = dev_env.client, approver_keys
    async with build_worker(client, task_queue):
        handle, cid, account = await _disabled_account(client, task_queue, k)
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"].pop("carol")  # carol left the team
        signed_policy.write_text(yaml.safe_dump(raw))

        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CaseWorkflow.rollback, _rollback(k["carol"], cid, "carol"))
        assert "'carol' is no longer an approver in the policy in force" in str(refused.value.cause)
        view = await handle.query(CaseWorkflow.status)
        assert view.rollback is None and lab().read("account", account)["enabled"] is False
        assert step(view, "revoke_sessions").state == StepState.awaiting_approval
        # The same as a signal (no validator, no reply): checked, voided, kept; nothing undone.
        await handle.signal(CaseWorkflow.rollback_signal, _rollback(k["carol"], cid, "carol").model_dump(mode="json"))
        view = await wait_for(handle, lambda v: any(r.via == "rollback_vote" for r in v.refusals), "voided signal")
        assert view.rollback is None and lab().read("account", account)["enabled"] is False
        assert step(view, "revoke_sessions").state == StepState.awaiting_approval
        # Someone still in the policy can: the case goes on with the identities in force.
        await handle.signal(CaseWorkflow.rollback_signal, _rollback(k["dave"], cid, "dave").model_dump(mode="json"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert view.rollback is not None and view.rollback.requested_by == "dave"
        assert lab().read("account", account)["enabled"] is True
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await handle.fetch_history())


async def test_an_approver_whose_key_was_rotated_after_the_case_opened_can_approve(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    client, k = dev_env.client, approver_keys
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("k1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)

        # Alice rotates her key (the policy gets the new public key) while the case waits.
        rotated = Ed25519PrivateKey.generate()
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"]["alice"]["public_key"] = public_key_text(rotated)
        signed_policy.write_text(yaml.safe_dump(raw))

        # A forged token naming bob is checked against the policy in force once: refused and kept.
        mallory = Ed25519PrivateKey.generate()
        forged = ApprovalRequest(step="disable_account", approver="bob", reason="x",
                                 token=_token(mallory, cid, "disable_account", "bob"))
        with pytest.raises(WorkflowUpdateFailedError) as first:
            await handle.execute_update(CaseWorkflow.approve, forged)
        assert "does not verify" in str(first.value.cause)
        view = await handle.query(CaseWorkflow.status)
        assert [(r.approver, r.accepted) for r in view.refusals] == [("bob", False)]
        # Tried again at once: refused by the validator, nothing more written.
        events = len((await handle.fetch_history()).events)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(CaseWorkflow.approve, forged.model_copy(update={
                "token": _token(mallory, cid, "disable_account", "bob")}))
        history = await handle.fetch_history()
        assert not any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
                       for e in history.events[events:])

        # Alice's old key is no longer hers; her new one approves.
        answer = await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
            step="disable_account", approver="alice", reason="confirmed",
            token=_token(rotated, cid, "disable_account", "alice")))
        assert answer.startswith("approved"), answer
        await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed")
        with pytest.raises(WorkflowUpdateFailedError) as old:
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                step="revoke_sessions", approver="alice", reason="x",
                token=_token(k["alice"], cid, "revoke_sessions", "alice")))
        assert "does not verify" in str(old.value.cause), old.value.cause  # her old key, before any role check


async def test_a_rotated_key_rolls_back_and_closes_a_case_opened_before_the_rotation(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    client, k = dev_env.client, approver_keys
    async with build_worker(client, task_queue):
        handle, cid, account = await _disabled_account(client, task_queue, k)
        # Carol rotates her key after disable_account ran (its approvals were re-read then).
        rotated = Ed25519PrivateKey.generate()
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"]["carol"]["public_key"] = public_key_text(rotated)
        signed_policy.write_text(yaml.safe_dump(raw))

        # A forged rollback naming dave: checked against the policy in force, refused and kept.
        with pytest.raises(WorkflowUpdateFailedError) as forged:
            await handle.execute_update(CaseWorkflow.rollback, _rollback(Ed25519PrivateKey.generate(), cid, "dave"))
        assert "does not verify" in str(forged.value.cause)
        view = await handle.query(CaseWorkflow.status)
        assert [(r.approver, r.via) for r in view.refusals] == [("dave", "rollback")]
        assert view.rollback is None and lab().read("account", account)["enabled"] is False

        done = await handle.execute_update(CaseWorkflow.rollback, _rollback(rotated, cid, "carol"))
        assert done.startswith("rollback rolled_back"), done
        assert lab().read("account", account)["enabled"] is True

        # Another case: dave rotates, then closes it with his new key (once an hour per case is enough).
        other, other_id, _ = await _disabled_account(client, task_queue, k)
        new_dave = Ed25519PrivateKey.generate()
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"]["dave"]["public_key"] = public_key_text(new_dave)
        signed_policy.write_text(yaml.safe_dump(raw))
        closed = await other.execute_update(CaseWorkflow.close, CloseRequest(
            analyst="dave", verdict=Verdict.false_positive, reason="admin tool",
            token=sign_case_decision(new_dave, case_id=other_id, decision="close", approver="dave")))
        assert closed.startswith("closing with verdict FalsePositive"), closed
        history = await decode_history(await other.fetch_history(), client.data_converter, source="live")
        verdicts = explanation_from_history(history, await other.query(CaseWorkflow.status))["verdicts"]
        assert [(v["analyst"], v["accepted"]) for v in verdicts] == [("dave", True)]


async def test_a_rotated_key_assigns_and_notes_on_a_case_opened_before_the_rotation(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    """Ninth session's leftover: an assignment or note signed with a rotated key was refused on every case
    opened before the rotation (until the case next re-read the policy, which a case waiting for its
    verdict may never do). Now checked against the policy in force, as approvals are; forgeries refused."""
    client, k = dev_env.client, approver_keys
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("k2", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        rotated = Ed25519PrivateKey.generate()
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"]["carol"]["public_key"] = public_key_text(rotated)
        signed_policy.write_text(yaml.safe_dump(raw))

        # A note forged in dave's name: checked against the policy in force, refused and kept.
        with pytest.raises(WorkflowUpdateFailedError) as forged:
            await handle.execute_update(CaseWorkflow.note, NoteRequest(
                author="dave", text="nothing to see here",
                token=sign_case_decision(Ed25519PrivateKey.generate(), case_id=cid, decision="note", approver="dave")))
        assert "does not verify" in str(forged.value.cause), forged.value.cause
        view = await handle.query(CaseWorkflow.status)
        assert [(r.approver, r.via, r.accepted) for r in view.refusals] == [("dave", "note", False)]
        assert view.notes == ()

        # Carol's new key assigns the case and writes to its log; her old key no longer does.
        answer = await handle.execute_update(CaseWorkflow.assign, AssignRequest(
            assignee="carol", by="carol", reason="on shift",
            token=sign_case_decision(rotated, case_id=cid, decision="assign", approver="carol")))
        assert answer == "assigned to carol by carol", answer
        answer = await handle.execute_update(CaseWorkflow.note, NoteRequest(
            author="carol", text="user confirms travel",
            token=sign_case_decision(rotated, case_id=cid, decision="note", approver="carol")))
        assert answer.startswith("note 1 added by carol"), answer
        with pytest.raises(WorkflowUpdateFailedError) as old:
            await handle.execute_update(CaseWorkflow.note, NoteRequest(
                author="carol", text="old key",
                token=sign_case_decision(k["carol"], case_id=cid, decision="note", approver="carol")))
        assert "does not verify" in str(old.value.cause), old.value.cause
        view = await handle.query(CaseWorkflow.status)
        assert view.assignee == "carol" and [n.author for n in view.notes] == ["carol"]
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await handle.fetch_history())


async def test_a_rotated_key_detaches_and_merges_on_cases_opened_before_the_rotation(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    """The same for a detach and a merge (whose handlers ask their patches before the re-read)."""
    client = dev_env.client
    async with build_worker(client, task_queue):
        first, second = case_input(requested_by="bob"), case_input(requested_by="bob")
        source = await start_case(client, task_queue, first, alert("d1", ("account", f"u-{first.case_id}")),
                                  alert("d2", ("account", f"v-{first.case_id}")))
        target = await start_case(client, task_queue, second, alert("d3", ("account", f"u-{second.case_id}")))
        for handle in (source, target):
            await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        rotated = Ed25519PrivateKey.generate()
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"]["carol"]["public_key"] = public_key_text(rotated)
        signed_policy.write_text(yaml.safe_dump(raw))

        with pytest.raises(WorkflowUpdateFailedError) as forged:
            await source.execute_update(CaseWorkflow.detach_alert, DetachRequest(
                alert_uid="d2", requested_by="dave", reason="other incident",
                token=sign_case_decision(Ed25519PrivateKey.generate(), case_id=first.case_id, decision="detach",
                                         approver="dave")))
        assert "does not verify" in str(forged.value.cause), forged.value.cause
        answer = await source.execute_update(CaseWorkflow.detach_alert, DetachRequest(
            alert_uid="d2", requested_by="carol", reason="other incident",
            token=sign_case_decision(rotated, case_id=first.case_id, decision="detach", approver="carol")))
        assert "d2" in answer and "-d1" in answer, answer

        merged = await target.execute_update(CaseWorkflow.merge_into, MergeRequest(
            target=first.case_id, requested_by="carol", reason="same actor",
            token=sign_case_decision(rotated, case_id=second.case_id, decision="merge", approver="carol")))
        assert "merged into" in merged, merged
        view = await wait_for(target, lambda v: v.status == CaseStatus.merged, "merged", attempts=2400)
        assert [(r.approver, r.accepted) for r in (await source.query(CaseWorkflow.status)).refusals] == [
            ("dave", False)]
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        for handle in (source, target):
            await replayer.replay_workflow(await handle.fetch_history())
        assert view.merged_into is not None and view.merged_into.target == first.case_id
