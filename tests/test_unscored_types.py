"""Alert types the triage model was not trained on (policy `scored: false`: the drift check's own
cases) get no score, no shadow score and no explanation from the model; an analyst decides. Real
time-skipping server; the policy file is a test copy."""

from __future__ import annotations

from pathlib import Path

import yaml
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policies.loader import load_policy
from signoff.models import DecisionKind
from tests.casekit import alert, case_input, settled_worker, start_case, wait_for
from tests.replay import recorded_patches
from workflows.case import UNSCORED_TYPES, CaseWorkflow


def test_scored_true_keeps_every_recorded_policy_version(policy_file: Path) -> None:
    raw = yaml.safe_load(policy_file.read_text())
    raw["alert_types"]["model_drift"].pop("scored", None)
    policy_file.write_text(yaml.safe_dump(raw))
    without = load_policy(policy_file).digest()
    raw["alert_types"]["model_drift"]["scored"] = True
    policy_file.write_text(yaml.safe_dump(raw))
    assert load_policy(policy_file).digest() == without  # the default hashes as if absent
    raw["alert_types"]["model_drift"]["scored"] = False
    policy_file.write_text(yaml.safe_dump(raw))
    assert load_policy(policy_file).digest() != without


async def test_a_drift_case_is_not_scored_and_goes_to_an_analyst(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    assert load_policy(policy_file).alert_types["model_drift"].scored is False  # the shipped policy says so
    client = time_env.client
    async with settled_worker(client, task_queue):
        drift = case_input(alert_type="model_drift")
        handle = await start_case(client, task_queue, drift, alert("d1", ("host", "drift-report"), category="Drift"))
        view = await wait_for(handle, lambda v: v.decision is not None, "decided")
        assert view.score is None and view.shadow_score is None
        assert view.decision is not None and view.decision.kind == DecisionKind.analyst
        assert "for detection engineers" in view.decision.reason
        await handle.terminate("test done")
        history = await handle.fetch_history()
        assert UNSCORED_TYPES in recorded_patches(history)
        assert "score_case" not in history.to_json()  # no scoring activity ran, not even a local one

        # A scored type is untouched: scored, and no marker for this change in its history.
        scored = case_input(alert_type="malware")
        other = await start_case(client, task_queue, scored, alert("m1", ("host", "h1"), category="Malware"))
        view = await wait_for(other, lambda v: v.decision is not None, "decided")
        assert view.score is not None
        await other.terminate("test done")
        assert UNSCORED_TYPES not in recorded_patches(await other.fetch_history())
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_a_drift_case_whose_first_task_was_split_replays() -> None:
    """QA6: a drift case's first workflow task can end with its first local activity's result (the task
    was heartbeated, core keeps a local activity running past 80% of the task timeout) while the case
    goes on in the next task. On replay that result arrives in the first task, so a `patched()` asked
    right after it answered False and scheduled the scoring the history never had (a stuck case).
    The change is now a deprecated patch (the recorded policy decides: histories from before `scored`
    existed carry a policy without it). The history below was recorded in that state (up to the case
    waiting for its verdict); its marker is the deprecated one the current code writes."""
    split = Path(__file__).parent / "replay" / "histories" / "split" / "model_drift.json"
    history = WorkflowHistory.from_json("drift-split", split.read_text())
    events = list(history.events)
    la_marker = next(e for e in events if e.marker_recorded_event_attributes.marker_name == "core_local_activity")
    patch = next(e for e in events if b"unscored-types" in b"".join(
        p.data for v in e.marker_recorded_event_attributes.details.values() for p in v.payloads))
    assert patch.marker_recorded_event_attributes.workflow_task_completed_event_id > \
        la_marker.marker_recorded_event_attributes.workflow_task_completed_event_id  # the split
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure is None
