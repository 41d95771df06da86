"""Identity changes reach running cases (QA6 H2, H3; workflows/case_recheck.py, policies/revocation.py).

A step approved ahead of its turn runs later. If meanwhile the approver's key was removed, or the
deployment moved from the lab policy (unsigned approvals trusted) to a signed-only one, those
approvals must not carry it: before the step runs the case re-reads the policy in force, voids what
no longer counts (who, why), tells a human and waits for approvals again; from then on it checks
approvals against the identities in force. Real dev server; the policy file is edited as a team
would by pull request, the worker keeps running."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from policies.signing import public_key_text
from signoff.models import ApprovalRequest, CaseView, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from tests.test_hostile_approvals import ROLES, _token, approver_keys, signed_policy  # noqa: F401 (fixtures)
from workflows.case import CaseWorkflow


def _approve(who: str, step_id: str, token: str | None = None) -> ApprovalRequest:
    return ApprovalRequest(step=step_id, approver=who, reason=f"{who} approves", token=token)


def _counted(view: CaseView, step_id: str) -> list[str]:
    return sorted(a.approver for a in step(view, step_id).approvals if a.accepted)


async def test_a_revoked_key_no_longer_carries_a_step_approved_before(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    client, k = dev_env.client, approver_keys
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("r1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        for who in ("carol", "dave"):  # the critical step, approved ahead of its turn: 2/2
            await handle.execute_update(CaseWorkflow.approve,
                                        _approve(who, "revoke_sessions", _token(k[who], cid, "revoke_sessions", who)))
        assert step(await handle.query(CaseWorkflow.status), "revoke_sessions").state == StepState.approved

        # Carol's laptop is stolen: her key leaves the policy; erin (a lead) gets hers in.
        policy = yaml.safe_load(signed_policy.read_text())
        policy["approvers"]["carol"].pop("public_key")
        policy["approvers"]["erin"]["public_key"] = public_key_text(k["erin"])
        signed_policy.write_text(yaml.safe_dump(policy))

        await handle.execute_update(CaseWorkflow.approve,
                                    _approve("alice", "disable_account", _token(k["alice"], cid, "disable_account", "alice")))
        view = await wait_for(handle, lambda v: bool(v.escalations) and "revoke_sessions" in v.escalations[-1]
                              and step(v, "revoke_sessions").state == StepState.awaiting_approval
                              and step(v, "disable_account").state == StepState.executed, "voided")
        assert step(view, "disable_account").state == StepState.executed
        assert step(view, "revoke_sessions").result is None  # it did not run
        assert _counted(view, "revoke_sessions") == ["dave"]
        voided = [a for a in step(view, "revoke_sessions").approvals if not a.accepted]
        assert [a.approver for a in voided] == ["carol"] and "revoked or replaced" in voided[0].refusal
        assert "approvals no longer count under the policy in force" in view.escalations[-1]

        # Carol's old key is refused from now on; erin's new one is accepted and the step runs.
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(CaseWorkflow.approve, _approve(
                "carol", "revoke_sessions", _token(k["carol"], cid, "revoke_sessions", "carol")))
        await handle.execute_update(CaseWorkflow.approve,
                                    _approve("erin", "revoke_sessions", _token(k["erin"], cid, "revoke_sessions", "erin")))
        view = await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.executed, "runs")
        assert _counted(view, "revoke_sessions") == ["dave", "erin"]


async def test_lab_approvals_do_not_carry_a_step_after_the_switch_to_signed_only(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path,
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    client, k = dev_env.client, approver_keys
    lab = yaml.safe_load(policy_file.read_text())
    lab["approvers"] = {u: {"roles": r} for u, r in ROLES.items()}
    assert lab["deployment"]["trust_unsigned_approvals"] is True
    policy_file.write_text(yaml.safe_dump(lab))
    async with build_worker(client, task_queue):
        inp = case_input(requested_by="bob")
        cid = inp.case_id
        handle = await start_case(client, task_queue, inp, alert("s1", ("account", f"u-{cid}")))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        for who in ("carol", "dave"):  # unsigned, as the lab allows (Temporal UI)
            await handle.execute_update(CaseWorkflow.approve, _approve(who, "revoke_sessions"))

        production = dict(lab, deployment={"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"},
                          approvers={u: {"roles": r, "public_key": public_key_text(k[u])} for u, r in ROLES.items()})
        policy_file.write_text(yaml.safe_dump(production))

        # A signed request the lab case cannot check (no keys in its policy) is checked against the policy
        # in force, which refuses a forged one: refused and kept in the case.
        mallory = Ed25519PrivateKey.generate()
        with pytest.raises(WorkflowUpdateFailedError) as forged:
            await handle.execute_update(CaseWorkflow.approve, _approve(
                "alice", "disable_account", _token(mallory, cid, "disable_account", "alice")))
        assert "does not verify" in str(forged.value.cause) or "forged" in str(forged.value.cause)
        view = await handle.query(CaseWorkflow.status)
        assert [r.approver for r in view.refusals] == ["alice"] and step(view, "disable_account").approvals == ()
        await handle.execute_update(CaseWorkflow.approve,
                                    _approve("alice", "disable_account", _token(k["alice"], cid, "disable_account", "alice")))
        view = await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.awaiting_approval
                              and step(v, "disable_account").state == StepState.executed, "voided")
        assert _counted(view, "revoke_sessions") == []
        assert all("no longer accepted by the policy in force" in a.refusal
                   for a in step(view, "revoke_sessions").approvals)

        # The case now refuses unsigned approvals, although it opened under the lab policy.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CaseWorkflow.approve, _approve("carol", "revoke_sessions"))
        assert "unsigned approvals are not accepted" in str(refused.value.cause)
        for who in ("carol", "dave"):
            await handle.execute_update(CaseWorkflow.approve, _approve(
                who, "revoke_sessions", _token(k[who], cid, "revoke_sessions", who)))
        await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.executed, "runs signed")
