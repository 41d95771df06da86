"""Response activities: capture a target's state, apply an action, compensate it.

Three small activities instead of one so that the before-state is durably in the case history
before the action changes anything: a retry after a crash re-applies, it never re-captures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.executors import ActionNotConfirmed, executor_for
from signoff.models import (
    ActionRequest,
    ActionResult,
    ActionTarget,
    CompensationRequest,
    CompensationResult,
    EndedHolder,
    HoldersRequest,
)

T = TypeVar("T")


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    request: ActionRequest
    before: dict[str, Any]


HEARTBEAT_EVERY = 2.0  # seconds; the workflow's heartbeat timeout notices a dead worker after ACTION_HEARTBEAT


async def heartbeating(call: Awaitable[T]) -> T:
    """Await a vendor call while heartbeating, so a worker that dies mid-call is noticed within the
    heartbeat timeout (and the call retried elsewhere) instead of after the whole start-to-close."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
            if done:
                return task.result()
            if activity.in_activity():
                activity.heartbeat("vendor call in progress")
    finally:
        if not task.done():
            task.cancel()


@activity.defn
async def capture_state(req: ActionRequest) -> dict[str, Any]:
    return await executor_for(req.action).capture(req.target)


@activity.defn
async def execute_action(req: ExecuteRequest) -> ActionResult:
    action = req.request
    executor = executor_for(action.action)
    current = await executor.capture(action.target)
    goal = executor.goal(req.before, action.params, action.idempotency_key)
    already = all(req.before.get(k) == v for k, v in goal.items())
    try:
        after = await heartbeating(executor.apply(action.target, req.before, action.params, action.idempotency_key))
    except ActionNotConfirmed as exc:
        activity.logger.warning("%s", exc)
        raise
    detail = "already in the goal state before the action" if already else ""
    if not already and current != req.before:
        detail = "state changed between capture and apply; applied to the live state"
    return ActionResult(
        action=action.action, target=action.target, before=req.before, after=after,
        already_in_state=already, detail=detail,
    )


@activity.defn
async def compensate_action(req: CompensationRequest) -> CompensationResult:
    executor = executor_for(req.forward_action)
    restored = await heartbeating(executor.restore(req.target, req.restore_to, req.idempotency_key))
    return CompensationResult(action=req.action, target=req.target, restored=restored)


@activity.defn
async def other_holders(req: HoldersRequest) -> list[str]:
    """The other open cases that hold `req.key` now (their `HeldTargets`), oldest first."""
    from signoff import search_attributes as sa

    query = (f"WorkflowType='CaseWorkflow' AND ExecutionStatus='Running' AND {sa.HELD_TARGETS.name}='{req.key}' "
             f"AND WorkflowId != '{req.case_id}'")
    try:
        found = [(wf.start_time, wf.id) async for wf in activity.client().list_workflows(query, limit=100)]
    except RPCError as exc:
        if exc.status in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.INVALID_ARGUMENT):  # no retry helps
            raise ApplicationError(f"this Temporal server cannot list cases by {sa.HELD_TARGETS.name} "
                                   f"({exc.message}): run `signoff setup` on a server with SQL or Elasticsearch "
                                   "visibility", type="VisibilityUnavailable", non_retryable=True) from exc
        raise
    return [case_id for _, case_id in sorted(found)]


@activity.defn
async def ended_holders(req: HoldersRequest) -> list[EndedHolder]:
    """The ended cases whose action behind `req.key` is still in effect, oldest first: their verdict ended
    them, nobody rolled them back (their undo restored or handed over nothing of it) and no other case's
    rollback restored the target since (`signoff contained`'s reading, signoff/containment.py)."""
    from signoff import search_attributes as sa
    from signoff.containment import actions_in_effect
    from signoff.holds import hold_key

    query = (f"ExecutionStatus != 'Running' AND {sa.HELD_TARGETS.name}='{req.key}' "
             f"AND WorkflowId != '{req.case_id}'")
    rows, _problems, _irreversible, _released = await actions_in_effect(activity.client(), query=query)
    found: dict[str, EndedHolder] = {}
    for row in rows:
        target = ActionTarget(kind=row["target_kind"], id=row["target"])
        if not row["case_open"] and hold_key(row["action"], target) == req.key:
            found.setdefault(row["case_id"], EndedHolder(case_id=row["case_id"], status=row["case_status"],
                                                         before=row.get("before")))
    return list(found.values())
