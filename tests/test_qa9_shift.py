"""QA9 (a SOC shift lead's day with merges, `signoff contained` and rollback quorums).

Real dev server (visibility finds the cases by `ExecutedActions` and `HeldTargets`), the lab stand-in
as the hosts:
- an ended case's action that another case's rollback released since is not listed as contained;
- a merge hands an action the target holds too to the target (its rollback restores the original);
- explain of a running case: a rollback vote voided by a policy change, and who the quorum was
  (the audit export too);
- detaching an alert merged in after the score does not say the score included it;
- the governance report does not count a merged case as a late or missing verdict.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import WorkflowEnvironment

from connectors.lab import lab
from signoff.models import (
    CaseStatus,
    CloseRequest,
    DetachRequest,
    MergeRequest,
    RollbackRequest,
    StepState,
    Verdict,
)
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.test_containment import _isolated
from workflows.case import CaseWorkflow


def _rows(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_an_ended_case_still_holding_a_target_keeps_it_through_another_cases_rollback(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Any,
) -> None:
    """Two cases isolate one host; the second is closed and ends (its action still in effect); the
    first is rolled back. An ended case cannot be told (holds go to open cases only): the first's
    rollback reconnected the host while `contained` went on saying the ended case held it. Now the
    rollback leaves the host to the ended case (tests/test_ended_holders.py), and `contained` lists
    the ended case's isolation as in effect, released by nobody. (`released_by` stays for rollbacks
    recorded before: signoff/containment.py.)"""
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue, "COLUMNS": "250"}
    scoped = ["--query", f"TaskQueue='{task_queue}'"]
    host = f"ws-ended-{task_queue[-8:]}"
    async with settled_worker(client, task_queue):
        first = await _isolated(client, task_queue, host)
        second = await _isolated(client, task_queue, host)
        await second.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                     reason="implant"))
        await second.result()  # the lab policy has no rollback window: the verdict ends the case
        for _ in range(200):  # the ended case's HeldTargets in visibility
            if (await client.count_workflows(f"WorkflowId='{second.id}' AND ExecutionStatus != 'Running'")).count:
                break
            await asyncio.sleep(0.05)
        await first.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="admin tool"))
        view = await wait_for(first, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert lab().read("host", host)["network"] == "isolated"  # the ended case still holds it
        assert step(view, "isolate_host").state == StepState.kept

        rows: list[dict[str, Any]] = []
        for _ in range(100):  # visibility follows the upserts within moments
            listed = await acli(address, "contained", "--json", *scoped, env=env)
            assert listed.exit_code == 0, listed.output
            rows = _rows(listed.output)
            if {r["case_id"] for r in rows} == {second.id}:
                break
        (row,) = rows
        assert row["case_id"] == second.id and row["case_status"] == "closed"
        assert "released_by" not in row, listed.output
        assert row["state"] == {"network": "isolated"}

        table = await acli(address, "contained", *scoped, env=env)
        assert table.exit_code == 0, table.output
        said = " ".join(table.output.split())  # as wrapped to the terminal
        assert host in said and second.id in said and "no longer in effect" not in said, said


async def test_a_merge_hands_an_action_the_target_holds_too_to_the_target(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Any,
) -> None:
    """Both cases isolated one host (the source first). The source ends at the merge: it could never
    be told of the target's rollback, which restored the target's own captured state ("isolated")
    while the merged case still said its isolation was in effect. Now the merge hands the hold to the
    target: the target's rollback restores the state from before both, and nothing is left listed."""
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue, "COLUMNS": "250"}
    scoped = ["--query", f"TaskQueue='{task_queue}'"]
    host = f"ws-merged-{task_queue[-8:]}"
    async with settled_worker(client, task_queue):
        source = await _isolated(client, task_queue, host)
        target = await _isolated(client, task_queue, host)  # captured "isolated": the source's action
        reply = await source.execute_update(CaseWorkflow.merge_into, MergeRequest(
            target=target.id, requested_by="carol", reason="one incident"))
        assert f"handed over to {target.id}" in reply and "isolate_host" in reply, reply
        ended = await source.result()
        assert step(ended, "isolate_host").state == StepState.kept
        assert ended.merged_into is not None and "isolate_host" in ended.merged_into.handed_over_steps
        await target.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="admin tool"))
        await wait_for(target, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert lab().read("host", host)["network"] == "connected"  # the state from before both cases

        listed = await acli(address, "contained", "--json", *scoped, env=env)
        assert listed.exit_code == 0 and _rows(listed.output) == [], listed.output


async def test_explain_of_a_running_case_says_a_removed_requesters_rollback_vote_was_voided(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, tmp_path: Path,
) -> None:
    """rollback_quorum 2: alice asks, alice leaves the policy, bob asks (alice's vote voided, nothing
    undone), carol asks (the rollback runs). `signoff explain` of the case, still open for its verdict,
    must not say alice's request counted towards the quorum, and must name who the quorum was."""
    raw = yaml.safe_load(policy_file.read_text())
    raw["rollback_quorum"] = 2
    policy_file.write_text(yaml.safe_dump(raw))
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue, "COLUMNS": "250"}
    host = f"ws-quorum-{task_queue[-8:]}"
    async with settled_worker(client, task_queue):
        handle = await _isolated(client, task_queue, host)
        counted = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="alice",
                                                                                     reason="admin tool"))
        assert counted.startswith("rollback requested by alice (1/2"), counted
        raw = yaml.safe_load(policy_file.read_text())
        raw["approvers"].pop("alice")  # alice left the team
        policy_file.write_text(yaml.safe_dump(raw))
        voided = await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="bob", reason="agree"))
        assert "'alice' is no longer an approver" in voided and "nothing was undone" in voided, voided
        await handle.execute_update(CaseWorkflow.rollback, RollbackRequest(requested_by="carol", reason="agree too"))
        await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back")
        assert lab().read("host", host)["network"] == "connected"

        as_json = await acli(address, "explain", handle.id, "--json", env=env)
        assert as_json.exit_code == 0, as_json.output
        rollbacks = json.loads(as_json.output)["rollbacks"]
        assert [(r["requested_by"], r["outcome"]) for r in rollbacks] == [
            ("alice", "voided"), ("bob", "counted"), ("carol", "accepted")], rollbacks
        assert rollbacks[-1]["quorum_with"] == ["bob"]
        text = await acli(address, "explain", handle.id, env=env)
        said = " ".join(text.output.split())
        assert "Rollback request voided:" in said and "from alice" in said, said
        assert "by carol via update ('agree too'); the quorum with bob;" in said, said

        # The audit export names the quorum too (once the case has ended, with alice's vote voided).
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="carol", verdict=Verdict.benign_positive,
                                                                     reason="admin tool"))
        await handle.result()
        out = tmp_path / "audit.jsonl"
        exported = await acli(address, "audit", "export", "--out", str(out), env=env)
        assert exported.exit_code == 0, exported.output
        mine = [json.loads(line) for line in out.read_text().splitlines()]
        mine = [r for r in mine if r.get("workflow_id") == handle.id and "rollback" in r["kind"] + str(
            r["detail"].get("decision"))]
        assert [(r["kind"], r["actor"]) for r in mine] == [
            ("rollback_request_voided", "alice"), ("rollback_request", "bob"), ("rollback", "carol")], mine
        assert mine[-1]["detail"]["quorum_with"] == ["bob"]


