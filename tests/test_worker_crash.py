"""A worker killed with SIGKILL in the middle of a playbook loses no action and doubles none.

Real parts: the dev server on a SQLite file (as `signoff dev` runs it), two `signoff worker`
processes, the lab estate (SQLite) logging every change with its idempotency key. The lab
confirms each change after SIGNOFF_LAB_DELAY seconds, so vendor calls are in flight when the
worker dies; the heartbeat timeout hands them to the surviving worker.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowHandle

from connectors.lab import Lab
from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, StepState, Verdict
from tests.casekit import alert, case_input, start_case
from tests.reliability_kit import (
    SqliteDevServer,
    WorkerProcess,
    gather_limited,
    repeats_per_key,
    retry_update,
    wait_view,
    writes_per_key,
)
from workflows.case import CaseWorkflow

STEPS = ("tag", "watch_host", "isolate_host", "disable_account")  # playbook malware_on_host
GATED = ("isolate_host", "disable_account")


async def _busy_worker(handles: list[WorkflowHandle], workers: list[WorkerProcess]) -> WorkerProcess | None:
    """The first worker found running a vendor call (`execute_action`), from the server's view."""
    by_pid = {w.pid: w for w in workers}
    for handle in handles:
        desc = await handle.describe()
        for pending in desc.raw_description.pending_activities:
            pid = pending.last_worker_identity.split("@", 1)[0]
            if pending.activity_type.name == "execute_action" and pid.isdigit() and int(pid) in by_pid \
                    and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                return by_pid[int(pid)]
    return None


async def _crash_run(tmp_path: Path, cases: int) -> dict[str, int]:
    home = tmp_path / "home"
    server = SqliteDevServer(home)
    client = await server.start()
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    workers = [WorkerProcess(server.address, queue, home, name, SIGNOFF_LAB_DELAY="3")
               for name in ("a", "b")]
    try:
        handles = []
        for _ in range(cases):
            inp = case_input(alert_type="malware", requested_by="signoff-ingest")
            handles.append(await start_case(client, queue, inp, alert(f"{inp.case_id}-m", ("host", f"h-{inp.case_id}"),
                                                                      ("account", f"u-{inp.case_id}"), category="Malware")))

        async def approve(handle: WorkflowHandle) -> None:
            await wait_view(handle, lambda v: all(any(s.step_id == g and s.state == StepState.awaiting_approval
                                                      for s in v.steps) for g in GATED), "gated steps waiting")
            for step_id in GATED:
                await retry_update(handle, CaseWorkflow.approve, ApprovalRequest(
                    step=step_id, approver="alice", reason="confirmed malware"), f"approve-{step_id}")

        await gather_limited((approve(h) for h in handles), limit=16)

        # Kill a worker the moment it is seen running a vendor call (the lab confirms after 3 s).
        for _ in range(3000):
            victim = await _busy_worker(handles, workers)
            if victim is not None:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("no worker ever ran a vendor call; cannot test a crash mid-call")
        survivor = workers[1] if victim is workers[0] else workers[0]
        await victim.kill(signal.SIGKILL)
        assert survivor.alive()

        views = await gather_limited(
            (wait_view(h, lambda v: v.status == CaseStatus.contained, "contained after the crash")
             for h in handles), limit=16)
        keys = [f"{v.case_id}:{s}" for v in views for s in STEPS]
        lab = Lab(home / "lab.db")
        writes = writes_per_key(lab, keys)
        assert all(n == 1 for n in writes.values()), {k: n for k, n in writes.items() if n != 1}
        for view in views:
            host = next(s for s in view.steps if s.step_id == "isolate_host").target.id
            assert lab.read("host", host)["network"] == "isolated"
            assert all(s.state == StepState.executed for s in view.steps)

        retried = 0
        for handle in handles:
            history = await handle.fetch_history()
            retried += sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                           and e.activity_task_started_event_attributes.attempt > 1)
            await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="bob", verdict=Verdict.true_positive,
                                                                          reason="contained"))
        for handle in handles:
            assert (await handle.result()).status == CaseStatus.closed
        assert retried >= 1, "the kill should have forced at least one vendor call to be retried"
        return {"cases": cases, "retried_calls": retried,
                "vendor_changes": sum(writes.values()), "repeats_absorbed": sum(repeats_per_key(lab, keys).values())}
    finally:
        for worker in workers:
            await worker.kill()
        await server.stop()


async def test_sigkill_mid_playbook_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result = await _crash_run(tmp_path, cases=12)
    print(f"\nworker crash: {result}")


@pytest.mark.slow
async def test_sigkill_mid_playbook_200_cases(tmp_path: Path) -> None:
    result = await _crash_run(tmp_path, cases=200)
    print(f"\nworker crash (large): {result}")
