"""The Slack approval path under attack: a hostile network, hostile Slack users, a failing Slack.

Everything runs for real as in tests/test_chat_approvals.py: the bridge's endpoint on a loopback
port, the real dev server and worker, Slack's Web API as the stateful fake that signs what it sends.
Raw sockets play the network attacker (header and body tricks, slow bodies); the fake's signing
plays Slack, or whoever holds the signing secret, to show what a signed but hostile payload can do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from connectors.fakes.slack import FakeSlack
from connectors.http import ConnectorError, Secret
from connectors.slack import Slack, signature, signature_refusal
from policies.engine import Policy
from policies.loader import PolicyError, load_policy
from signoff.chat import bridge as bridge_module
from signoff.chat.bridge import SlackBridge
from signoff.chat.messages import APPROVE_ACTION, MODAL_CALLBACK, REJECT_ACTION
from signoff.chat.store import PostedMessages
from signoff.models import CaseInput, StepState
from signoff.worker import build_worker
from tests.casekit import alert, awaiting, case_input, start_case, step, wait_for
from tests.policykit import digest_as_before
from tests.test_chat_approvals import APPROVERS, CHANNEL, _accepted_updates, _policy_dict, _refused_log
from workflows.case import CaseWorkflow

TEAM = "T0FAKE"  # FakeSlack's workspace


# ---------------------------------------------------------------- the signature check itself


def test_signature_refuses_header_tricks_without_raising() -> None:
    secret, body, now = "s3cret", b"payload=%7B%7D", 1_800_000_000
    good_ts = str(now)
    assert signature_refusal(secret, timestamp=good_ts, sig=signature(secret, good_ts, body), body=body, now=now) is None
    # Each timestamp below is signed as sent (the HMAC matches): only the number check can refuse it.
    for ts in (f"+{now}", f" {now}", f"{now} ", f"{now // 10**6}_{now % 10**6:06d}", "１８００００００００",
               "1" + "0" * 400, "9" * 5000, "-1", "0x6b49d200"):
        refusal = signature_refusal(secret, timestamp=ts, sig=signature(secret, ts, body), body=body, now=now)
        assert refusal == "X-Slack-Request-Timestamp is not a number", ts
    for sig in (signature(secret, good_ts, body).upper(), "v1=" + signature(secret, good_ts, body)[3:],
                "v0=é" + "0" * 63, signature(secret, good_ts, body)[3:], "v0=" + "0" * 64):
        refusal = signature_refusal(secret, timestamp=good_ts, sig=sig, body=body, now=now)
        assert refusal and refusal.startswith("bad signature"), sig
    # The signature is over the raw bytes: the same form re-encoded (%20 for +, upper-case escapes) fails.
    form = b"payload=%7B%22a%22%3A+1%7D"
    sig = signature(secret, good_ts, form)
    for same_meaning in (b"payload=%7B%22a%22%3A%201%7D", b"payload=%7b%22a%22%3a+1%7d", form + b"&"):
        assert "bad signature" in (signature_refusal(secret, timestamp=good_ts, sig=sig, body=same_meaning,
                                                     now=now) or ""), same_meaning


def test_policy_binds_the_slack_workspace_and_exact_member_ids(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "p.yaml"
    without = _policy_dict(key)
    path.write_text(yaml.safe_dump(without))
    digest_before = load_policy(path).digest()
    with_team = _policy_dict(key)
    with_team["deployment"]["chat_bridges"]["slack"]["team_id"] = TEAM
    path.write_text(yaml.safe_dump(with_team))
    policy = load_policy(path)
    assert policy.deployment.chat_bridges["slack"].team_id == TEAM
    assert policy.digest() != digest_before, "the workspace is part of the policy version"
    # Unset, it does not change the version of a policy written before it existed.
    assert Policy.model_validate(without).digest() == digest_before
    assert digest_as_before(Policy.model_validate(without).model_dump(mode="json")) == digest_before
    bad_team = _policy_dict(key)
    bad_team["deployment"]["chat_bridges"]["slack"]["team_id"] = "fake-workspace"
    path.write_text(yaml.safe_dump(bad_team))
    with pytest.raises(PolicyError, match="team_id is 'fake-workspace'"):
        load_policy(path)
    # Member ids are compared exactly: a lower-cased id, a display name or padding would never match
    # (fail closed, silently); the policy says so at load instead.
    for wrong in ("u0alice", "alice", "@alice", " U0ALICE", "U0ALICE\u200b"):
        raw = _policy_dict(key)
        raw["approvers"]["alice"]["slack_user"] = wrong
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(PolicyError, match="slack_user is"):
            load_policy(path)
    assert Policy.model_validate(_policy_dict(key)).approver_for_chat_user("slack", "u0alice") is None


# ---------------------------------------------------------------- the rig


@dataclass
class SecRig:
    client: Client
    fake: FakeSlack
    bridge: SlackBridge
    url: str
    key: Ed25519PrivateKey
    home: Path
    task_queue: str

    async def post_all(self, case_id: str, steps: int = 3) -> None:
        for _ in range(400):
            with contextlib.suppress(Exception):
                await self.bridge.notify_once()
            if len([m for m in self.fake.messages(CHANNEL) if case_id in m["text"]]) >= steps:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never posted {steps} messages for {case_id}")

    def message(self, case_id: str, step_id: str) -> dict[str, Any]:
        posted = self.bridge.store.get(case_id, step_id)
        assert posted is not None
        return self.fake.message(CHANNEL, posted.ts)

    async def click(self, user: str, case_id: str, step_id: str, action: str = APPROVE_ACTION) -> str:
        before = set(self.fake.views)
        response = await self.fake.click(self.url, user, CHANNEL, self.message(case_id, step_id)["ts"], action)
        assert response.status_code == 200, response.text
        opened = [v for v in self.fake.views if v not in before]
        assert len(opened) == 1, opened
        return opened[0]

    async def open_case(self, title: str = "test case", account: str | None = None) -> WorkflowHandle:
        inp = case_input(requested_by="bob")
        inp = CaseInput(**{**inp.model_dump(), "title": title})
        handle = await start_case(self.client, self.task_queue, inp,
                                  alert("s1", ("account", account or f"u-{inp.case_id}"),
                                        ("access_key", f"AKIA-{inp.case_id}"), title=title))
        await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
        return handle


RigFactory = Callable[..., Awaitable[SecRig]]


@pytest.fixture
async def make_rig(dev_env: WorkflowEnvironment, task_queue: str, policy_file: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RigFactory]:
    """`await make_rig(team_id=..., sleep=...)`: a worker, a policy trusting a new bridge key, the bridge."""
    home = tmp_path / "bridge-home"
    monkeypatch.setenv("SIGNOFF_HOME", str(home))
    stack = contextlib.AsyncExitStack()

    async def make(team_id: str | None = None, sleep: Callable[[float], Awaitable[None]] | None = None,
                   fake: FakeSlack | None = None) -> SecRig:
        key = Ed25519PrivateKey.generate()
        policy = _policy_dict(key)
        if team_id:
            policy["deployment"]["chat_bridges"]["slack"]["team_id"] = team_id
        policy_file.write_text(yaml.safe_dump(policy))
        fake = fake or FakeSlack()
        fake.trigger_ttl = 600.0
        fake.add_channel(CHANNEL)
        slack = Slack(Secret(FakeSlack.token), "https://slack.invalid/api", transport=fake.transport(),
                      **({"sleep": sleep} if sleep else {}))
        stack.push_async_callback(slack.aclose)
        bridge = SlackBridge(dev_env.client, slack, CHANNEL, key, Secret(FakeSlack.signing_secret),
                             store=PostedMessages.for_channel("slack", CHANNEL, home), task_queue=task_queue)
        await stack.enter_async_context(build_worker(dev_env.client, task_queue))
        url = await stack.enter_async_context(bridge.listening("127.0.0.1", 0))
        return SecRig(dev_env.client, fake, bridge, url, key, home, task_queue)

    async with stack:
        yield make


def _approvals(view: Any, step_id: str) -> list[tuple[str, str | None]]:
    return [(a.approver, a.channel) for a in step(view, step_id).approvals if a.accepted]


# ---------------------------------------------------------------- the network attacker


def _raw(url: str, head: bytes, body_parts: list[bytes] = (), pause: float = 0.0,  # type: ignore[assignment]
         close_write: bool = False) -> bytes:
    """Send a hand-made request on a raw socket; return what the server answered (b"" if nothing)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:  # the server gave up on us: what it said is still readable
                break
            time.sleep(pause)
        if close_write:
            with contextlib.suppress(OSError):  # the server may have answered and closed already
                sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def _status(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


def _signed(payload_text: str, ts: int | None = None, secret: str = FakeSlack.signing_secret,
            ) -> tuple[bytes, dict[str, str]]:
    body = urlencode({"payload": payload_text}).encode()
    stamp = str(int(time.time()) if ts is None else ts)
    return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
                  "X-Slack-Signature": signature(secret, stamp, body)}


