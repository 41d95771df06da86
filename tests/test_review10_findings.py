"""Review10: what a person could still do, or could not do, through the approval gateway (signoff/gateway.py).

Real dev server; the worker talks to it directly (workers hold `write`), the person through the gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.common.v1 import WorkflowExecution, WorkflowType
from temporalio.api.enums.v1 import WorkflowIdConflictPolicy, WorkflowIdReusePolicy
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.update.v1 import Input, Request
from temporalio.api.workflowservice.v1 import (
    ExecuteMultiOperationRequest,
    StartWorkflowExecutionRequest,
    UpdateWorkflowExecutionRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policies.ingest_signing import ingest_refusal
from policies.loader import load_policy
from signoff.autonomy.models import GOVERNANCE_WORKFLOW_ID, GovernanceInput
from signoff.gateway import start_gateway
from signoff.models import (
    AlertBatch,
    CaseInput,
    CaseStatus,
    DecisionKind,
    DetachRequest,
    MergeRequest,
    NoteRequest,
)
from signoff.undo import UndoInput
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, wait_for
from tests.test_rollback_after_close import _ask, _contained_then_closed, _edit_policy, _rollback
from tests.test_signed_ingest import _ingest, ingest_key  # noqa: F401
from workflows.case import CaseWorkflow


@pytest.fixture
async def person(dev_env: WorkflowEnvironment) -> AsyncIterator[Client]:
    upstream = dev_env.client.service_client.config.target_host
    server, port = await start_gateway("127.0.0.1:0", upstream, dev_env.client.namespace)
    try:
        yield await Client.connect(f"127.0.0.1:{port}", namespace=dev_env.client.namespace,
                                   data_converter=pydantic_data_converter)
    finally:
        await server.stop(grace=None)


async def _start_request(namespace: str, wf_id: str, kind: str, arg: object, task_queue: str,
                         **policies: int) -> StartWorkflowExecutionRequest:
    start = StartWorkflowExecutionRequest(namespace=namespace, workflow_id=wf_id, workflow_type=WorkflowType(name=kind),
                                          task_queue=TaskQueue(name=task_queue), request_id=f"r10-{wf_id}", **policies)
    start.input.payloads.extend(await pydantic_data_converter.encode([arg]))
    return start


async def test_update_with_start_cannot_terminate_the_running_governance_workflow(
    dev_env: WorkflowEnvironment, task_queue: str, person: Client,
) -> None:
    """An allowed update name with TERMINATE_EXISTING on its start is a terminate: the governance workflow
    would start again from the policy file (docs/deployment.md §3), without kill switches and thresholds."""
    wf_id = f"{GOVERNANCE_WORKFLOW_ID}:{task_queue}"
    running = await dev_env.client.start_workflow("GovernanceWorkflow", GovernanceInput(), id=wf_id,
                                                  task_queue=task_queue)  # no worker: it stays running
    start = await _start_request(person.namespace, wf_id, "GovernanceWorkflow", GovernanceInput(), task_queue,
                                 workflow_id_conflict_policy=WorkflowIdConflictPolicy.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING)
    update = UpdateWorkflowExecutionRequest(namespace=person.namespace, workflow_execution=WorkflowExecution(workflow_id=wf_id),
                                            request=Request(input=Input(name="set_threshold")))
    update.request.meta.update_id = "r10-update"
    update.request.input.args.payloads.extend(await pydantic_data_converter.encode(
        [{"alert_type": "phishing", "value": 0.99, "by": "x", "reason": "y"}]))
    multi = ExecuteMultiOperationRequest(namespace=person.namespace)
    multi.operations.add().start_workflow.CopyFrom(start)
    multi.operations.add().update_workflow.CopyFrom(update)
    with pytest.raises(RPCError) as err:
        await person.workflow_service.execute_multi_operation(multi, timeout=timedelta(seconds=10))
    assert err.value.status == RPCStatusCode.PERMISSION_DENIED and "terminating the running workflow" in err.value.message
    same_run = dev_env.client.get_workflow_handle(wf_id, run_id=running.result_run_id)
    assert (await same_run.describe()).status == WorkflowExecutionStatus.RUNNING


async def test_a_plain_start_of_an_undo_workflow_cannot_terminate_the_running_one(
    dev_env: WorkflowEnvironment, task_queue: str, person: Client,
) -> None:
    wf_id = "r10-case-undo"
    running = await dev_env.client.start_workflow("CaseUndoWorkflow", UndoInput(case_id="r10-case"), id=wf_id,
                                                  task_queue=task_queue)
    start = await _start_request(person.namespace, wf_id, "CaseUndoWorkflow", UndoInput(case_id="r10-case"), task_queue,
                                 workflow_id_reuse_policy=WorkflowIdReusePolicy.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING)
    with pytest.raises(RPCError) as err:
        await person.workflow_service.start_workflow_execution(start, timeout=timedelta(seconds=10))
    assert err.value.status == RPCStatusCode.PERMISSION_DENIED and "terminating the running workflow" in err.value.message
    assert (await dev_env.client.get_workflow_handle(wf_id, run_id=running.result_run_id).describe()).status == \
        WorkflowExecutionStatus.RUNNING


async def test_a_person_rolls_back_an_ended_case_through_the_gateway(
    dev_env: WorkflowEnvironment, task_queue: str, person: Client, policy_file: Path,
) -> None:
    """`signoff rollback` of an ended case starts its undo workflow (signoff/undo.py `request_undo`), then
    sends the update: the gateway must let that start through, or people need `write` to roll back."""
    _edit_policy(policy_file)
    async with settled_worker(dev_env.client, task_queue):
        case, _ = await _contained_then_closed(dev_env.client, task_queue)
        reply = await _ask(person, task_queue, case.id, _rollback("carol"))
    assert "rolled_back" in reply and "disable_account=restored" in reply, reply


# ---------------------------------------------------------------- signed input sent again to another case

async def _signed_input_of(client: Client, case_id: str) -> tuple[CaseInput, AlertBatch]:
    """What anyone with `read` sees in a case's history: its signed start and its first signed batch."""
    history = await client.get_workflow_handle(case_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    signal = next(e.workflow_execution_signaled_event_attributes for e in history.events
                  if e.HasField("workflow_execution_signaled_event_attributes"))
    [inp] = await pydantic_data_converter.decode(started.input.payloads, [CaseInput])
    [batch] = await pydantic_data_converter.decode(signal.input.payloads, [AlertBatch])
    return inp, batch


async def _ingested_and_waiting(client: Client, task_queue: str, case_id: str, *alerts: object) -> None:
    """A case `signoff ingest` opened (signed), its playbook planned: disable_account waits for a person."""
    await _ingest(client, task_queue, case_id, *alerts)
    await wait_for(client.get_workflow_handle_for(CaseWorkflow.run, case_id), awaiting("disable_account"),
                   "disable_account waiting", attempts=2400)


@pytest.mark.usefixtures("ingest_key")  # the policy requires signed input; this process is the ingester
async def test_a_batch_an_ingester_signed_for_one_case_is_refused_by_another(
    dev_env: WorkflowEnvironment, task_queue: str,
) -> None:
    client = dev_env.client
    async with build_worker(client, task_queue):
        a, b = case_input().case_id, case_input().case_id
        await _ingest(client, task_queue, a, alert("ra1", ("host", "ceo-laptop")))
        await _ingested_and_waiting(client, task_queue, b, alert("rb1", ("account", f"u-{b}")))
        handle = client.get_workflow_handle_for(CaseWorkflow.run, b)
        _, batch_of_a = await _signed_input_of(client, a)
        assert ingest_refusal(load_policy(), batch_of_a) is None  # a genuine signature
        await handle.signal(CaseWorkflow.add_alerts, batch_of_a)
        view = await wait_for(handle, lambda v: len(v.refused_batches) == 1, "the batch of case A refused")
        assert f"signed by an ingester for case {a}, not for this one" in view.refused_batches[0].reason
        assert view.alert_count == 1 and ("host", "ceo-laptop") not in {(e.type, e.value) for e in view.entities}
        await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            await handle.fetch_history())


