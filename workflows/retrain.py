"""Retraining: a candidate model from the analysts' verdicts, put in shadow (never activated here).

Activation is a separate, governed, high-impact action (`signoff model promote`, quorum of
governance roles); rolling back to the previous model is its compensation.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.retrain import (
        Candidate,
        RetrainRequest,
        check_retrain_allowed,
        name_candidate,
        train_from_verdicts,
    )

QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


@workflow.defn(name="RetrainWorkflow")
class RetrainWorkflow:
    @workflow.run
    async def run(self, req: RetrainRequest) -> Candidate:
        await workflow.execute_activity(check_retrain_allowed, req, start_to_close_timeout=timedelta(seconds=30),
                                        retry_policy=QUICK)
        candidate = await workflow.execute_activity(
            train_from_verdicts, req, start_to_close_timeout=timedelta(hours=1), heartbeat_timeout=timedelta(minutes=10),
            retry_policy=QUICK,
        )
        await workflow.execute_activity(name_candidate, args=[req, candidate.model_id],
                                        start_to_close_timeout=timedelta(minutes=1), retry_policy=QUICK)
        return candidate
