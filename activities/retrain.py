"""Retraining activities: labelled cases from analysts' verdicts (+ optional base data) → a stored
candidate model with its drift reference, then named the shadow candidate in governance."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from policies.loader import load_policy
from signoff.models import Alert, Verdict


class RetrainRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    requested_by: str
    reason: str
    base_data: str | None = None  # a GUIDE CSV on the worker, trained on together with the verdicts
    min_verdicts: int = 20
    seed: int = 7
    rounds: int = 60  # per bag (TrainParams.bags)
    folds: int = 5


class Candidate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str
    verdict_cases: int
    base_cases: int
    summary: dict


@activity.defn
async def check_retrain_allowed(req: RetrainRequest) -> None:
    policy = load_policy()
    allowed = set(policy.governance_roles) | {"detection_engineer"}
    roles = set(policy.roles_of(req.requested_by))
    if not roles & allowed:
        raise ApplicationError(f"{req.requested_by!r} has roles {sorted(roles)}; retraining needs one of "
                               f"{sorted(allowed)} (policy)", type="GovernanceRefused", non_retryable=True)
    if not req.reason.strip():
        raise ApplicationError("a reason is required", type="GovernanceRefused", non_retryable=True)


@activity.defn
async def train_from_verdicts(req: RetrainRequest) -> Candidate:
    """Collect verdict-labelled cases (their alerts from the case workflows), train, store."""
    from signoff.autonomy.client import read_state
    from signoff.autonomy.retrain import labelled, train_candidate
    from signoff.scoring import model_store
    from signoff.scoring.train import TrainParams
    from workflows.case import CaseWorkflow

    client = activity.client()
    state = await read_state(client, activity.info().task_queue)
    drift_type = load_policy().drift.open_case_alert_type
    records = [r for name, recs in (state.recent.items() if state else ()) if name != drift_type for r in recs]
    if len(records) < req.min_verdicts:
        raise ApplicationError(f"{len(records)} analyst verdicts recorded; retraining needs at least "
                               f"{req.min_verdicts}", type="NotEnoughVerdicts", non_retryable=True)
    gate = asyncio.Semaphore(32)

    async def alerts_of(case_id: str) -> tuple[Alert, ...]:
        async with gate:
            try:
                view = await client.get_workflow_handle(case_id).query(CaseWorkflow.status)
            except Exception as exc:  # noqa: BLE001 - a case gone from retention is skipped, reported
                activity.logger.warning("retrain: cannot read case %s: %s", case_id, exc)
                return ()
            return view.timeline

    latest: dict[str, Verdict] = {}
    for r in sorted(records, key=lambda r: (r.case_id, r.at.isoformat() if r.at else "")):
        latest[r.case_id] = r.verdict
    ids = sorted(latest)
    alerts = await asyncio.gather(*(alerts_of(c) for c in ids))
    items = [(c, a, latest[c]) for c, a in zip(ids, alerts, strict=True) if a]
    base = 0
    if req.base_data:
        from signoff.sources.guide import read_guide

        path = Path(req.base_data)
        if not path.exists():
            raise ApplicationError(f"base data {path} does not exist on the worker", non_retryable=True)
        read = await asyncio.to_thread(read_guide, path)
        known = {c for c, _, _ in items}
        extra = [(i.case_id, i.alerts, i.grade) for i in read.incidents if i.grade is not None and i.case_id not in known]
        base = len(extra)
        items = [*extra, *items]  # a verdict overrides the base data's grade of the same case
    cases = labelled(items)
    params = TrainParams(seed=req.seed, rounds=req.rounds, folds=req.folds)
    activity.heartbeat(f"training on {len(cases)} cases")
    # The system trains, at a person's request: both are recorded (the manifest's who/when/why).
    trained = model_store.provenance(f"signoff-retrain (workflow {activity.info().workflow_id})", req.reason,
                                     "retrain workflow", requested_by=req.requested_by)
    try:
        model_id, summary = await asyncio.to_thread(
            train_candidate, cases, params, f"verdicts ({len(items) - base}) + base ({base})",
            {"verdict_cases": len(items) - base, "base_cases": base, "base_data": req.base_data or ""}, trained,
        )
    except ValueError as exc:
        raise ApplicationError(str(exc), type="NotEnoughVerdicts", non_retryable=True) from exc
    return Candidate(model_id=model_id, verdict_cases=len(items) - base, base_cases=base, summary=summary)


@activity.defn
async def name_candidate(req: RetrainRequest, model_id: str) -> str:
    from signoff.autonomy.client import govern
    from signoff.autonomy.models import ModelChange

    result: str = await govern(activity.client(), "set_candidate",
                               ModelChange(model_id=model_id, by=req.requested_by, reason=f"retrained: {req.reason}"),
                               activity.info().task_queue)
    return result


ACTIVITIES = [check_retrain_allowed, train_from_verdicts, name_candidate]
