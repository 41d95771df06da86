"""Verdicts and rollback requests from Slack, on the real dev server (signoff/chat/).

A case that waits for an analyst's verdict, or that has executed a high-impact action a rollback can
restore, gets a message of its own with Close with verdict / Request rollback. The verdict goes to
the case's `close` update (as `signoff close` sends it), the rollback request by the way `signoff
rollback` sends it: the case's `rollback` update while it runs, its undo workflow `CASE-undo` after
it ended. Both as the approver the policy maps the Slack user to, signed with the bridge's key
(`trust_unsigned_approvals: false`). Slack's side is the stateful fake (connectors/fakes/slack.py),
which signs each click and submission as Slack does; the actions run against the lab connectors.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from connectors.fakes.slack import FakeSlack
from connectors.http import Secret
from connectors.lab import lab
from connectors.slack import Slack
from policies.signing import token_channel
from signoff.chat.bridge import SlackBridge
from signoff.chat.messages import CASE_ITEM, CLOSE_ACTION, ROLLBACK_ACTION
from signoff.chat.store import PostedMessages
from signoff.models import CaseStatus, CaseView, StepState, Verdict
from signoff.undo import UndoStatus, read_undo, undo_id
from signoff.worker import build_worker
from tests.auditkit import cli_process
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from tests.test_chat_approvals import CHANNEL, Rig, _accepted_updates, _policy_dict, _refused_log
from workflows.case import CaseWorkflow

APPROVERS: dict[str, dict[str, Any]] = {
    "alice": {"roles": ["analyst"], "slack_user": "U0ALICE"},
    "bob": {"roles": ["analyst"], "slack_user": "U0BOB"},
    "carol": {"roles": ["lead"], "slack_user": "U0CAROL"},
    "dave": {"roles": ["lead", "ir_manager"], "slack_user": "U0DAVE"},
    "frank": {"roles": ["detection_engineer"], "slack_user": "U0FRANK"},  # no rollback role
}
PATIENCE = 2400


@pytest.fixture
def rollback_quorum() -> int:
    return 1


@pytest.fixture
async def crig(dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, rollback_quorum: int,
               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    key = Ed25519PrivateKey.generate()
    policy = _policy_dict(key, APPROVERS)
    policy.pop("rollback_window", None)  # a verdict ends the case: a later rollback goes to CASE-undo
    policy["rollback_quorum"] = rollback_quorum
    policy_file.write_text(yaml.safe_dump(policy))
    home = tmp_path / "bridge-home"
    monkeypatch.setenv("SIGNOFF_HOME", str(home))  # the refused log, the posted messages, the CLI's too
    fake = FakeSlack()
    fake.trigger_ttl = 600.0  # Slack's 3 s limits are not raced on a loaded box (see test_chat_approvals)
    fake.add_channel(CHANNEL)
    slack = Slack(Secret(FakeSlack.token), "https://slack.invalid/api", transport=fake.transport())
    bridge = SlackBridge(dev_env.client, slack, CHANNEL, key, FakeSlack.signing_secret,
                         store=PostedMessages.for_channel("slack", CHANNEL, home), task_queue=task_queue)
    bridge.rollback_answer_wait = 15.0  # the modal answers with the outcome (under the endpoint's 20 s), not "sent"
    async with build_worker(dev_env.client, task_queue), bridge.listening("127.0.0.1", 0) as url:
        yield Rig(dev_env.client, fake, bridge, url, key, home)
    await slack.aclose()


# ---------------------------------------------------------------- helpers


def _case_message(rig: Rig, case_id: str) -> dict[str, Any] | None:
    posted = rig.bridge.store.get(case_id, CASE_ITEM)
    return rig.fake.message(CHANNEL, posted.ts) if posted is not None else None


def _settled(rig: Rig, case_id: str) -> bool:
    """The bridge is done with the case's message: the case ended and nothing more can change it."""
    item = rig.bridge.store.get(case_id, CASE_ITEM)
    return item is not None and item.done


def _buttons(msg: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]


async def _until_message(rig: Rig, case_id: str, predicate: Callable[[dict[str, Any]], bool],
                         what: str) -> dict[str, Any]:
    """Notifier passes until the case's own message satisfies `predicate` (the bridge refreshes it
    behind its answers, and visibility may lag a little)."""
    msg = None
    for _ in range(400):
        msg = _case_message(rig, case_id)
        if msg is not None and predicate(msg):
            return msg
        await rig.bridge.notify_once()
        await asyncio.sleep(0.05)
    raise AssertionError(f"the message of {case_id} never showed {what}: {msg}")


