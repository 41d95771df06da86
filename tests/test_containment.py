"""`signoff contained`: what is contained right now across cases open and ended (signoff/containment.py).

Real dev server (visibility finds the cases by `ExecutedActions`), the lab stand-in as the hosts.
Four malware cases: one still open, one ended with its host still isolated, one open on the same host
as the first (a shared target), one rolled back. Then the ended one is rolled back after its end.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from connectors.lab import lab
from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, RollbackRequest, StepState, Verdict
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from workflows.case import CaseWorkflow


async def _isolated(client: Client, task_queue: str, host: str) -> WorkflowHandle:
    """A malware case whose isolate_host ran (approved by bob) and whose disable_account was rejected."""
    inp = case_input(alert_type="malware")
    handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), ("account", f"u-{inp.case_id}"),
                                                             category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=1200)
    await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="bob",
                                                                      reason="beaconing"))
    await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=1200)
    await handle.execute_update(CaseWorkflow.reject, ApprovalRequest(step="disable_account", approver="bob",
                                                                     reason="service account"))
    await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed
                   and step(v, "disable_account").state == StepState.skipped, "contained")
    assert lab().read("host", host)["network"] == "isolated"
    return handle


def _rows(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_contained_lists_what_is_in_effect_across_open_and_ended_cases(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Any,
) -> None:
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue, "COLUMNS": "220"}
    scoped = ["--query", f"TaskQueue='{task_queue}'"]
    shared, ended_host, undone_host = (f"{n}-{task_queue[-8:]}" for n in ("ws-shared", "ws-ended", "ws-undone"))
    async with settled_worker(client, task_queue):
        first = await _isolated(client, task_queue, shared)
        second = await _isolated(client, task_queue, shared)  # the same host: both hold it
        ended = await _isolated(client, task_queue, ended_host)
        await ended.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                    reason="implant confirmed"))
        await ended.result()  # the lab policy has no rollback window: the verdict ends the case
        undone = await _isolated(client, task_queue, undone_host)
        await undone.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="test host"))
        await wait_for(undone, lambda v: v.status == CaseStatus.rolled_back, "rolled back")

        expected = {first.id, second.id, ended.id}
        rows: list[dict[str, Any]] = []
        for _ in range(100):  # visibility follows the upserts within moments
            listed = await acli(address, "contained", "--json", *scoped, env=env)
            assert listed.exit_code == 0, listed.output
            rows = _rows(listed.output)
            if {r["case_id"] for r in rows} == expected:
                break
        by_case = {r["case_id"]: r for r in rows}
        assert set(by_case) == expected, listed.output  # not the rolled-back case
        assert all(r["action"] == "isolate_host" and r["approved_by"] == ["bob"] for r in rows)
        assert by_case[first.id]["also_held_by"] == [second.id] and by_case[second.id]["also_held_by"] == [first.id]
        assert by_case[ended.id]["case_open"] is False and by_case[ended.id]["also_held_by"] == []
        assert by_case[first.id]["case_open"] is True and by_case[first.id]["target"] == shared
        assert all(r["since"] for r in rows)
        assert [r["since"] for r in rows] == sorted(r["since"] for r in rows)  # longest contained first

        table = await acli(address, "contained", *scoped, env=env)
        text = " ".join(table.output.split())
        assert table.exit_code == 0 and "3 actions in effect on 2 targets, 3 cases" in text, table.output
        assert f"also held by {second.id}" in text and "case ended" in text and "signoff rollback CASE" in text

        # The ended case is rolled back after its end (its undo workflow): its host is released.
        released = await acli(address, "rollback", ended.id, "--as", "carol", "--reason", "re-imaged", env=env)
        assert released.exit_code == 0, released.output
        assert lab().read("host", ended_host)["network"] == "connected"
        after = _rows((await acli(address, "contained", "--json", *scoped, env=env)).output)
        assert {r["case_id"] for r in after} == {first.id, second.id}

        nothing = await acli(address, "contained", "--query", "TaskQueue='no-such-queue'", env=env)
        assert nothing.exit_code == 0 and "nothing is contained" in nothing.output
