"""Retrying a failed attempt (`signoff retry`, workflows/case_retry.py): after a vendor outage made a
step fail and the case undid what it had done, a person retries once the cause is fixed; the
attempt's steps run again in playbook order, gated ones only after fresh approvals. Real
time-skipping server; the vendor is a lab backend with an outage the test switches off."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.executors import register, reset_cache
from activities.executors.base import State
from activities.executors.lab import LabExecutor
from connectors.lab import lab
from signoff.audit import case_events
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.models import (
    ActionTarget,
    ApprovalRequest,
    CaseStatus,
    CloseRequest,
    RetryRequest,
    RollbackRequest,
    StepState,
    Verdict,
)
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from workflows.case import CaseWorkflow

OUTAGE: set[str] = set()  # hosts the EDR cannot reach right now


@register("isolate_host", "flaky-edr")
class _FlakyEdr(LabExecutor):
    """The lab's host isolation, behind a vendor that fails while a host is in OUTAGE."""

    action, kind, keys = "isolate_host", "host", ("network",)

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"network": "isolated"}

    async def write(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        if target.id in OUTAGE and state.get("network") == "isolated":
            raise ApplicationError("EDR API: 503 sensor unreachable", type="ActionRefused", non_retryable=True)
        await super().write(target, state, idempotency_key)


@pytest.fixture
def flaky_edr(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SIGNOFF_BACKENDS", "isolate_host=flaky-edr")
    reset_cache()
    yield
    OUTAGE.clear()
    reset_cache()


async def _refused(handle: WorkflowHandle, req: RetryRequest) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(CaseWorkflow.retry, req)
    return str(getattr(info.value.cause, "message", info.value.cause))


def _approve(step_id: str, who: str) -> ApprovalRequest:
    return ApprovalRequest(step=step_id, approver=who, reason="confirmed C2")


async def _failed_case(client, task_queue: str):  # type: ignore[no-untyped-def]
    inp = case_input(alert_type="network_intrusion")
    ip, host = f"198.51.100.{len(inp.case_id) + 20}", f"host-{inp.case_id}"
    OUTAGE.add(host)
    handle = await start_case(client, task_queue, inp, alert("n1", ("ip", ip), ("host", host)))
    await wait_for(handle, awaiting("block_ip"), "waiting")
    await handle.execute_update(CaseWorkflow.approve, _approve("block_ip", "alice"))
    await handle.execute_update(CaseWorkflow.approve, _approve("isolate_host", "bob"))
    view = await wait_for(handle, lambda v: v.status == CaseStatus.action_failed, "action_failed")
    return handle, ip, host, view


async def test_a_retry_runs_the_failed_attempt_again_with_fresh_approvals(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, flaky_edr: None
) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, ip, host, view = await _failed_case(client, task_queue)
        # The failure was handled as before: everything undone, escalated.
        assert "503 sensor unreachable" in step(view, "isolate_host").error
        assert lab().read("ip", ip)["blocked"] is False and lab().read("host", host)["network"] == "connected"
        assert view.retryable_steps == ("tag", "watch_ip", "block_ip", "isolate_host")

        # Refused before anything is written: not in policy, a role that may not decide cases, no reason.
        assert "'mallory' is not in policy" in await _refused(handle, RetryRequest(requested_by="mallory", reason="x"))
        assert "retrying a case needs one of" in await _refused(handle, RetryRequest(requested_by="erin", reason="x"))
        assert "say what was fixed" in await _refused(handle, RetryRequest(requested_by="carol", reason=" "))

        OUTAGE.discard(host)  # the EDR is back
        msg = await handle.execute_update(CaseWorkflow.retry, RetryRequest(requested_by="carol", reason="EDR back"))
        assert msg == ("retry 1 accepted: tag, watch_ip, block_ip, isolate_host run again in playbook order; "
                       "block_ip, isolate_host wait for fresh approval"), msg
        view = await wait_for(handle, awaiting("block_ip"), "waiting for a fresh approval")
        block = step(view, "block_ip")
        assert block.approvals == () and "approved by alice for the attempt before" in block.note
        assert step(view, "tag").state == StepState.executed  # automatic: ran again
        assert lab().read("ip", ip)["blocked"] is False  # nothing high-impact without the new approval
        assert "nothing failed on this case" in await _refused(handle, RetryRequest(requested_by="carol", reason="again"))

        await handle.execute_update(CaseWorkflow.approve, _approve("block_ip", "alice"))
        await handle.execute_update(CaseWorkflow.approve, _approve("isolate_host", "bob"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained")
        assert lab().read("ip", ip)["blocked"] is True and lab().read("host", host)["network"] == "isolated"
        assert [(r.requested_by, r.steps) for r in view.retries] == [
            ("carol", ("tag", "watch_ip", "block_ip", "isolate_host"))]

        # The retried actions roll back like any others, from the state captured on the retry.
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="FP"))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert lab().read("ip", ip)["blocked"] is False and lab().read("host", host)["network"] == "connected"
        assert "rolled back" in await _refused(handle, RetryRequest(requested_by="carol", reason="once more"))
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.false_positive,
                                                                     reason="pen test"))
        await handle.result()

        history = await handle.fetch_history()
        ex = explanation_from_history(await decode_history(history, client.data_converter, source="live"))
        assert [(r["requested_by"], r["reason"]) for r in ex["retries"]] == [("carol", "EDR back")]
        assert "Retry: " in render_explanation(ex)
        assert [e["actor"] for e in case_events(await decode_history(history, client.data_converter, source="live"))
                if e["kind"] == "retry"] == ["carol"]
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_under_hold_a_retry_runs_only_what_the_failure_stopped(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, flaky_edr: None
) -> None:
    raw = yaml.safe_load(policy_file.read_text())
    raw["on_step_failure"] = "hold"
    policy_file.write_text(yaml.safe_dump(raw))
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, ip, host, view = await _failed_case(client, task_queue)
        assert step(view, "block_ip").state == StepState.executed  # held, not undone
        assert lab().read("ip", ip)["blocked"] is True
        assert view.retryable_steps == ("isolate_host",)
        OUTAGE.discard(host)
        msg = await handle.execute_update(CaseWorkflow.retry, RetryRequest(requested_by="dave", reason="sensor back"))
        assert msg.startswith("retry 1 accepted: isolate_host run again"), msg
        view = await wait_for(handle, awaiting("isolate_host"), "fresh approval")
        assert step(view, "block_ip").state == StepState.executed and step(view, "block_ip").approvals  # untouched
        await handle.execute_update(CaseWorkflow.approve, _approve("isolate_host", "bob"))
        await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained")
        assert lab().read("host", host)["network"] == "isolated"
        await handle.terminate("test done")