async def _open_modal(rig: Rig, user: str, case_id: str, action: str) -> str:
    return await rig.click(user, case_id, CASE_ITEM, action)


async def _close(rig: Rig, user: str, case_id: str, grade: str, reason: str) -> dict[str, Any]:
    """`user` clicks Close with verdict, picks `grade`, types `reason`, submits: the bridge's answer."""
    view_id = await _open_modal(rig, user, case_id, CLOSE_ACTION)
    response = await rig.fake.submit(rig.url, user, view_id, {"grade": grade, "reason": reason})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _ask_rollback(rig: Rig, user: str, case_id: str, reason: str) -> dict[str, Any]:
    view_id = await _open_modal(rig, user, case_id, ROLLBACK_ACTION)
    return await rig.submit(user, view_id, reason)


async def _analyst_case(rig: Rig, task_queue: str) -> WorkflowHandle:
    """A drift case: not scored, so an analyst decides; its playbook (tag, watch) runs on its own.
    Its alert type's `close_roles` are [detection_engineer, lead, ir_manager]: not an analyst."""
    inp = case_input(alert_type="model_drift", requested_by="signoff-drift")
    handle = await start_case(rig.client, task_queue, inp, alert("d1", ("host", f"h-{inp.case_id}"),
                                                                 title="score drift", category="Drift"))
    view = await wait_for(handle, lambda v: v.status == CaseStatus.awaiting_verdict, "awaiting a verdict",
                          attempts=PATIENCE)
    assert view.decision is not None and view.decision.kind.value == "analyst"
    return handle


async def _contained_case(rig: Rig, task_queue: str) -> tuple[WorkflowHandle, str]:
    """A malware case whose isolate_host alice approved from Slack and the lab executed: (handle, host)."""
    inp = case_input(alert_type="malware")
    host = f"host-{inp.case_id}"
    handle = await start_case(rig.client, task_queue, inp, alert("m1", ("host", host), category="Malware"))
    await wait_for(handle, awaiting("isolate_host"), "isolate_host waiting", attempts=PATIENCE)
    await rig.pass_until(handle.id, 1)
    _, answer = await rig.decide("U0ALICE", handle.id, "isolate_host", "beaconing to a known C2")
    assert answer["response_action"] == "update", answer
    await wait_for(handle, lambda v: v.status == CaseStatus.contained, "contained", attempts=PATIENCE)
    assert lab().read("host", host)["network"] == "isolated"
    return handle, host


def _env(rig: Rig, task_queue: str) -> dict[str, str]:
    return {**os.environ, "TEMPORAL_ADDRESS": rig.client.service_client.config.target_host,
            "SIGNOFF_TASK_QUEUE": task_queue}


# ---------------------------------------------------------------- verdicts


async def test_a_verdict_from_slack_closes_the_case_as_the_mapped_analyst(crig: Rig, task_queue: str) -> None:
    handle = await _analyst_case(crig, task_queue)
    cid = handle.id
    msg = await _until_message(crig, cid, lambda m: True, "anything")
    text = msg["text"]
    assert ":mag: *Verdict needed*" in text and "*Decision* analyst" in text and "*Alert type* model_drift" in text
    assert "*Who may close* detection_engineer, lead, ir_manager" in text, text
    assert _buttons(msg) == [CLOSE_ACTION], "nothing ran that a rollback could restore: no rollback button"

    # The modal asks for a grade (the CLI's three) and a reason; both are required.
    view_id = await _open_modal(crig, "U0CAROL", cid, CLOSE_ACTION)
    modal = crig.fake.views[view_id]
    select = next(b for b in modal["blocks"] if b.get("block_id") == "grade")["element"]
    assert [o["value"] for o in select["options"]] == [v.value for v in Verdict]
    missing = (await crig.fake.submit(crig.url, "U0CAROL", view_id, {"reason": "no grade"})).json()
    assert missing["response_action"] == "errors" and "grade" in missing["errors"], missing
    assert (await handle.query(CaseWorkflow.status)).verdict is None

    answer = await _close(crig, "U0CAROL", cid, "FalsePositive", "the drift came from a replayed test feed")
    assert answer["response_action"] == "update", answer
    assert "carol: closing with verdict FalsePositive" in json.dumps(answer["view"]), answer
    final: CaseView = await handle.result()
    assert final.status == CaseStatus.closed and final.verdict is not None
    assert (final.verdict.analyst, final.verdict.verdict, final.verdict.reason) == (
        "carol", Verdict.false_positive, "the drift came from a replayed test feed")
    assert token_channel(final.verdict.token) == "slack:U0CAROL", "signed by the bridge for carol's Slack id"

    # The message says who closed it, how and why; no button is left; the case is done for the bridge.
    msg = await _until_message(crig, cid, lambda m: _settled(crig, cid), "the verdict, settled")
    assert ":lock: *Closed* with verdict *FalsePositive* by carol via Slack U0CAROL: the drift came from a " \
           "replayed test feed" in msg["text"], msg["text"]
    assert _buttons(msg) == []

    # show and explain tell the verdict, its grade, reason and who gave it.
    code, out, err = await cli_process("show", cid, env=_env(crig, task_queue))
    assert code == 0, err
    assert "verdict: FalsePositive by carol (the drift came from a replayed test feed)" in " ".join(out.split()), out
    code, out, err = await cli_process("explain", cid, env=_env(crig, task_queue))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "Verdict: FalsePositive by carol via Slack U0CAROL" in flat, flat
    assert "'the drift came from a replayed test feed'" in flat, flat
    assert not _refused_log(crig.home)


