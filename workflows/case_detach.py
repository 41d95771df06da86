"""Taking a wrongly correlated alert out of its case (`detach_alert`). Part of CaseWorkflow.

Correlation is a decision like any other, so it can be undone (TheHive #1929: with no undo, the
only fix for a wrongly merged alert was to delete the whole case). A person who may decide cases
detaches one alert, with a reason:

- the alert leaves the case's alerts (count, rules, timeline, the entities only it brought; the
  `AlertCount` search attribute follows). Its uid stays known to the case, so a re-delivery of it
  (an ingest on a machine whose alert store does not know the detach) is not taken in again;
- steps not yet run whose target came only from that alert are skipped, with a note saying why;
  executed ones stay (a rollback is the way back) and are named in the record;
- the case is not rescored: the record says whether its score was computed with the alert;
- the alert gets a case of its own, `<case>-d1`, `-d2`, ... (a suffix no follow-up `-rN` uses),
  opened through the ingest path by an activity (activities/detach.py), its start input naming
  the case it came from, who and why. The id comes from this case's history, so a repeated
  detach of the same alert answers with the same record and changes nothing.

An update: refused before anything is written when the requester is not in policy or may not
decide cases, the reason is empty or too long, the case is closed or still in triage, the alert is
not among the case's alerts or is its only one (close the case instead), or (where the policy does
not trust unsigned requests) the request is not signed by the requester's key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.detach import OpenDetachedRequest, open_detached_case
    from policies.engine import Policy, close_roles
    from policies.signing import token_nonce
    from signoff.display import identifier
    from signoff.models import (
        MAX_REASON_CHARS,
        CaseStatus,
        Decision,
        DetachedFrom,
        DetachRecord,
        DetachRequest,
        StepState,
    )

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from policies.engine import GovernanceSnapshot
    from signoff.models import Alert, CaseInput, CloseRequest, Entity, RollbackRequest, ScoreResult

# Until the new case is opened (the server is back): the detach is recorded first, so the alert is
# out of this case whatever happens; the reply waits for the new case.
OPEN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                         maximum_attempts=20)
MAX_DETACHES = 100  # per case: past it, the correlation rule is wrong; fix it and re-ingest
# A detach after a failed attempt also takes the steps aimed only at the alert out of what a retry runs
# again (histories recorded before replay without it: the marker is taken only when there is one).
DETACH_LEAVES_RETRY = "detach-leaves-retry"
# An alert that arrived after the score (merged in, or a later batch) was not in it (QA9: the record said it was).
DETACH_SCORED_WITH = "detach-scored-with"
# Under `require_signed_ingest`, no alert is detached from a case whose input no ingester signed: the worker would
# sign the new case's start, and its playbook would aim at entities someone typed in. Asked only for such a case.
DETACH_UNSIGNED_REFUSED = "detach-unsigned-refused"
# Steps not yet run: the ones a detach may skip.
_NOT_RUN = (StepState.pending, StepState.awaiting_approval, StepState.approved, StepState.escalated)


def detached_case_id(case_id: str, n: int) -> str:
    """The case opened for the n-th alert detached from `case_id` (follow-ups use `-rN`)."""
    return f"{case_id}-d{n}"


def decider_refusal(policy: Policy, alert_type: str, who: str, reason: str, *, doing: str, who_may: str,
                    say: str) -> str | None:
    """The first checks of a case-wide request only the people who may decide the case make (detach,
    merge): in policy, one of the alert type's `close_roles`, a reason of a sensible length."""
    if who not in policy.approvers:
        return f"{who!r} is not in policy; people in policy: {sorted(policy.approvers)}"
    allowed = close_roles(policy, alert_type)
    roles = policy.roles_of(who)
    if not set(roles) & set(allowed):
        return f"{who!r} has roles {list(roles)}; {doing} needs one of {list(allowed)} ({who_may})"
    if not reason.strip():
        return f"a reason is required: say {say}"
    if len(reason) > MAX_REASON_CHARS:
        return (f"the reason is {len(reason)} characters; keep it under {MAX_REASON_CHARS} "
                "(link a ticket for the details)")
    return None