async def test_detaching_an_alert_merged_in_after_the_score_does_not_say_the_score_included_it(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path,
) -> None:
    """A case merged into another after that one was scored brings alerts the score never saw; an
    analyst who detaches one back out was told "the case's score included it" (and explain listed it
    among the alerts the score was computed with)."""
    client = dev_env.client
    address = address_of(client)
    env = {"SIGNOFF_TASK_QUEUE": task_queue, "COLUMNS": "250"}
    tag = task_queue[-8:]
    async with settled_worker(client, task_queue):
        src_inp, dst_inp = case_input(alert_type="malware"), case_input(alert_type="malware")
        source = await start_case(client, task_queue, src_inp, alert(f"s1-{tag}", ("host", f"src-{tag}"),
                                                                     category="Malware"))
        target = await start_case(client, task_queue, dst_inp,
                                  alert(f"t1-{tag}", ("host", f"dst-{tag}"), category="Malware"),
                                  alert(f"t2-{tag}", ("host", f"dst-{tag}"), category="Malware"))
        await wait_for(source, awaiting("isolate_host"), "source waiting", attempts=600)
        await wait_for(target, awaiting("isolate_host"), "target scored and waiting", attempts=600)
        await source.execute_update(CaseWorkflow.merge_into, MergeRequest(target=target.id, requested_by="carol",
                                                                          reason="one actor"))
        await source.result()

        merged_in = await target.execute_update(CaseWorkflow.detach_alert, DetachRequest(
            alert_uid=f"s1-{tag}", requested_by="carol", reason="not this incident after all"))
        assert "score was computed with that alert" not in merged_in, merged_in
        scored_with = await target.execute_update(CaseWorkflow.detach_alert, DetachRequest(
            alert_uid=f"t2-{tag}", requested_by="carol", reason="other host group"))
        assert "score was computed with that alert" in scored_with, scored_with  # it was
        view = await target.query(CaseWorkflow.status)
        assert [(r.alert_uid, r.score_included) for r in view.detached_alerts] == [
            (f"s1-{tag}", False), (f"t2-{tag}", True)]

        shown = await acli(address, "show", target.id, env=env)
        said = " ".join(shown.output.split())
        assert f"the case's score included alert s1-{tag}" not in said, said
        assert f"the case's score included alert t2-{tag}" in said, said
        explained = await acli(address, "explain", target.id, "--json", env=env)
        assert json.loads(explained.output)["score"]["included_detached"] == [f"t2-{tag}"]