async def test_a_verdict_from_outside_close_roles_is_refused_recorded_and_the_case_stays_open(
        crig: Rig, task_queue: str) -> None:
    handle = await _analyst_case(crig, task_queue)
    cid = handle.id
    await _until_message(crig, cid, lambda m: CLOSE_ACTION in _buttons(m), "the close button")
    updates_before = await _accepted_updates(handle)

    # alice is an analyst, but a drift case's close_roles are [detection_engineer, lead, ir_manager].
    answer = await _close(crig, "U0ALICE", cid, "TruePositive", "looks real to me")
    assert answer["response_action"] == "errors", answer
    refusal = answer["errors"]["reason"]
    assert "'alice' has roles ['analyst']; closing a case needs one of ['detection_engineer', 'lead', " \
           "'ir_manager']" in refusal, refusal
    # A Slack user no approver declares: refused by the bridge, before the case.
    answer = await _close(crig, "U0STRANGER", cid, "BenignPositive", "whatever")
    assert answer["response_action"] == "errors" and "U0STRANGER is not an approver in policy" in \
        answer["errors"]["reason"], answer

    refused = _refused_log(crig.home)
    assert [(r["kind"], r["analyst"], r["verdict"], r["via"], r["signed"]) for r in refused] == [
        ("refused_close", "alice", "TruePositive", "slack:U0ALICE", True),
        ("refused_close", None, "BenignPositive", "slack:U0STRANGER", False)]
    assert "closing a case needs one of" in refused[0]["refusal"] and all("token" not in r for r in refused)

    # The case is as it was: running, no verdict, nothing written to its history; the button stays.
    view = await handle.query(CaseWorkflow.status)
    assert view.verdict is None and view.status == CaseStatus.awaiting_verdict
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    assert await _accepted_updates(handle) == updates_before
    await crig.bridge.notify_once()
    msg = _case_message(crig, cid)
    assert msg is not None and CLOSE_ACTION in _buttons(msg) and "*Verdict needed*" in msg["text"]

    # explain lists the refusal with the Slack user it came from.
    code, out, err = await cli_process("explain", cid, env=_env(crig, task_queue))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "refused_close step - by alice via Slack U0ALICE" in flat and "closing a case needs one of" in flat, flat
    await handle.terminate("test done")


# ---------------------------------------------------------------- rollback


