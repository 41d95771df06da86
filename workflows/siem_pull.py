"""SIEM pull: a workflow started by a Temporal Schedule that pulls new SIEM alerts into cases.

Each scheduled run reads the cursor the previous run returned (Temporal's last completion result,
durable across runs and workers), runs the `pull_siem_alerts` activity, and returns the new
cursor. `ensure_schedule` creates (or updates) the schedule: one per SIEM source; overlapping runs
are skipped, so a slow SIEM never piles up pulls.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.siem import PullRequest, PullResult, Source, pull_siem_alerts

if TYPE_CHECKING:
    from temporalio.client import Client


class SiemPullInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: Source
    lookback_minutes: int = 60
    limit: int = 500
    task_queue: str | None = None
    cursor_ms: int | None = None  # overrides the previous run's cursor (backfills)


@workflow.defn
class SiemPullWorkflow:
    @workflow.run
    async def run(self, inp: SiemPullInput) -> PullResult:
        previous = workflow.get_last_completion_result(PullResult) if workflow.has_last_completion_result() else None
        cursor = inp.cursor_ms if inp.cursor_ms is not None else (previous.cursor_ms if previous else None)
        return await workflow.execute_activity(
            pull_siem_alerts,
            PullRequest(source=inp.source, cursor_ms=cursor, lookback_minutes=inp.lookback_minutes,
                        limit=inp.limit, task_queue=inp.task_queue),
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=2),
                                     maximum_attempts=5),
        )


async def ensure_schedule(client: Client, inp: SiemPullInput, every: timedelta = timedelta(minutes=1),
                          task_queue: str | None = None) -> str:
    """Create or update the pull schedule for `inp.source`; returns the schedule id."""
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleUpdate,
        ScheduleUpdateInput,
    )
    from temporalio.client import ScheduleOverlapPolicy as Overlap

    from signoff import settings

    schedule_id = f"siem-pull-{inp.source}"
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SiemPullWorkflow.run, inp, id=f"siem-pull-{inp.source}", task_queue=task_queue or settings.task_queue(),
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=Overlap.SKIP),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
    return schedule_id


WORKFLOWS = [SiemPullWorkflow]
