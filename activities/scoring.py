"""The scoring activity: deterministic xgboost triage score of a case, with its explanation.

Async activity that runs the CPU work in a thread (`asyncio.to_thread`), so the worker's event
loop stays free. The model is loaded once per worker process per model id (`Scorer.load` caches);
`model_id=None` scores with the active model, and the result records which one was used.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from signoff.models import Alert, ScoreResult


class ScoreRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    case_id: str
    alerts: tuple[Alert, ...]
    model_id: str | None = None


def score_sync(req: ScoreRequest) -> ScoreResult:
    from signoff.scoring.artifact import ArtifactError
    from signoff.scoring.model_store import ModelStoreError
    from signoff.scoring.scorer import Scorer

    if not req.alerts:
        raise ApplicationError(f"case {req.case_id} has no alerts to score", non_retryable=True)
    try:
        scorer = Scorer.load(req.model_id)
    except (ModelStoreError, ArtifactError) as exc:
        # A missing or corrupt model will not heal by retrying; an operator must act.
        raise ApplicationError(str(exc), type="ModelUnavailable", non_retryable=True) from exc
    return scorer.score(req.alerts)


@activity.defn(name="score_case")
async def score_case(req: ScoreRequest) -> ScoreResult:
    return await asyncio.to_thread(score_sync, req)