async def test_hostile_requests_get_a_clean_answer_and_the_bridge_keeps_serving(
        make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(bridge_module, "SOCKET_TIMEOUT", 1.0)  # read when the server is built
    monkeypatch.setattr(bridge_module, "BODY_DEADLINE", 2.0)
    rig = await make_rig()
    caplog.set_level(logging.DEBUG, logger="signoff.chat")
    path = urlsplit(rig.url).path
    host = f"Host: {urlsplit(rig.url).netloc}\r\n".encode()

    def head(*lines: str) -> bytes:
        return f"POST {path} HTTP/1.1\r\n".encode() + host + "".join(f"{x}\r\n" for x in lines).encode() + b"\r\n"

    body, sig_headers = _signed(json.dumps({"type": "block_actions", "actions": []}))
    sig_lines = [f"{k}: {v}" for k, v in sig_headers.items()]
    # A negative Content-Length used to mean "read until the client closes": no limit, no deadline.
    answer = await asyncio.to_thread(_raw, rig.url, head(*sig_lines, "Content-Length: -1"),
                                     [body, b"x" * (2 << 20)], close_write=True)
    assert _status(answer) == 400, answer[:200]
    answer = await asyncio.to_thread(_raw, rig.url, head(*sig_lines, "Content-Length: ten"), [body])
    assert _status(answer) == 400, answer[:200]
    answer = await asyncio.to_thread(_raw, rig.url, head(*sig_lines, f"Content-Length: {(1 << 20) + 1}"))
    assert _status(answer) == 413, answer[:200]
    # Two signature headers (a proxy may check one, the app the other): refused, whichever is valid.
    answer = await asyncio.to_thread(_raw, rig.url, head(*sig_lines, "X-Slack-Signature: v0=" + "0" * 64,
                                                         f"Content-Length: {len(body)}"), [body])
    assert _status(answer) == 400 and b"more than once" in answer, answer[:300]
    # A body that trickles in never completes a request: the connection is dropped (408) ...
    trickle = await asyncio.create_task(asyncio.to_thread(
        _raw, rig.url, head(*sig_lines, f"Content-Length: {len(body)}"), [body[i:i + 1] for i in range(len(body))],
        0.5))
    assert _status(trickle) == 408 or trickle == b"", trickle[:200]
    # ... and a client that sends headers and then nothing is dropped as well.
    silent = await asyncio.to_thread(_raw, rig.url, head(*sig_lines, "Content-Length: 100"))
    assert _status(silent) in (408, None), silent[:200]
    async with httpx.AsyncClient() as http:
        assert (await http.get(rig.url.replace("/slack/interactions", "/healthz"))).status_code == 200
        # Validly signed but hostile payloads (whoever holds the signing secret): 400, never a 500.
        for text in ("[" * 100_000 + "]" * 100_000, '["a list"]', '"text"', "null", "{}",
                     '{"type": "view_submission", "view": ["x"]}',
                     json.dumps({"type": "view_submission",
                                 "view": {"callback_id": MODAL_CALLBACK, "private_metadata": "[1]"}}),
                     '{"type": "block_actions", "actions": ["x"]}',
                     json.dumps({"type": "block_actions", "actions": [{"action_id": APPROVE_ACTION, "value": "[]"}]})):
            body, headers = _signed(text)
            response = await http.post(rig.url, content=body, headers=headers)
            assert response.status_code in (200, 400), (text[:80], response.status_code, response.text)
        body, headers = _signed("{}")
        response = await http.post(rig.url, content=b"\xff\xfe" + body, headers={
            **headers, "X-Slack-Signature": signature(FakeSlack.signing_secret, headers["X-Slack-Request-Timestamp"],
                                                      b"\xff\xfe" + body)})
        assert response.status_code == 400, "a body that is not UTF-8"
        response = await http.post(rig.url, content=body, headers={**headers, "X-Slack-Request-Timestamp": "9" * 400})
        assert response.status_code == 401 and "not a number" in response.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


async def test_a_captured_submission_replayed_inside_the_window_counts_once(make_rig: RigFactory) -> None:
    rig = await make_rig()
    handle = await rig.open_case()
    cid = handle.id
    await rig.post_all(cid)
    # The network attacker records alice's click and her submission, bytes and headers.
    click_body, click_headers = rig.fake.signed_request(
        rig.fake.block_actions("U0ALICE", CHANNEL, rig.message(cid, "disable_account")["ts"], APPROVE_ACTION))
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await http.post(rig.url, content=click_body, headers=click_headers)).status_code == 200
        view_id = list(rig.fake.views)[-1]
        body, headers = rig.fake.signed_request(rig.fake.view_submission("U0ALICE", view_id, {"reason": "travel"}))
        first = await http.post(rig.url, content=body, headers=headers)
        assert first.status_code == 200 and first.json()["response_action"] == "update", first.text
        updates = await _accepted_updates(handle)
        for captured_body, captured_headers in ((body, headers), (click_body, click_headers)):
            replay = await http.post(rig.url, content=captured_body, headers=captured_headers)
            assert replay.status_code == 401 and "replayed request" in replay.text, replay.text
        # A bridge that restarted (its memory of signatures gone) still cannot count it twice: the
        # update id is the modal's, so Temporal answers the first result.
        rig.bridge._seen.clear()
        again = await http.post(rig.url, content=body, headers=headers)
        assert again.status_code == 200, again.text
    assert await _accepted_updates(handle) == updates
    view = await handle.query(CaseWorkflow.status)
    assert _approvals(view, "disable_account") == [("alice", "slack:U0ALICE")]
    await handle.terminate("test done")


