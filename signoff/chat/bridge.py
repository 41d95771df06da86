"""The Slack chat bridge: approval requests out to a channel, signed decisions back to the cases.

Out (the notifier): every `interval` seconds, the cases waiting for sign-off (Temporal visibility)
are read (`status` query) and each waiting step gets one message with its context and Approve /
Reject buttons (signoff/chat/messages.py); what was posted is kept under `$SIGNOFF_HOME/chat/`, so
a restart posts nothing twice. A message is updated (`chat.update`) when its quorum moves and when
the step is decided, here or anywhere else (CLI, Temporal UI).

In (the decisions): Slack's requests arrive at the interactivity endpoint (signoff/chat/endpoint.py:
size and time limits, Slack's signature, replays, routing). A button click opens a modal asking for
the reason; its submission comes to `SlackBridge.decide`, which maps the Slack user to an approver
through the policy (`approvers.NAME.slack_user`), signs a token with the bridge's Ed25519 key
(claim `via`: "slack:U0ABC123"; the workflow verifies it with
`deployment.chat_bridges.slack.public_key`) and sends the case's `approve` / `reject` update.
A refusal comes back at once, is shown in the modal and is recorded in `audit/refused.jsonl` (as
the CLI records its own), without the token. Nothing here decides: the case workflow does.

Verdicts and rollbacks: a case that waits for its verdict (it went to an analyst, or its playbook is
done) or has executed a high-impact action a rollback can restore gets one message of its own
(`case_message`, stored under the step "(case)") with Close with verdict / Request rollback. The
verdict modal's grade and reason go to the case's `close` update (`close_case`), the rollback's
reason by the way `signoff rollback` sends it (`request_rollback`: the case's `rollback` update
while it runs, `CASE-undo` through signoff/undo.py `request_undo` once it has ended), each as the
mapped approver with a token the bridge signs for (case, "(case)", close|rollback). Who may close
(`close_roles`), rollback roles, quorum and window are the workflows' to check, as for the CLI. The
message follows the rollback (requests counted against the quorum, running, done, failed and
escalated), also after the case ended, until nothing more can change.

Hardening (docs/deployment.md §7, tests/test_chat_security.py): with
`deployment.chat_bridges.slack.team_id` users of another workspace are refused; a decision is
answered before its channel message is refreshed; the endpoint's own limits are in its module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Coroutine
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from connectors.http import ConnectorError, Secret
from connectors.slack import Slack, SlackApiError
from policies.engine import Policy, parse_duration
from policies.loader import load_policy
from policies.signing import CASE_STEP, public_key_text, sign_approval
from signoff import settings
from signoff.busy import CaseBusyError, while_busy
from signoff.case_view import read_case_view
from signoff.chat.endpoint import (
    BODY_DEADLINE,
    INTERACTIONS_PATH,
    SOCKET_TIMEOUT,
    InteractionEndpoint,
    http_server,
)
from signoff.chat.messages import (
    CASE_ITEM,
    WAITING,
    CaseState,
    case_finished,
    case_message,
    close_modal,
    reason_modal,
    rollback_modal,
    step_message,
    waiting_steps,
    wants_case_message,
)
from signoff.chat.store import Posted, PostedMessages
from signoff.keys import ApproverKeyError, read_key_file, write_key_file
from signoff.listing import case_pages, case_query
from signoff.models import ApprovalRequest, CaseStatus, CaseView, CloseRequest, RollbackRequest, Verdict
from signoff.refused_log import record_refusal
from signoff.undo import UndoRefused, read_undo, request_undo, rollback_reply_text, undo_id

log = logging.getLogger("signoff.chat")

PLATFORM = "slack"
BRIDGE_KEY_ENV = "SIGNOFF_CHAT_BRIDGE_KEY_FILE"
TOKEN_TTL = timedelta(minutes=10)
# Slack wants an answer to a modal within 3 s: a rollback that takes longer (compensations, the undo
# workflow reading the ended case) is answered "sent" and followed in the background.
ROLLBACK_ANSWER_WAIT = 2.0
# A modal's submission is answered within Slack's 3 s: a case busy longer than this (signoff/busy.py) is told to
# the analyst ("submit again"), not waited for as the CLI does.
BUSY_RETRY_SECONDS = 2.0
# Cases the notifier reads: waiting for sign-off, and waiting for a verdict (the case message).
NOTIFIED = (CaseStatus.awaiting_approval, CaseStatus.escalated, CaseStatus.awaiting_verdict, CaseStatus.contained)


def _cause(exc: Exception) -> str:
    """The workflow's refusal in a failed update (its ApplicationError's message), or the error's text."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return str(cause.message if hasattr(cause, "message") else cause)
    return str(exc)


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
    """Posts the waiting steps to one channel and sends the decisions made there to the cases."""

    def __init__(self, client: Client, slack: Slack, channel: str, key: Ed25519PrivateKey,
                 signing_secret: Secret | str, *, store: PostedMessages | None = None,
                 task_queue: str | None = None) -> None:
        self.client = client
        self.task_queue = task_queue  # only cases of this task queue (the workers'); None: every case
        self.slack = slack
        self.channel = channel
        self.key = key
        self.store = store or PostedMessages.for_channel(PLATFORM, channel)
        self.endpoint = InteractionEndpoint(self, signing_secret)  # Slack's requests in: checked, routed here
        self._sync_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.rollback_answer_wait = ROLLBACK_ANSWER_WAIT  # seconds a rollback's modal waits for its outcome

    # ------------------------------------------------------------ out: the notifier

    async def waiting_case_ids(self) -> list[str]:
        ids: list[str] = []
        extra = f"TaskQueue='{self.task_queue}'" if self.task_queue else None
        for status in NOTIFIED:
            async for page in case_pages(self.client, case_query(status.value, extra)):
                ids += [row["case_id"] for row in page if row["case_id"] not in ids]
        return ids

    async def notify_once(self) -> dict[str, int]:
        """One pass: post a message for each newly waiting step, update those whose state moved."""
        counts = {"posted": 0, "updated": 0, "cases": 0}
        ids = await self.waiting_case_ids()
        waiting = set(ids)
        ids += sorted({p.case for p in self.store.open_items()} - waiting)
        failed: list[ConnectorError] = []
        for case_id in ids:
            view = await self._view(case_id, maybe_ended=case_id not in waiting)
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

    async def _view(self, case_id: str, *, maybe_ended: bool = False) -> CaseView | None:
        """The case as it is (its `status` query) or, ended, as it ended. `maybe_ended`: look first (a case
        message stays open after its case ended, while a rollback is possible): an ended case is read
        from its result, which the server keeps, instead of a query a worker answers by replaying it."""
        if maybe_ended:
            with contextlib.suppress(Exception):
                described = await self.client.get_workflow_handle(case_id).describe()
                if described.status == WorkflowExecutionStatus.COMPLETED:
                    return await read_case_view(self.client, case_id, completed=True, run_id=described.run_id,
                                                timeout=timedelta(seconds=10))
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
                item, p, u = await self._write(view.case_id, step.step_id, item, text, blocks,
                                               repost=step.step_id in waiting)
                posted, updated = posted + p, updated + u
                item.done = step.state not in WAITING
                self.store.put(item)
            p, u = await self._sync_case(view, policy)
            return posted + p, updated + u

    async def _sync_case(self, view: CaseView, policy: Policy) -> tuple[int, int]:
        """The case's own message (verdict, rollback): posted while the case waits for its verdict or
        can be rolled back, updated as that moves, kept up to date after the case ended while a
        rollback through its undo workflow is still possible."""
        item = self.store.get(view.case_id, CASE_ITEM)
        if item is not None and item.done:
            return 0, 0
        if item is None and not wants_case_message(CaseState(view), policy):
            return 0, 0
        state = await self._case_state(view)
        if item is None and not wants_case_message(state, policy):
            return 0, 0
        text, blocks = case_message(state, policy)
        item, posted, updated = await self._write(view.case_id, CASE_ITEM, item, text, blocks,
                                                  repost=not case_finished(state, policy))
        item.done = case_finished(state, policy)
        self.store.put(item)
        return posted, updated

    async def _case_state(self, view: CaseView) -> CaseState:
        """Whether the case's workflow has ended and, if so, its undo workflow's state."""
        handle = self.client.get_workflow_handle(view.case_id)
        try:
            described = await handle.describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return CaseState(view, ended=True)
        if described.status == WorkflowExecutionStatus.RUNNING:
            return CaseState(view)
        how = described.status.name.lower() if described.status is not None else "ended"
        if described.status != WorkflowExecutionStatus.COMPLETED:
            return CaseState(view, ended=True, how=how)  # no final view: no rollback after close
        try:
            undo = await read_undo(self.client, view.case_id)
        except RPCError as exc:  # shown without the undo's progress; the next pass reads it again
            log.warning("cannot read %s: %s", undo_id(view.case_id), exc.message)
            undo = None
        return CaseState(view, ended=True, undo=undo, how=how)

    async def _write(self, case_id: str, key: str, item: Posted | None, text: str, blocks: list[dict[str, Any]],
                     *, repost: bool) -> tuple[Posted, int, int]:
        """Post the message (first time) or update it when its text changed: (item, posted, updated)."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        if item is None:
            answer = await self.slack.post_message(self.channel, text, blocks)
            return Posted(case=case_id, step=key, channel=str(answer["channel"]), ts=str(answer["ts"]),
                          digest=digest), 1, 0
        posted = updated = 0
        if digest != item.digest:
            try:
                await self.slack.update_message(item.channel, item.ts, text, blocks)
                updated += 1
            except SlackApiError as exc:
                if exc.error != "message_not_found":
                    raise
                # Deleted in Slack. While it still asks for something (its buttons), a new message;
                # once settled, there is nothing left to update.
                if repost:
                    answer = await self.slack.post_message(self.channel, text, blocks)
                    item.channel, item.ts = str(answer["channel"]), str(answer["ts"])
                    posted += 1
            item.digest = digest
        return item, posted, updated

    async def refresh_case(self, case_id: str) -> None:
        view = await self._view(case_id, maybe_ended=True)
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

        approver, refusal = self.identity(policy, user_id, team_id)
        if approver is None:
            return refused(refusal)
        token = self._sign(policy, case_id=case_id, step=step, decision=decision, approver=approver, via=via)
        req = ApprovalRequest(step=step, approver=approver, reason=reason, token=token)
        # The update id is the modal's: Slack resending the same submission gets the first answer.
        taken, result = await self._update(case_id, decision, req, f"{via}:{view_id}:{decision}")
        if taken is None:
            return False, result
        if not taken:
            return refused(result, approver, token)
        # The decision is in: answer now. The channel message follows in the background (a Slack
        # rate limit must not turn an accepted approval into "did not answer in time").
        self._background(self.refresh_case(case_id))
        if result.startswith("refused:"):  # state moved between validation and handling: kept in the case
            return False, result.removeprefix("refused:").strip()
        return True, f"{approver}: {result}"

    async def close_case(self, *, user_id: str, case_id: str, grade: str, reason: str, view_id: str,
                         team_id: str | None = None) -> tuple[bool, str]:
        """`user_id`'s verdict: the case's `close` update (as `signoff close` sends it), as the approver
        the policy maps the Slack user to, with a token the bridge signs for (case, "close", approver).
        Who may close is the case's to say (`close_roles` of its alert type); a refusal is recorded."""
        via = f"{PLATFORM}:{user_id}"
        policy = load_policy()

        def refused(refusal: str, analyst: str | None = None, token: str | None = None) -> tuple[bool, str]:
            record_refusal("close", case_id, {"analyst": analyst, "verdict": grade, "reason": reason[:200],
                                              "via": via, "token": token}, refusal)
            return False, refusal

        try:
            verdict = Verdict(grade)
        except ValueError:
            return refused(f"unknown grade {grade!r}: one of {', '.join(v.value for v in Verdict)}")
        analyst, refusal = self.identity(policy, user_id, team_id)
        if analyst is None:
            return refused(refusal)
        token = self._sign(policy, case_id=case_id, step=CASE_STEP, decision="close", approver=analyst, via=via)
        req = CloseRequest(analyst=analyst, verdict=verdict, reason=reason, token=token)
        taken, result = await self._update(case_id, "close", req, f"{via}:{view_id}:close")
        if taken is None:
            return False, result
        if not taken:
            return refused(result, analyst, token)
        self._background(self.refresh_case(case_id))
        return True, f"{analyst}: {result}"

    async def request_rollback(self, *, user_id: str, case_id: str, reason: str, view_id: str,
                               team_id: str | None = None) -> tuple[bool, str]:
        """`user_id`'s rollback request, by the way `signoff rollback` sends it: the case's own `rollback`
        update while it runs, its undo workflow (`CASE-undo`, signoff/undo.py `request_undo`) once it
        has ended. Roles, quorum, window and refusals are the workflows' own; a refusal is recorded.

        Slack wants its answer within 3 s: when the outcome is not in after ROLLBACK_ANSWER_WAIT, the
        answer says the request was sent and the channel message follows the rollback to its end."""
        via = f"{PLATFORM}:{user_id}"
        policy = load_policy()

        sent_to: dict[str, str] = {}  # the undo workflow, once the request goes there (recorded, as the CLI does)

        def refused(refusal: str, who: str | None = None, token: str | None = None) -> tuple[bool, str]:
            record_refusal("rollback", case_id, {"requested_by": who, "reason": reason[:200], "via": via,
                                                 "token": token, **sent_to}, refusal)
            return False, refusal

        who, refusal = self.identity(policy, user_id, team_id)
        if who is None:
            return refused(refusal)
        token = self._sign(policy, case_id=case_id, step=CASE_STEP, decision="rollback", approver=who, via=via)
        req = RollbackRequest(requested_by=who, reason=reason, token=token)
        update_id = f"{via}:{view_id}:rollback"
        try:
            described = await self.client.get_workflow_handle(case_id).describe()
            running, queue = described.status == WorkflowExecutionStatus.RUNNING, described.task_queue
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                return False, f"Temporal did not take the decision ({exc.status.name}); submit again"
            from signoff.history import archived_runs

            if not archived_runs(case_id):  # neither in Temporal nor in the archive
                return refused(f"case {case_id} is not known: {exc.message}", who, token)
            running, queue = False, ""
        outcome: asyncio.Future[str]
        if running:
            try:
                handle = self.client.get_workflow_handle(case_id)
                update = await while_busy(lambda: handle.start_update(  # busy: sent again (signoff/busy.py)
                    "rollback", req, id=update_id, wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=str),
                    case_id, budget=BUSY_RETRY_SECONDS / 2)  # its outcome may wait ROLLBACK_ANSWER_WAIT more
            except WorkflowUpdateFailedError as exc:
                return refused(_cause(exc), who, token)
            except CaseBusyError as exc:  # nothing recorded: not a refusal of the request itself
                return False, str(exc)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # it ended on the way: as `signoff rollback` again would
                    running = False
                else:
                    return False, f"Temporal did not take the decision ({exc.status.name}); submit again"
            else:
                outcome = asyncio.ensure_future(update.result())
        if not running:
            sent_to["undo_workflow"] = undo_id(case_id)
            outcome = asyncio.ensure_future(request_undo(
                self.client, case_id, req, task_queue=queue or self.task_queue or settings.task_queue(),
                update_id=update_id))
        done, _ = await asyncio.wait({outcome}, timeout=self.rollback_answer_wait)
        if outcome not in done:
            self._background(self._follow_rollback(outcome, case_id, refused, who, token))
            self._background(self.refresh_case(case_id))
            where = f"case {case_id}" if running else f"{undo_id(case_id)} (the case has ended)"
            return True, (f"{who}: rollback request sent to {where}; the channel message shows its progress and "
                          "outcome")
        self._background(self.refresh_case(case_id))
        try:
            reply = outcome.result()
        except (WorkflowUpdateFailedError, UndoRefused) as exc:
            return refused(_cause(exc), who, token)
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError, RuntimeError) as exc:
            # Not the workflows' answer (Temporal unavailable, the undo kept finishing...): submitting the
            # same modal again is safe (same update id: a request that did get in is not counted twice).
            log.warning("could not send %s's rollback of %s to Temporal: %s", who, case_id, exc)
            return False, f"Temporal did not take the rollback request ({type(exc).__name__}); submit again"

        text = rollback_reply_text(reply)
        return True, f"{who}: {text}" if running else f"{who}: case {case_id} has ended; rollback after close " \
                                                     f"({undo_id(case_id)}): {text}"

    async def _follow_rollback(self, outcome: asyncio.Future[str], case_id: str, refused: Any, who: str,
                               token: str) -> None:
        """A rollback answered "sent": record its refusal if one comes later, and refresh the message at its end."""
        try:
            await outcome
        except (WorkflowUpdateFailedError, UndoRefused) as exc:
            refused(_cause(exc), who, token)
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError, RuntimeError) as exc:
            log.warning("%s's rollback of %s did not finish here (the message shows what the case says): %s",
                        who, case_id, exc)
        await self.refresh_case(case_id)

    def identity(self, policy: Policy, user_id: str, team_id: str | None) -> tuple[str | None, str]:
        """(approver, "") for the Slack user the policy maps to an approver; else (None, why not)."""
        team_refusal = self.team_refusal(policy, team_id)
        if team_refusal:
            return None, team_refusal
        approver = policy.approver_for_chat_user(PLATFORM, user_id)
        if approver is None:
            return None, (f"Slack user {user_id} is not an approver in policy: an approver's entry must declare "
                          f"slack_user: {user_id} (by pull request)")
        return approver, ""

    def _sign(self, policy: Policy, *, case_id: str, step: str, decision: str, approver: str, via: str) -> str:
        """A token signed with the bridge's key for (case, step, decision, approver), bound to the Slack user."""
        ttl = min(TOKEN_TTL, parse_duration(policy.deployment.approval_token_max_ttl))
        return sign_approval(self.key, case_id=case_id, step=step, decision=decision, approver=approver,
                             ttl=ttl, via=via)

    async def _update(self, case_id: str, name: str, arg: Any, update_id: str) -> tuple[bool | None, str]:
        """Send a case update: (True, its answer), (False, the case's refusal) or (None, Temporal trouble)."""
        handle = self.client.get_workflow_handle(case_id)
        try:
            return True, await while_busy(  # busy: sent again (signoff/busy.py)
                lambda: handle.execute_update(name, arg, id=update_id, result_type=str), case_id,
                budget=BUSY_RETRY_SECONDS)
        except WorkflowUpdateFailedError as exc:
            return False, _cause(exc)
        except CaseBusyError as exc:  # nothing recorded: the same decision may be submitted again
            return None, str(exc)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False, f"case {case_id} is not open: {exc.message}"
            # Temporal unavailable, overloaded...: not the case's answer. Submitting the same modal
            # again is safe (same update id: a decision that did get in is not counted twice).
            log.warning("could not send the %s of %s to Temporal: %s", name, case_id, exc.message)
            return None, f"Temporal did not take the decision ({exc.status.name}); submit again"

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

    async def open_case_modal(self, trigger_id: str, case_id: str, kind: str, channel: str, ts: str) -> None:
        """The verdict modal (`kind` "close") or the rollback request's (`kind` "rollback")."""
        modal = close_modal if kind == "close" else rollback_modal
        await self.slack.open_view(trigger_id, modal(case_id, channel, ts))

    # ------------------------------------------------------------ serving (the endpoint: signoff/chat/endpoint.py)

    @property
    def refused_requests(self) -> int:
        """Requests the endpoint refused for their Slack signature (401) or as replays."""
        return self.endpoint.refused_requests

    @property
    def _seen(self) -> dict[str, float]:
        """The signatures the endpoint has taken (a replay of one is refused)."""
        return self.endpoint.seen

    def http_server(self, host: str, port: int) -> ThreadingHTTPServer:
        """The endpoint's HTTP server; SOCKET_TIMEOUT and BODY_DEADLINE are read now, from this module."""
        return http_server(self.endpoint, host, port, socket_timeout=SOCKET_TIMEOUT, body_deadline=BODY_DEADLINE)

    @contextlib.asynccontextmanager
    async def listening(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve the interactivity endpoint on `host:port` (0: any free port); yields its URL."""
        self.endpoint.loop = asyncio.get_running_loop()
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

