"""A local activity's result delivered one workflow task late must not make a case unreplayable.

The SDK (temporalio 1.35, sdk-core) answers a query that came with a workflow task before the local
activities that task started have finished: it completes the task early. A local activity that finished
meanwhile has its marker in that completion, but its result reaches the workflow only in the next task,
after the signals and updates of that task (Python runs handlers first). Replay delivers it at its marker,
before them. A handler's command that went first live goes second on replay: `[TMPRL1100] Nondeterminism
error`, and the case fails its workflow tasks for good after a worker restart or a cache eviction (QA11:
1 recorded infostealer history in 21). Standalone reproduction without Signoff: tests/sdk_race_repro.py.

Here the race is forced on the real dev server, with test-only gates on the activities and a status query
that lets a held read go and then waits long enough for it to finish (as a busy worker would), so the task
carrying the query completes with that read's marker; meanwhile the test sends alerts or a note:
- a step's before-state capture (the QA11 history), with alerts or a note: cases from before
  `local-result-race` captured with a local activity and failed replay (5/5); they capture with an activity;
- triage's policy read (a local activity still), with alerts: failed replay before; the handlers now wait
  until no local activity is in flight.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

from activities import response
from activities.case import GovernanceRequest, load_governance
from activities.response import ExecuteRequest
from activities.scoring import ScoreRequest, score_case
from policies.engine import GovernanceSnapshot
from signoff import worker as signoff_worker
from signoff.models import (
    ActionRequest,
    ActionResult,
    AlertBatch,
    CaseInput,
    CaseView,
    NoteRequest,
    ScoreResult,
    StepState,
)
from tests.casekit import alert, case_input, start_case
from tests.reliability_kit import wait_view
from tests.replay import recorded_patches
from tests.replay.record_histories import derive_fixture
from workflows.case import CaseWorkflow

WAIT = 60  # seconds any gate below waits at most (a hung worker fails the test instead of hanging it)


class Gates:
    """Thread-safe: the activities run on the worker's event loop, the query in a workflow thread."""

    def __init__(self) -> None:
        self.first_call_started = threading.Event()
        self.first_call_go = threading.Event()
        self.held = threading.Event()  # the `hold` signal's workflow task is running
        self.hold_go = threading.Event()
        self.capture_started = threading.Event()
        self.capture_go = threading.Event()
        self.governance_go = threading.Event()
        self.query_running = threading.Event()
        self.governance_armed = False
        self.slow_scoring = False
        self.governance_started = threading.Event()


def _let_go_what_waits_for_a_query() -> None:
    GATES.capture_go.set()
    GATES.governance_go.set()


GATES = Gates()


@activity.defn(name="execute_action")
async def gated_execute(req: ExecuteRequest) -> ActionResult:
    if req.request.step_id == "tag":  # the first step's vendor call: held until the test lets it finish
        GATES.first_call_started.set()
        await asyncio.to_thread(GATES.first_call_go.wait, WAIT)
    return await response.execute_action(req)


@activity.defn(name="capture_state")
async def gated_capture(req: ActionRequest) -> dict[str, Any]:
    if req.step_id == "watch_account":  # the second step's before-state: let go by the status query
        GATES.capture_started.set()
        await asyncio.to_thread(GATES.capture_go.wait, WAIT)
    return await response.capture_state(req)


@activity.defn(name="load_governance")
async def gated_governance(req: GovernanceRequest) -> GovernanceSnapshot:
    if GATES.governance_armed and not req.fresh:  # the case's first read: let go by the status query
        GATES.governance_armed = False
        GATES.governance_started.set()
        await asyncio.to_thread(GATES.governance_go.wait, WAIT)
    return await load_governance(req)


@activity.defn(name="score_case")
async def slow_score(req: ScoreRequest) -> ScoreResult:
    if GATES.slow_scoring:  # as on a cold worker: past the task's heartbeat, so triage spans tasks
        await asyncio.sleep(2.5)
    return await score_case(req)


@workflow.defn(name="CaseWorkflow")
class RacedCase(CaseWorkflow):
    """The case as shipped, plus two test-only hooks that only time things (no command, no state)."""

    @workflow.init
    def __init__(self, inp: CaseInput) -> None:
        super().__init__(inp)

    @workflow.run
    async def run(self, inp: CaseInput) -> CaseView:
        return await super().run(inp)

    @workflow.signal
    def hold(self) -> None:
        """Keeps a workflow task running, so the query and the vendor call's completion wait for the next."""
        GATES.held.set()
        GATES.hold_go.wait(WAIT)

    @workflow.query
    def slow_status(self) -> str:
        """A status query that lets the capture finish before it answers (as a busy worker would)."""
        _let_go_what_waits_for_a_query()
        GATES.query_running.set()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # the capture's result reaches the SDK meanwhile
            time.sleep(0.01)
        return self.case_status.value


def _worker(client: Client, task_queue: str) -> Worker:
    """Signoff's worker with the gated activities and the test hooks (the workflow code is the shipped one)."""
    gated = {"execute_action": gated_execute, "capture_state": gated_capture, "load_governance": gated_governance,
             "score_case": slow_score}
    activities = [gated.get(getattr(a, "__name__", ""), a) for a in signoff_worker.activities()]
    workflows = [RacedCase if w is CaseWorkflow else w for w in signoff_worker.workflows()]
    return signoff_worker.build_worker(client, task_queue, workflows=workflows, activities=activities,
                                       workflow_runner=UnsandboxedWorkflowRunner())


