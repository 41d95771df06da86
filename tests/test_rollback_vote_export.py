"""The audit export of a case that is still running names a voided rollback request as voided.

Under a `rollback_quorum`, a counted request is dropped when the quorum is met if its requester no
longer may roll back under the policy in force (policies/revocation.py): the case keeps that in its
state, its history shows only the counted request. The export of the ended case reads the final view;
the export of the running case exported the request as a `rollback_request`, one that still counted.
Real dev server and the rig of tests/test_rollback_after_policy_change.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from policies.signing import public_key_text
from signoff.audit import export, verify_file
from signoff.models import CloseRequest, Verdict
from signoff.worker import build_worker
from tests.test_hostile_approvals import approver_keys, signed_policy  # noqa: F401 (fixtures)
from tests.test_rollback_after_policy_change import _disabled_account, _edit, _rollback
from workflows.case import CaseWorkflow


async def _exported(client, case_id: str, out: Path) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    await export(client, out)
    verified = verify_file(out)
    assert verified.ok, verified.as_json()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return [(r["kind"], r["actor"]) for r in records if r.get("workflow_id") == case_id and r["kind"].startswith(
        "rollback")]


async def test_a_voided_rollback_request_of_a_running_case_is_exported_as_voided(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path, tmp_path: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    client, k = dev_env.client, approver_keys
    _edit(signed_policy, {"rollback_quorum": 2})
    async with build_worker(client, task_queue):
        handle, cid, _account = await _disabled_account(client, task_queue, k)
        await handle.execute_update(CaseWorkflow.rollback, _rollback(k["carol"], cid, "carol"))
        # Carol's key is replaced before dave asks: her request no longer counts.
        raw = yaml.safe_load(signed_policy.read_text())
        raw["approvers"]["carol"]["public_key"] = public_key_text(Ed25519PrivateKey.generate())
        signed_policy.write_text(yaml.safe_dump(raw))
        answer = await handle.execute_update(CaseWorkflow.rollback, _rollback(k["dave"], cid, "dave"))
        assert "nothing was undone" in answer, answer
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

        running = await _exported(client, cid, tmp_path / "running.jsonl")
        assert running == [("rollback_request_voided", "carol"), ("rollback_request", "dave")], running

        await handle.execute_update(CaseWorkflow.close, CloseRequest(
            analyst="dave", verdict=Verdict.benign_positive, reason="admin tool",
            token=_close_token(k["dave"], cid)))
        await handle.result()
        ended = await _exported(client, cid, tmp_path / "ended.jsonl")
        assert ended == running, (ended, running)  # the same record before and after the case ended


def _close_token(key: Ed25519PrivateKey, case_id: str) -> str:
    from policies.signing import sign_case_decision

    return sign_case_decision(key, case_id=case_id, decision="close", approver="dave")


async def test_export_does_not_wait_on_a_running_case_whose_worker_is_gone(
    dev_env: WorkflowEnvironment, task_queue: str, signed_policy: Path, tmp_path: Path,  # noqa: F811
    approver_keys: dict[str, Ed25519PrivateKey],  # noqa: F811
) -> None:
    """Reading the voided votes is a query: to a case whose workers stopped, the server holds it until its
    deadline (the whole suite's export once hung here). It is best-effort: the export goes on from the history."""
    import asyncio

    client, k = dev_env.client, approver_keys
    _edit(signed_policy, {"rollback_quorum": 2})
    async with build_worker(client, task_queue):
        handle, cid, _account = await _disabled_account(client, task_queue, k)
        await handle.execute_update(CaseWorkflow.rollback, _rollback(k["carol"], cid, "carol"))
    # No worker polls the case's task queue any more; it still runs, with a rollback request in its history.
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    exported = await asyncio.wait_for(_exported(client, cid, tmp_path / "orphan.jsonl"), timeout=120)
    assert exported == [("rollback_request", "carol")], exported
    await handle.terminate("test over")