@pytest.mark.usefixtures("ingest_key")  # the policy requires signed input; this process is the ingester
async def test_a_case_started_with_another_cases_signed_start_is_a_humans_alone(
    dev_env: WorkflowEnvironment, task_queue: str,
) -> None:
    """Claiming an id (a follow-up `-r2` ingest will open) with a start and a batch copied from a case's history."""
    client = dev_env.client
    async with build_worker(client, task_queue):
        a = case_input().case_id
        await _ingested_and_waiting(client, task_queue, a, alert("ca1", ("account", f"u-{a}")))
        inp, batch = await _signed_input_of(client, a)
        claimed = await client.start_workflow(CaseWorkflow.run, inp, id=f"{a}-r2", task_queue=task_queue,
                                              start_signal="add_alerts", start_signal_args=[batch])
        view = await wait_for(claimed, lambda v: v.status == CaseStatus.awaiting_verdict, "with an analyst",
                              attempts=2400)
        assert view.steps == () and view.decision is not None and view.decision.kind == DecisionKind.analyst
        assert len(view.unsigned_input) == 2 and all(f"for case {a}, not for this one" in p for p in view.unsigned_input)
        await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            await claimed.fetch_history())


async def test_no_signal_and_no_oversized_decision_reaches_a_case_through_the_gateway(
    dev_env: WorkflowEnvironment, task_queue: str, person: Client,
) -> None:
    """A decision signal is written into the case's history before the case refuses it: 28 refused signals of
    1.9 MB made Temporal terminate the case at its history size limit. Through the gateway none arrives,
    nor an update of more than 64 KiB; the case runs on and an ordinary note still goes through."""
    async with build_worker(dev_env.client, task_queue):
        inp = case_input(requested_by="bob")
        await start_case(dev_env.client, task_queue, inp, alert("f1", ("account", f"u-{inp.case_id}")))
        handle = person.get_workflow_handle_for(CaseWorkflow.run, inp.case_id)
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        before = (await dev_env.client.get_workflow_handle(inp.case_id).describe()).raw_description
        big = "x" * 1_900_000
        with pytest.raises(RPCError) as err:
            await handle.signal("approve_signal", {"step": "disable_account", "approver": "nobody", "reason": big})
        assert err.value.status == RPCStatusCode.PERMISSION_DENIED
        assert "send the update 'approve' instead" in err.value.message, err.value.message
        with pytest.raises(RPCError) as err:
            await handle.execute_update(CaseWorkflow.note, NoteRequest(author="alice", text=big))
        assert err.value.status == RPCStatusCode.PERMISSION_DENIED and "shorten it" in err.value.message
        after = await dev_env.client.get_workflow_handle(inp.case_id).describe()
        assert after.status == WorkflowExecutionStatus.RUNNING
        assert after.raw_description.workflow_execution_info.history_length == \
            before.workflow_execution_info.history_length  # nothing was written
        await handle.execute_update(CaseWorkflow.note, NoteRequest(author="alice", text="a" * 4000))


