"""Standalone reproduction of an SDK race (no Signoff code), for reporting upstream (temporalio 1.35.0).

A workflow runs a local activity, then an activity, ten times; while it runs, the client sends signals
(or updates) whose handler upserts a search attribute, and two tasks keep querying it. Every history is
then replayed with `Replayer`. Without the queries none fails; with them, many fail with

    [TMPRL1100] Nondeterminism error: Activity machine does not handle this event:
    HistoryEvent(id: N, UpsertWorkflowSearchAttributes)      (or WorkflowExecutionUpdateAccepted)

What the histories show: a workflow task completes with the local activity's marker as its last command
and a new task is scheduled at once; the `ActivityTaskScheduled` that follows the local activity in the
code is in that next task, after the handler's upsert. Live, the local activity's result reached the
workflow in the next task's activation, where the Python SDK applies signals and updates first. On
replay the result is delivered where its marker is, at the end of the earlier task, so the workflow
schedules the activity first and the commands no longer match. A worker restart or a cache eviction
then fails the workflow's tasks for good.

    python -m tests.sdk_race_repro                 # signal, with queries: failures
    python -m tests.sdk_race_repro --queries 0     # signal, no queries: none
    python -m tests.sdk_race_repro --update        # update (accepted event vs the activity): failures
    python -m tests.sdk_race_repro --wait          # the workaround Signoff uses for signals: none
    python -m tests.sdk_race_repro --refuse        # ... and for updates (validator refuses meanwhile): none

Signoff's workaround (workflows/case.py, LOCAL_RESULT_RACE): signal handlers wait until no local activity is
in flight, update validators refuse meanwhile, and where updates are expected (while steps run) the reads
are activities instead of local ones.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

COUNT = SearchAttributeKey.for_int("RaceCount")


@activity.defn
async def quick_local(i: int) -> int:
    return i


@activity.defn
async def quick(i: int) -> int:
    return i


@workflow.defn
class RaceWorkflow:
    def __init__(self) -> None:
        self.count = 0
        self.done = False
        self.local_activities = 0

    @workflow.run
    async def run(self, steps: int) -> int:
        for i in range(steps):
            self.local_activities += 1
            try:
                await workflow.execute_local_activity(quick_local, i, start_to_close_timeout=timedelta(seconds=10))
            finally:
                self.local_activities -= 1
            await workflow.execute_activity(quick, i, start_to_close_timeout=timedelta(seconds=10))
        await workflow.wait_condition(lambda: self.done)
        return self.count

    @workflow.signal
    def bump(self) -> None:
        self.count += 1
        workflow.upsert_search_attributes([COUNT.value_set(self.count)])

    @workflow.signal
    async def bump_after_local(self) -> None:
        """The workaround: run once no local activity is in flight."""
        await workflow.wait_condition(lambda: self.local_activities == 0)
        self.bump()

    @workflow.update
    def touch(self) -> int:
        self.bump()
        return self.count

    @workflow.update
    def touch_checked(self) -> int:
        self.bump()
        return self.count

    @touch_checked.validator
    def _not_while_local(self) -> None:
        """The workaround for updates: refused (no history event) while a local activity is in flight."""
        if self.local_activities:
            raise ApplicationError("busy: send it again", type="Busy")

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def current(self) -> int:
        return self.count


async def drive(handle: WorkflowHandle, sends: int, queries: int, how: str) -> None:
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            try:
                await handle.query(RaceWorkflow.current)
            except Exception:  # e.g. the consistent query buffer is full: ask again
                await asyncio.sleep(0.05)

    pollers = [asyncio.create_task(poll()) for _ in range(queries)]
    for _ in range(sends):
        if how == "update":
            await handle.execute_update(RaceWorkflow.touch)
        elif how == "refuse":
            while True:
                try:
                    await handle.execute_update(RaceWorkflow.touch_checked)
                    break
                except WorkflowUpdateFailedError:
                    await asyncio.sleep(0.005)
        else:
            await handle.signal(RaceWorkflow.bump_after_local if how == "wait" else RaceWorkflow.bump)
        await asyncio.sleep(random.random() * 0.01)
    await handle.signal(RaceWorkflow.finish)
    stop.set()
    await asyncio.gather(*pollers)


async def main(workflows: int, steps: int, queries: int, how: str) -> None:
    binary = shutil.which("temporal") or str(Path(sys.executable).with_name("temporal"))
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=binary, ui=False,
                                                dev_server_extra_args=["--log-level", "error"])
    try:
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=env.client.namespace, search_attributes={"RaceCount": IndexedValueType.INDEXED_VALUE_TYPE_INT}))
        queue = f"race-{uuid.uuid4()}"
        histories = []
        async with Worker(env.client, task_queue=queue, workflows=[RaceWorkflow], activities=[quick_local, quick]):
            gate = asyncio.Semaphore(8)

            async def one(n: int) -> None:
                async with gate:
                    handle = await env.client.start_workflow(RaceWorkflow.run, steps, id=f"race-{n}-{uuid.uuid4()}",
                                                             task_queue=queue)
                    await drive(handle, steps * 3, queries, how)
                    await handle.result()
                    histories.append(await handle.fetch_history())

            await asyncio.gather(*(one(n) for n in range(workflows)))
        failed = []
        for history in histories:
            result = await Replayer(workflows=[RaceWorkflow]).replay_workflow(history, raise_on_replay_failure=False)
            if result.replay_failure is not None:
                failed.append(str(result.replay_failure))
        print(f"{how}, {queries} query tasks: {len(failed)}/{len(histories)} histories fail replay")
        if failed:
            print("first:", failed[0][:260])
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--update", action="store_true", help="send updates instead of signals")
    which.add_argument("--wait", action="store_true", help="signal handlers wait for local activities")
    which.add_argument("--refuse", action="store_true", help="updates refused while a local activity is in flight")
    args = parser.parse_args()
    how = "update" if args.update else "wait" if args.wait else "refuse" if args.refuse else "signal"
    asyncio.run(main(args.workflows, args.steps, args.queries, how))
