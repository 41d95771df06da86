"""Response activities: capture a target's state, apply an action, compensate it.

Three small activities instead of one so that the before-state is durably in the case history
before the action changes anything: a retry after a crash re-applies, it never re-captures.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from activities.executors import ActionNotConfirmed, executor_for
from signoff.models import ActionRequest, ActionResult, CompensationRequest, CompensationResult


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    request: ActionRequest
    before: dict[str, Any]


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
        after = await executor.apply(action.target, req.before, action.params, action.idempotency_key)
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
    restored = await executor.restore(req.target, req.restore_to, req.idempotency_key)
    return CompensationResult(action=req.action, target=req.target, restored=restored)
