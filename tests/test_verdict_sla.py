"""Time to verdict (policy `verdict_sla`): a case that goes to an analyst publishes when its verdict
is due; past it without a verdict it escalates once and is listed as overdue, and nothing is closed,
decided or executed by the clock. Real time-skipping server; the policy file is a test copy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from policies.loader import PolicyError, load_policy
from signoff import search_attributes as sa
from signoff.cli.cases import verdict_due_line
from signoff.explain import explanation_from_history
from signoff.governance_report import _time_to_verdict
from signoff.history import decode_history
from signoff.models import CaseInput, CaseStatus, CloseRequest, StepState, Verdict
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.replay import recorded_patches
from workflows.case import VERDICT_SLA, CaseWorkflow


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env  # this module skips hours past other tests' timers: a server of its own


def _with_sla(policy_file: Path, sla: dict[str, str] | None) -> None:
    raw = yaml.safe_load(policy_file.read_text())
    if sla is None:
        raw.pop("verdict_sla", None)
    else:
        raw["verdict_sla"] = sla
    policy_file.write_text(yaml.safe_dump(raw))


def _overdue_escalations(home: Path, case_id: str) -> list[dict[str, str]]:
    path = home / "escalations.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["case_id"] == case_id and r["kind"] == "verdict_overdue"]


async def _patches(handle: WorkflowHandle) -> set[str]:
    return set(recorded_patches(await handle.fetch_history()))


def test_the_policy_names_real_severities_and_durations(policy_file: Path) -> None:
    _with_sla(policy_file, None)
    without = load_policy(policy_file).digest()
    _with_sla(policy_file, {})
    assert load_policy(policy_file).digest() == without  # an empty SLA changes no recorded policy version
    _with_sla(policy_file, {"high": "4h"})
    assert load_policy(policy_file).digest() != without
    assert load_policy(policy_file).verdict_sla_for("high") == timedelta(hours=4)
    assert load_policy(policy_file).verdict_sla_for("low") is None
    for sla, words in (({"urgent": "1h"}, "verdict_sla has severities ['urgent']; case severities are"),
                       ({"high": "4 hours"}, "is not like '30s', '15m', '4h' or '7d'"),
                       ({"high": "0h"}, "give a duration above zero")):
        _with_sla(policy_file, sla)
        with pytest.raises(PolicyError) as info:
            load_policy(policy_file)
        assert words in str(info.value), str(info.value)


async def test_an_overdue_case_escalates_once_and_stays_open(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    _with_sla(policy_file, {"high": "2h", "critical": "1h"})
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")  # severity high
        host = f"host-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
        view = await wait_for(handle, awaiting("isolate_host"), "waiting for approval")
        started = (await handle.describe()).start_time
        assert view.verdict_sla == "2h" and view.verdict_due == started + timedelta(hours=2)
        assert view.overdue_since is None and "verdict due by" in verdict_due_line(view, now=started)
        assert (await handle.describe()).typed_search_attributes.get(sa.VERDICT_DUE) == view.verdict_due
        assert VERDICT_SLA in await _patches(handle)

        await time_env.sleep(timedelta(hours=3))  # past the SLA; the approval (4 h) has not timed out
        view = await wait_for(handle, lambda v: v.overdue_since is not None, "overdue")
        assert view.status == CaseStatus.awaiting_approval  # the clock decides nothing
        assert step(view, "isolate_host").state == StepState.awaiting_approval
        assert any("no verdict within 2h of the case opening" in e for e in view.escalations)
        assert verdict_due_line(view).startswith("verdict OVERDUE since")
        assert f"signoff close {inp.case_id}" in verdict_due_line(view)
        await wait_for(handle, lambda v: len(_overdue_escalations(signoff_home, inp.case_id)) == 1, "queued")

        # Later events do not escalate it again; the verdict ends the case as usual.
        await time_env.sleep(timedelta(hours=3))  # now the approval times out too: its own escalation
        view = await wait_for(handle, lambda v: v.status == CaseStatus.escalated, "approval escalated")
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.false_positive,
                                                                     reason="admin tool"))
        final = await handle.result()
        assert final.status == CaseStatus.closed and final.verdict is not None
        assert len(_overdue_escalations(signoff_home, inp.case_id)) == 1
        assert sum("no verdict within" in e for e in final.escalations) == 1
        assert verdict_due_line(final) == ""  # answered: nothing is due any more
        # The governance report's "time to verdict" reads the same story from the history: late, escalated.
        ex = explanation_from_history(await decode_history(await handle.fetch_history(), client.data_converter,
                                                           source="live"))
        assert [e["kind"] for e in ex["escalations"]].count("verdict_overdue") == 1
        (high,) = _time_to_verdict([ex], load_policy(policy_file), datetime.now(UTC))
        assert (high["severity"], high["sla"], high["late"], high["within_sla"]) == ("high", "2h", 1, 0)
        assert high["escalated_overdue"] == 1 and high["verdicts"]["count"] == 1
        assert 6 * 3600 <= high["verdicts"]["median"] < 7 * 3600  # closed after two sleeps of 3 h
        # The history, timer and escalation included, replays against the current workflow code.
        replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
        assert (await replayer.replay_workflow(await handle.fetch_history())).replay_failure is None


async def test_a_verdict_in_time_never_escalates(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    _with_sla(policy_file, {"high": "2h"})
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", f"h-{inp.case_id}"), category="Malware"))
        await wait_for(handle, awaiting("isolate_host"), "waiting")
        await time_env.sleep(timedelta(hours=1))
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.benign_positive,
                                                                     reason="pen test"))
        final = await handle.result()
        await time_env.sleep(timedelta(hours=3))  # well past the due time: the clock went with the case
        assert final.overdue_since is None and final.verdict_due is not None
        assert not any("no verdict within" in e for e in final.escalations)
        assert _overdue_escalations(signoff_home, inp.case_id) == []


async def test_a_severity_without_an_sla_has_no_clock_and_records_no_marker(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path
) -> None:
    _with_sla(policy_file, {"critical": "1h"})  # the test case is high
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp: CaseInput = case_input(alert_type="malware")
        handle = await start_case(client, task_queue, inp, alert("m1", ("host", f"h-{inp.case_id}"), category="Malware"))
        view = await wait_for(handle, awaiting("isolate_host"), "waiting")
        assert view.verdict_sla is None and view.verdict_due is None and verdict_due_line(view) == ""
        assert (await handle.describe()).typed_search_attributes.get(sa.VERDICT_DUE) is None
        assert VERDICT_SLA not in await _patches(handle)
        await handle.terminate("test done")


def test_the_queue_column_says_due_in_or_overdue_by() -> None:
    from signoff.cli.cases import _due_cell

    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    row = {"workflow_status": "RUNNING", "verdict_due": "2026-11-29T15:12:00+00:00"}
    assert _due_cell(row, now) == "in 3h12m"
    assert _due_cell({**row, "verdict_due": "2026-11-29T11:55:00+00:00"}, now) == "[red]overdue 5m[/]"
    assert _due_cell({**row, "verdict_due": "2026-11-26T10:00:00+00:00"}, now) == "[red]overdue 3d2h[/]"
    assert _due_cell({**row, "workflow_status": "COMPLETED"}, now) == ""  # closed: nothing is due
    assert _due_cell({**row, "verdict_due": None}, now) == ""  # no SLA for its severity
