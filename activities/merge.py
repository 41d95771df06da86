"""Delivering a merged case's alerts to the case it was merged into (workflows/case_merge.py).

One update on the target, `accept_merge`, with the update id `merge:<source>`: the target checks it
may take the merge (it runs, has no verdict, is not being merged itself), records `merged_from` and
takes the alerts through its normal alert path (`add_alerts`, whose batch id counts a re-delivery
once), all in one workflow task. A retried activity sends the same update id, which Temporal answers
with the first reply, and the target answers a second delivery from the same source with its record:
the alerts count once. A refusal by the target is not retried (`MergeRefused`); the source records
it and stays as it was. The target's busy refusal (signoff/busy.py) is: the update is sent again.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.models import MergeDelivery

MERGE_REFUSED = "MergeRefused"


def merge_update_id(source: str) -> str:
    return f"merge:{source}"


@activity.defn
async def deliver_merge(delivery: MergeDelivery) -> str:
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError, RPCStatusCode

    from signoff.busy import CaseBusyError, while_busy
    from signoff.ingest import signed

    handle = activity.client().get_workflow_handle(delivery.target)
    try:
        # Busy (a step's read in flight, signoff/busy.py): sent again, then retried as an activity (DELIVER_RETRY).
        reply = await while_busy(lambda: handle.execute_update(
            "accept_merge", signed(delivery), id=merge_update_id(delivery.source), result_type=str), delivery.target)
    except CaseBusyError as exc:
        raise ApplicationError(str(exc), type="CaseBusy") from exc
    except WorkflowUpdateFailedError as exc:
        cause = getattr(exc.cause, "message", None) or str(exc.cause or exc)
        raise ApplicationError(f"case {delivery.target} refused the merge: {cause}", type=MERGE_REFUSED,
                               non_retryable=True) from exc
    except RPCError as exc:
        message = exc.message.lower()
        if exc.status == RPCStatusCode.NOT_FOUND or "not found" in message:
            raise ApplicationError(f"there is no case {delivery.target}", type=MERGE_REFUSED,
                                   non_retryable=True) from exc
        if "already completed" in message:
            raise ApplicationError(f"case {delivery.target} has ended: it takes no merge", type=MERGE_REFUSED,
                                   non_retryable=True) from exc
        raise  # the server is unreachable or busy: retried
    activity.logger.info("merge: case %s delivered into case %s (%s)", delivery.source, delivery.target, reply)
    return reply


ACTIVITIES = [deliver_merge]