async def test_a_signed_submission_naming_another_step_gets_only_what_that_user_may_do(make_rig: RigFactory) -> None:
    """Whoever could make Slack sign a `view_submission` with their own `private_metadata` (a leaked
    signing secret, a compromised proxy holding it) acts as the Slack user named in it, no more: the
    workflow checks roles, quorum and separation of duties for that user on the step it names."""
    rig = await make_rig()
    handle = await rig.open_case()
    cid = handle.id
    await rig.post_all(cid)
    view_id = await rig.click("U0ALICE", cid, "disable_account")
    updates = await _accepted_updates(handle)

    async def forged(meta: dict[str, str], user: str = "U0ALICE") -> dict[str, Any]:
        payload = rig.fake.view_submission(user, view_id, {"reason": "forged"})
        payload["view"]["private_metadata"] = json.dumps(meta)
        response = await rig.fake.send(rig.url, payload)
        assert response.status_code == 200, response.text
        return dict(response.json())

    # alice's modal, re-pointed at the critical step: her role is not enough.
    answer = await forged({"case": cid, "step": "revoke_sessions", "decision": "approve"})
    assert answer["response_action"] == "errors" and "needs one of" in answer["errors"]["reason"], answer
    # bob is the requester: separation of duties, whatever the modal says.
    answer = await forged({"case": cid, "step": "disable_account", "decision": "approve"}, user="U0BOB")
    assert "separation of duties" in answer["errors"]["reason"], answer
    # An unknown decision or another case: refused, nothing sent.
    answer = await forged({"case": cid, "step": "disable_account", "decision": "rollback"})
    assert "unknown decision" in answer["errors"]["reason"], answer
    answer = await forged({"case": "case-does-not-exist", "step": "disable_account", "decision": "approve"})
    assert "is not open" in answer["errors"]["reason"], answer
    assert await _accepted_updates(handle) == updates
    view = await handle.query(CaseWorkflow.status)
    assert not _approvals(view, "revoke_sessions") and not _approvals(view, "disable_account")
    await handle.terminate("test done")


