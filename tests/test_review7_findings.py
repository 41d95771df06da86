"""Three holes a review of the seventh session's case-workflow changes found, each shown failing
before its fix: a retry accepted before a rollback ran after it and hid the rollback; new alerts for
a case held open after its verdict (rollback_window) joined that closed case instead of opening its
follow-up; cases that ended without a verdict vanished from the governance report's time to
verdict. Real time-skipping and dev servers; lab backends; the escalation activity is replaced by a
gated one where a probe needs the case to sit mid-step."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from temporalio import activity
from temporalio.client import WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment

from activities.case import Escalation
from activities.executors import reset_cache
from connectors.lab import lab
from signoff.ingest import CaseDraft, _closed_but_running, _signal_with_start
from signoff.models import (
    ApprovalRequest,
    CaseStatus,
    CloseRequest,
    RetryRequest,
    RollbackRequest,
    StepState,
    Verdict,
)
from signoff.worker import activities as worker_activities
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.test_retry_failed_step import OUTAGE
from workflows.case import CaseWorkflow

GATE: dict[str, asyncio.Event] = {}


@activity.defn(name="escalate")
async def _gated_escalate(req: Escalation) -> str:
    """The escalation channel, slow for action_failed (a webhook that takes its time)."""
    if req.kind == "action_failed" and req.case_id in GATE:
        await GATE[req.case_id].wait()
    return "delivered"


def _activities_with_gated_escalate() -> list:  # type: ignore[type-arg]
    return [a for a in worker_activities() if getattr(a, "__temporal_activity_definition").name != "escalate"] + [
        _gated_escalate]


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env


@pytest.fixture
def flaky_edr(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SIGNOFF_BACKENDS", "isolate_host=flaky-edr")  # tests/test_retry_failed_step.py
    reset_cache()
    yield
    OUTAGE.clear()
    GATE.clear()
    reset_cache()


def _approve(step_id: str, who: str) -> ApprovalRequest:
    return ApprovalRequest(step=step_id, approver=who, reason="confirmed C2")


async def test_a_rollback_accepted_after_a_retry_leaves_the_case_rolled_back(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, flaky_edr: None
) -> None:
    """retry accepted while the failure's escalation is still being delivered, then a rollback: the
    rollback runs first, and the retry then runs on a rolled-back case and overwrites its status."""
    client = time_env.client
    async with settled_worker(client, task_queue, activities=_activities_with_gated_escalate()):
        inp = case_input(alert_type="network_intrusion")
        GATE[inp.case_id] = asyncio.Event()
        ip, host = f"198.51.100.{len(inp.case_id) + 20}", f"host-{inp.case_id}"
        OUTAGE.add(host)
        handle = await start_case(client, task_queue, inp, alert("n1", ("ip", ip), ("host", host)))
        await wait_for(handle, awaiting("block_ip"), "waiting")
        await handle.execute_update(CaseWorkflow.approve, _approve("block_ip", "alice"))
        await handle.execute_update(CaseWorkflow.approve, _approve("isolate_host", "bob"))
        await wait_for(handle, lambda v: v.status == CaseStatus.action_failed and bool(v.retryable_steps),
                       "failed, escalation in flight")
        OUTAGE.clear()
        await handle.execute_update(CaseWorkflow.retry, RetryRequest(requested_by="carol", reason="EDR back"))
        rollback = await handle.start_update(CaseWorkflow.rollback, RollbackRequest(
            requested_by="carol", reason="false positive after all"), wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        GATE[inp.case_id].set()
        await rollback.result()
        view = await wait_for(handle, lambda v: v.status not in (CaseStatus.running, CaseStatus.rolling_back,
                                                                  CaseStatus.action_failed), "settled")
        # Promise 6: a rolled-back case says so, and nothing of the retry ran on it.
        assert view.status == CaseStatus.rolled_back, (view.status, [(s.step_id, s.state, s.note) for s in view.steps])
        assert lab().read("host", host).get("network") != "isolated"
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.false_positive,
                                                                     reason="benign"))
        await handle.result()


def _with_window(policy_file: Path, window: str) -> None:
    raw = yaml.safe_load(policy_file.read_text())
    raw["rollback_window"] = window
    policy_file.write_text(yaml.safe_dump(raw))


async def test_new_alerts_during_the_rollback_window_open_a_follow_up(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    """A case held open after its verdict (rollback_window) still takes `add_alerts`: the ingester's
    signal-with-start delivers new alerts of the same incident to the closed case, where nothing
    triages them, instead of opening the `-r2` follow-up a completed case gets. (Dev server: the
    time-skipping one does not answer signal-with-start.)"""
    _with_window(policy_file, "7d")
    client = dev_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        host = f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
        try:
            await wait_for(handle, awaiting("isolate_host"), "waiting")
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                              reason="beaconing"))
            await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "isolated")
            await handle.execute_update(CaseWorkflow.close, CloseRequest(
                analyst="alice", verdict=Verdict.true_positive, reason="confirmed"))
            held = await wait_for(handle, lambda v: v.rollback_open_until is not None, "held open")
            draft = CaseDraft(case_id=inp.case_id, alert_type="malware", title="more beaconing")
            fresh = alert("m2", ("host", host), category="Malware")
            # What ingest does per chunk: ask visibility which cases are closed but still running.
            for _ in range(100):
                closed = await _closed_but_running(client)
                if inp.case_id in closed:
                    break
                await asyncio.sleep(0.1)
            landed, _ = await _signal_with_start(client, CaseWorkflow, draft, [fresh], "signoff-ingest", task_queue,
                                                 closed=closed)
            after = await handle.query(CaseWorkflow.status)
        finally:
            await handle.terminate("review probe done")
        assert landed == f"{inp.case_id}-r2"
        follow_up = await client.get_workflow_handle(landed).query(CaseWorkflow.status)
        assert follow_up.alert_count == 1
        await client.get_workflow_handle(landed).terminate("review probe done")
        # The new alert must reach a case that triages it, not the closed one.
        assert landed != inp.case_id, f"new alert landed in closed case {landed}"
        assert after.alert_count == held.alert_count, "the closed case absorbed a new alert"


def test_a_case_idle_closed_without_a_verdict_counts_as_late_in_time_to_verdict(policy_file: Path) -> None:
    """Governance report, time to verdict: a case that went to a human, got no verdict and closed
    idle (case_idle_close) breached its SLA; it must not vanish from the per-severity counts."""
    from datetime import UTC, datetime

    from policies.loader import load_policy
    from signoff.governance_report import _time_to_verdict

    opened = datetime(2026, 10, 1, tzinfo=UTC)
    ex = {"decision": {"kind": "analyst"}, "opened_at": opened.isoformat(), "case": {"severity": "high"},
          "escalations": [{"kind": "verdict_overdue"}], "verdicts": [], "workflow_status": "completed",
          "closed_at": (opened + timedelta(days=30)).isoformat()}
    (high,) = _time_to_verdict([ex], load_policy(policy_file), opened + timedelta(days=40))
    assert high["escalated_overdue"] == 1
    counted = high["within_sla"] + high["late"] + high["open"]
    assert counted == 1, f"an SLA breach that never got a verdict is in no count: {high}"
