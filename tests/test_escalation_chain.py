"""An escalation chain for high-impact approvals (policy `tiers.X.escalation`): a step that waits
without its approvals escalates once per level, each telling the approvers who hold that level's
roles, until a decision stops the chain; it never executes and never lets the people it told approve.
A tier with `timeout` alone escalates once, exactly as before. Real time-skipping Temporal server
(a server of this module's own: it skips a day); the policy file is a test copy of the lab policy."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_core import to_json
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.case import Escalation
from connectors.lab import lab
from policies.engine import Policy
from policies.loader import PolicyError, load_policy
from signoff.audit import case_events
from signoff.chat.messages import context_lines
from signoff.cli.cases import waiting_lines
from signoff.explain import explanation_from_history
from signoff.history import decode_history
from signoff.models import ApprovalRequest, CaseStatus, CloseRequest, RiskTier, StepState, Verdict
from tests.casekit import alert, awaiting, case_input, settled_worker, start_case, step, wait_for
from tests.policykit import digest_as_before
from tests.replay import recorded_patches
from workflows.case import CaseWorkflow
from workflows.case_escalation import ESCALATION_CHAIN


@pytest.fixture
def time_env(own_time_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return own_time_env  # this module skips a day past other tests' timers: a server of its own


def _set_tier(policy_file: Path, tier: str, **fields: Any) -> None:
    """Give `tier` these fields; `escalation=None` / `timeout=None` remove that field."""
    raw = yaml.safe_load(policy_file.read_text())
    rule = raw["tiers"][tier]
    for key, value in fields.items():
        if value is None:
            rule.pop(key, None)
        else:
            rule[key] = value
    raw.pop("verdict_sla", None)  # only approval escalations in these cases' queues
    policy_file.write_text(yaml.safe_dump(raw))


def _timeouts(home: Path, case_id: str) -> list[dict[str, Any]]:
    """The case's approval escalations in the escalation queue file, oldest first."""
    path = home / "escalations.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in records if r["case_id"] == case_id and r["kind"] == "approval_timeout"]


def _approval(step_id: str, who: str) -> ApprovalRequest:
    return ApprovalRequest(step=step_id, approver=who, reason="confirmed")


