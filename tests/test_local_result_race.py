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
  `local-result-race` captured with a local activity and failed replay (5/5); under `local-result-race` alone
  they capture with an activity; under `local-capture` with a local activity again, counted in flight: the
  alerts wait for it, the note is refused as busy (nothing recorded) and sent again, as Signoff's clients do;
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
import typer
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
from signoff import busy
from signoff import worker as signoff_worker
from signoff.busy import CASE_BUSY, CASE_BUSY_MESSAGE, while_busy
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
from workflows import case as case_module
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
        self.captures = 0  # calls of the held capture (a local activity attempt, or the activity after it)
        self.captured_again = threading.Event()


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
        GATES.captures += 1
        if GATES.captures > 1:
            GATES.captured_again.set()
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
    update) in the same workflow task. The signal waits for the capture; the update cannot wait: it is refused
    as busy while the capture is in flight, and sent again (signoff/busy.py)."""
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
            sent = asyncio.create_task(while_busy(lambda: handle.execute_update(
                CaseWorkflow.note, NoteRequest(author="carol", text="user confirms the download"), id="note-1"),
                inp.case_id))
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


class _CountedHandle:
    """The case's handle as the CLI's `_send` uses it, counting the updates it sends (refused ones too)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.sent = handle, 0

    async def describe(self) -> Any:
        return await self.handle.describe()

    async def query(self, *args: Any, **kwargs: Any) -> Any:
        return await self.handle.query(*args, **kwargs)

    async def execute_update(self, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return await self.handle.execute_update(*args, **kwargs)


def _update_events(history: WorkflowHistory) -> list[str]:
    """The update ids the case accepted or rejected in its history (a validator's refusal records neither)."""
    ids = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            ids.append(event.workflow_execution_update_accepted_event_attributes.accepted_request.meta.update_id)
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED:
            ids.append(event.workflow_execution_update_rejected_event_attributes.rejected_request.meta.update_id)
    return ids


async def test_an_update_during_a_step_capture_is_refused_as_busy_then_sent_again(
        dev_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`local-capture`: a step's before-state read is a local activity again. Held (a slow vendor) past 80% of
    the task timeout, the SDK completes the task while it runs, so a note arrives in a task with the read in
    flight: the validator refuses it with the one busy reason, and nothing is recorded. The CLI's send (the one
    place it sends updates) sends it again until the read is done; the note is then recorded once, and the
    history (on the new path: the capture a marker, no capture activity) replays."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.exceptions import ApplicationError

    from signoff.cli.cases import _send

    global GATES
    GATES = Gates()
    GATES.first_call_go.set()  # the first step runs freely; the second one's capture is held
    # Held as long as the test needs, not the shipped budget (after which the read becomes an activity).
    monkeypatch.setattr(case_module, "CAPTURE_LOCAL_BUDGET", timedelta(seconds=WAIT * 2), raising=False)
    client = dev_env.client
    alert_type, category, entities = derive_fixture("infostealer")
    inp = case_input(alert_type=alert_type)
    note = NoteRequest(author="carol", text="user confirms the download")
    async with _worker(client, task_queue):
        handle = await client.start_workflow(
            RacedCase.run, inp, id=inp.case_id, task_queue=task_queue, task_timeout=timedelta(seconds=2),
            start_signal="add_alerts", start_signal_args=[AlertBatch(case_id=inp.case_id, alerts=(
                alert(f"{inp.case_id}-1", *entities, category=category),))])
        assert await asyncio.to_thread(GATES.capture_started.wait, WAIT), "the second step never captured"
        # (a) A raw update (`temporal workflow update`, any SDK client) meets the refusal, with its reason.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CaseWorkflow.note, note, id="raw-note")
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError), cause
        assert (cause.type, cause.message) == (CASE_BUSY, CASE_BUSY_MESSAGE)
        # The CLI gives up after its budget (here half a second instead of BUSY_RETRY_SECONDS), saying why.
        monkeypatch.setattr(busy, "BUSY_RETRY_SECONDS", 0.5)
        with pytest.raises(typer.Exit) as gave_up:
            await _send(handle, inp.case_id, "note", note, "cli-note-gives-up")
        assert gave_up.value.exit_code == 1
        said = " ".join(capsys.readouterr().err.split())
        assert f"case {inp.case_id} stayed busy for 0.5 s" in said and "try again in a minute" in said, said
        monkeypatch.undo()
        monkeypatch.setattr(case_module, "CAPTURE_LOCAL_BUDGET", timedelta(seconds=WAIT * 2), raising=False)
        # (b) The CLI's send: refused while the read is held, sent again, accepted once it is done.
        counted = _CountedHandle(handle)
        sent = asyncio.create_task(_send(counted, inp.case_id, "note", note, "cli-note"))
        for _ in range(WAIT * 20):
            if counted.sent >= 2 or sent.done():
                break
            await asyncio.sleep(0.05)
        assert counted.sent >= 2 and not sent.done(), "the CLI did not send the refused note again"
        GATES.capture_go.set()
        reply = await asyncio.wait_for(sent, WAIT)
        assert reply == "note 1 added by carol", reply
        view = await wait_view(handle, lambda v: any(
            s.step_id == "watch_account" and s.state == StepState.executed for s in v.steps), "second step executed")
        assert [n.text for n in view.notes] == [note.text], view.notes
        history = await handle.fetch_history()
        await handle.terminate("test done")

    assert "local-capture" in recorded_patches(history)  # workflows.case.LOCAL_CAPTURE
    assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and e.activity_task_scheduled_event_attributes.activity_type.name == "capture_state"]
    assert _update_events(history) == ["cli-note"]  # the refusals left no trace
    assert await _replay_failure(history) is None


async def test_a_capture_slower_than_its_local_budget_is_read_as_an_activity(
        dev_env: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates are refused while the capture is a local activity, so it stays one only for CAPTURE_LOCAL_BUDGET: a
    vendor slower than that (here: held until the budget is spent) is read again as an activity, with its full
    retry policy, and updates are taken meanwhile. The history (local attempt, then the activity) replays."""
    global GATES
    GATES = Gates()
    GATES.first_call_go.set()
    monkeypatch.setattr(case_module, "CAPTURE_LOCAL_BUDGET", timedelta(seconds=1), raising=False)
    client = dev_env.client
    alert_type, category, entities = derive_fixture("infostealer")
    inp = case_input(alert_type=alert_type)
    async with _worker(client, task_queue):
        handle = await start_case(client, task_queue, inp, alert(f"{inp.case_id}-1", *entities, category=category))
        assert await asyncio.to_thread(GATES.captured_again.wait, WAIT), "the capture was never read as an activity"
        # The read is an activity now: a note is taken at once, no busy refusal.
        reply = await handle.execute_update(CaseWorkflow.note, NoteRequest(author="carol", text="vendor slow"),
                                            id="note-during-activity")
        assert reply == "note 1 added by carol", reply
        GATES.capture_go.set()
        await wait_view(handle, lambda v: any(
            s.step_id == "watch_account" and s.state == StepState.executed for s in v.steps), "second step executed")
        history = await handle.fetch_history()
        await handle.terminate("test done")
    assert "local-capture" in recorded_patches(history)
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED].count("capture_state") == 1
    assert await _replay_failure(history) is None
