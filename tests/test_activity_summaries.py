"""Activity summaries reach people: the Temporal UI shows each scheduled activity's summary, which the
workflow writes with the target it acts on. A target id comes from an alert: it is shown as
`signoff.display.identifier` shows it (escapes for control, bidi and non-ASCII characters), and
changing how a summary reads never breaks the replay of a recorded case (Temporal does not compare
user metadata on replay)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from connectors.lab import lab
from signoff.models import ApprovalRequest, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from workflows.case import CaseWorkflow

HISTORIES = Path(__file__).parent / "replay" / "histories"
ESC = "\x1b"


async def _summaries(history: WorkflowHistory, converter) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for event in history.events:
        # Local activities (the step's before-state capture) carry theirs on their marker.
        if event.event_type in (EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, EventType.EVENT_TYPE_MARKER_RECORDED) \
                and event.user_metadata.HasField("summary"):
            out += await converter.decode([event.user_metadata.summary], [str])
    return out


async def test_a_hostile_target_id_reaches_the_ui_summary_as_escapes(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    inp = case_input(alert_type="malware")
    host = f"h-{inp.case_id}\u202egnp.exe{ESC}[8m\nisolated by alice"
    async with build_worker(client, task_queue):
        handle = await start_case(client, task_queue, inp, alert("e1", ("host", host)))
        await wait_for(handle, awaiting("isolate_host"), "waiting", attempts=2400)
        await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(step="isolate_host", approver="alice",
                                                                          reason="confirmed"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "executed",
                       attempts=2400)
        history = await handle.fetch_history()
        await handle.terminate("test done")
    assert lab().read("host", host)["network"] == "isolated"  # the case acted on exactly what the alert named
    summaries = [s for s in await _summaries(history, client.data_converter) if f"h-{inp.case_id}" in s]
    shown = f"h-{inp.case_id}\\u202egnp.exe\\x1b[8m\\nisolated by alice"
    assert f"before-state of host {shown}" in summaries and f"isolate_host host {shown}" in summaries, summaries
    for summary in summaries:
        assert ESC not in summary and "\u202e" not in summary and "\n" not in summary, summary


async def test_a_summary_that_reads_differently_replays() -> None:
    """Shipped histories carry the summaries of their time; code that words them differently (as the
    escaped target ids above do for hostile names) still replays them."""
    raw = json.loads((HISTORIES / "malware_on_host.json").read_text())
    changed = 0
    for event in raw["events"]:
        summary = event.get("userMetadata", {}).get("summary")
        if event["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" and summary:
            summary["data"] = base64.b64encode(json.dumps("worded otherwise").encode()).decode()
            changed += 1
    assert changed, "the shipped history has no activity summary: record one that has"
    history = WorkflowHistory.from_json("replay-reworded", json.dumps(raw))
    assert {s for s in await _summaries(history, pydantic_data_converter)} == {"worded otherwise"}
    result = await Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter).replay_workflow(history)
    assert result.replay_failure is None
