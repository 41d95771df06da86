"""Merging a case into another that is the same incident (`merge_into`, `accept_merge`). Part of CaseWorkflow.

Correlation misses in both directions: `detach_alert` (workflows/case_detach.py) takes out an alert
that does not belong; a merge joins two cases that are one incident (found with `signoff related`).
A person who may close the source case merges it into the target, with a reason:

- the source sends its alerts to the target (activities/merge.py): those it keeps in full (the
  timeline's first 50) and the rest as counts (total, per-rule counts, first and last seen) in one
  `AlertBatch` with the batch id `merge:<source>`, plus the entities they brought (up to the case's
  entity cap). The target takes them through its normal alert path (`add_alerts`: a re-delivery
  counts once), records `merged_from`, and publishes its entity digests and alert count. It is not
  rescored: `signoff explain` says when alerts were merged in after its score.
- once the target has them, the source records `merged_into` (target, who, when, why), skips its
  steps not yet run ("merged into TARGET"), keeps its executed actions in effect (a rollback of the
  source, after it ended, undoes them: `signoff rollback SOURCE`), and ends `merged`, with no verdict:
  nothing goes to the model's feedback. Its verdict SLA and escalation chains stop.
- when the delivery fails (the server unreachable for long), the source does not end: it escalates,
  stays open as it was, and the merge can be run again (the same batch id: the alerts count once).
- later alerts that correlate to the source go to the target: ingest follows the merge
  (signoff/ingest.py, `MergeRoutes`); their batch names the merged case (`AlertBatch.via`) and the
  target counts them per merged case (`routed_from_merged`: `signoff show`).

`merge_into` is an update: refused before anything is written when the requester is not in policy or
may not close the source (`close_roles`), the reason is empty or too long, the target is the source
itself, the source is in triage, closed, merged (or being merged), has a rollback or a retry under
way or an action running (or a rollback request that met the quorum is being checked), the target was
merged into the source (a cycle), or (where the policy does not trust unsigned requests) the request
is not signed. A target that refuses (it ended, is being merged itself, is still in triage or was
closed automatically) is refused by the source too, recorded among its refusals, and nothing changes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.case import Escalation
    from activities.merge import MERGE_REFUSED, deliver_merge
    from activities.response import other_holders
    from policies.signing import CASE_STEP, token_nonce
    from signoff.display import identifier
    from signoff.holds import hold_key
    from signoff.models import (
        AlertBatch,
        ApprovalRecord,
        CaseStatus,
        Decision,
        DecisionKind,
        HoldersRequest,
        HoldHandover,
        MergeDelivery,
        MergedFrom,
        MergedInto,
        MergeRequest,
        StepState,
    )
    from workflows.case_detach import decider_refusal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from policies.engine import GovernanceSnapshot
    from signoff.models import (
        Alert,
        CaseDecision,
        CaseInput,
        CloseRequest,
        Entity,
        RollbackRequest,
        ScoreResult,
    )

# Review 9: merges refused (in their handlers too) while a rollback request that met the quorum is being checked
# (the check could accept the rollback after the merge, which then undid the actions of a case that ended
# `merged`), and into a case still in triage (it planned its playbook's steps on the merged entities, a step
# rejected in the source offered again) or auto-closed. Taken only for such a merge.
MERGE_GUARDS = "merge-guards"
# Until the target has the alerts (the server is back): the source changes nothing before it does.
DELIVER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                            maximum_attempts=20, non_retryable_error_types=[MERGE_REFUSED])
_QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
MAX_MERGED_FROM = 100  # cases merged into one case: past it, fix the correlation rule
_ENTITY_CAP = 200  # workflows.case.ENTITY_CAP
# QA9: an executed action the target holds too (same action, same target) goes to the target at the merge
# (`take_over_hold`, signoff/holds.py): the source ends, so no later rollback could tell it, and the target's
# rollback released what the merged case still showed "in effect".
MERGE_HANDS_OVER_HOLDS = "merge-hands-over-holds"
# Under `require_signed_ingest`, a case holding input no ingester signed is not merged: the worker would sign the
# delivery, and the target would hold (and could detach into a trusted case) what someone typed in. Asked only
# for such a case, in the handler.
MERGE_UNSIGNED_REFUSED = "merge-unsigned-refused"
# Steps not yet run: the ones a merge skips.
_NOT_RUN = (StepState.pending, StepState.awaiting_approval, StepState.approved, StepState.escalated)


class CaseMerge:
    # CaseWorkflow's (annotations only: a stub here would shadow them)
    _refuse_while_local_activity: Callable[[], None]
    _ingest_refusal: Callable[[MergeDelivery], str | None]
    _signer_unknown: Callable[[str | None, Decision, str, str | None], bool]
    _recheck_unknown_signer: Callable[..., Awaitable[None]]
    # Set by CaseWorkflow.
    unsigned_input: list[str]  # signed case input (workflows/case.py)
    inp: CaseInput
    gov: GovernanceSnapshot | None
    steps: dict[str, Any]  # step id -> workflows.case._Step
    timeline: list[Alert]
    alert_count: int
    rules: dict[str, int]
    entities: dict[tuple[str, str], Entity]
    first_seen: datetime | None
    last_seen: datetime | None
    score: ScoreResult | None
    used_nonces: set[str]
    refusals: list[ApprovalRecord]
    verdict: CloseRequest | None
    verdict_window_over: bool
    finishing: bool
    rollback_request: RollbackRequest | None
    rollback_done: bool
    action_running: bool
    retry_pending: bool  # workflows/case_retry.py
    failed_attempt: tuple[str, ...]  # workflows/case_retry.py
    case_status: CaseStatus
    escalations: list[str]
    rollback_checking: bool  # workflows/case_recheck.py
    decision: CaseDecision | None

    def _init_merge(self) -> None:
        self.merged_into: MergedInto | None = None
        self.merging: MergeRequest | None = None  # accepted, its delivery under way
        self.merged_from: list[MergedFrom] = []
        self.routed_from_merged: dict[str, int] = {}  # later alerts of a merged case, routed here by ingest

    # ------------------------------------------------------------------ the source

    @workflow.update(description='Merge this case into another running case that is the same incident: '
                                 '{"target": "guide-1-7", "requested_by": "carol", "reason": "same host, same actor"}')
    async def merge_into(self, req: MergeRequest) -> str:
        await self._recheck_unknown_signer(Decision.merge, req.requested_by, req.reason, req.token,
                                           lambda: self._merge_refusal(req), MERGE_REFUSED,
                                           also_ask=(MERGE_GUARDS, MERGE_HANDS_OVER_HOLDS,
                                                     *((MERGE_UNSIGNED_REFUSED,) if self.unsigned_input else ())))
        if self.merging is not None and self.merging.target == req.target:  # the same merge, still delivering
            await workflow.wait_condition(lambda: self.merging is None)
        if self.merged_into is not None and self.merged_into.target == req.target:  # the same answer
            return self._merge_reply(self.merged_into, again=True)
        # Checked again: a merge or a rollback accepted in the same workflow task may have come first.
        refusal = self._merge_refusal(req) or self._merge_guard(self._waits_for_rollback_check(), handler=True)
        if refusal is None and self._unsigned_source() and workflow.patched(MERGE_UNSIGNED_REFUSED):
            refusal = self._unsigned_source()
        if refusal:
            raise ApplicationError(refusal, type=MERGE_REFUSED, non_retryable=True)
        if req.token:
            self.used_nonces.add(token_nonce(req.token))
        self.merging = req
        at = workflow.now()
        delivery = MergeDelivery(
            source=self.inp.case_id, target=req.target, by=req.requested_by, reason=req.reason.strip(), at=at,
            signed=req.token is not None, source_title=self.inp.title[:200],
            batch=AlertBatch(case_id=req.target, alerts=tuple(self.timeline), total=self.alert_count,
                             rules=dict(self.rules), first_seen=self.first_seen, last_seen=self.last_seen,
                             batch_id=f"merge:{self.inp.case_id}"),
            entities=tuple(self.entities.values()),
        )
        try:
            delivered = await workflow.execute_activity(
                deliver_merge, delivery, start_to_close_timeout=timedelta(seconds=60), retry_policy=DELIVER_RETRY,
                summary=f"merge {identifier(self.inp.case_id)} into {identifier(req.target)}"[:200],
            )
        except ActivityError as err:
            self.merging = None
            cause = err.cause.message if isinstance(err.cause, ApplicationError) else str(err.cause or err)
            if isinstance(err.cause, ApplicationError) and err.cause.type == MERGE_REFUSED:
                # The target refused (it ended, or is being merged itself): refused here too, nothing changed.
                self.refusals.append(ApprovalRecord(
                    step=CASE_STEP, approver=req.requested_by, decision=Decision.merge, reason=req.reason.strip(),
                    at=workflow.now(), via="merge_into", signed=req.token is not None, accepted=False, refusal=cause))
                raise ApplicationError(cause, type=MERGE_REFUSED, non_retryable=True) from None
            message = (f"case {self.inp.case_id} could not be merged into {req.target} (asked by {req.requested_by}): "
                       f"its alerts could not be delivered ({cause}); the case stays open as it was: run "
                       f"`signoff merge {self.inp.case_id} --into {req.target}` again once Temporal is reachable")
            self.escalations.append(message)
            await self._escalate(Escalation(case_id=self.inp.case_id, reason=message, kind="merge_failed"))
            return f"not merged: {message}"
        handed: list[str] = []
        if workflow.patched(MERGE_HANDS_OVER_HOLDS):
            handed = await self._hand_holds_to(req.target)
        self.merging = None
        self.merged_into = self._end_as_merged(delivery, delivered)
        if handed:
            self.merged_into = self.merged_into.model_copy(update={"handed_over_steps": tuple(handed)})
        return self._merge_reply(self.merged_into)

    async def _hand_holds_to(self, target: str) -> list[str]:
        """The executed steps whose action the target holds on the same target: handed to it (it keeps the
        state from before both cases for its rollback), kept here, not undone by this case's rollback."""
        from workflows.handover import tell_holders

        handed = []
        for step_id, step in self.steps.items():
            plan = step.plan
            if step.state != StepState.executed or step.before is None or step.result is None \
                    or plan.compensation is None:
                continue
            try:
                holders = await workflow.execute_activity(
                    other_holders, HoldersRequest(case_id=self.inp.case_id, key=hold_key(plan.action, plan.target)),
                    start_to_close_timeout=timedelta(seconds=30), retry_policy=_QUICK,
                )
            except ActivityError:
                continue  # unknown: it stays in effect here, as before (a rollback of this case undoes it)
            if target not in holders:
                continue
            handover = HoldHandover(from_case=self.inp.case_id, action=plan.action, target=plan.target,
                                    before=step.before, after=step.result.after)
            if not await tell_holders([target], handover):
                continue
            step.state = StepState.kept
            note = (f"handed over at the merge: case {target} holds {plan.action} on {plan.target.kind} "
                    f"{plan.target.id} too and restores the state from before both cases on its rollback")
            step.note = f"{step.note}; {note}" if step.note else note
            handed.append(step_id)
        if handed:
            self._upsert(self._held_targets())
        return handed

    def _unsigned_source(self) -> str | None:
        if not self.unsigned_input or self.merged_into is not None:  # merged before this check: answered as it was
            return None
        return (f"case {self.inp.case_id} holds input no ingester signed ({self.unsigned_input[0]}): it is not merged "
                "into another case, which would then hold that input as signed; an analyst decides this case as it is")

    @merge_into.validator
    def _validate_merge(self, req: MergeRequest) -> None:
        self._refuse_while_local_activity()
        refusal = self._merge_refusal(req) or self._waits_for_rollback_check() or self._unsigned_source()
        if refusal and not self._signer_unknown(self._merge_refusal(req), Decision.merge, req.requested_by, req.token):
            raise ApplicationError(refusal, type=MERGE_REFUSED, non_retryable=True)

    def _merge_refusal(self, req: MergeRequest) -> str | None:
        case_id = self.inp.case_id
        if self.merged_into is not None and self.merged_into.target == req.target:
            return None  # already merged there: the handler answers with that record, nothing changes
        if self.merging is not None and self.merging.target == req.target:
            return None  # the same merge, under way: the handler waits for it and answers with it
        if req.target == case_id:
            return f"a case cannot be merged into itself ({case_id}); `signoff related {case_id}` lists other cases"
        if self.gov is None:
            return "the case is still being triaged; try again in a moment"
        who = req.requested_by
        refusal = decider_refusal(self.gov.policy, self.gov.alert_type, who, req.reason,
                                  doing="merging a case into another", who_may="the roles that may close it",
                                  say="why the two cases are one incident")
        if refusal:
            return refusal
        if self.merged_into is not None:
            return (f"case {case_id} was already merged into {self.merged_into.target} by {self.merged_into.by}; "
                    f"merge {self.merged_into.target} instead")
        if self.merging is not None:
            return f"case {case_id} is being merged into {self.merging.target}; see `signoff show {case_id}`"
        if any(m.source == req.target for m in self.merged_from):
            return (f"case {req.target} was merged into {case_id}: merging {case_id} into it would make a cycle "
                    f"(it has ended; {case_id} holds its alerts)")
        if self.verdict is not None or self.verdict_window_over or self.finishing:
            return (f"case {case_id} has ended (status {self.case_status.value}): only a running case can be merged; "
                    f"`signoff explain {case_id}` shows it")
        if self.rollback_request is not None and not self.rollback_done:
            return "a rollback is running on this case; merge it once the rollback is done"
        if self.retry_pending:
            return "a retry is under way on this case; merge it once the retry has run"
        if self.action_running:
            return "an action is running on this case; merge it once the action is done (`signoff show`)"
        return self._case_token_refusal(Decision.merge, who, req.token)

    def _waits_for_rollback_check(self) -> str | None:
        if not self.rollback_checking or self.merged_into is not None or self.merging is not None:
            return None  # (a repeated merge is answered with its record)
        return ("a rollback request met the quorum and is being checked against the policy in force: "
                "merge once it is settled (`signoff show`)")

    @staticmethod
    def _merge_guard(refusal: str | None, *, handler: bool) -> str | None:
        """A refusal of MERGE_GUARDS: always in a validator (not replayed), in a handler only where patched."""
        if refusal is None or not handler:
            return refusal
        return refusal if workflow.patched(MERGE_GUARDS) else None

    def _merge_holds(self, decision: Decision) -> str | None:
        """A close, rollback, retry or detach while the case is being merged or has been: refused (the
        alerts are on their way, or gone). None when no merge is under way, as in every case before merges."""
        if decision not in (Decision.close, Decision.rollback, Decision.retry, Decision.detach):
            return None
        case_id = self.inp.case_id
        if self.merged_into is not None:
            after = (f"; once it has ended (in a moment), `signoff rollback {case_id}` undoes what it executed"
                     if decision == Decision.rollback else "")
            return f"case {case_id} was merged into {self.merged_into.target}: it takes no {decision.value}{after}"
        if self.merging is not None:
            return (f"case {case_id} is being merged into {self.merging.target}: try again once the merge is done "
                    f"(`signoff show {case_id}`)")
        return None

    def _end_as_merged(self, delivery: MergeDelivery, delivered: str) -> MergedInto:
        """The source's state once the target has its alerts (no command but the search attributes):
        the main line then stops (`_stopping`) and the case ends `merged`."""
        why = f"merged into {delivery.target} by {delivery.by}: {delivery.reason}"
        skipped, acted = [], []
        for step_id, step in self.steps.items():
            if step.state in _NOT_RUN:
                step.state = StepState.skipped
                step.error = f"not run: {why}"
                skipped.append(step_id)
            elif step.state == StepState.executed and step.before is not None and step.plan.compensation is not None:
                acted.append(step_id)
                note = (f"still in effect after the merge into {delivery.target}; "
                        f"`signoff rollback {self.inp.case_id}` undoes it")
                step.note = f"{step.note}; {note}" if step.note else note
        self.failed_attempt = ()  # nothing to retry on a merged case: the target carries the incident
        self._set_status(CaseStatus.merged)
        self._refresh_awaiting()
        workflow.set_current_details(f"Merged into case {delivery.target} by {delivery.by} at "
                                     f"{delivery.at:%Y-%m-%d %H:%M} UTC: {delivery.reason}"[:1000])
        return MergedInto(target=delivery.target, by=delivery.by, reason=delivery.reason, at=delivery.at,
                          signed=delivery.signed, alerts=self.alert_count, skipped_steps=tuple(skipped),
                          acted_steps=tuple(acted), delivered=delivered[:500])

    def _merge_reply(self, record: MergedInto, *, again: bool = False) -> str:
        head = (f"case {self.inp.case_id} was already merged into {record.target} by {record.by}" if again
                else f"case {self.inp.case_id} merged into {record.target} by {record.by}")
        parts = [f"{head}: {record.alerts} alert(s) sent"]
        if record.skipped_steps:
            parts.append(f"skipped (not run): {', '.join(record.skipped_steps)}")
        if record.acted_steps:
            parts.append(f"still in effect (`signoff rollback {self.inp.case_id}` undoes them): "
                         f"{', '.join(record.acted_steps)}")
        if record.handed_over_steps:
            parts.append(f"handed over to {record.target}, which holds the same (its rollback undoes them): "
                         f"{', '.join(record.handed_over_steps)}")
        return "; ".join(parts)

    # ------------------------------------------------------------------ the target

    @workflow.update(description="Take the alerts of a case merged into this one (sent by that case: "
                                 "activities/merge.py)")
    def accept_merge(self, delivery: MergeDelivery) -> str:
        done = next((m for m in self.merged_from if m.source == delivery.source), None)
        if done is not None:  # a re-delivery: counted once
            return self._merged_from_reply(done, again=True)
        refusal = self._accept_refusal(delivery) or self._merge_guard(self._not_triaged(), handler=True)
        if refusal:
            raise ApplicationError(refusal, type=MERGE_REFUSED, non_retryable=True)
        count_before, known = self.alert_count, len(self.entities)
        for entity in delivery.entities:  # those past the source's timeline too; published with the alerts
            key = (entity.type, entity.value)
            if key not in self.entities and len(self.entities) < _ENTITY_CAP:
                self.entities[key] = entity
        self._take_batch(delivery.batch)  # type: ignore[attr-defined]  # the normal alert path (CaseWorkflow's)
        record = MergedFrom(
            source=delivery.source, by=delivery.by, reason=delivery.reason, at=workflow.now(), signed=delivery.signed,
            alerts_sent=delivery.batch.total or len(delivery.batch.alerts), alerts_added=self.alert_count - count_before,
            entities_added=len(self.entities) - known, after_scoring=self.score is not None,
            source_title=delivery.source_title,
        )
        self.merged_from.append(record)
        workflow.set_current_details(("Cases merged into this one: " + "; ".join(
            f"{m.source} by {m.by} at {m.at:%Y-%m-%d %H:%M} UTC" for m in self.merged_from))[:1000])
        return self._merged_from_reply(record)

    @accept_merge.validator
    def _validate_accept_merge(self, delivery: MergeDelivery) -> None:
        if any(m.source == delivery.source for m in self.merged_from):
            return
        refusal = self._accept_refusal(delivery) or self._not_triaged()
        if refusal:
            raise ApplicationError(refusal, type=MERGE_REFUSED, non_retryable=True)
        # After triage: a step's before-state read may be in flight (LOCAL_CAPTURE); refused as busy, the
        # delivering activity sends it again (activities/merge.py).
        self._refuse_while_local_activity()

    def _accept_refusal(self, delivery: MergeDelivery) -> str | None:
        case_id = self.inp.case_id
        if delivery.source == case_id or delivery.target != case_id:
            return f"case {case_id} cannot take a merge of {delivery.source} addressed to {delivery.target}"
        if self.verdict is not None or self.verdict_window_over or self.finishing:
            return f"case {case_id} is closed (status {self.case_status.value}): merge into a running case"
        if self.merged_into is not None:
            return f"case {case_id} was merged into {self.merged_into.target}: merge into that case instead"
        if self.merging is not None:
            return f"case {case_id} is being merged into {self.merging.target}: merge into that case instead"
        if len(self.merged_from) >= MAX_MERGED_FROM:
            return f"{MAX_MERGED_FROM} cases were merged into case {case_id} already: fix the correlation rule"
        if self.gov is not None and (unsigned := self._ingest_refusal(delivery)):
            return f"case {case_id} takes no merge delivery a Signoff worker did not sign: {unsigned}"
        return None

    def _not_triaged(self) -> str | None:
        """A target still in triage would plan its playbook on the merged entities too (a step rejected
        in the source offered again); an auto-closed one is ending without anyone looking at it."""
        case_id = self.inp.case_id
        if self.decision is None:
            return f"case {case_id} is still being triaged: merge into it once its playbook is planned"
        if self.decision.kind == DecisionKind.auto_close:
            return f"case {case_id} was closed automatically: merge into a running case"
        return None

    def _merged_from_reply(self, record: MergedFrom, *, again: bool = False) -> str:
        verb = "was already merged" if again else "merged"
        return (f"case {record.source} {verb} into {self.inp.case_id} by {record.by}: "
                f"{record.alerts_added} alert(s) added, {record.entities_added} entit(ies) added"
                + ("; the case was scored before: it is not rescored" if record.after_scoring else ""))

    def _merge_view(self) -> dict[str, Any]:
        return {"merged_into": self.merged_into, "merged_from": tuple(self.merged_from),
                "routed_from_merged": dict(self.routed_from_merged)}

    def _note_routed(self, batch: AlertBatch, added: int) -> None:
        """Alerts ingest correlated to a merged case and sent here (`AlertBatch.via`): counted per that
        case, for `signoff show`. State only (no command): histories replay unchanged."""
        if batch.via and added > 0:
            self.routed_from_merged[batch.via[0]] = self.routed_from_merged.get(batch.via[0], 0) + added

    # Provided by CaseWorkflow.
    def _case_token_refusal(self, decision: Decision, user: str, token: str | None) -> str | None:
        raise NotImplementedError

    def _set_status(self, status: CaseStatus, *, defer: bool = False) -> None:
        raise NotImplementedError

    def _refresh_awaiting(self) -> None:
        raise NotImplementedError

    async def _escalate(self, escalation: Escalation) -> None:
        raise NotImplementedError

    def _upsert(self, updates: list[Any], *, defer: bool = False) -> None:
        raise NotImplementedError

    def _held_targets(self) -> list[Any]:
        raise NotImplementedError
