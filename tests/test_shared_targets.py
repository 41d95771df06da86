"""Two open cases contain the same host: rolling one back must not reconnect a host the other still
holds, and the last rollback restores the state from before either case (real dev server: the
holders are found through visibility)."""

from __future__ import annotations

import asyncio

from temporalio.testing import WorkflowEnvironment

from connectors.lab import lab
from signoff import search_attributes as sa
from signoff.holds import hold_key
from signoff.models import ActionTarget, ApprovalRequest, CaseStatus, RollbackRequest, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow


async def _holders_visible(env: WorkflowEnvironment, key: str, want: int) -> None:
    query = f"WorkflowType='CaseWorkflow' AND ExecutionStatus='Running' AND {sa.HELD_TARGETS.name}='{key}'"
    for _ in range(200):
        if (await env.client.count_workflows(query)).count == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"visibility never showed {want} holders of {key}")


async def test_a_rollback_keeps_what_another_case_holds_and_hands_over_the_original(
        dev_env: WorkflowEnvironment, task_queue: str) -> None:
    client = dev_env.client
    async with build_worker(client, task_queue):
        first, second = case_input(alert_type="malware"), case_input(alert_type="malware")
        host = f"host-shared-{first.case_id}"
        key = hold_key("isolate_host", ActionTarget(kind="host", id=host))
        handles = []
        for inp, who in ((first, "alice"), (second, "bob")):
            handle = await start_case(client, task_queue, inp, alert(f"{inp.case_id}-a", ("host", host)))
            await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=600)
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver=who,
                                                                              reason="beaconing"))
            await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated")
            handles.append(handle)
        a, b = handles
        assert lab().read("host", host)["network"] == "isolated"
        b_view = await b.query(CaseWorkflow.status)
        assert step(b_view, "isolate_host").result.before == {"network": "isolated"}  # type: ignore[union-attr]
        await _holders_visible(dev_env, key, 2)

        # A is a false positive: its rollback leaves the host to B, which still holds it contained.
        await a.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        a_view = await wait_for(a, lambda v: v.status == CaseStatus.rolled_back, "A rolled back")
        kept = step(a_view, "isolate_host")
        assert kept.state == StepState.kept and b.id in kept.note and "network=connected" in kept.note
        assert lab().read("host", host)["network"] == "isolated"  # B's containment holds
        b_view = await wait_for(b, lambda v: "took over from case" in step(v, "isolate_host").note, "handover")
        await _holders_visible(dev_env, key, 1)

        # B ends too: its rollback restores the state from before A, not its own "already isolated".
        await b.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP too"))
        b_view = await wait_for(b, lambda v: v.status == CaseStatus.rolled_back, "B rolled back")
        assert step(b_view, "isolate_host").state == StepState.compensated
        assert lab().read("host", host)["network"] == "connected"
        await _holders_visible(dev_env, key, 0)
        for handle in handles:
            await handle.terminate("test over")


async def test_a_lone_holder_rolls_back_as_before(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    client = dev_env.client
    async with build_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"host-alone-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert(f"{inp.case_id}-a", ("host", host)))
        await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=600)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="beaconing"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated")
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert step(view, "isolate_host").state == StepState.compensated and not step(view, "isolate_host").note
        assert lab().read("host", host)["network"] == "connected"
        await handle.terminate("test over")
