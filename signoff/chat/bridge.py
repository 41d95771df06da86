"""The Slack chat bridge: approval requests out to a channel, signed decisions back to the cases.

Out (the notifier): every `interval` seconds, the cases waiting for sign-off (Temporal visibility)
are read (`status` query) and each waiting step gets one message with its context and Approve /
Reject buttons (signoff/chat/messages.py); what was posted is kept under `$SIGNOFF_HOME/chat/`, so
a restart posts nothing twice. A message is updated (`chat.update`) when its quorum moves and when
the step is decided, here or anywhere else (CLI, Temporal UI).

In (the interactivity endpoint, `POST /slack/interactions`): Slack's signature is checked first
(401 and nothing else on a bad or stale one). A button click opens a modal asking for the reason;
its submission maps the Slack user to an approver through the policy (`approvers.NAME.slack_user`),
signs a token with the bridge's Ed25519 key (claim `via`: "slack:U0ABC123"; the workflow verifies it
with `deployment.chat_bridges.slack.public_key`) and sends the case's `approve` / `reject` update.
A refusal comes back at once, is shown in the modal and is recorded in `audit/refused.jsonl` (as
the CLI records its own), without the token. Nothing here decides: the case workflow does.

Hardening (docs/deployment.md §7, tests/test_chat_security.py): each exact signed request is taken
once (a replay inside Slack's 5-minute window is 401); with `deployment.chat_bridges.slack.team_id`
users of another workspace are refused; bodies are bounded in size and time; a decision is answered
before its channel message is refreshed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from connectors.http import ConnectorError, Secret
from connectors.slack import MAX_SKEW_SECONDS, Slack, SlackApiError, signature_refusal
from policies.engine import Policy, parse_duration
from policies.loader import load_policy
from policies.signing import public_key_text, sign_approval
from signoff import settings
from signoff.case_view import read_case_view
from signoff.chat.messages import (
    APPROVE_ACTION,
    MODAL_CALLBACK,
    REASON_ACTION,
    REASON_BLOCK,
    REJECT_ACTION,
    WAITING,
    reason_modal,
    result_modal,
    step_message,
    waiting_steps,
)
from signoff.chat.store import Posted, PostedMessages
from signoff.keys import ApproverKeyError, read_key_file, write_key_file
from signoff.listing import case_pages, case_query
from signoff.models import ApprovalRequest, CaseStatus, CaseView
from signoff.refused_log import record_refusal

log = logging.getLogger("signoff.chat")
T = TypeVar("T")

PLATFORM = "slack"
BRIDGE_KEY_ENV = "SIGNOFF_CHAT_BRIDGE_KEY_FILE"
INTERACTIONS_PATH = "/slack/interactions"
TOKEN_TTL = timedelta(minutes=10)
MAX_BODY = 1 << 20  # Slack's interaction payloads are far smaller
ANSWER_TIMEOUT = 20.0  # seconds a request thread waits for the Temporal side
SOCKET_TIMEOUT = 10.0  # seconds one read from a client may block (a silent client is dropped)
BODY_DEADLINE = 15.0  # seconds to receive a whole body (a client trickling bytes is dropped)
SLACK_HEADERS = ("x-slack-signature", "x-slack-request-timestamp", "content-length")


class ChatBridgeError(RuntimeError):
    """The bridge cannot run as configured (key, policy); the message says what to fix."""


# ---------------------------------------------------------------- the bridge's key


def bridge_key_path() -> Path:
    """`SIGNOFF_CHAT_BRIDGE_KEY_FILE`, else `home()/keys/chat-bridge-slack.ed25519`."""
    override = os.environ.get(BRIDGE_KEY_ENV, "").strip()
    return Path(override) if override else settings.home() / "keys" / f"chat-bridge-{PLATFORM}.ed25519"


def create_bridge_key(*, overwrite: bool = False) -> tuple[Path, Ed25519PrivateKey]:
    path = bridge_key_path()
    if path.exists() and not overwrite:
        raise ChatBridgeError(f"{path} already exists; `signoff chat key show` prints its policy lines")
    # Under .signoff/keys/ the folder is made private; a folder named by the variable (a secrets
    # mount shared with the containers' user) keeps its mode.
    return path, write_key_file(path, private_folder=not os.environ.get(BRIDGE_KEY_ENV, "").strip())


def load_bridge_key() -> Ed25519PrivateKey:
    path = bridge_key_path()
    try:
        key = read_key_file(path)
    except ApproverKeyError as exc:
        raise ChatBridgeError(str(exc)) from None
    if key is None:
        raise ChatBridgeError(f"no chat bridge key at {path}; create one with `signoff chat key create` "
                              f"(or set {BRIDGE_KEY_ENV} to its file)")
    return key


def bridge_policy_lines(key: Ed25519PrivateKey) -> str:
    """What the policy pull request adds so the workflow trusts this bridge."""
    return ("deployment:\n  chat_bridges:\n"
            f"    {PLATFORM}: {{public_key: {public_key_text(key)}}}\n"
            "# recommended, in that entry: the workspace whose users may approve, team_id: T0123ABCD\n"
            "# and for each approver who approves from Slack (their Slack member id):\n"
            "#   approvers:\n#     alice: {roles: [analyst], slack_user: U0ABC123}")


def trust_problem(policy: Policy, key: Ed25519PrivateKey) -> str | None:
    """Why the workflow would refuse every approval this bridge signs, or None."""
    entry = policy.deployment.chat_bridges.get(PLATFORM)
    if entry is None:
        return (f"the policy has no deployment.chat_bridges.{PLATFORM}: every Slack approval would be refused; "
                "add the lines `signoff chat key show` prints, by pull request")
    if entry.public_key != public_key_text(key):
        return (f"deployment.chat_bridges.{PLATFORM}.public_key in policy is not this bridge's key "
                f"({bridge_key_path()}); every Slack approval would be refused")
    return None


# ---------------------------------------------------------------- the bridge


class SlackBridge:
    def __init__(self, client: Client, slack: Slack, channel: str, key: Ed25519PrivateKey,
                 signing_secret: Secret | str, *, store: PostedMessages | None = None,
                 task_queue: str | None = None) -> None:
        self.client = client
        self.task_queue = task_queue  # only cases of this task queue (the workers'); None: every case
        self.slack = slack
        self.channel = channel
        self.key = key
        self.secret = signing_secret
        self.store = store or PostedMessages.for_channel(PLATFORM, channel)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.refused_requests = 0  # requests refused for their Slack signature (401) or as replays
        self._sync_lock: asyncio.Lock | None = None
        # Signatures of the requests already taken, until they are stale anyway: a signed request
        # captured on the wire and sent again inside Slack's 5-minute window is refused (401).
        self._seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ out: the notifier

    async def waiting_case_ids(self) -> list[str]:
        ids: list[str] = []
        extra = f"TaskQueue='{self.task_queue}'" if self.task_queue else None
        for status in (CaseStatus.awaiting_approval, CaseStatus.escalated):
            async for page in case_pages(self.client, case_query(status.value, extra)):
                ids += [row["case_id"] for row in page if row["case_id"] not in ids]
        return ids

    async def notify_once(self) -> dict[str, int]:
        """One pass: post a message for each newly waiting step, update those whose state moved."""
        counts = {"posted": 0, "updated": 0, "cases": 0}
        ids = await self.waiting_case_ids()
        ids += sorted({p.case for p in self.store.open_items()} - set(ids))
        failed: list[ConnectorError] = []
        for case_id in ids:
            view = await self._view(case_id)
            if view is None:
                continue
            counts["cases"] += 1
            try:
                posted, updated = await self.sync(view)
            except ConnectorError as exc:  # one case's trouble must not starve the others
                log.warning("could not post or update the messages of case %s: %s", case_id, exc)
                failed.append(exc)
                continue
            counts["posted"] += posted
            counts["updated"] += updated
        if failed and len(failed) == counts["cases"]:
            raise failed[0]  # Slack is down for everything: the caller says so once
        return counts

    async def _view(self, case_id: str) -> CaseView | None:
        try:
            return await read_case_view(self.client, case_id, completed=False, timeout=timedelta(seconds=10))
        except Exception:  # noqa: BLE001 - a closed case without a worker: its result says the same
            try:
                return await read_case_view(self.client, case_id, completed=True, timeout=timedelta(seconds=10))
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot read case %s: %s", case_id, exc)
                if isinstance(exc, RPCError) and "not found" in exc.message.lower():
                    self._forget(case_id)  # deleted after its retention: nothing more to say about it
                return None

    def _forget(self, case_id: str) -> None:
        for item in self.store.open_items():
            if item.case == case_id:
                item.done = True
                self.store.put(item)

    async def sync(self, view: CaseView) -> tuple[int, int]:
        """Bring the messages of one case in line with its state: (posted, updated)."""
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            policy = load_policy()
            posted = updated = 0
            waiting = {s.step_id for s in waiting_steps(view)}
            for step in view.steps:
                item = self.store.get(view.case_id, step.step_id)
                if item is None and step.step_id not in waiting:
                    continue
                if item is not None and item.done:
                    continue
                text, blocks = step_message(view, step, policy)
                digest = hashlib.sha256(text.encode()).hexdigest()
                if item is None:
                    answer = await self.slack.post_message(self.channel, text, blocks)
                    item = Posted(case=view.case_id, step=step.step_id, channel=str(answer["channel"]),
                                  ts=str(answer["ts"]), digest=digest)
                    posted += 1
                elif digest != item.digest:
                    try:
                        await self.slack.update_message(item.channel, item.ts, text, blocks)
                        updated += 1
                    except SlackApiError as exc:
                        if exc.error != "message_not_found":
                            raise
                        # Deleted in Slack. While the step waits, a new message (with its buttons);
                        # once decided, there is nothing left to update.
                        if step.step_id in waiting:
                            answer = await self.slack.post_message(self.channel, text, blocks)
                            item.channel, item.ts = str(answer["channel"]), str(answer["ts"])
                            posted += 1
                    item.digest = digest
                item.done = step.state not in WAITING
                self.store.put(item)
            return posted, updated

    async def refresh_case(self, case_id: str) -> None:
        view = await self._view(case_id)
        if view is not None:
            await self.sync(view)

    # ------------------------------------------------------------ in: decisions

    async def decide(self, *, user_id: str, case_id: str, step: str, decision: str, reason: str,
                     view_id: str, team_id: str | None = None) -> tuple[bool, str]:
        """Send `user_id`'s decision to the case: (accepted, what the case answered or why refused).

        `team_id` is the Slack workspace of the user (the payload's `user.team_id`); with
        `deployment.chat_bridges.slack.team_id` in policy, a user of any other workspace is refused.
        """
        via = f"{PLATFORM}:{user_id}"
        policy = load_policy()
        if decision not in ("approve", "reject"):
            return False, f"unknown decision {decision!r}"

        def refused(refusal: str, approver: str | None = None, token: str | None = None) -> tuple[bool, str]:
            # record_refusal keeps whether a token was sent ("signed"), never the token
            record_refusal(decision, case_id, {"step": step, "approver": approver, "reason": reason[:200],
                                               "via": via, "token": token}, refusal)
            return False, refusal

        team_refusal = self.team_refusal(policy, team_id)
        if team_refusal:
            return refused(team_refusal)
        approver = policy.approver_for_chat_user(PLATFORM, user_id)
        if approver is None:
            return refused(f"Slack user {user_id} is not an approver in policy: an approver's entry must declare "
                           f"slack_user: {user_id} (by pull request)")
        ttl = min(TOKEN_TTL, parse_duration(policy.deployment.approval_token_max_ttl))
        token = sign_approval(self.key, case_id=case_id, step=step, decision=decision, approver=approver,
                              ttl=ttl, via=via)
        req = ApprovalRequest(step=step, approver=approver, reason=reason, token=token)
        handle = self.client.get_workflow_handle(case_id)
        try:
            # The update id is the modal's: Slack resending the same submission gets the first answer.
            result = await handle.execute_update(decision, req, id=f"{via}:{view_id}:{decision}", result_type=str)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            return refused(str(cause.message if hasattr(cause, "message") else cause), approver, token)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return refused(f"case {case_id} is not open: {exc.message}", approver, token)
            # Temporal unavailable, overloaded...: not the case's answer. Submitting the same modal
            # again is safe (same update id: an approval that did get in is not counted twice).
            log.warning("could not send %s's %s of %s/%s to Temporal: %s", approver, decision, case_id, step,
                        exc.message)
            return False, f"Temporal did not take the decision ({exc.status.name}); submit again"
        # The decision is in: answer now. The channel message follows in the background (a Slack
        # rate limit must not turn an accepted approval into "did not answer in time").
        self._background(self.refresh_case(case_id))
        if result.startswith("refused:"):  # state moved between validation and handling: kept in the case
            return False, result.removeprefix("refused:").strip()
        return True, f"{approver}: {result}"

    @staticmethod
    def team_refusal(policy: Policy, team_id: str | None) -> str | None:
        """Why a request from Slack workspace `team_id` must be refused, or None."""
        entry = policy.deployment.chat_bridges.get(PLATFORM)
        expected = entry.team_id if entry is not None else None
        if expected is None or team_id == expected:
            return None
        return (f"Slack workspace {team_id or '(none given)'} is not this deployment's ({expected}, "
                f"deployment.chat_bridges.{PLATFORM}.team_id): its users cannot approve")

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("updating the channel message failed (the next notifier pass retries): %s",
                        task.exception())

    async def open_reason_modal(self, trigger_id: str, case_id: str, step: str, decision: str,
                                channel: str, ts: str) -> None:
        await self.slack.open_view(trigger_id, reason_modal(case_id, step, decision, channel, ts))

    # ------------------------------------------------------------ the HTTP endpoint

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None, "the bridge is not serving"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=ANSWER_TIMEOUT)

    def handle_interaction(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        """(HTTP status, JSON answer) for one request Slack sent; runs in a server thread."""
        refusal = signature_refusal(self.secret, timestamp=headers.get("x-slack-request-timestamp"),
                                    sig=headers.get("x-slack-signature"), body=body)
        if refusal is None:
            refusal = self._replay_refusal(headers["x-slack-signature"])
        if refusal:
            self.refused_requests += 1
            log.warning("refused a request to the interactivity endpoint: %s", refusal)
            return 401, {"error": refusal}
        bad = 400, {"error": "expected a form-encoded `payload` with Slack's interaction JSON"}
        try:
            fields = parse_qs(body.decode(), strict_parsing=False, max_num_fields=50)
            payload = json.loads(fields["payload"][0])
        except (KeyError, IndexError, ValueError, UnicodeDecodeError, RecursionError):
            return bad
        if not isinstance(payload, dict):
            return bad
        try:
            if payload.get("type") == "block_actions":
                return self._on_click(payload)
            if payload.get("type") == "view_submission":
                return self._on_submit(payload)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # signed by Slack, but not its shape
            log.warning("malformed %s payload: %s", payload.get("type"), exc)
            return 400, {"error": f"malformed {payload.get('type')} payload"}
        return 200, None

    def _replay_refusal(self, sig: str) -> str | None:
        """Each signed request is taken once: the same signature again (a replay) is refused."""
        now = time.monotonic()
        with self._seen_lock:
            for old in [s for s, at in self._seen.items() if now - at > 2 * MAX_SKEW_SECONDS]:
                del self._seen[old]
            if sig in self._seen:
                return "replayed request: this exact signed request was already received"
            self._seen[sig] = now
        return None

    def _on_click(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        for action in payload.get("actions") or []:
            decision = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}.get(action.get("action_id"))
            if decision is None:
                continue
            team_refusal = self.team_refusal(load_policy(), _user_team(payload))
            if team_refusal:  # no modal for a user who could not approve anyway
                log.warning("no reason modal for Slack user %s: %s", (payload.get("user") or {}).get("id"),
                            team_refusal)
                return 200, None
            try:
                target = json.loads(action.get("value") or "")
                container = payload.get("container") or {}
                self._on_loop(self.open_reason_modal(
                    str(payload["trigger_id"]), str(target["case"]), str(target["step"]), decision,
                    str(container.get("channel_id", "")), str(container.get("message_ts", ""))))
            except (KeyError, ValueError, TypeError) as exc:
                return 400, {"error": f"malformed button payload: {exc}"}
            except ConnectorError as exc:
                log.warning("could not open the reason modal: %s", exc)
            return 200, None
        return 200, None

    def _on_submit(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        view = payload.get("view") or {}
        if view.get("callback_id") != MODAL_CALLBACK:
            return 200, None
        try:
            meta = json.loads(view.get("private_metadata") or "")
            values = (view.get("state") or {}).get("values") or {}
            reason = str(((values.get(REASON_BLOCK) or {}).get(REASON_ACTION) or {}).get("value") or "")
            user_id = str(payload["user"]["id"])
            case_id, step, decision = str(meta["case"]), str(meta["step"]), str(meta["decision"])
        except (KeyError, ValueError, TypeError) as exc:
            return 400, {"error": f"malformed view submission: {exc}"}
        if not reason.strip():
            return 200, {"response_action": "errors", "errors": {REASON_BLOCK: "a reason is required"}}
        try:
            accepted, text = self._on_loop(self.decide(user_id=user_id, case_id=case_id, step=step,
                                                       decision=decision, reason=reason,
                                                       view_id=str(view.get("id", "")),
                                                       team_id=_user_team(payload)))
        except TimeoutError:
            return 200, {"response_action": "errors",
                         "errors": {REASON_BLOCK: "Temporal did not answer in time: the decision may still apply; "
                                                  "submit again to see (it is never counted twice)"}}
        if not accepted:
            return 200, {"response_action": "errors", "errors": {REASON_BLOCK: f"Refused: {text}"[:1900]}}
        return 200, {"response_action": "update", "view": result_modal(text)}

    def http_server(self, host: str, port: int) -> ThreadingHTTPServer:
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "signoff-chat-bridge"
            timeout = SOCKET_TIMEOUT  # a client that stops sending is dropped

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?", 1)[0] != INTERACTIONS_PATH:
                    self._answer(404, {"error": f"not found; Slack's interactivity URL is {INTERACTIONS_PATH}"})
                    return
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    if name.lower() in SLACK_HEADERS and name.lower() in headers:
                        self._answer(400, {"error": f"{name} given more than once"})
                        return
                    headers[name.lower()] = value
                raw_length = headers.get("content-length", "0").strip() or "0"
                if not (raw_length.isascii() and raw_length.isdigit()):
                    self._answer(400, {"error": "Content-Length is not a number"})
                    return
                length = int(raw_length)
                if length > MAX_BODY:
                    self._answer(413, {"error": "request too large"})
                    return
                body = self._read_body(length)
                if body is None:
                    self._answer(408, {"error": "the body did not arrive in time"})
                    return
                try:
                    status, answer = bridge.handle_interaction(headers, body)
                except Exception:  # noqa: BLE001 - one bad request must not stop the bridge
                    log.exception("interaction failed")
                    status, answer = 500, {"error": "internal error; see the bridge's log"}
                self._answer(status, answer)

            def _read_body(self, length: int) -> bytes | None:
                """`length` bytes, or None when they do not all arrive within BODY_DEADLINE."""
                deadline = time.monotonic() + BODY_DEADLINE
                chunks: list[bytes] = []
                left = length
                try:
                    while left > 0:
                        if time.monotonic() > deadline:
                            return None
                        chunk = self.rfile.read1(min(left, 65536))
                        if not chunk:
                            return None
                        chunks.append(chunk)
                        left -= len(chunk)
                except TimeoutError:
                    return None
                return b"".join(chunks)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/healthz":
                    self._answer(200, {"ok": True})
                else:
                    self._answer(404, {"error": "not found"})

            def _answer(self, status: int, answer: dict[str, Any] | None) -> None:
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                if answer is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                log.debug("%s %s", self.address_string(), format % args)

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        return server

    @contextlib.asynccontextmanager
    async def listening(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve the interactivity endpoint on `host:port` (0: any free port); yields its URL."""
        self.loop = asyncio.get_running_loop()
        server = self.http_server(host, port)
        thread = threading.Thread(target=server.serve_forever, name="chat-bridge-http", daemon=True)
        thread.start()
        try:
            yield f"http://{host}:{server.server_address[1]}{INTERACTIONS_PATH}"
        finally:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            if self._tasks:  # channel messages still being refreshed: a little time, then the next pass's job
                _, pending = await asyncio.wait(set(self._tasks), timeout=5.0)
                for task in pending:
                    task.cancel()

    async def serve(self, host: str, port: int, interval: float, stop: asyncio.Event | None = None) -> None:
        """The notifier every `interval` seconds and the endpoint, until `stop` is set."""
        stop = stop or asyncio.Event()
        async with self.listening(host, port) as url:
            log.info("chat bridge listening on %s, posting to %s", url, self.channel)
            while not stop.is_set():
                try:
                    counts = await self.notify_once()
                    if counts["posted"] or counts["updated"]:
                        log.info("posted %(posted)d, updated %(updated)d message(s)", counts)
                except (ConnectorError, RPCError) as exc:
                    log.warning("notifier pass failed (retried in %.0f s): %s", interval, exc)
                except Exception:  # noqa: BLE001 - e.g. a policy file being fixed: keep serving, say why
                    log.exception("notifier pass failed (retried in %.0f s)", interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)


def _user_team(payload: dict[str, Any]) -> str | None:
    """The Slack workspace the acting user belongs to: `user.team_id`, else `team.id`.

    In a Slack Connect channel shared with another organisation, `team.id` is the workspace the
    message lives in while `user.team_id` is the clicking user's own: the user's is the one to check.
    """
    user = payload.get("user") or {}
    team = payload.get("team") or {}
    value = user.get("team_id") or team.get("id")
    return str(value) if value else None
