"""A rollback must not release a target that an ended case still holds.

Two cases isolate one host; the second is closed and ends with its isolation in effect (`signoff
contained` lists it). Rolling the first back restored the host (holds were handed to open cases only,
and an ended case cannot be told): the ended case's containment was gone while it said it held. Now
the rollback leaves the host contained, names the ended case that holds it, and, since that case
captured what the first one left, tells a human what to restore when it is rolled back. The same for
the rollback of an ended case (its undo workflow). Real dev server: the holders are found through
visibility and the ended cases' results.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from connectors.lab import lab
from signoff import search_attributes as sa
from signoff import settings
from signoff.holds import hold_key
from signoff.models import ActionTarget, CaseStatus, CloseRequest, RollbackRequest, StepState, Verdict
from signoff.undo import UndoOutcome, request_undo, undo_id
from tests.casekit import settled_worker, step, wait_for
from tests.test_containment import _isolated
from workflows.case import CaseWorkflow
from workflows.case_undo import CaseUndoWorkflow


async def _ended_holder_visible(client: Client, key: str, case_id: str) -> None:
    query = (f"WorkflowType='CaseWorkflow' AND ExecutionStatus != 'Running' AND {sa.HELD_TARGETS.name}='{key}' "
             f"AND WorkflowId = '{case_id}'")
    for _ in range(200):
        if (await client.count_workflows(query)).count == 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"visibility never showed the ended case {case_id} holding {key}")


async def _ended(handle: WorkflowHandle) -> None:
    await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                 reason="implant"))
    await handle.result()  # the lab policy has no rollback window: the verdict ends the case


def _escalations(case_id: str) -> list[dict[str, object]]:
    path = settings.home() / "escalations.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["case_id"] == case_id]


async def test_a_rollback_leaves_a_target_an_ended_case_holds_contained_and_names_it(
    dev_env: WorkflowEnvironment, task_queue: str,
) -> None:
    client = dev_env.client
    host = f"ws-held-{uuid.uuid4().hex[:8]}"
    key = hold_key("isolate_host", ActionTarget(kind="host", id=host))
    async with settled_worker(client, task_queue):
        first = await _isolated(client, task_queue, host)
        second = await _isolated(client, task_queue, host)  # captured "isolated": what the first left
        await _ended(second)
        await _ended_holder_visible(client, key, second.id)

        await first.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="admin tool"))
        view = await wait_for(first, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert lab().read("host", host)["network"] == "isolated"  # the ended case's containment holds
        kept = step(view, "isolate_host")
        assert kept.state == StepState.kept, kept
        assert f"ended case {second.id} still holds isolate_host on host {host}" in kept.note, kept.note
        assert f"signoff rollback {second.id}" in kept.note and "restore network=connected by hand" in kept.note
        told = [e for e in _escalations(first.id) if e["kind"] == "rollback_kept"]
        assert len(told) == 1 and second.id in str(told[0]["reason"]), told

        history = await first.fetch_history()
        await _stop(first)
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None


async def _stop(handle: WorkflowHandle) -> None:
    """End an undo still open for more work; one that already completed is left as it is."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        await handle.terminate("test over")
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise


async def test_the_rollback_of_an_ended_case_leaves_a_target_another_ended_case_holds(
    dev_env: WorkflowEnvironment, task_queue: str,
) -> None:
    client = dev_env.client
    host = f"ws-held-late-{uuid.uuid4().hex[:8]}"
    key = hold_key("isolate_host", ActionTarget(kind="host", id=host))
    async with settled_worker(client, task_queue):
        first = await _isolated(client, task_queue, host)
        second = await _isolated(client, task_queue, host)
        await _ended(first)
        await _ended(second)
        await _ended_holder_visible(client, key, second.id)

        reply = await request_undo(client, first.id, RollbackRequest(requested_by="carol", reason="admin tool"),
                                   task_queue=task_queue, update_id=f"rollback:{first.id}:{uuid.uuid4().hex[:12]}")
        assert "kept" in reply, reply
        assert lab().read("host", host)["network"] == "isolated"
        undo = client.get_workflow_handle(undo_id(first.id))
        view = await undo.query(CaseUndoWorkflow.status)
        [held] = [s for s in view.steps if s.step_id == "isolate_host"]
        assert held.outcome == UndoOutcome.kept, held
        assert f"ended case {second.id} still holds isolate_host on host {host}" in held.why, held.why
        assert any(e["kind"] == "rollback_kept" for e in _escalations(first.id))

        history = await undo.fetch_history()
        await _stop(undo)
    replayer = Replayer(workflows=[CaseUndoWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history)).replay_failure is None