async def _malware_case(client: Any, task_queue: str) -> tuple[WorkflowHandle, str]:
    inp = case_input(alert_type="malware")
    host = f"host-{inp.case_id}"
    handle = await start_case(client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting")
    return handle, host


async def _escalate_inputs(handle: WorkflowHandle) -> list[dict[str, Any]]:
    """The `escalate` activity inputs as scheduled in the history (the commands' payloads)."""
    found = []
    for event in (await handle.fetch_history()).events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = event.activity_task_scheduled_event_attributes
        if attrs.activity_type.name == "escalate":
            found.append(json.loads(attrs.input.payloads[0].data))
    return found


async def _replays(handle: WorkflowHandle) -> None:
    replayer = Replayer(workflows=[CaseWorkflow], data_converter=pydantic_data_converter)
    assert (await replayer.replay_workflow(await handle.fetch_history())).replay_failure is None


async def test_a_waiting_step_passes_each_level_once_and_never_runs(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    # Level 2 tells a role that may not approve the tier: being told must not let erin approve.
    _set_tier(policy_file, "high", timeout=None, escalation=[{"after": "4h", "notify": ["lead"]},
                                                             {"after": "12h", "notify": ["detection_engineer"]}])
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, host = await _malware_case(client, task_queue)
        view = await handle.query(CaseWorkflow.status)
        gate = step(view, "isolate_host")
        assert gate.waiting_since is not None and gate.escalates_at == gate.waiting_since + timedelta(hours=4)
        since = gate.waiting_since
        assert [(s.level, s.notify, s.people, s.due, s.at) for s in gate.escalation_chain] == [
            (1, ("lead",), ("carol", "dave"), since + timedelta(hours=4), None),
            (2, ("detection_engineer",), ("erin",), since + timedelta(hours=12), None)]
        shown = " ".join(waiting_lines(view, load_policy(policy_file)))
        assert "escalates to lead (carol, dave) at" in shown and "then to detection_engineer (erin) at" in shown, shown

        # Level 1: the leads are told, once; the step keeps waiting, unexecuted.
        await time_env.sleep(timedelta(hours=5))
        view = await wait_for(handle, lambda v: step(v, "isolate_host").escalation_level == 1, "level 1")
        gate = step(view, "isolate_host")
        assert view.status == CaseStatus.escalated and gate.state == StepState.escalated
        assert gate.escalation_chain[0].at is not None and gate.escalation_chain[1].at is None
        assert gate.escalates_at == since + timedelta(hours=12)
        await wait_for(handle, lambda v: len(_timeouts(signoff_home, v.case_id)) == 1, "level 1 queued")
        shown = " ".join(waiting_lines(view, load_policy(policy_file)))
        assert "escalated to lead (carol, dave) at" in shown and "(level 1 of 2); next: detection_engineer (erin) at" \
            in shown, shown
        chat = "\n".join(context_lines(view, gate, load_policy(policy_file)))
        assert "*Escalated* to lead (carol, dave) at" in chat and "*Next* escalates to a human at" in chat \
            and "being told lets nobody approve): to detection_engineer (erin)" in chat, chat

        # Level 2, then nothing more however long it waits.
        await time_env.sleep(timedelta(hours=8))
        view = await wait_for(handle, lambda v: step(v, "isolate_host").escalation_level == 2, "level 2")
        await wait_for(handle, lambda v: len(_timeouts(signoff_home, v.case_id)) == 2, "level 2 queued")
        await time_env.sleep(timedelta(hours=24))
        view = await handle.query(CaseWorkflow.status)
        gate = step(view, "isolate_host")
        assert gate.state == StepState.escalated and gate.escalates_at is None and gate.result is None
        assert lab().read("host", host)["network"] == "connected"  # escalation never executes
        queued = _timeouts(signoff_home, view.case_id)
        assert [(q["level"], q["notify"], q["people"], q["step_id"]) for q in queued] == [
            (1, ["lead"], ["carol", "dave"], "isolate_host"), (2, ["detection_engineer"], ["erin"], "isolate_host")]
        levels = [e for e in view.escalations if "escalation level" in e]
        assert len(levels) == 2 and "level 1 of 2, to lead (carol, dave)" in levels[0] \
            and "level 2 of 2, to detection_engineer (erin); no further level" in levels[1], levels
        assert "that was the last level" in " ".join(waiting_lines(view, load_policy(policy_file)))

        # Told is not allowed: erin still may not approve a high step; alice (an analyst) may.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(CaseWorkflow.approve, _approval("isolate_host", "erin"))
        assert "needs one of ['analyst', 'lead', 'ir_manager']" in str(refused.value.cause)
        assert step(await handle.query(CaseWorkflow.status), "isolate_host").state == StepState.escalated
        await handle.execute_update(CaseWorkflow.approve, _approval("isolate_host", "alice"))
        await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "executed")
        assert lab().read("host", host)["network"] == "isolated"
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                     reason="confirmed"))
        await handle.result()

        history = await handle.fetch_history()
        assert ESCALATION_CHAIN in recorded_patches(history)
        ex = explanation_from_history(await decode_history(history, client.data_converter, source="live"))
        assert [(e["level"], e["notify"], e["people"]) for e in ex["escalations"]] == [
            (1, ["lead"], ["carol", "dave"]), (2, ["detection_engineer"], ["erin"])]
        exported = [e["detail"] for e in case_events(await decode_history(history, client.data_converter,
                                                                          source="live"))
                    if e["kind"] == "escalation"]
        assert [(d["level"], d["notify"], d["people"]) for d in exported] == [
            (1, ["lead"], ["carol", "dave"]), (2, ["detection_engineer"], ["erin"])]
        await _replays(handle)