# ---------------------------------------------------------------- identity: the Slack workspace


async def test_users_of_another_workspace_cannot_approve(make_rig: RigFactory) -> None:
    # The app is also installed in another workspace, where a different person has the id U0CAROL.
    other = FakeSlack(team_id="T0OTHER")
    rig = await make_rig(team_id=TEAM, fake=other)
    handle = await rig.open_case()
    cid = handle.id
    await rig.post_all(cid)
    updates = await _accepted_updates(handle)
    # The click opens no modal: that user could not approve anyway.
    response = await rig.fake.click(rig.url, "U0CAROL", CHANNEL, rig.message(cid, "revoke_sessions")["ts"],
                                    APPROVE_ACTION)
    assert response.status_code == 200 and not rig.fake.views
    # A submission (a modal opened before the policy named the workspace) is refused and recorded.
    view_id = "V0OLD"
    rig.fake.views[view_id] = {"id": view_id, "type": "modal", "callback_id": MODAL_CALLBACK, "user": "U0CAROL",
                               "private_metadata": json.dumps({"case": cid, "step": "revoke_sessions",
                                                               "decision": "approve"}),
                               "blocks": [{"type": "input", "block_id": "reason",
                                           "element": {"type": "plain_text_input", "action_id": "reason_input"}}]}
    answer = (await rig.fake.submit(rig.url, "U0CAROL", view_id, {"reason": "other org"})).json()
    assert answer["response_action"] == "errors", answer
    assert "Slack workspace T0OTHER is not this deployment's (T0FAKE" in answer["errors"]["reason"]
    # Slack Connect: the channel is ours (team T0FAKE) but the user belongs to another organisation.
    payload = rig.fake.view_submission("U0CAROL", view_id, {"reason": "shared channel"})
    payload["team"]["id"] = TEAM
    payload["user"]["team_id"] = "T0EXTERNAL"
    answer = (await rig.fake.send(rig.url, payload)).json()
    assert "Slack workspace T0EXTERNAL is not" in answer["errors"]["reason"], answer
    refused = _refused_log(rig.home)
    assert [(r["via"], "workspace" in r["refusal"]) for r in refused] == [("slack:U0CAROL", True)] * 2
    assert await _accepted_updates(handle) == updates
    # The same person from this deployment's workspace counts.
    payload = rig.fake.view_submission("U0CAROL", view_id, {"reason": "our carol"})
    payload["team"]["id"] = payload["user"]["team_id"] = TEAM
    answer = (await rig.fake.send(rig.url, payload)).json()
    assert answer["response_action"] == "update", answer
    assert _approvals(await handle.query(CaseWorkflow.status), "revoke_sessions") == [("carol", "slack:U0CAROL")]
    await handle.terminate("test done")