async def test_a_rollback_from_slack_restores_the_target_and_the_message_says_so(crig: Rig, task_queue: str) -> None:
    handle, host = await _contained_case(crig, task_queue)
    cid = handle.id
    # Once an action ran, the case's message offers the rollback (and, waiting for its verdict, the close).
    msg = await _until_message(crig, cid, lambda m: ROLLBACK_ACTION in _buttons(m), "the rollback button")
    assert "*Action* `isolate_host`: isolate_host on host" in msg["text"] and "· executed ·" in msg["text"]
    assert _buttons(msg) == [CLOSE_ACTION, ROLLBACK_ACTION]

    # frank holds no rollback role: the case refuses him, the modal says why, it is recorded.
    answer = await _ask_rollback(crig, "U0FRANK", cid, "I think it was a test")
    assert answer["response_action"] == "errors", answer
    assert "'frank' may not roll back: needs one of the roles ['analyst', 'lead', 'ir_manager']" in \
        answer["errors"]["reason"], answer
    assert lab().read("host", host)["network"] == "isolated"

    answer = await _ask_rollback(crig, "U0BOB", cid, "the beacon was our own scanner")
    assert answer["response_action"] == "update", answer
    assert "bob: rolled back" in json.dumps(answer["view"]), answer
    view = await wait_for(handle, lambda v: v.status == CaseStatus.rolled_back, "rolled back", attempts=PATIENCE)
    assert lab().read("host", host)["network"] == "connected", "the captured state is restored"
    assert step(view, "isolate_host").state == StepState.compensated
    assert view.rollback is not None and view.rollback.requested_by == "bob"
    assert token_channel(view.rollback.token) == "slack:U0BOB"

    msg = await _until_message(crig, cid, lambda m: "*Rolled back*" in m["text"], "the rollback's outcome")
    assert "*Rolled back* (asked by bob via Slack U0BOB: the beacon was our own scanner); restored: " in msg["text"]
    assert f"`isolate_host` (host `{host}`)" in msg["text"].split("restored: ")[1], msg["text"]
    assert ROLLBACK_ACTION not in _buttons(msg), "nothing left to roll back"
    refused = _refused_log(crig.home)
    assert [(r["kind"], r["requested_by"], r["via"]) for r in refused] == [
        ("refused_rollback", "frank", "slack:U0FRANK")]
    code, out, err = await cli_process("explain", cid, env=_env(crig, task_queue))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "by bob via Slack U0BOB via update (signed) ('the beacon was our own scanner')" in flat, flat
    assert "refused_rollback step - by frank via Slack U0FRANK" in flat, flat
    await handle.terminate("test done")


@pytest.mark.parametrize("rollback_quorum", [2])
async def test_a_rollback_after_close_with_quorum_2_needs_two_different_slack_users(
        crig: Rig, task_queue: str) -> None:
    handle, host = await _contained_case(crig, task_queue)
    cid = handle.id
    await _until_message(crig, cid, lambda m: CLOSE_ACTION in _buttons(m), "the close button")
    answer = await _close(crig, "U0CAROL", cid, "TruePositive", "confirmed C2")
    assert answer["response_action"] == "update", answer
    await handle.result()  # no rollback window: the verdict ends the case

    # Ended, with an action that can still be undone: the message keeps the rollback button.
    msg = await _until_message(crig, cid, lambda m: "*Closed*" in m["text"] and "has ended" in m["text"],
                               "the ended case")
    assert _buttons(msg) == [ROLLBACK_ACTION], msg["blocks"]
    assert f"`{undo_id(cid)}`" in msg["text"] and "quorum 2" in msg["text"]

    # alice asks: counted (1 of 2), nothing undone.
    answer = await _ask_rollback(crig, "U0ALICE", cid, "the C2 was a sinkhole")
    assert answer["response_action"] == "update", answer
    assert "(1/2, asked: alice)" in json.dumps(answer["view"]), answer
    msg = await _until_message(crig, cid, lambda m: "1 of 2" in m["text"], "the first request")
    assert "*Rollback after close requested* 1 of 2 (asked: alice)" in msg["text"], msg["text"]
    assert lab().read("host", host)["network"] == "isolated"

    # alice again (a second modal): the same person counts once; refused and recorded.
    answer = await _ask_rollback(crig, "U0ALICE", cid, "please, really")
    assert answer["response_action"] == "errors", answer
    assert "'alice' has already asked for this rollback" in answer["errors"]["reason"], answer
    undo = await read_undo(crig.client, cid)
    assert undo is not None and [v.requested_by for v in undo.votes] == ["alice"]
    assert lab().read("host", host)["network"] == "isolated"

    # bob makes two: the undo workflow restores the host; the message says so, no button is left.
    answer = await _ask_rollback(crig, "U0BOB", cid, "agreed: sinkhole")
    assert answer["response_action"] == "update", answer
    assert "rollback after close" in json.dumps(answer["view"]), answer
    assert lab().read("host", host)["network"] == "connected"
    undo = await read_undo(crig.client, cid)
    assert undo is not None and undo.status == UndoStatus.rolled_back
    assert undo.runs and undo.runs[-1].requested_by == ("alice", "bob")
    msg = await _until_message(crig, cid, lambda m: _settled(crig, cid), "the undo's outcome, settled")
    assert "*Rolled back after close* in" in msg["text"] and "(asked by alice, bob); restored: `isolate_host`" \
        in msg["text"], msg["text"]
    assert _buttons(msg) == []
    refused = _refused_log(crig.home)
    assert [(r["kind"], r["requested_by"], r["via"]) for r in refused] == [
        ("refused_rollback", "alice", "slack:U0ALICE")]
    assert "has already asked" in refused[0]["refusal"]