async def test_an_approval_between_levels_stops_the_chain(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    _set_tier(policy_file, "high", timeout=None, escalation=[{"after": "4h", "notify": ["lead"]},
                                                             {"after": "12h", "notify": ["ir_manager"]}])
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, host = await _malware_case(client, task_queue)
        await time_env.sleep(timedelta(hours=5))
        await wait_for(handle, lambda v: step(v, "isolate_host").escalation_level == 1, "level 1")
        await handle.execute_update(CaseWorkflow.approve, _approval("isolate_host", "bob"))
        view = await wait_for(handle, lambda v: step(v, "isolate_host").state == StepState.executed, "executed")
        await time_env.sleep(timedelta(hours=10))  # past where level 2 would have been due
        view = await handle.query(CaseWorkflow.status)
        gate = step(view, "isolate_host")
        assert gate.escalation_level == 1 and gate.escalation_chain[1].at is None
        assert [q["level"] for q in _timeouts(signoff_home, view.case_id)] == [1]
        assert sum("escalation level" in e for e in view.escalations) == 1
        assert len(await _escalate_inputs(handle)) == 1
        await handle.execute_update(CaseWorkflow.close, CloseRequest(analyst="alice", verdict=Verdict.true_positive,
                                                                     reason="confirmed"))
        await handle.result()
        await _replays(handle)


async def test_a_partial_quorum_does_not_stop_the_chain_or_run_the_step(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    """The critical tier needs two approvals: one, between the levels, is not a decision."""
    _set_tier(policy_file, "critical", timeout=None, escalation=[{"after": "8h", "notify": ["lead"]},
                                                                 {"after": "24h", "notify": ["ir_manager"]}])
    client = time_env.client
    async with settled_worker(client, task_queue):
        inp = case_input()  # compromised_account: disable_account (high), then revoke_sessions (critical)
        account = f"acct-{inp.case_id}"
        handle = await start_case(client, task_queue, inp, alert("a1", ("account", account)))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting")
        await handle.execute_update(CaseWorkflow.approve, _approval("disable_account", "alice"))
        await wait_for(handle, awaiting("revoke_sessions"), "revoke_sessions waiting")
        await time_env.sleep(timedelta(hours=9))
        await wait_for(handle, lambda v: step(v, "revoke_sessions").escalation_level == 1, "level 1")
        await handle.execute_update(CaseWorkflow.approve, _approval("revoke_sessions", "carol"))  # 1 of 2
        await time_env.sleep(timedelta(hours=16))
        view = await wait_for(handle, lambda v: step(v, "revoke_sessions").escalation_level == 2, "level 2")
        gate = step(view, "revoke_sessions")
        assert gate.state == StepState.escalated and gate.result is None
        assert [(q["level"], q["people"]) for q in _timeouts(signoff_home, inp.case_id)
                if q["step_id"] == "revoke_sessions"] == [(1, ["carol", "dave"]), (2, ["dave"])]
        assert lab().read("account", account).get("sessions_revoked_at") is None
        await handle.terminate("test done")


async def test_a_tier_with_a_timeout_alone_escalates_once_as_before(
    time_env: WorkflowEnvironment, task_queue: str, policy_file: Path, signoff_home: Path
) -> None:
    _set_tier(policy_file, "high", escalation=None, timeout="4h")
    client = time_env.client
    async with settled_worker(client, task_queue):
        handle, host = await _malware_case(client, task_queue)
        view = await handle.query(CaseWorkflow.status)
        assert step(view, "isolate_host").escalation_chain == ()
        await time_env.sleep(timedelta(hours=5))
        view = await wait_for(handle, lambda v: v.status == CaseStatus.escalated, "escalated")
        await time_env.sleep(timedelta(hours=24))
        view = await handle.query(CaseWorkflow.status)
        gate = step(view, "isolate_host")
        assert gate.state == StepState.escalated and gate.escalation_level == 1 and gate.result is None
        assert gate.waiting_since is not None and gate.escalates_at == gate.waiting_since + timedelta(hours=4)
        # The command and the queue line are what they always were: no chain fields, the same words.
        message = (f"step isolate_host (isolate_host on host {host}) waited 4:00:00 without the approvals its "
                   "tier needs")
        assert await _escalate_inputs(handle) == [
            {"case_id": view.case_id, "reason": message, "step_id": "isolate_host", "kind": "approval_timeout"}]
        (queued,) = _timeouts(signoff_home, view.case_id)
        assert set(queued) == {"at", "case_id", "reason", "step_id", "kind"} and queued["reason"] == message
        assert [e for e in view.escalations if "waited" in e] == [message]
        shown = " ".join(waiting_lines(view, load_policy(policy_file)))
        assert "escalated to a human; it keeps waiting, with no further deadline" in shown, shown
        assert ESCALATION_CHAIN not in recorded_patches(await handle.fetch_history())
        await handle.terminate("test done")


def test_escalation_without_a_chain_is_the_same_bytes() -> None:
    plain = Escalation(case_id="c", reason="r", step_id="s")
    assert to_json(plain) == b'{"case_id":"c","reason":"r","step_id":"s","kind":"approval_timeout"}'
    assert set(plain.model_dump()) == {"case_id", "reason", "step_id", "kind"}
    chained = Escalation(case_id="c", reason="r", step_id="s", level=2, notify=("lead",), people=("carol",))
    assert json.loads(to_json(chained))["people"] == ["carol"]


REFUSED = {
    "unknown role": ([{"after": "4h", "notify": ["lead"]}, {"after": "12h", "notify": ["ciso"]}], None,
                     ("tiers.high.escalation[1].notify names ['ciso'], which no approver holds",
                      "nobody would be told", "roles approvers hold: ['analyst',")),
    "durations not increasing": ([{"after": "4h", "notify": ["lead"]}, {"after": "4h", "notify": ["ir_manager"]}],
                                 None, ("tiers.high", "escalation[1].after 4h is not later than escalation[0].after 4h",
                                        "durations must increase")),
    "timeout disagrees": ([{"after": "1h", "notify": ["lead"]}], "4h",
                          ("tiers.high", "timeout 4h and escalation[0].after 1h disagree", "drop timeout")),
    "nobody to notify": ([{"after": "4h", "notify": []}], None,
                         ("tiers.high.escalation.0.notify", "notify is empty")),
    "not a duration": ([{"after": "soon", "notify": ["lead"]}], None,
                       ("tiers.high.escalation.0.after", "is not like '30s', '15m', '4h' or '7d'")),
    "zero": ([{"after": "0m", "notify": ["lead"]}], None, ("give a duration above zero",)),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_chain_is_refused_at_load(case: str, policy_file: Path) -> None:
    chain, timeout, words = REFUSED[case]
    _set_tier(policy_file, "high", escalation=chain, timeout=timeout)
    with pytest.raises(PolicyError) as info:
        load_policy(policy_file)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_an_automatic_tier_takes_no_chain_and_an_agreeing_timeout_is_fine(policy_file: Path) -> None:
    _set_tier(policy_file, "low", escalation=[{"after": "1h", "notify": ["lead"]}])
    with pytest.raises(PolicyError, match="tiers.low.escalation is set, but the tier is automatic"):
        load_policy(policy_file)
    _set_tier(policy_file, "low", escalation=None)
    _set_tier(policy_file, "high", timeout="60m", escalation=[{"after": "1h", "notify": ["lead"]}])
    assert load_policy(policy_file).tiers[RiskTier.high].timeout == "60m"  # the same duration, spelt otherwise
    _set_tier(policy_file, "high", timeout=None)
    assert load_policy(policy_file).tiers[RiskTier.high].timeout == "1h"  # the first level is the timeout


def test_a_policy_without_a_chain_keeps_its_digest(policy_file: Path) -> None:
    _set_tier(policy_file, "high", escalation=None, timeout="4h")
    _set_tier(policy_file, "critical", escalation=None, timeout="8h")
    policy = load_policy(policy_file)
    dumped = policy.model_dump(mode="json")
    assert all(rule["escalation"] == [] for rule in dumped["tiers"].values())  # the field is there, empty
    for rule in dumped["tiers"].values():  # the policy as it was before the field existed
        del rule["escalation"]
    assert policy.digest() == digest_as_before(dumped)
    # An explicit empty chain is no chain; a chain is policy content and changes the version.
    _set_tier(policy_file, "high", escalation=[])
    assert load_policy(policy_file).digest() == policy.digest()
    _set_tier(policy_file, "high", escalation=[{"after": "4h", "notify": ["lead"]}], timeout=None)
    assert load_policy(policy_file).digest() != policy.digest()
    assert Policy.model_validate(dumped).digest() == policy.digest()


def test_the_shipped_policies_have_chains() -> None:
    shipped = load_policy()
    assert [(lv.after, lv.notify) for lv in shipped.tiers[RiskTier.high].escalation] == [("4h", ("lead",)), ("12h", ("ir_manager",))]
    assert shipped.tiers[RiskTier.high].timeout == "4h" and shipped.tiers[RiskTier.critical].timeout == "8h"  # the timeouts they had
    example = load_policy(Path(__file__).resolve().parent.parent / "deploy/policy.example.yaml")
    assert [(lv.after, lv.notify) for lv in example.tiers[RiskTier.high].escalation] == [("1h", ("lead",)),
                                                                                  ("4h", ("ir_manager",))]
    critical = example.tiers[RiskTier.critical].escalation
    assert [(lv.after, lv.notify) for lv in critical] == [("30m", ("ir_manager",)), ("2h", ("executive",))]
    assert example.holders_of(("executive",)) and not set(example.tiers[RiskTier.critical].roles) & {"executive"}
