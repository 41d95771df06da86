"""Drift activities: gather recent cases, compute the drift figures, hand the report to governance,
keep the drift Schedule in place.

Recent cases come from Temporal itself: visibility lists the case workflows of this task queue
started within the policy's window; each case's `status` query gives the alerts it was scored on
and its score. Verdicts (analyst overrides) come from the governance workflow.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from policies.engine import parse_duration
from policies.loader import load_policy
from signoff.autonomy.models import DRIFT_SCHEDULE_ID, DRIFT_WORKFLOW_ID, DriftFinding, DriftReport
from signoff.models import CaseView, Verdict

QUERY_CONCURRENCY = 32


class DriftRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_types: tuple[str, ...] = ()  # empty: every alert type with recent cases


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    every: str | None = None  # default: the policy's drift.schedule
    replace: bool = False


def schedule_id(task_queue: str) -> str:
    from signoff import settings

    return DRIFT_SCHEDULE_ID if task_queue == settings.TASK_QUEUE else f"{DRIFT_SCHEDULE_ID}:{task_queue}"


def drift_workflow_id(task_queue: str) -> str:
    from signoff import settings

    return DRIFT_WORKFLOW_ID if task_queue == settings.TASK_QUEUE else f"{DRIFT_WORKFLOW_ID}:{task_queue}"


async def recent_cases(client: Client, queue: str, since: datetime, per_type: int,
                       skip: str) -> dict[str, list[CaseView]]:
    """Newest case views per alert type (at most `per_type` each) started since `since`."""
    from signoff.search_attributes import ALERT_TYPE
    from workflows.case import CaseWorkflow

    stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = f"WorkflowType = 'CaseWorkflow' AND TaskQueue = '{queue}' AND StartTime > '{stamp}'"
    ids: dict[str, list[str]] = {}
    async for wf in client.list_workflows(query):
        alert_type = wf.typed_search_attributes.get(ALERT_TYPE) or ""
        if not alert_type or alert_type == skip:
            continue
        bucket = ids.setdefault(alert_type, [])
        if len(bucket) < per_type:
            bucket.append(wf.id)
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def view(case_id: str) -> CaseView | None:
        async with gate:
            try:
                return await client.get_workflow_handle(case_id).query(CaseWorkflow.status)
            except Exception as exc:  # noqa: BLE001 - one unreadable case must not stop the check
                activity.logger.warning("drift: cannot read case %s: %s", case_id, exc)
                return None

    out: dict[str, list[CaseView]] = {}
    for alert_type, case_ids in ids.items():
        views = await asyncio.gather(*(view(c) for c in case_ids))
        out[alert_type] = [v for v in views if v is not None and v.timeline]
    return out


@activity.defn
async def compute_drift(req: DriftRequest) -> DriftReport:
    from signoff.autonomy import drift
    from signoff.autonomy.client import read_state
    from signoff.scoring import model_store

    policy = load_policy()
    rules = policy.drift
    client = activity.client()
    queue = activity.info().task_queue
    now = datetime.now(UTC)
    since = now - parse_duration(rules.window)
    state = await read_state(client, queue)
    try:
        active = state.model.active if state else None
        model_id = active if active else await asyncio.to_thread(model_store.active_model_id)
    except model_store.ModelStoreError as exc:
        raise ApplicationError(str(exc), type="ModelUnavailable", non_retryable=True) from exc
    reference = await asyncio.to_thread(drift.load_reference, model_id)
    cases = await recent_cases(client, queue, since, rules.max_cases, rules.open_case_alert_type)
    names = set(req.alert_types) or set(cases) | {k for k, v in (state.recent.items() if state else ()) if v}
    names.discard(rules.open_case_alert_type)
    findings = []
    for name in sorted(names):
        views = cases.get(name, [])
        records = [r for r in (state.recent.get(name, ()) if state else ())
                   if r.predicted is not None and (r.at is None or r.at >= since)]
        overrides = [(r.predicted == Verdict.true_positive) != (r.verdict == Verdict.true_positive) for r in records]
        scores = [v.score.benign_confidence for v in views if v.score is not None and v.score.model_id == model_id]
        figures = await asyncio.to_thread(
            drift.finding, name, reference, policy, [v.timeline for v in views], scores, overrides)
        findings.append(DriftFinding.model_validate(figures))
    return DriftReport(
        at=now, model_id=model_id, reference=(reference or {}).get("source", "none"), window=rules.window,
        findings=tuple(findings),
        policy_thresholds={"feature_psi": rules.feature_psi, "score_psi": rules.score_psi,
                           "override_rate": rules.override_rate, "min_cases": float(rules.min_cases)},
    )


@activity.defn
async def apply_drift(report: DriftReport) -> list[str]:
    """Hand the report to the governance workflow: it demotes breached alert types (recorded)."""
    from signoff.autonomy.client import govern

    demoted: list[str] = await govern(activity.client(), "drift_report", report, activity.info().task_queue)
    return demoted


@activity.defn
async def ensure_drift_schedule(req: ScheduleRequest) -> str:
    """Create (or replace) the Schedule that runs the drift check; a server without schedules is reported."""
    from temporalio.service import RPCError

    queue = activity.info().task_queue
    try:
        return await create_schedule(activity.client(), queue, req.every, req.replace)
    except RPCError as exc:
        return f"drift schedule not created: {exc.message}"


async def create_schedule(client: Client, queue: str, every: str | None = None, replace: bool = False) -> str:
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
    )

    from signoff.autonomy.models import DriftCheckInput
    from workflows.drift import DriftCheckWorkflow

    interval = every or load_policy().drift.schedule
    sid = schedule_id(queue)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(DriftCheckWorkflow.run, DriftCheckInput(), id=drift_workflow_id(queue),
                                           task_queue=queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=parse_duration(interval))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(sid, schedule)
        return f"drift schedule {sid}: every {interval}"
    except ScheduleAlreadyRunningError:
        if not replace:
            return f"drift schedule {sid} already exists"
        await client.get_schedule_handle(sid).update(lambda _: _updated(schedule))
        return f"drift schedule {sid}: every {interval} (updated)"


def _updated(schedule):  # type: ignore[no-untyped-def]
    from temporalio.client import ScheduleUpdate

    return ScheduleUpdate(schedule=schedule)


ACTIVITIES = [compute_drift, apply_drift, ensure_drift_schedule]