class CaseDetach:
    # CaseWorkflow's (annotations only: a stub here would shadow them)
    _signer_unknown: Callable[[str | None, Decision, str, str | None], bool]
    _recheck_unknown_signer: Callable[..., Awaitable[None]]
    # Set by CaseWorkflow.
    _refuse_while_local_activity: Callable[[], None]  # CaseWorkflow's (annotation only: no stub)
    inp: CaseInput
    gov: GovernanceSnapshot | None
    steps: dict[str, Any]  # step id -> workflows.case._Step
    timeline: list[Alert]
    seen_uids: set[str]
    alert_count: int
    rules: dict[str, int]
    entities: dict[tuple[str, str], Entity]
    first_seen: datetime | None
    last_seen: datetime | None
    score: ScoreResult | None
    scored_uids: frozenset[str] | None  # the alerts the score was computed with
    used_nonces: set[str]
    verdict: CloseRequest | None
    verdict_window_over: bool
    finishing: bool
    rollback_request: RollbackRequest | None
    rollback_done: bool
    case_status: CaseStatus
    escalations: list[str]
    deferred_upserts: dict[str, Any]
    failed_attempt: tuple[str, ...]  # workflows/case_retry.py
    unsigned_input: list[str]  # workflows/case.py (signed case input)

    def _init_detach(self) -> None:
        self.detached: list[DetachRecord] = []

    @workflow.update(description='Take a wrongly correlated alert out of the case into a case of its own: '
                                 '{"alert_uid": "a-17", "requested_by": "carol", "reason": "other incident"}')
    async def detach_alert(self, req: DetachRequest) -> str:
        await self._recheck_unknown_signer(Decision.detach, req.requested_by, req.reason, req.token,
                                           lambda: self._detach_refusal(req, unsigned=False), "DetachRefused",
                                           also_ask=(DETACH_LEAVES_RETRY, DETACH_SCORED_WITH,
                                                     *((DETACH_UNSIGNED_REFUSED,) if self.unsigned_input else ())))
        if self._detach_record_of(req.alert_uid) is not None:  # the same alert again: the same answer
            await workflow.wait_condition(lambda: self._opening_done(req.alert_uid))
            done = self._detach_record_of(req.alert_uid)
            assert done is not None
            return self._detach_reply(done, again=True)
        # Checked again: another detach accepted in the same workflow task may have taken the case's
        # other alert meanwhile (validators of one task all run before its handlers).
        refusal = self._detach_refusal(req, unsigned=False)
        if refusal is None and self._unsigned_refusal() and workflow.patched(DETACH_UNSIGNED_REFUSED):
            refusal = self._unsigned_refusal()
        if refusal:
            raise ApplicationError(refusal, type="DetachRefused", non_retryable=True)
        if req.token:
            self.used_nonces.add(token_nonce(req.token))
        alert = next(a for a in self.timeline if a.uid == req.alert_uid)
        record = self._take_out(alert, req)
        index = len(self.detached)
        self.detached.append(record)
        assert self.gov is not None
        opening = OpenDetachedRequest(
            case_id=record.new_case, alert_type=self.gov.policy.alert_type_for_category(alert.category),
            alert=alert, requested_by=self.inp.requested_by,
            detached_from=DetachedFrom(case_id=self.inp.case_id, alert_uid=alert.uid, by=req.requested_by,
                                       reason=record.reason, at=record.at),
        )
        try:
            opened = await workflow.execute_activity(
                open_detached_case, opening, start_to_close_timeout=timedelta(seconds=60), retry_policy=OPEN_RETRY,
                summary=f"open {identifier(record.new_case)} for alert {identifier(alert.uid)}"[:200],
            )
            record = record.model_copy(update={"new_case": opened.case_id, "opened": opened.outcome})
        except ActivityError as err:
            cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err.cause or err)
            record = record.model_copy(update={"opened": f"failed: {cause}"})
            self.escalations.append(
                f"alert {alert.uid} was detached by {req.requested_by} but its case {record.new_case} could not be "
                f"opened ({cause}): re-ingest the alert, or run `signoff detach {self.inp.case_id} {alert.uid}` "
                "again once Temporal is reachable")
        self.detached[index] = record
        return self._detach_reply(record)

    @detach_alert.validator
    def _validate_detach(self, req: DetachRequest) -> None:
        self._refuse_while_local_activity()
        refusal = self._detach_refusal(req)
        if refusal and not self._signer_unknown(refusal, Decision.detach, req.requested_by, req.token):
            raise ApplicationError(refusal, type="DetachRefused", non_retryable=True)

    def _unsigned_refusal(self) -> str | None:
        if not self.unsigned_input:
            return None
        return (f"case {self.inp.case_id} holds input no ingester signed ({self.unsigned_input[0]}): its alerts are not "
                "moved into a case of their own, which would trust them; an analyst decides this case as it is")

    def _detach_refusal(self, req: DetachRequest, *, unsigned: bool = True) -> str | None:
        """Why `req` is refused; `unsigned=False`: without the DETACH_UNSIGNED_REFUSED check (the handler's,
        which asks its patch)."""
        case_id = self.inp.case_id
        if self.gov is None:
            return "the case is still being triaged; try again in a moment"
        refusal = decider_refusal(self.gov.policy, self.gov.alert_type, req.requested_by, req.reason,
                                  doing="detaching an alert from a case", who_may="the roles that may decide cases",
                                  say="why the alert does not belong to this case")
        if refusal:
            return refusal
        if self.verdict is not None or self.verdict_window_over or self.finishing:
            return (f"the case is closed (status {self.case_status.value}): its alerts are final; "
                    f"`signoff explain {case_id}` shows them")
        if self._detach_record_of(req.alert_uid) is not None:
            return None  # already detached: the handler answers with that record, nothing changes
        if not any(a.uid == req.alert_uid for a in self.timeline):
            if req.alert_uid in self.seen_uids:
                return (f"alert {req.alert_uid!r} is in case {case_id}, but past the first alerts the case keeps "
                        "in full, so it cannot be taken out here; fix the correlation and re-ingest")
            shown = [a.uid for a in self.timeline[:10]]
            return (f"case {case_id} has no alert {req.alert_uid!r}; its alerts: {shown}"
                    + (" ..." if len(self.timeline) > 10 else "")
                    + f" (`signoff show {case_id}`, `signoff cases --json --with-alerts`)")
        if unsigned and (refusal := self._unsigned_refusal()):
            return refusal
        if self.alert_count <= 1:
            return (f"alert {req.alert_uid!r} is the only alert of case {case_id}: close the case instead "
                    f"(`signoff close {case_id} --as USER --verdict FalsePositive --reason TEXT`)")
        if self.rollback_request is not None and not self.rollback_done:
            return "a rollback is running on this case; detach the alert once it is done"
        if len(self.detached) >= MAX_DETACHES:
            return (f"{MAX_DETACHES} alerts were already detached from this case: fix the correlation rule "
                    "and re-ingest instead")
        return self._case_token_refusal(Decision.detach, req.requested_by, req.token)

    def _detach_record_of(self, uid: str) -> DetachRecord | None:
        return next((r for r in self.detached if r.alert_uid == uid), None)

    def _opening_done(self, uid: str) -> bool:
        record = self._detach_record_of(uid)
        return record is None or record.opened != ""

    def _take_out(self, alert: Alert, req: DetachRequest) -> DetachRecord:
        """The state change of a detach (no command but the search attributes)."""
        others = [a for a in self.timeline if a.uid != alert.uid]
        # Whether the case keeps every alert it has in full: only then are the other alerts' entities
        # known, and an entity, a first or last seen time, can be said to come from this alert alone.
        complete = len(self.timeline) == self.alert_count
        theirs = {(e.type, e.value) for a in others for e in a.entities}
        only_here = {(e.type, e.value) for e in alert.entities} - theirs if complete else set()
        self.timeline = others
        self.alert_count -= 1
        if alert.rule in self.rules:
            self.rules[alert.rule] -= 1
            if self.rules[alert.rule] <= 0:
                del self.rules[alert.rule]
        if complete and others:
            self.first_seen = min(a.time for a in others)
            self.last_seen = max(a.time for a in others)
        for key in only_here:
            self.entities.pop(key, None)
        by, reason = req.requested_by, req.reason.strip()
        why = f"its target came from alert {alert.uid}, detached by {by}: {reason}"
        skipped, acted = [], []
        for step_id, step in self.steps.items():
            target = (step.plan.target.kind, step.plan.target.id)
            if target not in only_here:
                continue
            if step.state in _NOT_RUN:
                step.state = StepState.skipped
                step.error = f"not run: {why}"
                skipped.append(step_id)
            elif step.state in (StepState.executed, StepState.running):
                acted.append(step_id)
                note = (f"acted on {step.plan.target.kind} {step.plan.target.id}, which came from alert {alert.uid}, "
                        f"since detached by {by}; `signoff rollback {self.inp.case_id}` is the way back")
                step.note = f"{step.note}; {note}" if step.note else note
        # The failed attempt a retry would run again: a step aimed only at this alert is not run again.
        dropped = [sid for sid in self.failed_attempt if (self.steps[sid].plan.target.kind,
                                                          self.steps[sid].plan.target.id) in only_here]
        if dropped and workflow.patched(DETACH_LEAVES_RETRY):
            self.failed_attempt = tuple(sid for sid in self.failed_attempt if sid not in dropped)
            for step_id in dropped:
                step = self.steps[step_id]
                note = f"not retried: {why}"
                step.note = f"{step.note}; {note}" if step.note else note
                if step_id not in skipped:
                    skipped.append(step_id)
        defer = bool(self.deferred_upserts)
        self._publish_entities(defer=True)  # type: ignore[attr-defined]  # CaseEntities' (a stub here would shadow it)
        self._publish_alert_count(defer=True)
        self._upsert([], defer=defer)
        if skipped:
            self._refresh_awaiting()
        score_included = self.score is not None
        if score_included and self.scored_uids is not None and alert.uid not in self.scored_uids \
                and workflow.patched(DETACH_SCORED_WITH):
            score_included = False
        return DetachRecord(
            alert_uid=alert.uid, requested_by=by, reason=reason, at=workflow.now(),
            new_case=detached_case_id(self.inp.case_id, len(self.detached) + 1), signed=req.token is not None,
            alert_title=alert.title[:200], entities_removed=tuple(sorted(f"{t}:{v}" for t, v in only_here)),
            skipped_steps=tuple(skipped), acted_steps=tuple(acted), score_included=score_included,
        )

    def _detach_reply(self, record: DetachRecord, *, again: bool = False) -> str:
        head = (f"alert {record.alert_uid} was already detached by {record.requested_by}" if again
                else f"alert {record.alert_uid} detached by {record.requested_by}")
        where = (f"; its case {record.new_case} could not be opened ({record.opened.removeprefix('failed: ')})"
                 if record.opened.startswith("failed") else f" into case {record.new_case}")
        parts = [head + where]
        if record.skipped_steps:
            parts.append(f"skipped (target only from that alert): {', '.join(record.skipped_steps)}")
        if record.acted_steps:
            parts.append(f"executed on a target from that alert (a rollback undoes them): {', '.join(record.acted_steps)}")
        if record.score_included:
            parts.append("the case's score was computed with that alert; it is not rescored")
        return "; ".join(parts)

    def _detach_view(self) -> dict[str, Any]:
        return {"detached_alerts": tuple(self.detached), "detached_from": self.inp.detached_from}

    # Provided by CaseWorkflow.
    def _case_token_refusal(self, decision: Decision, user: str, token: str | None) -> str | None:
        raise NotImplementedError

    def _publish_alert_count(self, *, defer: bool = False) -> None:
        raise NotImplementedError

    def _upsert(self, updates: list[Any], *, defer: bool = False) -> None:
        raise NotImplementedError

    def _refresh_awaiting(self) -> None:
        raise NotImplementedError