# ---------------------------------------------------------------- escaping and secrets


INJECTIONS = ("<!channel>", "<!here|here>", "<@U0BOSS>", "<#C0ALL>", "<https://evil.example|click to approve>",
              "<!subteam^S0SOC>")


async def test_untrusted_text_cannot_ping_link_or_leak_secrets(make_rig: RigFactory,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig = await make_rig()
    title = "urgent " + " ".join(INJECTIONS) + " & *bold*"
    handle = await rig.open_case(title=title, account="<!everyone>@corp")
    cid = handle.id
    await rig.post_all(cid)
    reason = "ok " + " ".join(INJECTIONS)
    view_id = await rig.click("U0ALICE", cid, "disable_account")
    body, headers = rig.fake.signed_request(rig.fake.view_submission("U0ALICE", view_id, {"reason": reason}))
    async with httpx.AsyncClient(timeout=60) as http:
        answer = (await http.post(rig.url, content=body, headers=headers)).json()
    assert answer["response_action"] == "update", answer
    await wait_for(handle, lambda v: step(v, "disable_account").state == StepState.executed, "executed",
                   attempts=2400)
    # A refusal keeps the reason in the refused log; a rejection shows it in the channel.
    view_id = await rig.click("U0ALICE", cid, "revoke_sessions", REJECT_ACTION)
    await rig.fake.submit(rig.url, "U0ALICE", view_id, {"reason": reason})
    view_id = await rig.click("U0DAVE", cid, "deactivate_access_key", REJECT_ACTION)
    rejected = (await rig.fake.submit(rig.url, "U0DAVE", view_id, {"reason": reason})).json()
    assert rejected["response_action"] == "update", rejected
    for _ in range(200):
        await rig.bridge.notify_once()
        if "*Approved* by" in rig.message(cid, "disable_account")["text"] and \
                "*Rejected* by" in rig.message(cid, "deactivate_access_key")["text"]:
            break
        await asyncio.sleep(0.05)
    texts = [m["text"] for m in rig.fake.messages(CHANNEL) if cid in m["text"]]
    texts += [b["text"]["text"] for m in rig.fake.messages(CHANNEL) for b in m["blocks"] if b["type"] == "section"]
    texts.append(json.dumps(answer["view"]["blocks"]))
    assert any("&lt;!channel&gt;" in t for t in texts) and any("U0DAVE: ok &lt;!channel&gt;" in t for t in texts), texts
    for text in texts:
        for raw in (*INJECTIONS, "<!everyone>", "<http"):
            assert raw not in text, (raw, text)
    # Secrets: the bot token, the signing secret and the bridge's private key appear nowhere; the
    # approval token only in the case's history (it is what the workflow verifies, on replay too).
    # The raw events: payloads appear as the JSON they carry (to_json_dict would base64 them).
    history = b"".join(e.SerializeToString() for e in (await handle.fetch_history()).events).decode(errors="replace")
    private = rig.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pem = rig.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    secrets = [FakeSlack.token, FakeSlack.signing_secret, base64.b64encode(private).decode(), private.hex(),
               pem.splitlines()[1]]
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    refused = (rig.home / "audit" / "refused.jsonl").read_text()
    posted = json.dumps([c.body for c in rig.fake.calls])
    stored = "".join(p.read_text() for p in (rig.home / "chat").glob("*.json"))
    for where, text in (("history", history), ("logs", logs), ("refused log", refused), ("Slack calls", posted),
                        ("posted store", stored)):
        for secret in secrets:
            assert secret not in text, (where, secret[:8])
    # Bridge tokens start with base64url('{"approver":'): present in the history, nowhere else.
    token_start = base64.urlsafe_b64encode(b'{"approver":').decode()[:14]
    assert token_start in history
    for where, text in (("logs", logs), ("refused log", refused), ("Slack calls", posted), ("posted store", stored)):
        assert token_start not in text, where
    await handle.terminate("test done")


# ---------------------------------------------------------------- availability


async def test_a_slack_rate_limit_never_turns_an_accepted_approval_into_a_failure(make_rig: RigFactory) -> None:
    released = asyncio.Event()
    waited: list[float] = []

    async def sleep(seconds: float) -> None:  # Slack's Retry-After, held until the test lets it go
        waited.append(seconds)
        await released.wait()

    rig = await make_rig(sleep=sleep)
    handle = await rig.open_case()
    cid = handle.id
    await rig.post_all(cid)
    view_id = await rig.click("U0ALICE", cid, "disable_account")
    rig.fake.fail_next(429, headers={"Retry-After": "30"}, times=1)  # the message refresh after the decision
    response = await rig.fake.submit(rig.url, "U0ALICE", view_id, {"reason": "travel"})
    answer = response.json()
    try:
        assert answer["response_action"] == "update", answer  # before: "Temporal did not answer in time"
        assert _approvals(await handle.query(CaseWorkflow.status), "disable_account") == [("alice", "slack:U0ALICE")]
        for _ in range(200):  # meanwhile the message refresh waits out Slack's rate limit
            if waited:
                break
            await asyncio.sleep(0.05)
        assert waited == [30.0]
    finally:
        released.set()
    for _ in range(200):
        if "*Approved* by alice" in rig.message(cid, "disable_account")["text"]:
            break
        await asyncio.sleep(0.05)
    assert "*Approved* by alice via Slack U0ALICE" in rig.message(cid, "disable_account")["text"]
    await handle.terminate("test done")


async def test_slack_outages_and_deleted_messages_neither_duplicate_nor_starve(make_rig: RigFactory) -> None:
    rig = await make_rig()
    first = await rig.open_case()
    await rig.post_all(first.id)
    # Someone deletes the message of a waiting step, and a new case comes in.
    posted = rig.bridge.store.get(first.id, "revoke_sessions")  # a quorum of 2: still waiting after one
    assert posted is not None
    rig.fake.channels[CHANNEL] = [m for m in rig.fake.messages(CHANNEL) if m["ts"] != posted.ts]
    second = await rig.open_case()
    # A 5xx storm: nothing is posted, nothing is retried blindly (a POST that failed may have landed).
    rig.fake.fail_next(503, times=1000)
    for _ in range(5):
        with contextlib.suppress(ConnectorError):
            await rig.bridge.notify_once()
        await asyncio.sleep(0.05)
    assert not [m for m in rig.fake.messages(CHANNEL) if second.id in m["text"]]
    rig.fake._faults.clear()  # Slack is back
    # dave's approval moves the first case's messages; the deleted one is posted anew, with its buttons.
    # (dave's modal was open before the message went.)
    accepted, text = await rig.bridge.decide(user_id="U0DAVE", case_id=first.id, step="revoke_sessions",
                                             decision="approve", reason="bad ASN", view_id="V0DAVE", team_id=TEAM)
    assert accepted, text
    await rig.post_all(second.id)
    for _ in range(200):
        await rig.bridge.notify_once()
        if rig.bridge.store.get(first.id, "revoke_sessions").ts != posted.ts:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    for cid in (first.id, second.id):
        per_step: dict[str, int] = {}
        for m in rig.fake.messages(CHANNEL):
            if cid in m["text"]:
                step_id = m["text"].split("*Action* `", 1)[1].split("`", 1)[0]
                per_step[step_id] = per_step.get(step_id, 0) + 1
        assert per_step == {"disable_account": 1, "deactivate_access_key": 1, "revoke_sessions": 1}, (cid, per_step)
    redone = rig.fake.message(CHANNEL, rig.bridge.store.get(first.id, "revoke_sessions").ts)  # type: ignore[union-attr]
    assert [b for b in redone["blocks"] if b["type"] == "actions"], "the new message has its buttons"
    assert "1 of 2" in redone["text"] and "dave via Slack U0DAVE" in redone["text"], redone["text"]
    await first.terminate("test done")
    await second.terminate("test done")


async def test_temporal_unavailable_is_not_recorded_as_the_case_refusing(
        policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Temporal server that goes away: the approver is told to submit again; no refusal is recorded
    (before: "case ... is not open", written to the refused log as if the case had refused)."""
    from temporalio.client import RetryConfig
    from temporalio.contrib.pydantic import pydantic_data_converter

    from tests.conftest import _binary

    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path))
    key = Ed25519PrivateKey.generate()
    policy_file.write_text(yaml.safe_dump(_policy_dict(key)))
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=_binary("temporal"), ui=False,
                                                dev_server_extra_args=["--log-level", "error"])
    client = await Client.connect(env.client.service_client.config.target_host, data_converter=pydantic_data_converter,
                                  retry_config=RetryConfig(max_retries=0))
    await env.shutdown()  # Temporal goes down after the bridge connected
    fake = FakeSlack()
    slack = Slack(Secret(FakeSlack.token), "https://slack.invalid/api", transport=fake.transport())
    bridge = SlackBridge(client, slack, CHANNEL, key, FakeSlack.signing_secret,
                         store=PostedMessages.for_channel("slack", CHANNEL, tmp_path))
    accepted, text = await bridge.decide(user_id="U0ALICE", case_id="case-x", step="disable_account",
                                         decision="approve", reason="r", view_id="V1")
    assert not accepted and "Temporal did not take the decision" in text and "submit again" in text, text
    assert not _refused_log(tmp_path), "the case never refused anything"
    assert APPROVERS["alice"]["slack_user"] == "U0ALICE"
    await slack.aclose()
