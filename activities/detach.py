"""Opening the case of an alert detached from another case (workflows/case_detach.py).

The new case opens through the same path as ingest (`signoff.ingest._signal_with_start`): the same
start options, search attributes, static summary, and then its own triage, score and playbook. Its
start input records `detached_from` (the case, who, why). Idempotent: a retried delivery carries
the same batch id, which the case counts once; a case that had closed and already holds the alert
is left as it is.
"""

from __future__ import annotations

from temporalio import activity

from signoff.models import Alert, DetachedFrom, Frozen


class OpenDetachedRequest(Frozen):
    case_id: str  # the id derived from the original case (`<case>-dN`)
    alert_type: str
    alert: Alert
    requested_by: str  # who opened the original case (the ingester): the requester of the new one's steps
    detached_from: DetachedFrom


class OpenedCase(Frozen):
    case_id: str  # where the alert landed: `case_id`, or its follow-up if that case had closed
    outcome: str  # "opened" | "joined" (already open: a repeated delivery) | "had it" (closed, holding it)


@activity.defn
async def open_detached_case(req: OpenDetachedRequest) -> OpenedCase:
    from signoff.ingest import ALREADY_TAKEN, CaseDraft, _signal_with_start
    from workflows.case import CaseWorkflow

    title = f"detached from case {req.detached_from.case_id}: {req.alert.title}"
    draft = CaseDraft(case_id=req.case_id, alert_type=req.alert_type, title=title, alerts=[req.alert], raw=[None])
    case_id, started = await _signal_with_start(
        activity.client(), CaseWorkflow, draft, [req.alert], req.requested_by, activity.info().task_queue,
        detached_from=req.detached_from,
    )
    if started is ALREADY_TAKEN:
        outcome = "had it"
    else:  # None: the server does not say (older servers, the time-skipping test server)
        outcome = "opened" if started is True else "joined" if started is False else "delivered"
    from signoff.display import clean  # an alert uid is alert content: one log line, whatever it holds

    activity.logger.info("detach: alert %s of case %s is in case %s (%s)", clean(req.alert.uid),
                         req.detached_from.case_id, case_id, outcome)
    return OpenedCase(case_id=case_id, outcome=outcome)


ACTIVITIES = [open_detached_case]
