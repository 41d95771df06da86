"""Rolling back a case that has ended (promise 6: every executed action can be undone).

A case rolls back its own actions while its workflow runs (`rollback` update, workflows/case.py).
Once it has ended (a verdict under a policy without `rollback_window`, or the window is over) the
way back is a workflow of its own, `CaseUndoWorkflow` (workflows/case_undo.py), with the id
`<case_id>-undo` (case ids end in hex digits or numbers and follow-ups in `-rN`: no collision). It
reads the case as it ended, and on a rollback request that the policy in force now accepts (roles,
signed token, `rollback_quorum` different people) restores the captured state of each executed step,
newest first, unless the target changed since the case left it (then a human decides) or another
open case holds it (handed over, as the case itself does). The case's own record, its verdict
included, stays as it was.

This module: the models shared by the workflow, its activity and the CLI, and the client side
(`request_undo`: start the undo workflow or add a request to it; `read_undo`: its state now).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from signoff.models import ActionTarget, CaseStatus, CloseRequest, Reversibility, StepState, StepView

UNDO_SUFFIX = "-undo"
UNDO_TYPE = "CaseUndoWorkflow"


def undo_id(case_id: str) -> str:
    """The undo workflow of `case_id`. Never a case id: those end in hex digits, numbers or `-rN`."""
    return f"{case_id}{UNDO_SUFFIX}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UndoInput(_Frozen):
    case_id: str


class UndoStatus(StrEnum):
    loading = "loading"  # reading the ended case and the policy in force
    waiting = "waiting"  # for rollback requests (the policy's rollback_quorum)
    running = "running"  # restoring
    rolled_back = "rolled_back"  # every step that could be restored was
    partly_rolled_back = "partly_rolled_back"  # done; some steps were not restored (changed since, held, ...)
    rollback_failed = "rollback_failed"  # a compensation failed: escalated; a new request retries what failed
    expired = "expired"  # not enough people asked in time: nothing was undone
    nothing_to_undo = "nothing_to_undo"  # the case left nothing that can be restored
    unavailable = "unavailable"  # the case could not be read as ended (still running, unknown, no final view)


class UndoOutcome(StrEnum):
    to_restore = "to_restore"  # restored when the rollback runs
    restored = "restored"
    already_restored = "already_restored"  # the target is already back in its captured state: nothing written
    changed_since = "changed_since"  # not as the case's action left it: not restored, a human decides
    kept = "kept"  # another open case holds the same action on the target: handed over, not undone
    failed = "failed"  # the compensation (or reading the target) failed: escalated; retried by a new request
    left = "left"  # not for this rollback: irreversible, already undone in the case, never executed, ...


class UndoStep(_Frozen):
    step_id: str
    action: str
    compensation: str | None
    reversibility: Reversibility
    target: ActionTarget
    case_state: StepState  # the step's state when the case ended
    before: dict[str, Any] | None = None  # captured by the case before its action
    after: dict[str, Any] | None = None  # what the case's action left (verified)
    idempotency_key: str = ""
    outcome: UndoOutcome
    why: str = ""
    current: dict[str, Any] | None = None  # the target's state read just before restoring
    restored: dict[str, Any] | None = None  # the state the compensation verified
    at: datetime | None = None


class UndoRequest(_Frozen):
    """An accepted rollback request (one person's; `rollback_quorum` of them run the rollback)."""

    requested_by: str
    reason: str
    at: datetime
    signed: bool = False
    update_id: str = ""
    channel: str | None = None  # a chat bridge's token: "slack:U0ABC123"
    signed_with: str | None = None  # the public key the token verified with (checked again at the quorum)


class UndoRun(_Frozen):
    """One run of the compensations: who asked (the quorum that met), when, under which policy."""

    started_at: datetime
    finished_at: datetime | None = None
    requested_by: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_version: str
    steps: tuple[str, ...]  # the steps it tried, newest first
    result: str = ""


class EndedCase(_Frozen):
    """The case as it ended, for the undo workflow (activity result). `problem` when it cannot be used."""

    case_id: str
    run_id: str = ""
    status: CaseStatus | None = None
    alert_type: str = ""
    policy_version: str = ""  # the policy the case ran under
    verdict: CloseRequest | None = None
    ended_at: datetime | None = None
    source: str = ""  # "final result" | "archive"
    steps: tuple[StepView, ...] = ()
    attempt_suffix: dict[str, str] = {}  # step id -> the suffix of its last action's idempotency key
    # step id -> the state its rollback restores, where a hold handed over by another case
    # (`take_over_hold`) replaced the one the step captured itself (the view shows only the latter)
    handed_over: dict[str, dict[str, Any]] = {}
    # Nonces of the rollback tokens sent to the case (its history): a token spent there, or refused
    # there because a rollback was already running, is not good for a second rollback here.
    rollback_nonces: tuple[str, ...] = ()
    problem: str = ""


class UndoView(_Frozen):
    case_id: str
    undo_id: str
    status: UndoStatus
    problem: str = ""
    case_status: CaseStatus | None = None
    case_verdict: CloseRequest | None = None
    case_policy_version: str = ""
    case_ended_at: datetime | None = None
    case_source: str = ""
    policy_version: str = ""  # the policy in force now, that governs this rollback
    rollback_roles: tuple[str, ...] = ()
    quorum: int = 1
    votes: tuple[UndoRequest, ...] = ()  # counted towards the quorum, not met yet
    requests: tuple[UndoRequest, ...] = ()  # every accepted request, oldest first
    runs: tuple[UndoRun, ...] = ()
    steps: tuple[UndoStep, ...] = ()  # newest first (the order they are restored in)
    escalations: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be checked (e.g. other cases' holds on a server without visibility)
    waiting_until: datetime | None = None  # requests counted so far expire then


def describe_undo(view: UndoView) -> list[str]:
    """The undo in lines people read (`signoff show`, the CLI's replies)."""
    lines = [f"rollback after close ({view.undo_id}): {view.status.value}"
             + (f" under policy {view.policy_version[:12]}" if view.policy_version else "")
             + (f" (the case ran under {view.case_policy_version[:12]})" if view.case_policy_version else "")]
    if view.problem:
        lines.append(f"  {view.problem}")
    for run in view.runs:
        lines.append(f"  run {run.started_at:%Y-%m-%d %H:%M:%S} UTC asked by {', '.join(run.requested_by)} "
                     f"({'; '.join(repr(r) for r in run.reasons)}): {run.result or 'running'}")
    if view.votes:
        asked = ", ".join(v.requested_by for v in view.votes)
        until = f" until {view.waiting_until:%Y-%m-%d %H:%M} UTC" if view.waiting_until else ""
        lines.append(f"  asked so far: {asked} ({len(view.votes)}/{view.quorum}); nothing is undone until "
                     f"{view.quorum - len(view.votes)} more person(s) with one of the roles "
                     f"{list(view.rollback_roles)} ask{until}")
    for st in view.steps:
        if st.outcome == UndoOutcome.left and st.case_state in (StepState.skipped, StepState.pending,
                                                                 StepState.awaiting_approval, StepState.escalated):
            continue  # never ran: nothing to say about undoing it
        lines.append(f"  - {st.step_id}: {st.action} on {st.target.kind} {st.target.id}: {st.outcome.value}"
                     + (f": {st.why}" if st.why else ""))
    for e in view.escalations:
        lines.append(f"  escalated: {e}")
    if view.case_verdict is not None:
        lines.append(f"  the case's verdict stays on record: {view.case_verdict.verdict.value} by "
                     f"{view.case_verdict.analyst}")
    return lines


class UndoRefused(Exception):
    """A rollback request the undo workflow turned down without it reaching a vote (nothing to undo,
    the case unreadable): the message says why."""


def rollback_reply_text(reply: str) -> str:
    """A rollback's reply in words: "rolled back: ..." for the case's "rollback rolled_back: ..." or the
    undo workflow's "rollback after close rolled_back: ..." (QA6 L10);
    the CLI and the chat bridge say it alike."""
    for prefix in ("rollback after close ", "rollback "):
        for status, words in (("rolled_back", "rolled back"), ("partly_rolled_back", "partly rolled back"),
                              ("rollback_failed", "rollback failed")):
            if reply.startswith(f"{prefix}{status}"):
                return words + reply.removeprefix(f"{prefix}{status}")
    return reply


def finished_text(view: UndoView) -> str:
    """A request that came after the rollback finished: what happened, nothing run again."""
    run = view.runs[-1] if view.runs else None
    who = f" by {', '.join(run.requested_by)} at {run.finished_at or run.started_at:%Y-%m-%d %H:%M:%S} UTC" \
        if run else ""
    restored = [s.step_id for s in view.steps if s.outcome in (UndoOutcome.restored, UndoOutcome.already_restored)]
    not_restored = [f"{s.step_id} ({s.outcome.value})" for s in view.steps
                    if s.outcome in (UndoOutcome.changed_since, UndoOutcome.kept)]
    return (f"case {view.case_id} was already rolled back after it closed ({view.status.value}{who}); nothing was "
            f"run again. Restored: {', '.join(restored) or 'none'}"
            + (f"; not restored: {', '.join(not_restored)}" if not_restored else "")
            + f". `signoff show {view.case_id}` has the details")


# ---------------------------------------------------------------- client side


async def read_undo(client: Any, case_id: str) -> UndoView | None:
    """The undo of `case_id` as it is (running: its `status` query) or ended (its result); None if none."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    handle = client.get_workflow_handle(undo_id(case_id), result_type=UndoView)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return archived_undo(case_id)  # deleted by retention: its archive, if it ran
        raise
    if described.status == WorkflowExecutionStatus.RUNNING:
        view: UndoView = await handle.query("status", result_type=UndoView)
        return view
    if described.status == WorkflowExecutionStatus.COMPLETED:
        ended: UndoView = await handle.result(follow_runs=False)
        return ended
    return None


def archived_undo(case_id: str) -> UndoView | None:
    """The final view of the newest archived undo of `case_id` that ran (it archives itself when it
    ends, as a case does): what a request must be told once Temporal's retention has deleted it."""
    from signoff.history import archived_runs, read_archive

    views = []
    for path in archived_runs(undo_id(case_id)):
        try:
            _, record = read_archive(path)
            views.append(UndoView.model_validate(record["final_view"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    ran = [v for v in views if v.runs]
    return max(ran, key=lambda v: v.runs[-1].started_at) if ran else None


async def _until_loaded(handle: Any, attempts: int = 300) -> None:
    """Wait (a worker answers the query) until the undo has read the case and the policy, so that the
    request is checked by the update's validator: a refusal then leaves no trace in the history, as
    for a case (the CLI records it in `audit/refused.jsonl`). The handler checks again regardless."""
    import asyncio

    from temporalio.service import RPCError

    for _ in range(attempts):
        try:
            view = await handle.query("status", result_type=UndoView)
        except RPCError:
            return  # ended meanwhile, or no worker yet: the update itself says what happened
        if view.status != UndoStatus.loading:
            return
        await asyncio.sleep(0.1)


async def request_undo(client: Any, case_id: str, request: Any, *, task_queue: str, update_id: str) -> str:
    """Send one person's rollback request for the ended case `case_id` to its undo workflow.

    Starts the undo workflow if none runs; a running one counts the request towards its quorum (or
    retries what failed). Once a rollback has finished, a new request runs nothing again: it is told
    what happened. Refusals raise `temporalio.client.WorkflowUpdateFailedError`.
    """
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError
    from temporalio.service import RPCError, RPCStatusCode

    wf_id = undo_id(case_id)
    handle = client.get_workflow_handle(wf_id, result_type=UndoView)
    for tried in range(3):
        try:
            described = await handle.describe()
            status = described.status
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            status = None
            archived = archived_undo(case_id)  # retention deleted a finished undo: it ran, never again
            if archived is not None and archived.status in (UndoStatus.rolled_back, UndoStatus.partly_rolled_back):
                return finished_text(archived)
        if status == WorkflowExecutionStatus.COMPLETED:
            ended: UndoView = await handle.result(follow_runs=False)
            if ended.status in (UndoStatus.rolled_back, UndoStatus.partly_rolled_back):
                return finished_text(ended)
            if ended.status == UndoStatus.nothing_to_undo or (ended.status == UndoStatus.unavailable and tried):
                raise UndoRefused(ended.problem or f"case {case_id}: nothing to roll back")
            # expired (not enough people asked in time), or unreadable before: a new run reads the case again
        if status != WorkflowExecutionStatus.RUNNING:
            # None yet, or the last one ended without undoing anything (expired, unreadable): a new run.
            # Started meanwhile by someone else's request: this one joins it.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await client.start_workflow(
                    UNDO_TYPE, UndoInput(case_id=case_id), id=wf_id, task_queue=task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
        await _until_loaded(client.get_workflow_handle(wf_id))
        try:
            return str(await client.get_workflow_handle(wf_id).execute_update(
                "rollback", request, id=update_id, result_type=str))
        except RPCError as exc:
            if "already completed" not in exc.message.lower():
                raise
            # It finished between the look and the request: look again (a finished one is reported).
    raise RuntimeError(f"the undo workflow {wf_id} kept finishing before it took the request; try again")
