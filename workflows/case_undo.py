"""Rolling back a case after its workflow has ended: `CaseUndoWorkflow`, id `<case_id>-undo`.

The case's own `rollback` (workflows/case.py) works while the case runs. After that (a verdict under
a policy without `rollback_window`, or after the window) `signoff rollback` starts this workflow, or
adds a request to it. It reads the case as it ended (activities/case_undo.py: the workflow result,
or the final view its archive kept), and governs the rollback as the case would, under the policy
in force now: the requester needs one of `rollback_roles`, a signed token where the policy does not
trust unsigned requests (same token, same check as the case: `policies.signing.token_refusal`), and
`rollback_quorum` different people. Then, newest first, for each executed step with a captured
state and a compensation:

- another open case holds the same action on the target (`HeldTargets`): handed over, not undone;
- the target is no longer as the case's action left it (someone changed it since): not restored,
  escalated, a human decides; already back in its captured state: nothing to write;
- otherwise its compensation restores the captured state (`<case>:<step><attempt>:undo-late`).

A failed compensation escalates and the workflow waits for another request, which retries only what
failed. Once done, the workflow completes with its `UndoView`; a later request is told what happened
(signoff/undo.py `request_undo`), nothing runs twice. The case's own record and verdict never change.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.case import Escalation, GovernanceRequest, escalate, load_governance
    from activities.case_undo import ArchiveUndo, archive_undo, read_ended_case
    from activities.executors.base import satisfies
    from activities.response import capture_state, compensate_action, other_holders
    from playbooks import ACTIONS
    from policies.engine import GovernanceSnapshot
    from policies.revocation import signing_key, undo_vote_void_reason
    from policies.signing import CASE_STEP, token_channel, token_nonce, token_refusal
    from signoff.display import identifier
    from signoff.holds import hold_key
    from signoff.models import (
        MAX_REASON_CHARS,
        ActionRequest,
        CaseStatus,
        CompensationRequest,
        Decision,
        HoldersRequest,
        HoldHandover,
        Reversibility,
        RollbackRequest,
        StepState,
        StepView,
    )
    from signoff.undo import (
        EndedCase,
        UndoInput,
        UndoOutcome,
        UndoRequest,
        UndoRun,
        UndoStatus,
        UndoStep,
        UndoView,
        finished_text,
        undo_id,
    )
    from workflows.case import (
        ACTION_HEARTBEAT,
        ACTION_RETRY,
        ACTION_TIMEOUT,
        ESCALATE_RETRY,
        QUICK,
        _brief,
        _cause,
        _too_long,
    )
    from workflows.handover import (
        ENDED_HOLDERS,
        ask_ended_holders,
        kept_for_ended,
        restores_only_this,
        tell_holders,
    )

# A start whose request was refused (or never came) ends after this with nothing done.
FIRST_REQUEST_WAIT = timedelta(minutes=10)
# Requests counted towards the quorum expire this long after the first of them: nothing is undone.
QUORUM_WAIT = timedelta(days=7)
# Undos recorded before the requests behind a quorum were checked again when it is met replay without it.
RECHECK_UNDO_VOTES = "recheck-undo-votes"
# An undo started under another id than `<case>-undo` runs nothing (taken only for such a start).
UNDO_ID_CHECKED = "undo-id-checked"
# QA9: the reply said "the case's verdict stays on record" for a case that had none (merged, or closed idle).
# Taken only on that path, when the reply is made.
UNDO_REPLY_NO_VERDICT = "undo-reply-no-verdict"
READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                         maximum_attempts=10)
_NEVER_RAN = (StepState.pending, StepState.awaiting_approval, StepState.approved, StepState.escalated,
              StepState.skipped)


@workflow.defn(name="CaseUndoWorkflow")
class CaseUndoWorkflow:
    @workflow.init
    def __init__(self, inp: UndoInput) -> None:
        self.case_id = inp.case_id
        self.state = UndoStatus.loading
        self.problem = ""
        self.loaded = False  # the case and the policy have been read (or found unusable)
        self.ended: EndedCase | None = None
        self.gov: GovernanceSnapshot | None = None
        self.steps: dict[str, UndoStep] = {}  # newest first
        self.votes: list[UndoRequest] = []
        self.requests: list[UndoRequest] = []
        self.runs: list[UndoRun] = []
        self.escalations: list[str] = []
        self.notes: list[str] = []
        self.used_nonces: set[str] = set()
        self.run_wanted = False
        self.waiting_until: datetime | None = None

    # ------------------------------------------------------------------ main line

    @workflow.run
    async def run(self, inp: UndoInput) -> UndoView:
        if workflow.info().workflow_id != undo_id(self.case_id) and workflow.patched(UNDO_ID_CHECKED):
            # QA7 F13: a second undo under another id (`temporal workflow start`) kept its own nonces, so the
            # rollback tokens spent on the real one could be replayed there: it undoes nothing.
            return await self._finish(UndoStatus.unavailable, (
                f"{workflow.info().workflow_id!r} is not the undo workflow of case {self.case_id} "
                f"({undo_id(self.case_id)!r}): use `signoff rollback {self.case_id}`"))
        try:
            self.ended = await workflow.execute_activity(
                read_ended_case, inp, start_to_close_timeout=timedelta(seconds=60), retry_policy=READ_RETRY)
        except ActivityError as err:
            return await self._finish(UndoStatus.unavailable, f"case {self.case_id} could not be read: {_cause(err)}")
        if self.ended.problem:
            return await self._finish(UndoStatus.unavailable, self.ended.problem)
        self.used_nonces.update(self.ended.rollback_nonces)  # a token spent on the case is spent here too
        # The policy in force now governs the rollback (the case's own version is kept beside it).
        try:
            self.gov = await workflow.execute_activity(
                load_governance, GovernanceRequest(alert_type=self.ended.alert_type, case_id=self.case_id, fresh=True),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=READ_RETRY,
            )
        except ActivityError as err:  # no policy, no governed rollback: say so (a new request tries again)
            return await self._finish(UndoStatus.unavailable, f"the policy in force could not be read: {_cause(err)}")
        self._plan(self.ended)
        if not any(s.outcome == UndoOutcome.to_restore for s in self.steps.values()):
            return await self._finish(UndoStatus.nothing_to_undo, self._nothing_text())
        self.state = UndoStatus.waiting
        self.loaded = True
        while await self._wait_for_quorum():
            await self._restore_all()
            if self.state != UndoStatus.rollback_failed:
                break
        if self.runs:
            await self._archive()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    async def _finish(self, status: UndoStatus, problem: str) -> UndoView:
        """Nothing to run: requests already sent are refused with `problem`, then the workflow ends."""
        self.state, self.problem, self.loaded = status, problem, True
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    async def _refresh_policy(self) -> None:
        """Re-read the policy in force (the undo may wait days for its quorum or a retry); the one read
        before stays if it cannot be read now."""
        assert self.ended is not None
        try:
            self.gov = await workflow.execute_activity(
                load_governance, GovernanceRequest(alert_type=self.ended.alert_type, case_id=self.case_id, fresh=True),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
            )
        except ActivityError as err:
            self.notes.append(f"the policy could not be re-read ({_cause(err)}); version {self._policy()} applies")

    def _policy(self) -> str:
        return self.gov.policy_version[:16] if self.gov else "?"

    async def _archive(self) -> None:
        """Keep this history after Temporal deletes it, as the case keeps its own. Never fails the undo."""
        try:
            await workflow.execute_activity(
                archive_undo, ArchiveUndo(workflow_id=workflow.info().workflow_id, run_id=workflow.info().run_id,
                                          final_view=self.view()),
                start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
            )
        except ActivityError as err:
            self.escalations.append(f"archiving the history failed: {_cause(err)}; run `signoff audit archive`")

    def _plan(self, ended: EndedCase) -> None:
        """Each step of the case, newest first, with what this rollback will do about it."""
        for st in reversed(ended.steps):
            self.steps[st.step_id] = self._step_plan(ended, st)

    def _step_plan(self, ended: EndedCase, st: StepView) -> UndoStep:
        result = st.result
        before = ended.handed_over.get(st.step_id, result.before if result else None)
        plan = UndoStep(step_id=st.step_id, action=st.action, compensation=None, reversibility=st.reversibility,
                        target=st.target, case_state=st.state, before=before, after=result.after if result else None,
                        outcome=UndoOutcome.left)
        compensation = _compensation_of(st)
        if st.state in (StepState.executed, StepState.compensation_failed):
            if st.reversibility == Reversibility.irreversible or compensation is None:
                return plan.model_copy(update={"why": "irreversible: still in effect; remediate by hand"})
            if result is None or before is None:
                return plan.model_copy(update={"why": "no state was captured before it: nothing to restore to"})
            key = f"{self.case_id}:{st.step_id}{ended.attempt_suffix.get(st.step_id, '')}:undo-late"
            why = "the case's own rollback failed for it" if st.state == StepState.compensation_failed else ""
            return plan.model_copy(update={"compensation": compensation, "idempotency_key": key,
                                           "outcome": UndoOutcome.to_restore, "why": why})
        if st.state == StepState.compensated:
            return plan.model_copy(update={"why": "already undone by the case's own rollback"})
        if st.state == StepState.kept:
            return plan.model_copy(update={"why": f"left to another case by the case's rollback: {st.note}"})
        if st.state == StepState.failed:
            return plan.model_copy(update={"why": f"its action failed ({st.error}); nothing confirmed to undo: "
                                                  "check the target by hand"})
        if st.state in _NEVER_RAN:
            return plan.model_copy(update={"why": "never ran"})
        return plan.model_copy(update={"why": f"{st.state.value} when the case ended"})

    def _nothing_text(self) -> str:
        assert self.ended is not None
        said = [f"{s.step_id} ({s.why})" for s in self.steps.values() if s.why and s.why != "never ran"]
        return (f"case {self.case_id} ({self.ended.status.value if self.ended.status else 'ended'}) can no longer be "
                "rolled back: nothing it did is left for Signoff to restore"
                + (f" ({'; '.join(said)})" if said else " (no action was executed)")
                + f"; `signoff explain {self.case_id}` lists each action, the state captured before it and its undo")

    async def _wait_for_quorum(self) -> bool:
        """Until enough people asked (True). False: nobody's request was accepted in time, or the
        requests counted expired before the quorum met (nothing undone; said so)."""
        while not self.run_wanted:
            if self.votes:
                self.waiting_until = self.votes[0].at + QUORUM_WAIT
                timeout: timedelta | None = self.waiting_until - workflow.now()
            elif self.runs:
                timeout = None  # after a failed compensation: open until someone retries
            else:
                timeout = FIRST_REQUEST_WAIT
            counted = len(self.votes)
            try:
                if timeout is not None and timeout <= timedelta(0):
                    raise TimeoutError
                await workflow.wait_condition(lambda n=counted: self.run_wanted or len(self.votes) != n,  # type: ignore[misc]
                                              timeout=timeout)
            except TimeoutError:
                if self.run_wanted or len(self.votes) != counted:
                    continue
                if self.votes:
                    asked = ", ".join(v.requested_by for v in self.votes)
                    self.escalations.append(f"rollback requested by {asked} expired after {QUORUM_WAIT.days} days "
                                            f"without the quorum of {self._quorum()}: nothing was undone")
                    self.votes, self.waiting_until = [], None
                    if self.runs:
                        continue
                    self.state = UndoStatus.expired
                    self.problem = self.escalations[-1]
                else:
                    self.state = UndoStatus.expired
                    self.problem = f"no rollback request was accepted within {FIRST_REQUEST_WAIT}: nothing was undone"
                return False
        self.run_wanted = False
        return True

    async def _restore_all(self) -> None:
        assert self.gov is not None
        voters, self.votes, self.waiting_until = self.votes, [], None
        self.state = UndoStatus.running
        todo = [s for s in self.steps.values() if s.outcome in (UndoOutcome.to_restore, UndoOutcome.failed)]
        self.runs.append(UndoRun(
            started_at=workflow.now(), requested_by=tuple(v.requested_by for v in voters),
            reasons=tuple(v.reason for v in voters), policy_version=self.gov.policy_version,
            steps=tuple(s.step_id for s in todo),
        ))
        for s in todo:
            self.steps[s.step_id] = await self._restore(s)
        done = [self.steps[s.step_id] for s in todo]
        failed = [s.step_id for s in done if s.outcome == UndoOutcome.failed]
        changed = [s for s in done if s.outcome == UndoOutcome.changed_since]
        if changed:
            message = (f"case {self.case_id}: not restored, changed since the case: " + "; ".join(
                f"{s.step_id} on {s.target.kind} {s.target.id} (the case left {_brief(s.after or {})}, it is now "
                f"{_brief(s.current or {})})" for s in changed) + ": a human decides whether to restore by hand")
            self.escalations.append(message)
            await self._escalate(Escalation(case_id=self.case_id, reason=message, kind="rollback_conflict"))
        if failed:
            self.state = UndoStatus.rollback_failed
            message = (f"case {self.case_id}: compensation failed after close for {failed}: restore by hand, or "
                       f"`signoff rollback {self.case_id}` again retries only these")
            self.escalations.append(message)
            await self._escalate(Escalation(case_id=self.case_id, reason=message, kind="rollback_failed"))
        elif any(s.outcome in (UndoOutcome.changed_since, UndoOutcome.kept) for s in self.steps.values()):
            self.state = UndoStatus.partly_rolled_back
        else:
            self.state = UndoStatus.rolled_back
        result = f"{self.state.value}: " + ", ".join(f"{s.step_id}={s.outcome.value}" for s in done)
        self.runs[-1] = self.runs[-1].model_copy(update={"finished_at": workflow.now(), "result": result})

    async def _restore(self, s: UndoStep) -> UndoStep:
        """One step: hand over, leave (changed since) or restore its captured state."""
        assert s.before is not None and s.compensation is not None
        now = workflow.now
        if s.case_state == StepState.executed:
            kept = await self._hand_over(s)
            if kept is not None:
                return kept
        request = ActionRequest(case_id=self.case_id, step_id=s.step_id, action=s.action, target=s.target,
                                idempotency_key=s.idempotency_key)
        try:
            current = await workflow.execute_activity(
                capture_state, request, start_to_close_timeout=timedelta(seconds=60), retry_policy=ACTION_RETRY,
                summary=f"read {s.target.kind} {identifier(s.target.id)} before undoing {s.action}",
            )
        except ActivityError as err:
            return s.model_copy(update={"outcome": UndoOutcome.failed, "at": now(),
                                        "why": f"could not read the target's state now: {_cause(err)}"})
        if s.after is None or not satisfies(current, s.after):
            if satisfies(current, s.before):
                return s.model_copy(update={"outcome": UndoOutcome.already_restored, "current": current, "at": now(),
                                            "why": f"already back in its captured state ({_brief(s.before)}): "
                                                   "nothing written"})
            return s.model_copy(update={
                "outcome": UndoOutcome.changed_since, "current": current, "at": now(),
                "why": (f"changed since the case: not restored (the case left {_brief(s.after or {})}, it is now "
                        f"{_brief(current)}, captured before the case {_brief(s.before)}); escalated, a human decides"),
            })
        try:
            done = await workflow.execute_activity(
                compensate_action,
                CompensationRequest(case_id=self.case_id, step_id=s.step_id, action=s.compensation,
                                    forward_action=s.action, target=s.target, restore_to=s.before,
                                    idempotency_key=s.idempotency_key),
                start_to_close_timeout=ACTION_TIMEOUT, heartbeat_timeout=ACTION_HEARTBEAT, retry_policy=ACTION_RETRY,
                summary=f"undo after close: {s.action} {s.target.kind} {identifier(s.target.id)}",
            )
        except ActivityError as err:
            return s.model_copy(update={"outcome": UndoOutcome.failed, "current": current, "at": now(),
                                        "why": f"compensation failed: {_cause(err)}"})
        return s.model_copy(update={"outcome": UndoOutcome.restored, "current": current, "restored": done.restored,
                                    "at": now(), "why": f"back to {_brief(s.before)}"})

    async def _hand_over(self, s: UndoStep) -> UndoStep | None:
        """Another open case holds this action on the target: leave it and hand that case the state
        from before this case (as the case's own rollback does). None: undo as usual."""
        assert s.before is not None
        try:
            holders = await workflow.execute_activity(
                other_holders, HoldersRequest(case_id=self.case_id, key=hold_key(s.action, s.target)),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
            )
        except ActivityError as err:
            self.notes.append(f"could not check for open cases holding {s.target.kind} {s.target.id} "
                                    f"({_cause(err)}): undone as usual")
            return None
        handover = HoldHandover(from_case=self.case_id, action=s.action, target=s.target, before=s.before,
                                after=s.after or {})
        told = await tell_holders(holders, handover)
        if not told:
            return await self._kept_for_ended_holders(s)
        return s.model_copy(update={
            "outcome": UndoOutcome.kept, "at": workflow.now(),
            "why": (f"not undone: open case {', '.join(told)} still holds {s.action} on {s.target.kind} {s.target.id}; "
                    f"handed over the state from before this case ({_brief(s.before)}) for its rollback"),
        })

    async def _kept_for_ended_holders(self, s: UndoStep) -> UndoStep | None:
        """No open case holds the target, but another ended case's action on it is still in effect: leave
        it (restoring it would release that case's containment). None: undo as usual."""
        if not workflow.patched(ENDED_HOLDERS):
            return None
        assert s.before is not None
        holders = await ask_ended_holders(self.case_id, hold_key(s.action, s.target))
        if isinstance(holders, str):
            self.notes.append(f"could not check for ended cases holding {s.target.kind} {s.target.id} "
                              f"({holders}): undone as usual")
            return None
        if not holders:
            return None
        why = kept_for_ended(holders, s.action, s.target.kind, s.target.id, s.before, s.after or {})
        if restores_only_this(holders, s.after or {}):
            message = f"case {self.case_id}: step {s.step_id} {why}"
            self.escalations.append(message)
            await self._escalate(Escalation(case_id=self.case_id, reason=message, kind="rollback_kept"))
        return s.model_copy(update={"outcome": UndoOutcome.kept, "at": workflow.now(), "why": why})

    async def _escalate(self, escalation: Escalation) -> None:
        try:
            await workflow.execute_activity(
                escalate, escalation, start_to_close_timeout=timedelta(seconds=30), retry_policy=ESCALATE_RETRY,
            )
        except ActivityError as err:
            self.escalations.append(f"escalation could not be delivered: {_cause(err)}")

    # ------------------------------------------------------------------ humans

    @workflow.update(description='Roll back the ended case (newest first, what changed since is left to a human): '
                                 '{"requested_by": "carol", "reason": "false positive"}')
    async def rollback(self, req: RollbackRequest) -> str:
        await workflow.wait_condition(lambda: self.loaded)  # a request sent with the start: read the case first
        if self.gov is not None and self.state in (UndoStatus.waiting, UndoStatus.rollback_failed):
            await self._refresh_policy()  # the policy in force when the request arrives decides it
        refusal = self._refusal(req)
        if refusal:
            raise ApplicationError(refusal, type="RollbackRefused", non_retryable=True)
        if req.token:
            self.used_nonces.add(token_nonce(req.token))
        info = workflow.current_update_info()
        assert self.gov is not None
        channel = token_channel(req.token)
        record = UndoRequest(requested_by=req.requested_by, reason=req.reason, at=workflow.now(),
                             signed=req.token is not None, update_id=info.id if info else "", channel=channel,
                             signed_with=signing_key(self.gov.policy, req.requested_by, channel) if req.token else None)
        self.requests.append(record)
        self.votes.append(record)
        quorum = self._quorum()
        voided = ""
        if len(self.votes) >= quorum > 1 and workflow.patched(RECHECK_UNDO_VOTES):
            voided = await self._drop_votes_no_longer_backed()
        if len(self.votes) < quorum:
            asked = ", ".join(v.requested_by for v in self.votes)
            return (f"rollback requested by {req.requested_by} ({len(self.votes)}/{quorum}, asked: {asked}): "
                    f"nothing is undone until {quorum - len(self.votes)} more person(s) with one of the roles "
                    f"{list(self.gov.policy.rollback_roles)} ask too" + (f"; {voided}" if voided else ""))
        run_number = len(self.runs) + 1
        self.run_wanted = True
        await workflow.wait_condition(
            lambda: len(self.runs) >= run_number and self.runs[run_number - 1].finished_at is not None)
        run = self.runs[run_number - 1]
        left = [f"{s.step_id} ({s.why})" for s in self.steps.values()
                if s.outcome == UndoOutcome.left and s.case_state not in _NEVER_RAN]
        return (f"rollback after close {run.result}" + (f"; left as they were: {'; '.join(left)}" if left else "")
                + f" (policy {run.policy_version[:12]}; {self._verdict_note()})")

    def _verdict_note(self) -> str:
        ended = self.ended
        if ended is None or ended.verdict is not None or not workflow.patched(UNDO_REPLY_NO_VERDICT):
            return "the case's verdict stays on record"
        if ended.status == CaseStatus.merged:
            return "the case was merged into another and has no verdict; this undid only what it executed itself"
        return "the case ended without a verdict"

    async def _drop_votes_no_longer_backed(self) -> str:
        """The quorum is met: the earlier requests (counted under the policy of their day, for up to
        `QUORUM_WAIT`) must still count under the policy in force, read for this request. Those that
        do not are dropped, kept in the record and a human is told; "" when all still count."""
        assert self.gov is not None
        policy = self.gov.policy
        lost = {v.requested_by: why for v in self.votes[:-1]
                if (why := undo_vote_void_reason(policy, v.requested_by, v.signed, v.channel, v.signed_with))}
        if not lost:
            return ""
        self.votes = [v for v in self.votes if v.requested_by not in lost]
        message = ("rollback requests no longer count under the policy in force ("
                   + "; ".join(f"{who}: {why}" for who, why in lost.items()) + "); nothing was undone")
        self.escalations.append(message)
        await self._escalate(Escalation(case_id=self.case_id, reason=message, kind="approval_voided"))
        return message

    @rollback.validator
    def _validate_rollback(self, req: RollbackRequest) -> None:
        refusal = self._refusal(req) if self.loaded else _reason_refusal(req)
        if refusal:
            raise ApplicationError(refusal, type="RollbackRefused", non_retryable=True)

    def _refusal(self, req: RollbackRequest) -> str | None:
        """Why this request must be refused, or None when it counts (the case's own checks, where they apply)."""
        if self.state in (UndoStatus.unavailable, UndoStatus.nothing_to_undo):
            return self.problem
        if self.state == UndoStatus.expired:
            return f"{self.problem}; ask again (`signoff rollback {self.case_id}`) to start over"
        assert self.gov is not None
        policy = self.gov.policy
        roles = set(policy.roles_of(req.requested_by))
        if not roles & set(policy.rollback_roles):
            return (f"{req.requested_by!r} may not roll back: needs one of the roles "
                    f"{list(policy.rollback_roles)}")
        refusal = _reason_refusal(req)
        if refusal:
            return refusal
        if self.state == UndoStatus.running or self.run_wanted:
            return "a rollback of this case is already running"
        if self.state in (UndoStatus.rolled_back, UndoStatus.partly_rolled_back):
            return finished_text(self.view())
        if any(v.requested_by == req.requested_by for v in self.votes):
            return (f"{req.requested_by!r} has already asked for this rollback: it needs "
                    f"{policy.rollback_quorum} different people with a rollback role")
        # Imports passed through as in the case (cryptography's lazy backend); verification is pure.
        with workflow.unsafe.imports_passed_through():
            return token_refusal(policy, case_id=self.case_id, step=CASE_STEP, decision=Decision.rollback.value,
                                 approver=req.requested_by, token=req.token, now=workflow.now(),
                                 used_nonces=self.used_nonces)

    def _quorum(self) -> int:
        return self.gov.policy.rollback_quorum if self.gov else 1

    @workflow.query(description="The rollback after close: who asked, what was restored, what was not and why")
    def status(self) -> UndoView:
        return self.view()

    def view(self) -> UndoView:
        ended = self.ended
        policy = self.gov.policy if self.gov else None
        return UndoView(
            case_id=self.case_id, undo_id=undo_id(self.case_id), status=self.state, problem=self.problem,
            case_status=ended.status if ended else None, case_verdict=ended.verdict if ended else None,
            case_policy_version=ended.policy_version if ended else "",
            case_ended_at=ended.ended_at if ended else None, case_source=ended.source if ended else "",
            policy_version=self.gov.policy_version if self.gov else "",
            rollback_roles=tuple(policy.rollback_roles) if policy else (), quorum=self._quorum(),
            votes=tuple(self.votes), requests=tuple(self.requests), runs=tuple(self.runs),
            steps=tuple(self.steps.values()), escalations=tuple(self.escalations),
            notes=tuple(self.notes), waiting_until=self.waiting_until,
        )


def _compensation_of(st: StepView) -> str | None:
    """The compensating action declared for the step's action (the view carries the action, not its plan)."""
    spec = ACTIONS.get(st.action)
    return spec.compensation if spec else None


def _reason_refusal(req: RollbackRequest) -> str | None:
    if not req.reason.strip():
        return "a reason is required"
    if len(req.reason) > MAX_REASON_CHARS:
        return _too_long(req.reason)
    return None


WORKFLOWS = [CaseUndoWorkflow]
