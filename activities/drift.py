"""Drift activities: gather recent cases, compute the drift figures, hand the report to governance,
open (or add to) the drift case, keep the drift Schedule in place.

Recent cases come from Temporal itself: visibility lists the case workflows of this task queue
started within the policy's window; each case's `status` query gives the alerts it was scored on
and its score. Verdicts (analyst overrides) come from the governance workflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from policies.engine import parse_duration
from policies.loader import load_policy
from signoff.autonomy.models import DRIFT_SCHEDULE_ID, DRIFT_WORKFLOW_ID, DriftFinding, DriftReport
from signoff.models import Alert, CaseView, Verdict

QUERY_CONCURRENCY = 32
MAX_GENERATIONS = 10_000  # drift cases of one (model, breached alert types), one after another


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
    # Newest by start time. Visibility lists open workflows first, then closed ones by close time (SQL and
    # Elasticsearch alike), so taking the first `per_type` rows read the oldest cases still waiting for a
    # person and skipped newer ones already closed: automatically closed cases, the very ones autonomy
    # puts at risk, never reached the check (QA5: 200 "newest" phishing cases, all running, some from an
    # hour before 280 cases started and closed since).
    newest: dict[str, list[tuple[datetime, str]]] = {}  # per alert type, a min-heap of the newest `per_type`
    async for wf in client.list_workflows(query):
        alert_type = wf.typed_search_attributes.get(ALERT_TYPE) or ""
        if not alert_type or alert_type == skip or per_type <= 0:
            continue
        heap = newest.setdefault(alert_type, [])
        if len(heap) < per_type:
            heapq.heappush(heap, (wf.start_time, wf.id))
        else:
            heapq.heappushpop(heap, (wf.start_time, wf.id))
    ids = {alert_type: [case_id for _, case_id in sorted(heap, reverse=True)] for alert_type, heap in newest.items()}
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
    from signoff.autonomy.evidence import about_model, last_model_change
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
        # Overrides of the model in force only: verdicts on an earlier model's scores would mask (or fake) its drift.
        about, _ = about_model(state.recent.get(name, ()) if state else (), model_id, last_model_change(state))
        records = [r for r in about if r.predicted is not None and (r.at is None or r.at >= since)]
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


class DriftCaseRequest(BaseModel):
    """One breach for the drift case of (model, breached alert types): opened, or added to the open one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str
    alert_types: tuple[str, ...]  # the breached alert types
    case_alert_type: str  # the drift case's own alert type (policy drift.open_case_alert_type)
    title: str
    requested_by: str
    finding: Alert  # this check's measurement, as an alert of the drift case


class DriftCase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    opened: bool  # False: the measurement went to a drift case that was already open


def drift_case_base(model_id: str, alert_types: tuple[str, ...]) -> str:
    """The drift case id without its generation: the same for every check that finds the same breach."""
    names = sorted(set(alert_types))
    slug = re.sub(r"[^a-z0-9_.+-]", "_", "+".join(names).lower())
    if len(slug) > 80:
        slug = "h" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return f"model-drift-{model_id[:12]}-{slug}"


async def _case_state(client: Client, case_id: str) -> Literal["absent", "running", "closed"]:
    """Strongly consistent (describe, not visibility). Closed: the workflow has ended, or it has a
    verdict and is only finishing up (recording, archiving), or Temporal deleted it and the archive has it."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from signoff.history import archived_runs
    from signoff.models import CaseStatus
    from signoff.search_attributes import CASE_STATUS

    try:
        described = await client.get_workflow_handle(case_id).describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return "closed" if await asyncio.to_thread(archived_runs, case_id) else "absent"
    if described.status != WorkflowExecutionStatus.RUNNING:
        return "closed"
    status = described.typed_search_attributes.get(CASE_STATUS)
    return "closed" if status in (CaseStatus.closed.value, CaseStatus.auto_closed.value) else "running"


@activity.defn
async def open_drift_case(req: DriftCaseRequest) -> DriftCase:
    """Add the finding to the open drift case of this breach, or open the next one.

    The ids are `<base>-1`, `<base>-2`, ...: a generation whose case has closed is passed over.
    Starting uses REJECT_DUPLICATE and no conflict policy but FAIL, so two checks racing for the
    same generation (or a case closing under us) end in one case and a second look, never two.
    """
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError
    from temporalio.service import RPCError, RPCStatusCode

    from signoff.ingest import signed
    from signoff.models import AlertBatch, CaseInput
    from workflows.case import CaseWorkflow

    client = activity.client()
    base = drift_case_base(req.model_id, req.alert_types)
    for generation in range(1, MAX_GENERATIONS + 1):
        case_id = f"{base}-{generation}"
        for _ in range(3):  # a second look after losing a race; more means something is wrong: retry
            state = await _case_state(client, case_id)
            if state == "closed":
                break
            if state == "running":
                batch = AlertBatch(case_id=case_id, alerts=(req.finding,), batch_id=req.finding.uid)
                try:
                    await client.get_workflow_handle(case_id).signal(CaseWorkflow.add_alerts, signed(batch))
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:  # it closed just now: look again
                        raise
                    continue
                activity.logger.info("drift: breach added to the open drift case %s", case_id)
                return DriftCase(case_id=case_id, opened=False)
            inp = CaseInput(case_id=case_id, alert_type=req.case_alert_type, severity="high", title=req.title,
                            requested_by=req.requested_by, alerts=(req.finding,))
            try:
                await client.start_workflow(
                    CaseWorkflow.run, signed(inp), id=case_id, task_queue=activity.info().task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                    static_summary=f"{req.case_alert_type} · high · {req.title}"[:200],
                )
            except WorkflowAlreadyStartedError:  # another check opened it, or it closed: look again
                continue
            activity.logger.info("drift: drift case %s opened", case_id)
            return DriftCase(case_id=case_id, opened=True)
        else:
            raise ApplicationError(f"drift case {case_id} kept changing under the drift check; retrying")
    raise ApplicationError(f"more than {MAX_GENERATIONS} drift cases for {base}: archive or delete old ones",
                           non_retryable=True)


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


ACTIVITIES = [compute_drift, apply_drift, open_drift_case, ensure_drift_schedule]
