"""Governance activities: read the policy, verify and activate models, record verdicts, and check
that a verdict or a drift report really comes from a case or a drift check before it counts.

Drift and retraining activities live in activities/drift.py and activities/retrain.py and are
registered through this module's `ACTIVITIES` list.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from policies.engine import Policy
from policies.loader import PolicyError, load_policy
from signoff.autonomy.models import (
    CANDIDATE_PREFIX,
    CASE_WORKFLOW_TYPE,
    DRIFT_CHECK_WORKFLOW_TYPE,
    MAX_NAME_CHARS,
    MODEL_PREFIX,
    DriftReport,
    EvidenceRecord,
    VerdictBatch,
    VerdictCheck,
    VerdictClaim,
    VerdictRecord,
    clip,
)
from signoff.case_view import read_case_view
from signoff.models import CaseView, DecisionKind


class ModelSync(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["promote", "rollback"]
    model_id: str | None  # the model active afterwards (None: the store's previous / shipped default)
    rolled_back: str | None = None
    by: str
    reason: str


@activity.defn
async def governance_policy() -> Policy:
    """The policy file in force on this worker (roles, quorums, evidence rules)."""
    try:
        return load_policy()
    except PolicyError as exc:
        raise ApplicationError(str(exc), type="PolicyError", non_retryable=True) from exc


@activity.defn
async def resolve_model(model_id: str) -> str:
    """The full id of a stored model (unique prefix accepted), verified against its artifact bytes;
    "": the model cases get when governance names none (the store's active one, else the shipped default)."""
    from signoff.scoring import model_store

    def check() -> str:
        if not model_id:
            return model_store.active_model_id()
        if len(model_id) >= 8 and not any(m.model_id.startswith(model_id) for m in model_store.list_models()):
            # The operator's `signoff model list` reads their own store, not the workers': say which one.
            what = f"model id prefix {model_id!r} matches 0 models" if len(model_id) < 64 else f"no model {model_id!r}"
            raise model_store.ModelStoreError(
                f"{what} in the workers' model store {model_store.store_dir()}; copy models/<id>/ there "
                "or train where the workers read (docs/deployment.md §6)")
        full = model_store.resolve(model_id)
        model_store.read_artifact(full)
        return full

    try:
        return await asyncio.to_thread(check)
    except model_store.ModelStoreError as exc:
        raise ApplicationError(str(exc), type="ModelUnavailable", non_retryable=True) from exc


@activity.defn
async def sync_model_store(req: ModelSync) -> str:
    """Mirror a governed model change into the model store's pointer (`signoff model list` reads it)."""
    from signoff.scoring import model_store

    def apply() -> str:
        active = model_store.active_model_id()
        if req.action == "promote":
            assert req.model_id is not None
            if active != req.model_id:
                model_store.promote(req.model_id, req.by, req.reason)
            return req.model_id
        stack = model_store._stack(model_store.history())
        if stack and stack[-1] == req.rolled_back:
            model_store.rollback(req.by, req.reason)
        elif req.model_id and active != req.model_id:
            model_store.promote(req.model_id, req.by, f"rollback: {req.reason}")
        return model_store.active_model_id()

    try:
        return await asyncio.to_thread(apply)
    except model_store.ModelStoreError as exc:
        raise ApplicationError(str(exc), type="ModelUnavailable", non_retryable=True) from exc


@activity.defn
async def record_verdict(rec: VerdictRecord) -> str:
    """Count an analyst's verdict as evidence: signal(-with-start) the governance workflow."""
    from signoff.autonomy.client import governance_id, signal_verdict

    queue = activity.info().task_queue
    await signal_verdict(activity.client(), rec, queue)
    return governance_id(queue)


CASE_READ_TIMEOUT_S = 20.0


class _Refused(Exception):
    pass


async def _case_view(client: Client, case_id: str, queue: str) -> CaseView:
    """The case as its workflow tells it: its result when it finished, else its `status` query."""
    handle = client.get_workflow_handle(case_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _Refused(f"there is no case {clip(case_id, MAX_NAME_CHARS)!r}") from exc
        raise
    if desc.workflow_type != CASE_WORKFLOW_TYPE:
        raise _Refused(f"{clip(case_id, MAX_NAME_CHARS)!r} is a {clip(desc.workflow_type, MAX_NAME_CHARS)} "
                       f"workflow, not a case ({CASE_WORKFLOW_TYPE})")
    if desc.task_queue != queue:
        raise _Refused(f"case {clip(case_id, MAX_NAME_CHARS)!r} runs on task queue "
                       f"{clip(desc.task_queue or '', MAX_NAME_CHARS)!r}, not this governance's {queue!r}")
    view = await asyncio.wait_for(read_case_view(client, case_id, run_id=desc.run_id,
                                                 completed=desc.status == WorkflowExecutionStatus.COMPLETED),
                                  CASE_READ_TIMEOUT_S)
    if not isinstance(view, CaseView):
        raise _Refused(f"case {clip(case_id, MAX_NAME_CHARS)!r} did not return a case view")
    return view


def _evidence_of(view: CaseView, claim: VerdictClaim) -> EvidenceRecord:
    """The evidence record as the case itself has it: its verdict, its score, its decision."""
    score, decision, shadow = view.score, view.decision, view.shadow_score
    threshold = decision.threshold if decision is not None else None
    benign = score.benign_confidence if score is not None else None
    above = threshold is not None and benign is not None and benign >= threshold
    # An on-the-loop case at or above the threshold that went to an analyst was in the review sample.
    sampled = (decision is not None and decision.autonomy == "on_the_loop" and above
               and decision.kind == DecisionKind.analyst)
    assert view.verdict is not None
    return EvidenceRecord(
        case_id=view.case_id, verdict=view.verdict.verdict, predicted=score.predicted if score else None,
        benign_confidence=benign, at=claim.record.at, review_sampled=sampled, above_threshold=above,
        candidate_model_id=shadow.model_id[:CANDIDATE_PREFIX] if shadow else None,
        candidate_predicted=shadow.predicted if shadow else None,
        candidate_benign_confidence=shadow.benign_confidence if shadow else None,
        model_id=score.model_id[:MODEL_PREFIX] if score is not None else None,
    )


async def _check_claim(client: Client, policy: Policy, queue: str, claim: VerdictClaim) -> VerdictCheck:
    case_id = claim.record.case_id
    refused = VerdictCheck(case_id=clip(case_id, MAX_NAME_CHARS), alert_type=clip(claim.alert_type, MAX_NAME_CHARS))
    if claim.analyst not in policy.approvers:
        return refused.model_copy(update=dict(
            refused=f"{clip(claim.analyst, MAX_NAME_CHARS)!r} is not a person in the policy (approvers)"))
    try:
        view = await _case_view(client, case_id, queue)
    except _Refused as exc:
        return refused.model_copy(update=dict(refused=str(exc)))
    except (RPCError, TimeoutError) as exc:
        return refused.model_copy(update=dict(refused=f"could not read case {clip(case_id, MAX_NAME_CHARS)!r}: "
                                                      f"{clip(str(exc) or type(exc).__name__, 300)}"))
    alert_type = view.alert_type if view.alert_type in policy.alert_types else policy.default_alert_type
    if view.verdict is None:
        return refused.model_copy(update=dict(refused=f"case {case_id!r} has no verdict"))
    said = (view.verdict.analyst, view.verdict.verdict, alert_type)
    claimed = (claim.analyst, claim.record.verdict, claim.alert_type)
    if said != claimed:
        return refused.model_copy(update=dict(refused=(
            f"case {case_id!r} says {said[1].value} by {said[0]!r} on {said[2]}, the verdict claimed "
            f"{claimed[1].value} by {clip(claimed[0], MAX_NAME_CHARS)!r} on {clip(claimed[2], MAX_NAME_CHARS)}")))
    return VerdictCheck(case_id=case_id, alert_type=alert_type, record=_evidence_of(view, claim))


@activity.defn
async def verify_verdicts(batch: VerdictBatch) -> list[VerdictCheck]:
    """Check each signalled verdict against its case before it counts as evidence: the analyst is a
    person in the policy, the case exists, is a CaseWorkflow on this task queue and carries that
    verdict by that analyst on that alert type. The record counted is built from the case itself."""
    client, queue = activity.client(), activity.info().task_queue
    try:
        policy = load_policy()
    except PolicyError as exc:
        raise ApplicationError(str(exc), type="PolicyError", non_retryable=True) from exc
    gate = asyncio.Semaphore(16)

    async def one(claim: VerdictClaim) -> VerdictCheck:
        async with gate:
            return await _check_claim(client, policy, queue, claim)

    return list(await asyncio.gather(*(one(c) for c in batch.claims)))


@activity.defn
async def verify_drift_report(report: DriftReport) -> DriftReport:
    """The report as the drift check computed it, if `report` names a running DriftCheckWorkflow on
    this task queue whose `compute_drift` result is exactly this report; else refused."""
    client, queue = activity.client(), activity.info().task_queue

    def refuse(why: str) -> ApplicationError:
        return ApplicationError(why, type="GovernanceRefused", non_retryable=True)

    if not report.check_workflow_id or not report.check_run_id:
        raise refuse("a drift report must name the drift check run that computed it (check_workflow_id, "
                     "check_run_id); run `signoff drift check`")
    name = clip(report.check_workflow_id, MAX_NAME_CHARS)
    handle = client.get_workflow_handle(report.check_workflow_id, run_id=report.check_run_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise refuse(f"there is no drift check {name!r} (run {clip(report.check_run_id, 64)})") from exc
        raise
    if desc.workflow_type != DRIFT_CHECK_WORKFLOW_TYPE:
        raise refuse(f"{name!r} is a {clip(desc.workflow_type, MAX_NAME_CHARS)} workflow, not a drift check")
    if desc.task_queue != queue:
        raise refuse(f"drift check {name!r} runs on task queue {clip(desc.task_queue or '', MAX_NAME_CHARS)!r}, "
                     f"not this governance's {queue!r}")
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise refuse(f"drift check {name!r} is no longer running: a check hands over its report while it runs")
    history = await handle.fetch_history()
    scheduled: set[int] = set()
    computed: DriftReport | None = None
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == "compute_drift":
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            if attrs.scheduled_event_id in scheduled:
                [computed] = await client.data_converter.decode(attrs.result.payloads, [DriftReport])
    if computed is None:
        raise refuse(f"drift check {name!r} has not computed a report")
    if computed.figures() != report.figures():
        raise refuse(f"the report differs from what drift check {name!r} computed")
    return computed.model_copy(update=dict(check_workflow_id=report.check_workflow_id,
                                           check_run_id=report.check_run_id))


def _more() -> list:
    found: list = []
    for module in ("activities.drift", "activities.retrain"):
        try:
            mod = __import__(module, fromlist=["ACTIVITIES"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        found.extend(getattr(mod, "ACTIVITIES", ()))
    return found


ACTIVITIES = [governance_policy, resolve_model, sync_model_store, record_verdict, verify_verdicts,
              verify_drift_report, *_more()]
