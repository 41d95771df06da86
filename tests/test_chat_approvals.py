"""Approvals from Slack, bound to identity (anchors gap 8), on the real dev server.

The chat bridge runs for real: its interactivity endpoint on a loopback port, its notifier reading
Temporal visibility and the cases' `status` queries. Slack's Web API is the stateful fake
(connectors/fakes/slack.py), which also plays the Slack users: it signs each button click and modal
submission with the app's signing secret and POSTs it to the bridge, as Slack does.

Policy: `trust_unsigned_approvals: false`; the bridge's public key in `deployment.chat_bridges.slack`;
approvers map to Slack users through `slack_user`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from connectors.fakes.slack import FakeSlack
from connectors.http import Secret
from connectors.slack import Slack, SlackApiError, signature, signature_refusal
from policies.engine import Policy
from policies.loader import PolicyError, load_policy
from policies.signing import public_key_text, sign_approval, token_channel, token_refusal
from signoff.chat.bridge import SlackBridge
from signoff.chat.messages import APPROVE_ACTION, REJECT_ACTION
from signoff.chat.store import PostedMessages
from signoff.models import ApprovalRequest, StepState
from signoff.worker import build_worker
from tests.auditkit import cli_process
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from tests.policykit import digest_as_before
from workflows.case import CaseWorkflow

CHANNEL = "C0SOC"
APPROVERS: dict[str, dict[str, Any]] = {
    "alice": {"roles": ["analyst"], "slack_user": "U0ALICE"},
    "bob": {"roles": ["analyst"], "slack_user": "U0BOB"},  # requests the test cases
    "carol": {"roles": ["lead"], "slack_user": "U0CAROL"},
    "dave": {"roles": ["lead", "ir_manager"], "slack_user": "U0DAVE"},
    "erin": {"roles": ["lead"]},  # no Slack id: no Slack approval can count for her
    "frank": {"roles": ["detection_engineer"]},  # every role the policy's lists name is held (the loader checks)
}
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CAROL_OWN_KEY = Ed25519PrivateKey.generate()  # carol also signs with her own key (`signoff approve`)


def _policy_dict(bridge: Ed25519PrivateKey | None, approvers: dict[str, dict[str, Any]] | None = None) -> dict:
    from policies.loader import default_policy_path

    policy = yaml.safe_load(default_policy_path().read_text())
    policy["deployment"] = {"trust_unsigned_approvals": False, "approval_token_max_ttl": "1h"}
    if bridge is not None:
        policy["deployment"]["chat_bridges"] = {"slack": {"public_key": public_key_text(bridge)}}
    policy["approvers"] = json.loads(json.dumps(approvers or APPROVERS))
    return policy


# ---------------------------------------------------------------- unit: tokens


def _refusal(policy: Policy, token: str | None, approver: str = "alice", step_id: str = "disable_account",
             used: set[str] | None = None) -> str | None:
    return token_refusal(policy, case_id="case-1", step=step_id, decision="approve", approver=approver,
                         token=token, now=NOW, used_nonces=used if used is not None else set())


def _bridge_token(key: Ed25519PrivateKey, approver: str = "alice", via: str = "slack:U0ALICE", **kw: Any) -> str:
    return sign_approval(key, case_id="case-1", step="disable_account", decision="approve", approver=approver,
                         now=kw.pop("now", NOW), via=via, **kw)


def test_bridge_tokens_verify_only_for_the_declared_slack_user() -> None:
    bridge, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    policy = Policy.model_validate(_policy_dict(bridge))
    good = _bridge_token(bridge)
    assert _refusal(policy, good) is None
    assert token_channel(good) == "slack:U0ALICE"
    cases = {
        "unknown bridge": (_bridge_token(bridge, via="teams:U0ALICE"), "alice", "'teams' chat bridge"),
        "malformed via": (_bridge_token(bridge, via="U0ALICE"), "alice", "is not like 'slack:"),
        "signed by another key": (_bridge_token(other), "alice", "does not verify with the slack chat bridge's key"),
        "approver without a slack id": (_bridge_token(bridge, approver="erin", via="slack:U0ERIN"), "erin",
                                        "'erin' has no slack_user in policy"),
        "slack id of someone else": (_bridge_token(bridge, via="slack:U0CAROL"), "alice",
                                     "from Slack user U0CAROL, but policy declares U0ALICE"),
        "unknown approver": (_bridge_token(bridge, approver="mallory", via="slack:U0MAL"), "mallory",
                             "'mallory' has no slack_user"),
    }
    seen = set()
    for kind, (token, approver, expected) in cases.items():
        refusal = _refusal(policy, token, approver=approver)
        assert refusal and expected in refusal, f"{kind}: {refusal}"
        seen.add(refusal)
    assert len(seen) == len(cases), "each refusal says its own reason"
    # No bridge in policy: a bridge token is refused even for a mapped approver.
    assert "does not trust" in (_refusal(Policy.model_validate(_policy_dict(None)), good) or "")
    # The bridge key cannot sign an approver-style token (no `via`): that needs the approver's own key.
    plain = sign_approval(bridge, case_id="case-1", step="disable_account", decision="approve", approver="alice",
                          now=NOW)
    assert "no public key for 'alice'" in (_refusal(policy, plain) or "")
    # `via` is inside the signature: rewriting it breaks the token.
    body, sig = good.split(".", 1)
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["via"] = "slack:U0CAROL"
    forged = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    assert "does not verify" in (_refusal(policy, forged.rstrip(b"=").decode() + "." + sig, approver="alice") or "")


def test_bridge_tokens_keep_every_other_check() -> None:
    bridge = Ed25519PrivateKey.generate()
    policy = Policy.model_validate(_policy_dict(bridge))
    from policies.signing import token_nonce

    good = _bridge_token(bridge)
    assert "replay" in (_refusal(policy, good, used={token_nonce(good)}) or "")
    assert "token is for step" in (_refusal(policy, good, step_id="revoke_sessions") or "")
    assert "expired" in (_refusal(policy, _bridge_token(bridge, now=NOW - timedelta(hours=2))) or "")
    assert "lifetime exceeds" in (_refusal(policy, _bridge_token(bridge, ttl=timedelta(days=2))) or "")
    assert "in the future" in (_refusal(policy, _bridge_token(bridge, now=NOW + timedelta(hours=1))) or "")
    assert "unsigned approvals are not accepted" in (_refusal(policy, None) or "")


def test_policy_refuses_a_bad_bridge_key_and_shared_slack_ids(tmp_path: Path) -> None:
    bridge = Ed25519PrivateKey.generate()
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_policy_dict(bridge)))
    assert load_policy(path).approver_for_chat_user("slack", "U0CAROL") == "carol"
    bad_key = _policy_dict(bridge)
    bad_key["deployment"]["chat_bridges"]["slack"]["public_key"] = "bm90IGEga2V5"  # base64, not 32 bytes
    shared = _policy_dict(bridge)
    shared["approvers"]["erin"]["slack_user"] = "U0CAROL"
    unknown = _policy_dict(bridge)
    unknown["deployment"]["chat_bridges"]["teams"] = {"public_key": public_key_text(bridge)}
    for raw, expected in ((bad_key, "chat_bridges.slack.public_key is not a base64 Ed25519 public key"),
                          (shared, "all declare slack_user U0CAROL"),
                          (unknown, "no chat bridge is called 'teams'")):
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(PolicyError, match=expected):
            load_policy(path)
    # A policy that uses neither field hashes as it did before they existed (its version is kept).
    plain_dict = _policy_dict(None, {k: {"roles": v["roles"]} for k, v in APPROVERS.items()})
    plain = Policy.model_validate(plain_dict)
    before = digest_as_before(plain.model_dump(mode="json"))
    assert plain.digest() == before
    plain_dict["approvers"]["alice"]["slack_user"] = "U0ALICE"
    assert Policy.model_validate(plain_dict).digest() != before, "a Slack id is part of the policy version"


# ---------------------------------------------------------------- unit: Slack signatures and the connector


def test_slack_signature_check() -> None:
    # Slack's documented example (api.slack.com/authentication/verifying-requests-from-slack).
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    secret, ts = "8f742231b10e8888abcd99yyyzzz85a5", "1531420618"
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert signature(secret, ts, body) == expected
    assert signature_refusal(Secret(secret), timestamp=ts, sig=expected, body=body, now=1531420618 + 299) is None
    assert "stale" in (signature_refusal(secret, timestamp=ts, sig=expected, body=body, now=1531420618 + 301) or "")
    assert "stale" in (signature_refusal(secret, timestamp=ts, sig=expected, body=body, now=1531420618 - 301) or "")
    assert "bad signature" in (signature_refusal(secret, timestamp=ts, sig=expected, body=body + b"x",
                                                 now=1531420618) or "")
    assert "bad signature" in (signature_refusal("other", timestamp=ts, sig=expected, body=body, now=1531420618) or "")
    assert "missing" in (signature_refusal(secret, timestamp=None, sig=expected, body=body) or "")
    assert "not a number" in (signature_refusal(secret, timestamp="soon", sig=expected, body=body) or "")


async def test_slack_connector_against_the_fake() -> None:
    clock = [1_800_000_000.0]
    fake = FakeSlack(clock=lambda: clock[0])
    fake.add_channel(CHANNEL)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    slack = Slack(Secret(FakeSlack.token), "https://slack.invalid/api", transport=fake.transport(), sleep=sleep)
    first = await slack.post_message(CHANNEL, "one")
    second = await slack.post_message(CHANNEL, "two")
    assert float(second["ts"]) > float(first["ts"])
    fake.fail_next(429, headers={"Retry-After": "7"})
    third = await slack.post_message(CHANNEL, "three")
    assert slept == [7.0] and float(third["ts"]) > float(second["ts"])
    await slack.update_message(CHANNEL, first["ts"], "one, edited")
    assert fake.message(CHANNEL, first["ts"])["text"] == "one, edited"
    for call, error in ((slack.update_message(CHANNEL, "1.000001", "x"), "message_not_found"),
                        (slack.post_message("C0NONE", "x"), "channel_not_found"),
                        (slack.open_view("never-issued", {"type": "modal", "title": {}}), "invalid_trigger_id")):
        with pytest.raises(SlackApiError) as info:
            await call
        assert info.value.error == error
    view = {"type": "modal", "title": {"type": "plain_text", "text": "t"}, "blocks": []}
    trigger = fake.issue_trigger("U0ALICE")
    assert (await slack.open_view(trigger, view))["view"]["id"]
    with pytest.raises(SlackApiError, match="exchanged_trigger_id"):
        await slack.open_view(trigger, view)  # single use
    late = fake.issue_trigger("U0ALICE")
    clock[0] += 3.5
    with pytest.raises(SlackApiError, match="expired_trigger_id"):
        await slack.open_view(late, view)
    bad = Slack(Secret("xoxb-wrong"), "https://slack.invalid/api", transport=fake.transport())
    with pytest.raises(SlackApiError, match="invalid_auth.*SIGNOFF_SLACK_BOT_TOKEN"):
        await bad.post_message(CHANNEL, "x")
    await slack.aclose()
    await bad.aclose()


# ---------------------------------------------------------------- end to end


@dataclass
class Rig:
    client: Client
    fake: FakeSlack
    bridge: SlackBridge
    url: str
    key: Ed25519PrivateKey
    home: Path

    async def pass_until(self, case_id: str, steps: int) -> dict[str, int]:
        """Notifier passes until `steps` messages of `case_id` are posted (visibility may lag a little)."""
        total = {"posted": 0, "updated": 0}
        for _ in range(200):
            counts = await self.bridge.notify_once()
            total = {k: total[k] + counts[k] for k in total}
            if len(self.messages(case_id)) >= steps:
                return total
            await asyncio.sleep(0.05)
        raise AssertionError(f"the notifier never posted {steps} messages for {case_id}: {self.fake.messages(CHANNEL)}")

    def messages(self, case_id: str) -> list[dict[str, Any]]:
        return [m for m in self.fake.messages(CHANNEL) if case_id in m["text"]]

    def message(self, case_id: str, step_id: str) -> dict[str, Any]:
        posted = self.bridge.store.get(case_id, step_id)
        assert posted is not None, f"no message for {case_id}/{step_id}"
        return self.fake.message(CHANNEL, posted.ts)

    async def decide(self, user: str, case_id: str, step_id: str, reason: str, action: str = APPROVE_ACTION,
                     ) -> tuple[str, dict[str, Any]]:
        """`user` clicks the button, then submits the reason modal: (modal id, the bridge's answer)."""
        view_id = await self.click(user, case_id, step_id, action)
        return view_id, await self.submit(user, view_id, reason)

    async def click(self, user: str, case_id: str, step_id: str, action: str = APPROVE_ACTION) -> str:
        before = set(self.fake.views)
        msg = self.message(case_id, step_id)
        response = await self.fake.click(self.url, user, CHANNEL, msg["ts"], action)
        assert response.status_code == 200, response.text
        opened = [v for v in self.fake.views if v not in before]
        assert len(opened) == 1, "a click opens one reason modal"
        return opened[0]

    async def submit(self, user: str, view_id: str, reason: str) -> dict[str, Any]:
        response = await self.fake.submit(self.url, user, view_id, {"reason": reason})
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
def bridge_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def chat_policy(policy_file: Path, bridge_key: Ed25519PrivateKey) -> Path:
    policy = _policy_dict(bridge_key)
    policy["approvers"]["carol"]["public_key"] = public_key_text(CAROL_OWN_KEY)
    policy_file.write_text(yaml.safe_dump(policy))
    return policy_file


@pytest.fixture
async def rig(dev_env: WorkflowEnvironment, task_queue: str, chat_policy: Path, bridge_key: Ed25519PrivateKey,
              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    home = tmp_path / "bridge-home"
    monkeypatch.setenv("SIGNOFF_HOME", str(home))  # the bridge's refused log and posted messages
    fake = FakeSlack()
    fake.trigger_ttl = 600.0  # the 3 s limit is checked on a fake clock above; not raced on a loaded box
    fake.add_channel(CHANNEL)
    slack = Slack(Secret(FakeSlack.token), "https://slack.invalid/api", transport=fake.transport())
    bridge = SlackBridge(dev_env.client, slack, CHANNEL, bridge_key, FakeSlack.signing_secret,
                         store=PostedMessages.for_channel("slack", CHANNEL, home), task_queue=task_queue)
    async with build_worker(dev_env.client, task_queue), bridge.listening("127.0.0.1", 0) as url:
        yield Rig(dev_env.client, fake, bridge, url, bridge_key, home)
    await slack.aclose()


async def _open_case(rig: Rig, task_queue: str) -> WorkflowHandle:
    inp = case_input(requested_by="bob")
    handle = await start_case(rig.client, task_queue, inp, alert("s1", ("account", f"u-{inp.case_id}"),
                                                                ("access_key", f"AKIA-{inp.case_id}")))
    await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
    return handle


async def _accepted_updates(handle: WorkflowHandle) -> int:
    history = await handle.fetch_history()
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)


def _refused_log(home: Path) -> list[dict[str, Any]]:
    path = home / "audit" / "refused.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_slack_approval_end_to_end(rig: Rig, task_queue: str) -> None:
    handle = await _open_case(rig, task_queue)
    cid = handle.id
    view = await handle.query(CaseWorkflow.status)
    gated = [s.step_id for s in view.steps if s.quorum > 0]
    assert set(gated) == {"disable_account", "deactivate_access_key", "revoke_sessions"}

    # One message per waiting step, with what an approver needs to decide.
    counts = await rig.pass_until(cid, len(gated))
    assert counts["posted"] == len(gated)
    for step_id in gated:
        msg = rig.message(cid, step_id)
        st = step(view, step_id)
        text = msg["text"]
        for needed in (cid, view.title, f"*Alert type* {view.alert_type}", f"`{step_id}`: {st.action}",
                       "*Touches* ", "*Undo*", f"0 of {st.quorum}", "roles "):
            assert needed in text, f"{step_id}: {needed!r} missing from {text}"
        assert view.score is not None
        assert f"calibrated confidence {view.score.confidence:.2f}" in text
        assert "pushed towards" in text or "pushed away from" in text  # top contributions in words
        buttons = [e["action_id"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert buttons == [APPROVE_ACTION, REJECT_ACTION]
    assert f"*Touches* account `u-{cid}`" in rig.message(cid, "disable_account")["text"]
    assert f"*Touches* access_key `AKIA-{cid}`" in rig.message(cid, "deactivate_access_key")["text"]
    revoke_text = rig.message(cid, "revoke_sessions")["text"]
    assert "*Tier* critical" in revoke_text and "IRREVERSIBLE" in revoke_text and "0 of 2" in revoke_text
    assert "reversible: `restore_account` restores" in rig.message(cid, "disable_account")["text"]
    # Only the step the case waits on now is timed: its message gives the escalation time.
    timed = [s for s in view.steps if s.escalates_at is not None]
    assert len(timed) == 1 and timed[0].escalates_at is not None
    deadline = f"*Deadline* escalates to a human at {timed[0].escalates_at.strftime('%Y-%m-%d %H:%M UTC')}"
    for step_id in gated:
        assert (deadline in rig.message(cid, step_id)["text"]) == (step_id == timed[0].step_id), step_id

    # A second pass (a restarted bridge too) posts nothing new and changes nothing.
    assert (await rig.bridge.notify_once())["posted"] == 0
    restarted = SlackBridge(rig.client, rig.bridge.slack, CHANNEL, rig.key, FakeSlack.signing_secret,
                            store=PostedMessages.for_channel("slack", CHANNEL, rig.home), task_queue=task_queue)
    again = await restarted.notify_once()
    assert again["posted"] == 0 and again["updated"] == 0
    assert len(rig.messages(cid)) == len(gated)

    # alice clicks Approve, types the reason: the case gets her approval, signed by the bridge.
    _, answer = await rig.decide("U0ALICE", cid, "disable_account", "impossible travel, confirmed by phone")
    assert answer["response_action"] == "update", answer
    assert "quorum 1/1" in json.dumps(answer["view"])
    done = await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed",
                          attempts=2400)
    record = step(done, "disable_account").approvals[0]
    assert (record.approver, record.channel, record.signed, record.accepted) == ("alice", "slack:U0ALICE", True, True)
    assert record.reason == "impossible travel, confirmed by phone"

    # The message now says who decided, and has no buttons any more.
    await rig.bridge.notify_once()
    decided = rig.message(cid, "disable_account")
    assert "*Approved* by alice via Slack U0ALICE" in decided["text"], decided["text"]
    assert not [b for b in decided["blocks"] if b["type"] == "actions"]

    # A decision made elsewhere (carol's own key, as `signoff approve` signs) updates the message too.
    token = sign_approval(CAROL_OWN_KEY, case_id=cid, step="deactivate_access_key", decision="reject",
                          approver="carol")
    await handle.execute_update(CaseWorkflow.reject, ApprovalRequest(
        step="deactivate_access_key", approver="carol", reason="the key is a service's", token=token))
    rejected = await wait_for(handle, lambda v: step(v, "deactivate_access_key").state == StepState.skipped,
                              "rejected", attempts=2400)
    assert step(rejected, "deactivate_access_key").approvals[0].channel is None
    for _ in range(100):
        await rig.bridge.notify_once()
        if "*Rejected* by carol:" in rig.message(cid, "deactivate_access_key")["text"]:
            break
        await asyncio.sleep(0.05)
    assert "*Rejected* by carol: the key is a service's" in rig.message(cid, "deactivate_access_key")["text"]

    # show, explain and the audit export say "alice via Slack U0ALICE".
    env = {**os.environ, "TEMPORAL_ADDRESS": rig.client.service_client.config.target_host,
           "SIGNOFF_TASK_QUEUE": task_queue}
    code, out, err = await cli_process("show", cid, env=env)
    assert code == 0, err
    cells = [c.strip() for line in out.splitlines() for c in line.split("│") if "disable_account" in line or c.strip()]
    assert "alice:approve via Slack U0ALICE" in " ".join(" ".join(cells).split()), out
    code, out, err = await cli_process("explain", cid, env=env)
    assert code == 0, err
    assert "by alice via Slack U0ALICE" in " ".join(out.split())
    from signoff.audit import case_events
    from signoff.history import load_history

    events = case_events(await load_history(rig.client, cid))
    approvals = [e for e in events if e["kind"] == "approval" and e["actor"] == "alice"]
    assert approvals and approvals[0]["detail"]["channel"] == "slack:U0ALICE"
    await handle.terminate("test done")


async def test_forged_or_stale_slack_requests_are_refused_and_change_nothing(rig: Rig, task_queue: str) -> None:
    handle = await _open_case(rig, task_queue)
    cid = handle.id
    await rig.pass_until(cid, 3)
    msg = rig.message(cid, "disable_account")
    click = rig.fake.block_actions("U0ALICE", CHANNEL, msg["ts"], APPROVE_ACTION)
    updates_before = await _accepted_updates(handle)
    calls_before = len(rig.fake.calls)
    # (Just over the limit in the past: time only adds to that. In the future: far enough that the
    # time the request takes cannot bring it back under the limit.)
    for kwargs in ({"secret": "not-the-signing-secret"}, {"timestamp": int(time.time()) - 301},
                   {"timestamp": int(time.time()) + 3600}):
        response = await rig.fake.send(rig.url, click, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 401, kwargs
    # A genuine modal, submitted with a bad signature: no update reaches the case.
    view_id = await rig.click("U0ALICE", cid, "disable_account")
    calls_before = len(rig.fake.calls)
    submission = rig.fake.view_submission("U0ALICE", view_id, {"reason": "forged"})
    response = await rig.fake.send(rig.url, submission, secret="not-the-signing-secret")
    assert response.status_code == 401 and "bad signature" in response.text
    response = await rig.fake.send(rig.url, submission, timestamp=int(time.time()) - 3600)
    assert response.status_code == 401 and "stale" in response.text
    # An unsigned request (no Slack headers at all).
    async with httpx.AsyncClient() as http:
        response = await http.post(rig.url, data={"payload": json.dumps(submission)})
    assert response.status_code == 401
    assert rig.bridge.refused_requests == 6
    assert len(rig.fake.calls) == calls_before, "a refused request calls no Slack API"
    assert await _accepted_updates(handle) == updates_before
    assert step(await handle.query(CaseWorkflow.status), "disable_account").state == StepState.awaiting_approval
    assert not _refused_log(rig.home)  # refused at the door: no decision was ever made
    await handle.terminate("test done")


async def test_identity_is_the_policy_mapping(rig: Rig, task_queue: str) -> None:
    handle = await _open_case(rig, task_queue)
    cid = handle.id
    await rig.pass_until(cid, 3)
    updates_before = await _accepted_updates(handle)

    # A Slack user no approver declares: refused, shown in the modal, recorded (no token).
    _, answer = await rig.decide("U0STRANGER", cid, "disable_account", "looks bad")
    assert answer["response_action"] == "errors", answer
    assert "U0STRANGER is not an approver in policy" in answer["errors"]["reason"]
    # bob (mapped) requested the case: the workflow refuses him, the modal says why.
    _, answer = await rig.decide("U0BOB", cid, "disable_account", "my own case")
    assert answer["response_action"] == "errors" and "separation of duties" in answer["errors"]["reason"]
    # alice's role is not enough for the critical step.
    _, answer = await rig.decide("U0ALICE", cid, "revoke_sessions", "kill them")
    assert answer["response_action"] == "errors" and "needs one of" in answer["errors"]["reason"]
    refused = _refused_log(rig.home)
    assert [(r["approver"], r["via"], r["kind"]) for r in refused] == [
        (None, "slack:U0STRANGER", "refused_approve"), ("bob", "slack:U0BOB", "refused_approve"),
        ("alice", "slack:U0ALICE", "refused_approve")]
    assert [r["signed"] for r in refused] == [False, True, True]
    assert all("token" not in r and r["case_id"] == cid for r in refused)
    assert await _accepted_updates(handle) == updates_before, "refused updates are never written to history"

    # Bridge tokens that do not match the policy's mapping, sent straight to the case.
    key = rig.key
    forged = {
        "approver without a Slack id": ("erin", "slack:U0ERIN", "'erin' has no slack_user in policy"),
        "another approver's Slack id": ("carol", "slack:U0DAVE", "from Slack user U0DAVE, but policy declares U0CAROL"),
        "an unknown bridge": ("carol", "teams:U0CAROL", "'teams' chat bridge, which policy does not trust"),
    }
    for kind, (who, via, expected) in forged.items():
        token = sign_approval(key, case_id=cid, step="revoke_sessions", decision="approve", approver=who, via=via)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(CaseWorkflow.approve, ApprovalRequest(
                step="revoke_sessions", approver=who, reason="x", token=token))
        assert expected in str(info.value.cause), kind
    # The mapped user's click counts, with `trust_unsigned_approvals: false`.
    _, answer = await rig.decide("U0CAROL", cid, "revoke_sessions", "sessions from a known-bad ASN")
    assert answer["response_action"] == "update" and "1/2" in json.dumps(answer), answer
    view = await handle.query(CaseWorkflow.status)
    assert [(a.approver, a.channel) for a in step(view, "revoke_sessions").approvals] == [("carol", "slack:U0CAROL")]

    # explain lists the refusals with the channel they came through.
    env = {**os.environ, "TEMPORAL_ADDRESS": rig.client.service_client.config.target_host,
           "SIGNOFF_TASK_QUEUE": task_queue}
    code, out, err = await cli_process("explain", cid, env=env)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "nobody in policy via Slack U0STRANGER" in flat and "bob via Slack U0BOB" in flat
    await handle.terminate("test done")


async def test_concurrent_clicks_count_each_approver_once(rig: Rig, task_queue: str) -> None:
    handle = await _open_case(rig, task_queue)
    cid = handle.id
    await rig.pass_until(cid, 3)
    # carol clicks twice (two modals), dave once; all three submit at the same moment.
    carol_1 = await rig.click("U0CAROL", cid, "revoke_sessions")
    carol_2 = await rig.click("U0CAROL", cid, "revoke_sessions")
    dave = await rig.click("U0DAVE", cid, "revoke_sessions")
    answers = await asyncio.gather(rig.submit("U0CAROL", carol_1, "ASN match"),
                                   rig.submit("U0CAROL", carol_2, "ASN match (again)"),
                                   rig.submit("U0DAVE", dave, "agree: revoke"))
    accepted = [a for a in answers if a["response_action"] == "update"]
    refused = [a for a in answers if a["response_action"] == "errors"]
    assert len(accepted) == 2 and len(refused) == 1, answers
    assert answers[2]["response_action"] == "update", "dave's approval counts"
    # carol's second click is refused as a repeat, or (if dave's approval got in first) because the
    # quorum was already met: either way it never counts.
    reason = refused[0]["errors"]["reason"]
    assert "'carol' has already decided" in reason or "is approved, not waiting" in reason, reason
    view = await wait_for(handle, lambda v: step(v, "revoke_sessions").state == StepState.approved, "quorum 2/2",
                          attempts=2400)
    records = [(a.approver, a.channel) for a in step(view, "revoke_sessions").approvals if a.accepted]
    assert sorted(records) == [("carol", "slack:U0CAROL"), ("dave", "slack:U0DAVE")]
    # Slack delivering the same submission again gets the first answer; nothing counts twice.
    again = await rig.submit("U0DAVE", dave, "agree: revoke")
    assert again["response_action"] in ("update", "errors")
    view = await handle.query(CaseWorkflow.status)
    assert len([a for a in step(view, "revoke_sessions").approvals if a.accepted]) == 2
    # The message shows the quorum and who made it.
    for _ in range(100):
        await rig.bridge.notify_once()
        if "*Approved* by" in rig.message(cid, "revoke_sessions")["text"]:
            break
        await asyncio.sleep(0.05)
    text = rig.message(cid, "revoke_sessions")["text"]
    assert "(2 of 2)" in text and "carol via Slack U0CAROL" in text and "dave via Slack U0DAVE" in text, text
    # Reject from Slack: the step is skipped, the message says who rejected and why.
    _, answer = await rig.decide("U0DAVE", cid, "disable_account", "a service account", action=REJECT_ACTION)
    assert answer["response_action"] == "update" and "will not run" in json.dumps(answer), answer
    view = await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.skipped, "rejected")
    assert [(a.approver, a.decision.value, a.channel) for a in step(view, "disable_account").approvals] == [
        ("dave", "reject", "slack:U0DAVE")]
    # The decision is answered first and the message refreshed behind it (test_chat_security): poll, as above.
    for _ in range(100):
        if "*Rejected* by" in rig.message(cid, "disable_account")["text"]:
            break
        await rig.bridge.notify_once()
        await asyncio.sleep(0.05)
    text = rig.message(cid, "disable_account")["text"]
    assert "*Rejected* by dave via Slack U0DAVE: a service account" in text, text
    await handle.terminate("test done")


async def test_chat_cli_key_and_refusing_to_serve_untrusted(tmp_path: Path, policy_file: Path) -> None:
    key_file = tmp_path / "secrets" / "chat_bridge.ed25519"
    key_file.parent.mkdir(mode=0o755)
    env = {**os.environ, "SIGNOFF_HOME": str(tmp_path / "h"), "SIGNOFF_CHAT_BRIDGE_KEY_FILE": str(key_file),
           "SIGNOFF_POLICY": str(policy_file)}
    code, out, err = await cli_process("chat", "key", "create", env=env)
    assert code == 0, err
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(key_file.parent.stat().st_mode & 0o777) == "0o755", "a shared secrets folder keeps its mode"
    assert "chat_bridges:" in out and "slack: {public_key: " in out and "PRIVATE" not in out
    code, shown, _ = await cli_process("chat", "key", "show", env=env)
    assert code == 0 and shown == out
    code, _, err = await cli_process("chat", "key", "create", env=env)
    assert code != 0 and "already exists" in err
    # The shipped (lab) policy trusts no bridge: serving would only collect refusals, so it does not start.
    env |= {"SIGNOFF_SLACK_BOT_TOKEN": "xoxb-x", "SIGNOFF_SLACK_SIGNING_SECRET": "s"}
    code, _, err = await cli_process("chat", "serve", "--channel", CHANNEL, "--once", env=env)
    assert code != 0 and "deployment.chat_bridges.slack" in " ".join(err.split()), err
    # With the key in policy but no bot token, it says which variable to set.
    policy = yaml.safe_load(policy_file.read_text())
    policy["deployment"]["chat_bridges"] = {"slack": {"public_key": out.split("public_key: ")[1].split("}")[0]}}
    policy_file.write_text(yaml.safe_dump(policy))
    env.pop("SIGNOFF_SLACK_BOT_TOKEN")
    code, _, err = await cli_process("chat", "serve", "--channel", CHANNEL, "--once", env=env)
    assert code != 0 and "SIGNOFF_SLACK_BOT_TOKEN" in err, err