async def test_forged_slack_requests_for_verdicts_and_rollbacks_are_refused(crig: Rig, task_queue: str) -> None:
    handle, host = await _contained_case(crig, task_queue)
    cid = handle.id
    msg = await _until_message(crig, cid, lambda m: ROLLBACK_ACTION in _buttons(m), "the buttons")
    updates_before = await _accepted_updates(handle)
    refused_before = crig.bridge.refused_requests
    calls_before = len(crig.fake.calls)
    for action in (CLOSE_ACTION, ROLLBACK_ACTION):
        click = crig.fake.block_actions("U0CAROL", CHANNEL, msg["ts"], action)
        for kwargs in ({"secret": "not-the-signing-secret"}, {"timestamp": int(time.time()) - 301}):
            response = await crig.fake.send(crig.url, click, **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 401, (action, kwargs)
    assert len(crig.fake.calls) == calls_before, "a refused click opens no modal"

    # Genuine modals, submitted with a bad signature, a stale one, or none.
    close_view = await _open_modal(crig, "U0CAROL", cid, CLOSE_ACTION)
    rollback_view = await _open_modal(crig, "U0CAROL", cid, ROLLBACK_ACTION)
    calls_before = len(crig.fake.calls)
    submissions = [crig.fake.view_submission("U0CAROL", close_view, {"grade": "FalsePositive", "reason": "forged"}),
                   crig.fake.view_submission("U0CAROL", rollback_view, {"reason": "forged"})]
    for submission in submissions:
        response = await crig.fake.send(crig.url, submission, secret="not-the-signing-secret")
        assert response.status_code == 401 and "bad signature" in response.text
        response = await crig.fake.send(crig.url, submission, timestamp=int(time.time()) - 3600)
        assert response.status_code == 401 and "stale" in response.text
        async with httpx.AsyncClient() as http:
            response = await http.post(crig.url, data={"payload": json.dumps(submission)})
        assert response.status_code == 401
    assert crig.bridge.refused_requests - refused_before == 4 + 6
    assert len(crig.fake.calls) == calls_before, "a refused request calls no Slack API"
    assert await _accepted_updates(handle) == updates_before, "nothing reached the case"
    view = await handle.query(CaseWorkflow.status)
    assert view.verdict is None and view.status == CaseStatus.contained and view.rollback_votes == ()
    assert lab().read("host", host)["network"] == "isolated"
    assert not _refused_log(crig.home), "refused at the door: no decision was ever made"
    await handle.terminate("test done")


async def test_a_rollback_slower_than_slacks_answer_is_answered_sent_and_the_message_follows(
        crig: Rig, task_queue: str) -> None:
    """Slack wants the modal's answer within 3 s: a rollback not finished by then (here: at once) is
    answered "sent", and the channel message shows its outcome when it comes."""
    handle, host = await _contained_case(crig, task_queue)
    cid = handle.id
    await _until_message(crig, cid, lambda m: CLOSE_ACTION in _buttons(m), "the close button")
    answer = await _close(crig, "U0DAVE", cid, "BenignPositive", "authorised red team exercise")
    assert answer["response_action"] == "update", answer
    await handle.result()
    await _until_message(crig, cid, lambda m: "has ended" in m["text"], "the ended case")

    crig.bridge.rollback_answer_wait = 0.0
    answer = await _ask_rollback(crig, "U0CAROL", cid, "red team: put the host back")
    assert answer["response_action"] == "update", answer
    assert f"carol: rollback request sent to {undo_id(cid)} (the case has ended)" in json.dumps(answer["view"]), answer
    msg = await _until_message(crig, cid, lambda m: _settled(crig, cid), "the undo's outcome, settled")
    assert "*Rolled back after close* in" in msg["text"] and "(asked by carol); restored: `isolate_host`" \
        in msg["text"], msg["text"]
    assert lab().read("host", host)["network"] == "connected"
    assert not _refused_log(crig.home)