@pytest.mark.usefixtures("ingest_key")
async def test_an_alert_of_a_hand_made_case_is_not_detached_into_a_case_the_worker_signs(
    dev_env: WorkflowEnvironment, task_queue: str,
) -> None:
    """A case started by hand is a human's alone; detaching one of its alerts would have the worker open (and
    sign) a case of that alert, whose playbook then aims at what someone typed in."""
    client = dev_env.client
    async with build_worker(client, task_queue):
        inp = case_input()
        handle = await start_case(client, task_queue, inp, alert("h1", ("account", f"u-{inp.case_id}")),
                                  alert("h2", ("account", "ceo")))
        await wait_for(handle, lambda v: v.status == CaseStatus.awaiting_verdict, "with an analyst", attempts=2400)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CaseWorkflow.detach_alert, DetachRequest(
                alert_uid="h2", requested_by="carol", reason="another incident"))
        assert "holds input no ingester signed" in str(refused.value.cause), refused.value.cause
        view = await handle.query(CaseWorkflow.status)
        assert view.detached_alerts == () and view.alert_count == 2
        await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            await handle.fetch_history())


@pytest.mark.usefixtures("ingest_key")
async def test_a_hand_made_case_is_not_merged_into_a_case_ingest_opened(
    dev_env: WorkflowEnvironment, task_queue: str,
) -> None:
    """Merging it would have the worker sign its typed-in alerts into the target, from which a detach opens a
    trusted case of them: the detach refusal above, one step round."""
    client = dev_env.client
    async with build_worker(client, task_queue):
        target = case_input().case_id
        await _ingested_and_waiting(client, task_queue, target, alert("t1", ("account", f"u-{target}")))
        inp = case_input()
        source = await start_case(client, task_queue, inp, alert("m1", ("account", "ceo")))
        await wait_for(source, lambda v: v.status == CaseStatus.awaiting_verdict, "with an analyst", attempts=2400)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await source.execute_update(CaseWorkflow.merge_into, MergeRequest(
                target=target, requested_by="carol", reason="same incident"))
        assert "holds input no ingester signed" in str(refused.value.cause), refused.value.cause
        view = await client.get_workflow_handle_for(CaseWorkflow.run, target).query(CaseWorkflow.status)
        assert view.merged_from == () and view.alert_count == 1
        await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(
            await source.fetch_history())