async def test_the_governance_report_does_not_count_a_merged_case_as_a_late_or_missing_verdict(
    dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path,
) -> None:
    """A merged case ends with no verdict by design (the case it went to carries the incident); the
    report counted it as "closed without a verdict", late against the SLA, and as a human-handled case
    without analyst feedback."""
    from datetime import UTC, datetime

    from policies.loader import load_policy
    from signoff.explain import explanation_from_history
    from signoff.governance_report import _closed_by_people, _time_to_verdict
    from signoff.history import decode_history

    client = dev_env.client
    tag = task_queue[-8:]
    async with settled_worker(client, task_queue):
        src_inp, dst_inp = case_input(alert_type="malware"), case_input(alert_type="malware")
        source = await start_case(client, task_queue, src_inp, alert(f"s1-{tag}", ("host", f"src-{tag}"),
                                                                     category="Malware"))
        target = await start_case(client, task_queue, dst_inp, alert(f"t1-{tag}", ("host", f"dst-{tag}"),
                                                                     category="Malware"))
        await wait_for(source, awaiting("isolate_host"), "source waiting", attempts=600)
        await wait_for(target, awaiting("isolate_host"), "target waiting", attempts=600)
        await source.execute_update(CaseWorkflow.merge_into, MergeRequest(target=target.id, requested_by="carol",
                                                                          reason="one actor"))
        await source.result()
        history = await decode_history(await source.fetch_history(), client.data_converter, source="live")
        ex = explanation_from_history(history)
    assert ex["merged_into"] and ex["workflow_status"] != "running"
    (row,) = _time_to_verdict([ex], load_policy(policy_file), datetime.now(UTC))
    assert (row["late"], row["closed_without_verdict"], row["merged"]) == (0, 0, 1), row
    assert _closed_by_people([ex]) == []

