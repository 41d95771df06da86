"""Scenario `rollback`: from a rollback request to every compensation of a 5-action case verified.

Each case runs five reversible actions: three low-tier steps on its own (tag, note, watch the
account) and two approved high-tier steps (disable the account, deactivate its access key); the
irreversible `revoke_sessions` is rejected. The bench then sends the `rollback` update, which
returns once the workflow has run and verified every compensation, newest first; that round trip
is the measured time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from signoff.bench.cases import open_waiting_cases, step_state, wait_view
from signoff.bench.harness import BenchError, bench, percentile
from signoff.models import ApprovalRequest, CaseStatus, CaseView, RollbackRequest, StepState

Report = Callable[[str, int, int], None]
APPROVE = ("disable_account", "deactivate_access_key")
REJECT = "revoke_sessions"
ACTIONS = 5


def _awaiting(step: str) -> Callable[[CaseView], bool]:
    return lambda view: step_state(view, step) == StepState.awaiting_approval


async def run_rollback(cases: int = 10, report: Report | None = None) -> dict[str, Any]:
    from signoff.busy import while_busy
    from workflows.case import CaseWorkflow

    report = report or (lambda *_: None)
    async with bench() as b:
        ids = await open_waiting_cases(b, cases, "rollback", report, access_key=True)
        timings: list[float] = []
        started = time.monotonic()
        for done, case_id in enumerate(ids, start=1):
            handle = b.client.get_workflow_handle(case_id)
            for step in APPROVE:
                await wait_view(handle, _awaiting(step), step)
                _ = await while_busy(partial(
                    handle.execute_update, CaseWorkflow.approve,
                    ApprovalRequest(step=step, approver="alice", reason="benchmark")), case_id)
            await wait_view(handle, lambda v: step_state(v, REJECT) == StepState.awaiting_approval, REJECT)
            _ = await while_busy(partial(
                handle.execute_update, CaseWorkflow.reject, ApprovalRequest(step=REJECT, approver="carol", reason="benchmark")), case_id)
            view = await wait_view(handle, lambda v: v.status == CaseStatus.contained, "contained")
            executed = [s.step_id for s in view.steps if s.state == StepState.executed]
            if len(executed) != ACTIONS:
                raise BenchError(f"case {case_id} executed {executed}, expected {ACTIONS} actions")
            requested = time.monotonic()
            _ = await while_busy(partial(
                handle.execute_update, CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="benchmark rollback")), case_id)
            timings.append(time.monotonic() - requested)
            view = await handle.query(CaseWorkflow.status)
            undone = [s.step_id for s in view.steps if s.state == StepState.compensated]
            if len(undone) != ACTIONS or view.status != CaseStatus.rolled_back:
                raise BenchError(f"case {case_id}: compensated {undone}, status {view.status}")
            report("rollbacks", done, len(ids))
        seconds = time.monotonic() - started
        return {
            "scenario": "rollback",
            "cases": len(ids),
            "seconds": round(seconds, 3),
            "cases_per_s": round(len(ids) / seconds, 2),
            "actions_per_case": ACTIONS,
            "p50_s": round(percentile(timings, 50), 4),
            "p99_s": round(percentile(timings, 99), 4),
            "max_s": round(max(timings), 4),
            "measured": "rollback update sent -> returned after all 5 compensations ran and were verified",
        }
