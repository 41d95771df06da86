"""Reaching the governance workflow from the CLI, activities and tests.

One governance workflow per namespace and task queue: `signoff-governance` on the default queue,
`signoff-governance:<queue>` on others (tests run isolated queues against one server). It is
started on demand: every change is an update-with-start, every verdict a signal-with-start.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from signoff import settings
from signoff.autonomy.models import (
    GOVERNANCE_WORKFLOW_ID,
    TOKEN_REFUSED,
    DriftReport,
    GovernanceInput,
    GovernanceState,
    VerdictRecord,
    clip,
)


def governance_id(task_queue: str | None = None) -> str:
    queue = task_queue or settings.task_queue()
    return GOVERNANCE_WORKFLOW_ID if queue == settings.TASK_QUEUE else f"{GOVERNANCE_WORKFLOW_ID}:{queue}"


def handle(client: Client, task_queue: str | None = None) -> WorkflowHandle:
    return client.get_workflow_handle(governance_id(task_queue))


async def update(client: Client, update_name: str, arg: Any, task_queue: str | None = None) -> Any:
    """Run a governance update, starting the governance workflow if it is not running yet."""
    from workflows.governance import GovernanceWorkflow

    queue = task_queue or settings.task_queue()
    if update_name == "drift_report" and isinstance(arg, DriftReport):
        arg = from_this_drift_check(arg)
    start = WithStartWorkflowOperation(
        GovernanceWorkflow.run, GovernanceInput(), id=governance_id(queue), task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return await client.execute_update_with_start_workflow(update_name, arg, start_workflow_operation=start)


def from_this_drift_check(report: DriftReport) -> DriftReport:
    """A drift report sent from inside a drift check's activity (`apply_drift`) names that check's run:
    the governance workflow accepts a report only when it can verify it against that run."""
    from temporalio import activity

    if report.check_run_id is not None or not activity.in_activity():
        return report
    info = activity.info()
    if info.workflow_type != "DriftCheckWorkflow":
        return report
    return report.model_copy(update=dict(check_workflow_id=info.workflow_id, check_run_id=info.workflow_run_id))


async def signal_verdict(client: Client, record: VerdictRecord, task_queue: str | None = None) -> None:
    """Hand a verdict to the governance workflow; it counts once it has checked it against the case.
    The verdict's free-text reason stays in the case's history: only a capped copy travels."""
    from workflows.governance import GovernanceWorkflow

    queue = task_queue or settings.task_queue()
    record = record.model_copy(update=dict(reason=clip(record.reason)))
    await client.start_workflow(
        GovernanceWorkflow.run, GovernanceInput(), id=governance_id(queue), task_queue=queue,
        start_signal="record_verdict", start_signal_args=[record],
    )


def _not_found(exc: RPCError) -> bool:
    return exc.status == RPCStatusCode.NOT_FOUND


async def read_state(client: Client, task_queue: str | None = None) -> GovernanceState | None:
    """The full governance state, or None when no governance workflow has run yet."""
    from workflows.governance import GovernanceWorkflow

    try:
        return await handle(client, task_queue).query(GovernanceWorkflow.state_query)
    except RPCError as exc:
        if _not_found(exc):
            return None
        raise


async def read_live(client: Client, task_queue: str | None = None) -> GovernanceState | None:
    """What cases decide under, from the governance workflow's memo (answered by the server, no worker)."""
    try:
        description = await handle(client, task_queue).describe()
    except RPCError as exc:
        if _not_found(exc):
            return None
        raise
    live = await description.memo_value("live", None, type_hint=GovernanceState)
    return live if isinstance(live, GovernanceState) else None


class GovernanceRefused(Exception):
    """A governance change was refused. `recorded`: the governance workflow recorded the refusal
    (its handler refused); False when its validator refused (a bad or missing token), which leaves
    nothing in Temporal: the sender records it (`signoff/refused_log.py`)."""

    def __init__(self, message: str, recorded: bool = True) -> None:
        super().__init__(message)
        self.recorded = recorded


class NoWorker(Exception):
    pass


async def govern(client: Client, update_name: str, arg: Any, task_queue: str | None = None,
                 timeout: float = 30.0) -> Any:
    """`update` with clean errors: refusals raise GovernanceRefused, a silent queue raises NoWorker."""
    import asyncio

    from temporalio.client import WorkflowUpdateFailedError

    queue = task_queue or settings.task_queue()
    try:
        return await asyncio.wait_for(update(client, update_name, arg, queue), timeout)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise GovernanceRefused(str(getattr(cause, "message", cause)),
                                recorded=getattr(cause, "type", None) != TOKEN_REFUSED) from exc
    except TimeoutError as exc:
        raise NoWorker(
            f"no worker answered on task queue {queue!r} within {timeout:.0f} s: start one with "
            "`signoff worker` (or `signoff dev`), then retry"
        ) from exc
