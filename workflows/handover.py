"""Tell the other open cases that hold a target that a rollback leaves it to them (signal
`take_over_hold`): shared by a case's own rollback and the rollback of an ended case. An ended case
whose action on the target is still in effect holds it too: it cannot be told, so the rollback leaves
the target as it is and says which case holds it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.response import ended_holders
    from signoff.models import EndedHolder, HoldersRequest, HoldHandover

# Rollbacks recorded before ended cases were asked restore the target as they did (taken only when no
# open case holds the target, where the question is asked).
ENDED_HOLDERS = "ended-holders"
_ASK_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                         maximum_attempts=5)


async def tell_holders(holders: list[str], handover: HoldHandover) -> list[str]:
    """The holders that were told, in order; one that closed meanwhile no longer holds the target."""
    told = []
    for holder in holders:
        try:
            await workflow.get_external_workflow_handle(holder).signal("take_over_hold", handover)
            told.append(holder)
        except Exception:  # it closed meanwhile: it no longer holds the target
            continue
    return told


async def ask_ended_holders(case_id: str, key: str) -> list[EndedHolder] | str:
    """The ended cases whose action behind `key` is still in effect (an activity: visibility and their
    results, recorded in the history); the error in words when they could not be read."""
    try:
        found: list[EndedHolder] = await workflow.execute_activity(
            ended_holders, HoldersRequest(case_id=case_id, key=key), start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_ASK_RETRY,
        )
        return found
    except ActivityError as err:
        cause: BaseException = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        return str(cause)


def kept_for_ended(holders: list[EndedHolder], action: str, kind: str, target_id: str,
                   before: dict[str, Any], left: dict[str, Any]) -> str:
    """Why the target was left contained, for the step's note: which ended case holds it and how to
    release it; and when that case's rollback would restore only this case's effect (it captured what
    this case left), the state to restore by hand then."""
    ids = ", ".join(h.case_id for h in holders)
    text = (f"not undone: ended case {ids} still holds {action} on {kind} {target_id} (its action is in effect, "
            f"`signoff contained`); an ended case cannot take the hold over: release it with "
            f"`signoff rollback {holders[0].case_id}`")
    if restores_only_this(holders, left):
        text += (f"; its rollback restores what this case left ({_brief(left)}): restore {_brief(before)} by hand "
                 "then")
    return text


def restores_only_this(holders: list[EndedHolder], left: dict[str, Any]) -> bool:
    """An ended holder captured the state this case's action left: its own rollback cannot bring the
    target back to the state from before both (it cannot take over this case's captured state)."""
    return any(h.before == left for h in holders)


def _brief(state: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(state.items()))[:200] or "empty"