def _late_local_results(history: WorkflowHistory) -> list[str]:
    """Local activities whose marker ended its workflow task's commands, with a signal or an update before the
    next task started: their result reached the workflow in that next task, after those handlers."""
    late, events = [], list(history.events)
    for i, event in enumerate(events):
        attrs = event.marker_recorded_event_attributes
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED or attrs.marker_name != "core_local_activity":
            continue
        following = []
        for after in events[i + 1:]:
            if after.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                break
            following.append(after.event_type)
        if following and following[0] in (EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
                                          EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) and (
                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED in following):
            late.append(json.loads(attrs.details["data"].payloads[0].data)["activity_type"])
    return late


async def _replay_failure(history: WorkflowHistory) -> str | None:
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return None if result.replay_failure is None else str(result.replay_failure)[:300]


@pytest.mark.parametrize("meanwhile", ["alerts", "note"])
async def test_a_step_with_a_late_local_result_replays(dev_env: WorkflowEnvironment, task_queue: str,
                                                       meanwhile: str) -> None:
    """The QA11 history: a step's before-state capture delivered late, with alerts (a signal) or a note (an
    update) in the same workflow task. An update cannot wait, so the capture is an activity now."""
    global GATES
    GATES = Gates()
    client = dev_env.client
    alert_type, category, entities = derive_fixture("infostealer")
    inp = case_input(alert_type=alert_type)
    async with _worker(client, task_queue):
        handle = await start_case(client, task_queue, inp, alert(f"{inp.case_id}-1", *entities, category=category))
        assert await asyncio.to_thread(GATES.first_call_started.wait, WAIT), "the first step never ran"
        # A workflow task runs (held); meanwhile the status query is buffered and the vendor call completes:
        # the next task carries both, and starts the second step's capture.
        await handle.signal("hold")
        assert await asyncio.to_thread(GATES.held.wait, WAIT)
        query = asyncio.create_task(handle.query("slow_status", rpc_timeout=timedelta(seconds=WAIT)))
        await asyncio.sleep(0.3)
        GATES.first_call_go.set()
        await asyncio.sleep(0.3)
        GATES.hold_go.set()
        # While the query answers (and the capture finishes), alerts or a note come: they land in the next task.
        assert await asyncio.to_thread(GATES.query_running.wait, WAIT), "the status query never ran"
        if meanwhile == "alerts":
            await handle.signal(CaseWorkflow.add_alerts, AlertBatch(case_id=inp.case_id, batch_id="b2", alerts=(
                alert(f"{inp.case_id}-2", *entities, category=category),)))
            sent = None
        else:
            sent = asyncio.create_task(handle.execute_update(
                CaseWorkflow.note, NoteRequest(author="carol", text="user confirms the download"), id="note-1"))
        await query
        if sent is not None:
            await sent
        await wait_view(handle, lambda v: (v.alert_count == 2 or meanwhile == "note") and any(
            s.step_id == "watch_account" and s.state == StepState.executed for s in v.steps), "second step executed")
        history = await handle.fetch_history()
        await handle.terminate("test done")

    assert await _replay_failure(history) is None
    assert "local-result-race" in recorded_patches(history)  # workflows.case.LOCAL_RESULT_RACE


async def test_alerts_during_a_late_triage_result_replay(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """Triage keeps its local activities (fewer round trips): the policy read's result is delivered a task
    late, with alert batches before it in that task. Their handlers wait until no local activity is in flight."""
    global GATES
    GATES = Gates()
    GATES.governance_armed = True
    GATES.first_call_go.set()  # the steps run freely here
    GATES.slow_scoring = True
    client = dev_env.client
    alert_type, category, entities = derive_fixture("infostealer")
    inp = case_input(alert_type=alert_type)

    def batch(n: int) -> AlertBatch:
        return AlertBatch(case_id=inp.case_id, batch_id=f"b{n}", alerts=(
            alert(f"{inp.case_id}-{n}", *entities, category=category),))

    async with _worker(client, task_queue):
        # A short task timeout: the SDK completes the first task (heartbeat) while the policy read is held,
        # so the batch and the query sent meanwhile come with the second task, which answers the query.
        handle = await client.start_workflow(
            RacedCase.run, inp, id=inp.case_id, task_queue=task_queue, task_timeout=timedelta(seconds=2),
            start_signal="add_alerts", start_signal_args=[batch(1)])
        assert await asyncio.to_thread(GATES.governance_started.wait, WAIT), "the policy was never read"
        await handle.signal(CaseWorkflow.add_alerts, batch(2))
        query = asyncio.create_task(handle.query("slow_status", rpc_timeout=timedelta(seconds=WAIT)))
        assert await asyncio.to_thread(GATES.query_running.wait, WAIT), "the status query never ran"
        await handle.signal(CaseWorkflow.add_alerts, batch(3))
        await query
        await wait_view(handle, lambda v: v.alert_count == 3 and v.decision is not None and bool(v.steps),
                        "triaged with 3 alerts")
        history = await handle.fetch_history()
        await handle.terminate("test done")
    # The race was forced: the policy read's result came a task late, after a batch of alerts.
    assert "load_governance" in _late_local_results(history)
    assert await _replay_failure(history) is None
