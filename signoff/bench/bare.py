"""Bare Temporal: the baseline of the pipeline benchmark.

One workflow that runs trivial activities and completes: what Temporal itself costs for the same
number of activities as a governed case, without any governance. It mirrors the governed case's
mix: local activities first, then (local, regular) pairs like a playbook step's capture + execute,
then any remaining regular activities.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bare_step")
async def bare_step(index: int) -> int:
    return index + 1


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, activities: int, local_activities: int) -> int:
        # Plain ints, no model class: the sandbox re-creates classes defined here for every run.
        timeout = timedelta(seconds=30)
        pairs = min(activities, local_activities)
        done = 0
        for _ in range(local_activities - pairs):
            done = await workflow.execute_local_activity(bare_step, done, start_to_close_timeout=timeout)
        for _ in range(pairs):
            done = await workflow.execute_local_activity(bare_step, done, start_to_close_timeout=timeout)
            done = await workflow.execute_activity(bare_step, done, start_to_close_timeout=timeout)
        for _ in range(activities - pairs):
            done = await workflow.execute_activity(bare_step, done, start_to_close_timeout=timeout)
        return done
