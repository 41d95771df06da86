"""QA defects: one drift case per ongoing breach, `explain` names the person, `explain` reads the
archive when Temporal is down. Real Temporal servers (dev server and time-skipping server)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.drift import compute_drift
from signoff.autonomy.client import govern, read_state
from signoff.autonomy.models import (
    AutonomyChange,
    DriftCheckInput,
    DriftFinding,
    DriftReport,
    ThresholdChange,
)
from signoff.models import CloseRequest, Verdict
from signoff.worker import activities as all_activities
from tests.auditkit import acli, address_of, full_story
from tests.casekit import alert, case_input, settled_worker, start_case, wait_for
from workflows.case import CaseWorkflow
from workflows.drift import DriftCheckWorkflow

DRIFT_HISTORIES = Path(__file__).parent / "replay" / "histories" / "drift"
DRIFT_GENERATIONS = ["before-drift-case-dedupe", "current"]

# What the stand-in figures report as breached (the figures themselves are covered by test_drift.py).
BREACH: dict[str, object] = {"model_id": "", "types": ("phishing",)}


@activity.defn(name="compute_drift")
async def breaching_figures(req: object) -> DriftReport:
    types = BREACH["types"]
    assert isinstance(types, tuple)
    return DriftReport(
        at=datetime.now(UTC), model_id=str(BREACH["model_id"]), reference="guide_slice (test)", window="7d",
        findings=tuple(DriftFinding(alert_type=t, cases=60, verdicts=0, score_psi=0.649,
                                    breaches=("score PSI 0.649 > 0.25",)) for t in types),
        policy_thresholds={"score_psi": 0.25},
    )


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIGNOFF_GOVERNANCE_CACHE_S", "0")
    yield tmp_path / "home"


async def _check(client: Client, queue: str, name: str) -> DriftReport:
    return await client.execute_workflow(DriftCheckWorkflow.run, DriftCheckInput(), id=f"{name}-{queue}",
                                         task_queue=queue)


async def _absent(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        return exc.status == RPCStatusCode.NOT_FOUND
    return False


# ---------------------------------------------------------------- 1. one drift case per ongoing breach


async def test_a_repeated_breach_adds_to_the_open_drift_case_until_it_closes(
    dev_env: WorkflowEnvironment, policy_file: Path, isolated_home: Path, task_queue: str
) -> None:
    policy = yaml.safe_load(policy_file.read_text())
    policy["autonomy"]["require_evidence"] = False
    policy_file.write_text(yaml.safe_dump(policy))
    client = dev_env.client
    model_id = uuid.uuid4().hex
    BREACH.update(model_id=model_id, types=("phishing",))
    stand_ins = [breaching_figures, *(a for a in all_activities() if a is not compute_drift)]
    base = f"model-drift-{model_id[:12]}-phishing"

    async with settled_worker(client, task_queue, activities=stand_ins):
        await govern(client, "set_threshold", ThresholdChange(alert_type="phishing", value=0.9, by="carol",
                                                              reason="test"), task_queue)
        await govern(client, "set_autonomy", AutonomyChange(alert_type="phishing", level="on_the_loop", by="carol",
                                                            reason="test"), task_queue)
        first = await _check(client, task_queue, "drift-1")
        second = await _check(client, task_queue, "drift-2")

        # QA saw a new high-severity case per check; the second check adds to the first one's case.
        assert first.drift_case_id == f"{base}-1" and not first.drift_case_joined
        assert second.drift_case_id == first.drift_case_id and second.drift_case_joined
        assert await _absent(client, f"{base}-2")
        case = client.get_workflow_handle(first.drift_case_id)
        view = await wait_for(case, lambda v: len(v.timeline) == 2 and v.decision is not None, "both measurements")
        assert [a.attributes["drift_check"] for a in view.timeline] == [f"drift-1-{task_queue}", f"drift-2-{task_queue}"]
        assert all("score PSI 0.649 > 0.25" in a.title for a in view.timeline)
        assert view.alert_type == "model_drift" and view.severity == "high"

        # Demoted on every breach; the second demotion changes nothing (idempotent) but is recorded.
        assert first.demoted == ("phishing",) and second.demoted == ()
        state = await read_state(client, task_queue)
        assert state is not None and state.alert_types["phishing"].autonomy == "in_the_loop"
        assert len([e for e in state.events if e.kind == "drift" and e.alert_type == "phishing"]) == 2

        # `explain` names the drift check, not a process identity or "?".
        shown = await acli(address_of(client), "explain", first.drift_case_id, "--json")
        assert shown.exit_code == 0, shown.output
        ex = json.loads(shown.output.strip().splitlines()[-1])
        assert ex["opened_by"] == f"signoff drift check (on demand: drift-1-{task_queue})"
        assert ex["timeline"][0]["what"] == f"case opened by {ex['opened_by']}"

        # Once a detection engineer closes it, the next breach opens the next drift case.
        closing = await case.execute_update(CaseWorkflow.close, CloseRequest(
            analyst="erin", verdict=Verdict.true_positive, reason="retraining the model"))
        assert "closing with verdict" in str(closing)
        await case.result()
        third = await _check(client, task_queue, "drift-3")
        assert third.drift_case_id == f"{base}-2" and not third.drift_case_joined
        fourth = await _check(client, task_queue, "drift-4")
        assert fourth.drift_case_id == f"{base}-2" and fourth.drift_case_joined

        # A different set of breached alert types is a different breach: its own case.
        BREACH["types"] = ("phishing", "malware")
        other = await _check(client, task_queue, "drift-5")
        assert other.drift_case_id == f"model-drift-{model_id[:12]}-malware+phishing-1"
        assert not other.drift_case_joined

        # The CLI says where the measurement went.
        BREACH["types"] = ("phishing",)
        printed = await acli(address_of(client), "drift", "check", env={"SIGNOFF_TASK_QUEUE": task_queue,
                                                                        "COLUMNS": "200"})
        assert printed.exit_code == 0, printed.output
        assert f"breach added to the open drift case: {base}-2" in printed.output


@pytest.mark.parametrize("generation", DRIFT_GENERATIONS)
async def test_drift_histories_replay(generation: str) -> None:
    """A drift check recorded before `drift-case-dedupe` (child case per check) still replays."""
    path = DRIFT_HISTORIES / f"{generation}.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python -m tests.replay.record_drift_history {generation}`")
    replayer = Replayer(workflows=[DriftCheckWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(WorkflowHistory.from_json("replay-drift-check", path.read_text()))
    assert result.replay_failure is None


def test_only_the_new_drift_history_opens_its_case_through_the_activity() -> None:
    def events(generation: str) -> list[EventType.ValueType]:
        text = (DRIFT_HISTORIES / f"{generation}.json").read_text()
        return [e.event_type for e in WorkflowHistory.from_json("h", text).events]

    old, new = events("before-drift-case-dedupe"), events("current")
    child = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    assert child in old and child not in new
    assert EventType.EVENT_TYPE_MARKER_RECORDED in new  # the `drift-case-dedupe` patch marker


# ---------------------------------------------------------------- 2. explain names the person


async def test_explain_attributes_the_case_to_who_requested_it(time_env: WorkflowEnvironment, task_queue: str) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware", requested_by="alice")
        handle = await start_case(client, task_queue, inp, alert("a1", ("host", f"h-{inp.case_id}")))
        await wait_for(handle, lambda v: v.decision is not None, "decided")
        as_json = await acli(address_of(client), "explain", inp.case_id, "--json")
        as_text = await acli(address_of(client), "explain", inp.case_id, env={"COLUMNS": "400"})
    assert as_json.exit_code == 0 and as_text.exit_code == 0, as_json.output + as_text.output
    ex = json.loads(as_json.output.strip().splitlines()[-1])
    assert ex["opened_by"] == "alice"
    assert ex["opened_via"] == client.identity and ex["opened_via"] != "alice"
    assert ex["timeline"][0]["what"] == "case opened by alice"
    assert f"by alice (client {client.identity})" in as_text.output
    assert f"case opened by {client.identity}" not in as_text.output


# ---------------------------------------------------------------- 3. explain with Temporal down


def _dead_address() -> str:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


async def test_explain_reads_the_archive_when_temporal_is_unreachable(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_env.client
    async with settled_worker(client, task_queue):
        story = await full_story(client, task_queue, rollback=False)
    down = _dead_address()

    text = await acli(down, "explain", story.case_id, env={"COLUMNS": "400"})
    assert text.exit_code == 0, text.output
    assert f"Temporal at {down} is unreachable: read the archive" in text.output
    assert "Source: archive history" in text.output and "Verdict: TruePositive by carol" in text.output

    as_json = await acli(down, "explain", story.case_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    ex = json.loads(as_json.output.strip().splitlines()[-1])
    assert ex["source"].startswith("archive history") and "unreachable" in ex["note"]
    assert ex["decision"]["kind"] == story.final.decision.kind.value  # type: ignore[union-attr]

    missing = await acli(down, "explain", "no-such-case")
    assert missing.exit_code != 0
    assert "cannot reach Temporal" in missing.output and "No archive of 'no-such-case'" in missing.output
