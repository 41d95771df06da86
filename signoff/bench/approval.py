"""Scenario `approval`: approval-to-action latency.

Cases wait for approval of `disable_account` (a high-tier step, quorum 1). For each case in turn,
the bench sends the `approve` update, and times from the update being accepted by the workflow to
the step being `executed` (the executor has applied the change and verified the end state; the
bench sees it through the `status` query, polled every 10 ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from temporalio.client import WorkflowUpdateStage

from signoff.bench.cases import open_waiting_cases, step_state, wait_view
from signoff.bench.harness import bench, percentile
from signoff.models import ApprovalRequest, StepState

Report = Callable[[str, int, int], None]
STEP = "disable_account"


async def run_approval(cases: int = 50, report: Report | None = None) -> dict[str, Any]:
    from signoff.busy import while_busy
    from workflows.case import CaseWorkflow

    report = report or (lambda *_: None)
    async with bench() as b:
        ids = await open_waiting_cases(b, cases, "approval", report)
        accepted_to_action: list[float] = []
        sent_to_accepted: list[float] = []
        started = time.monotonic()
        for done, case_id in enumerate(ids, start=1):
            handle = b.client.get_workflow_handle(case_id)
            await wait_view(handle, lambda v: step_state(v, STEP) == StepState.awaiting_approval, "approval")
            sent = time.monotonic()
            await while_busy(partial(  # as Signoff's clients do (signoff/busy.py)
                handle.start_update, CaseWorkflow.approve,
                ApprovalRequest(step=STEP, approver="alice", reason="benchmark approval"),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED, id=f"approve:{case_id}:{STEP}:alice",
            ), case_id)
            accepted = time.monotonic()
            await wait_view(handle, lambda v: step_state(v, STEP) == StepState.executed, f"{STEP} executed")
            verified = time.monotonic()
            sent_to_accepted.append(accepted - sent)
            accepted_to_action.append(verified - accepted)
            report("approvals", done, len(ids))
        seconds = time.monotonic() - started
        return {
            "scenario": "approval",
            "cases": len(ids),
            "seconds": round(seconds, 3),
            "cases_per_s": round(len(ids) / seconds, 2),
            "p50_s": round(percentile(accepted_to_action, 50), 4),
            "p99_s": round(percentile(accepted_to_action, 99), 4),
            "max_s": round(max(accepted_to_action), 4),
            "update_accept_p50_s": round(percentile(sent_to_accepted, 50), 4),
            "update_accept_p99_s": round(percentile(sent_to_accepted, 99), 4),
            "measured": "update accepted -> step executed and verified (status query, 10 ms polls)",
            "step": STEP,
        }
