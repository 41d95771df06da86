"""The governance workflow: one per namespace (and task queue), long-lived (continue-as-new).

It owns the live governance state: autonomy per alert type, human-set thresholds, the active and
candidate models, the shadow-mode evidence (analysts' verdicts next to the model's scores) and the
last drift report. It changes only through updates that carry who and why; each one is checked
against the policy's roles (read by an activity at the time of the change) and recorded as an
`Event` with the workflow time and a new revision. Refusals are recorded too.

Promoting (an alert type on the loop, or a new model) needs a quorum of governance-role holders.
Demoting (the kill switch) and rolling back a model act at once. The drift check can only make
things safer: it demotes, it never promotes.

Nothing anyone can send is taken on trust or kept unbounded:
* a person's change (threshold, autonomy, model promotion or rollback) carries a token signed with
  that person's key (policies/signing.py, `sign_governance_change`), bound to this workflow, the
  change and its subject; where the policy does not trust unsigned requests, the update's validator
  refuses a missing or bad one (nothing written) and the handler checks it again against the policy
  it has just read (recorded when refused) and spends its nonce;
* a verdict (`record_verdict` signal) counts only after an activity has checked it against its case
  (the case exists, is a CaseWorkflow on this task queue and carries that verdict by that analyst,
  who is a person in the policy); the record counted is built from the case itself, one per case
  (a later verdict on the same case replaces the earlier one); refusals are recorded;
* a drift report (`drift_report` update) is accepted only from a running drift check whose own
  `compute_drift` result it is (checked by an activity); refusals are recorded;
* the state carried through continue-as-new is bounded: compact evidence records (no free text),
  free text capped at MAX_TEXT_CHARS, events kept within a character budget, unchecked verdicts
  capped; it continues as new when Temporal suggests it (history size or length).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.drift import ScheduleRequest, ensure_drift_schedule
    from activities.governance import (
        ModelSync,
        governance_policy,
        resolve_model,
        sync_model_store,
        verify_drift_report,
        verify_verdicts,
    )
    from policies.engine import Policy
    from policies.signing import governance_token_refusal, token_expiry, token_nonce
    from signoff import settings
    from signoff.autonomy.evidence import evidence, last_model_change
    from signoff.autonomy.models import (
        GOVERNANCE_WORKFLOW_ID,
        MAX_NAME_CHARS,
        SYSTEM_DRIFT,
        TOKEN_REFUSED,
        AlertTypeState,
        AutonomyChange,
        DriftReport,
        Event,
        EvidenceRecord,
        GovernanceInput,
        GovernanceState,
        ModelChange,
        ModelRollback,
        ModelState,
        SignedRequest,
        ThresholdChange,
        ThresholdRevert,
        VerdictBatch,
        VerdictCheck,
        VerdictClaim,
        VerdictCounts,
        VerdictRecord,
        clip,
        signed_change,
    )
    from signoff.models import Verdict

QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
LIVE_MEMO = "live"  # memo key of the live state (what cases decide under)
# Patches (workflow.patched): histories recorded before each rule replay as they ran.
CHECK_VERDICTS = "verdicts-checked-against-cases"
CHECK_DRIFT_REPORTS = "drift-reports-checked-against-the-check"
# A person's change (threshold, autonomy, model) carries their signed token where the policy does
# not trust unsigned requests: the update's validator refuses a bad one (nothing is written), the
# handler checks it again against the policy it has just read and spends its nonce.
SIGNED_CHANGES = "governance-changes-signed"
# How long the policy read for the last change is trusted by the validators: an older copy (a key
# rotated, trust changed since) only screens what does not depend on it and leaves the rest to the
# handler, which reads the policy again (a refusal there is recorded).
VALIDATOR_POLICY_FRESH = timedelta(minutes=5)
VERIFY_BATCH = 100  # verdicts checked per activity
MAX_PENDING = 20_000  # verdicts waiting for their check; beyond it a verdict is refused (recorded)
PENDING_CARRY_CHARS = 64_000  # unchecked verdicts carried through continue-as-new, at most
# Before continuing as new every waiting verdict is checked, unless the history is already this
# large (a flood): then what fits in PENDING_CARRY_CHARS is carried and the rest refused (recorded).
DRAIN_HISTORY_EVENTS = 30_000
DRAIN_HISTORY_BYTES = 30 * 1024 * 1024
EVENT_OVERHEAD_CHARS = 220  # an event's fixed fields, serialised (for the events budget)
# QA7: the governance state is what every case decides under, so it comes only from changes this
# workflow checked (or from the run it continued from). A run started by hand (`temporal workflow
# start`, after a terminate, or before anything started it) with a state, nonces or verdicts of its own
# starts empty instead (the policy file's values), recorded as a refusal; a GovernanceWorkflow under any
# other workflow id than its task queue's (`signoff-governance`) takes no change at all: its promotions
# would write the workers' model store. Taken only for such starts: no recorded history has one.
START_CHECKED = "governance-start-checked"
START_REFUSED_BY = "(a start by hand)"
# QA7: a promotion's quorum counts only the earlier approvers the policy in force still gives a governance
# role (someone who left, or lost the role, between their approval and the last one no longer counts).
# Taken only when it drops someone: other histories record no marker.
PENDING_RECHECKED = "governance-quorum-rechecked"
# The live state goes along with continue-as-new, in the next run's memo from its first event on.
MEMO_CARRIED = "governance-memo-carried"
# QA (lead): an alert type went on the loop on verdicts about the previous model's scores. A promotion's
# evidence counts only the cases scored by the model that scores cases now (signoff.autonomy.evidence,
# about_model). Asked only when a promotion checks its evidence.
EVIDENCE_ON_ACTIVE_MODEL = "promotion-evidence-on-the-active-model"


class LiveGovernance(GovernanceState):
    """The part of the state a case decides under (no verdict records): what `live` returns."""


def _require_reason(reason: str, by: str) -> None:
    if not by.strip():
        raise ApplicationError("who makes this change is required (--as USER)", type="GovernanceRefused",
                               non_retryable=True)
    if not reason.strip():
        raise ApplicationError("a reason is required (--reason TEXT)", type="GovernanceRefused", non_retryable=True)


@workflow.defn(name="GovernanceWorkflow")
class GovernanceWorkflow:
    @workflow.init
    def __init__(self, inp: GovernanceInput) -> None:
        self.state: GovernanceState = inp.state
        self.max_events = inp.max_events
        self.evidence_window = inp.evidence_window
        self.events_budget = inp.events_budget
        self.events_chars = sum(_event_chars(e) for e in inp.state.events)
        self.pending: list[VerdictClaim] = list(inp.pending)  # verdicts waiting for their check
        self.used_nonces: dict[str, int] = dict(inp.used_nonces)  # spent governance tokens -> expiry
        self.policy: Policy | None = None  # the policy read for the last change (what validators check against)
        self.policy_at: datetime | None = None
        info = workflow.info()
        expected = GOVERNANCE_WORKFLOW_ID if info.task_queue == settings.TASK_QUEUE else \
            f"{GOVERNANCE_WORKFLOW_ID}:{info.task_queue}"
        # Not the governance workflow cases read (and `signoff` changes): it takes no change (QA7).
        self.foreign = "" if info.workflow_id == expected else (
            f"workflow {clip(info.workflow_id, MAX_NAME_CHARS)!r} is not the governance workflow of task queue "
            f"{info.task_queue!r} ({expected!r}): it takes no change; use `signoff policy|autonomy|model`")
        # A first run that brings its own state (a crafted start): that state is not taken (QA7).
        carried = inp.state != GovernanceState() or bool(inp.pending) or bool(inp.used_nonces)
        self.crafted_start = carried and info.continued_run_id is None

    @workflow.run
    async def run(self, inp: GovernanceInput) -> None:
        if (self.crafted_start or self.foreign) and workflow.patched(START_CHECKED):
            if self.crafted_start:
                self.state, self.pending, self.used_nonces, self.events_chars = GovernanceState(), [], {}, 0
                self._event("refused", START_REFUSED_BY, "governance workflow started with a state of its own",
                            after="a governance state comes only from checked changes (or the run this one "
                                  "continued from): the state given at the start was not taken; this run starts "
                                  "from the policy file", accepted=False)
            if self.foreign:
                self._event("refused", START_REFUSED_BY, "a second governance workflow", after=self.foreign,
                            accepted=False)
                return
        self._publish()
        if workflow.patched(SIGNED_CHANGES):
            try:  # the validators' copy of the policy (a change reads it again)
                await self._policy()
            except ActivityError:
                workflow.logger.warning("could not read the policy; the next change reads it")
        if inp.ensure_schedule:
            try:
                await workflow.execute_activity(
                    ensure_drift_schedule, ScheduleRequest(), start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=QUICK,
                )
            except ActivityError:
                workflow.logger.warning("could not create the drift schedule; `signoff drift schedule` retries")

        def time_to_continue() -> bool:
            info = workflow.info()
            return info.is_continue_as_new_suggested() or info.get_current_history_length() > inp.history_limit

        # Verdicts are checked in batches here, not in the signal handler (a signal cannot wait for an
        # activity's result). Histories from before CHECK_VERDICTS never have pending verdicts.
        while True:
            await workflow.wait_condition(lambda: bool(self.pending) or time_to_continue())
            if time_to_continue():
                break
            await self._check_pending()
        while self.pending and workflow.info().get_current_history_length() < DRAIN_HISTORY_EVENTS \
                and workflow.info().get_current_history_size() < DRAIN_HISTORY_BYTES:
            await self._check_pending()
        await workflow.wait_condition(workflow.all_handlers_finished)
        carried = GovernanceInput(
            state=self.state, max_events=self.max_events, evidence_window=self.evidence_window,
            ensure_schedule=False, history_limit=inp.history_limit, pending=self._carried_pending(),
            events_budget=self.events_budget, used_nonces=self._live_nonces())
        # QA7: the next run's memo is empty until its first task publishes it; cases reading the live state
        # meanwhile got none and decided under the policy file alone (a kill switch, thresholds, the active
        # model ignored). An insider flooding verdict signals forces continue-as-new again and again.
        memo = {LIVE_MEMO: self.live().model_dump(mode="json")} if workflow.patched(MEMO_CARRIED) else None
        workflow.continue_as_new(carried, memo=memo)

    # ------------------------------------------------------------------ queries

    @workflow.query(description="The whole governance state: autonomy, thresholds, models, evidence, events")
    def state_query(self) -> GovernanceState:
        return self.state

    @workflow.query(description="What cases decide under: autonomy, thresholds and models (no verdict records)")
    def live(self) -> LiveGovernance:
        return LiveGovernance(revision=self.state.revision, alert_types=self.state.alert_types,
                              model=self.state.model, last_drift=self.state.last_drift)

    # ------------------------------------------------------------------ autonomy (promote / kill switch)

    @workflow.update(description='Promote or demote an alert type: {"alert_type": "phishing", "level": "in_the_loop", "by": "carol", "reason": "..."}')
    async def set_autonomy(self, req: AutonomyChange) -> str:
        policy = await self._policy()
        self._check_token(policy, "set_autonomy", req, req.alert_type)
        if req.level == "in_the_loop":
            return self._demote(policy, req)
        return await self._promote(policy, req)

    @set_autonomy.validator
    def _validate_autonomy(self, req: AutonomyChange) -> None:
        _require_reason(req.reason, req.by)
        if req.alert_type == "*" and req.level != "in_the_loop":
            raise ApplicationError("only a demotion may target every alert type", type="GovernanceRefused",
                                   non_retryable=True)
        self._validate_token("set_autonomy", req)

    def _demote(self, policy: Policy, req: AutonomyChange) -> str:
        allowed = set(policy.governance_roles) | set(policy.autonomy.kill_switch_roles)
        self._check_role(policy, req.by, allowed, "demote", req.alert_type, req.reason)
        targets = sorted(policy.alert_types) if req.alert_type == "*" else [self._known(policy, req.alert_type, req)]
        changed = []
        for name in targets:
            before = self._autonomy(policy, name)
            current = self.state.alert_types.get(name, AlertTypeState())
            # Recorded even when already in the loop: the kill switch pins the level over the policy file.
            self._put(name, current.model_copy(update=dict(
                autonomy="in_the_loop", autonomy_by=req.by, autonomy_at=workflow.now(), pending_promotion=())))
            self._event("autonomy", req.by, req.reason, alert_type=name, before=before, after="in_the_loop")
            if before != "in_the_loop":
                changed.append(name)
        done = ", ".join(changed) if changed else "none was on the loop"
        return f"in the loop now: {', '.join(targets)} (demoted: {done}); revision {self.state.revision}"

    async def _promote(self, policy: Policy, req: AutonomyChange) -> str:
        self._check_role(policy, req.by, set(policy.governance_roles), "promote", req.alert_type, req.reason)
        name = self._known(policy, req.alert_type, req)
        if name == policy.drift.open_case_alert_type:
            self._refuse(req.by, req.reason, name, f"{name} cases are for detection engineers: never automated")
        # Which model scores cases is asked first: the checks below then run in one go on the state they read
        # (no other change can land between them and the approval).
        active = await self._scoring_model(req) if policy.autonomy.require_evidence and \
            workflow.patched(EVIDENCE_ON_ACTIVE_MODEL) else None
        if self._autonomy(policy, name) == "on_the_loop":
            return f"{name} is already on the loop"
        threshold = self._threshold(policy, name)
        if threshold is None:
            self._refuse(req.by, req.reason, name,
                         f"{name} has no threshold: set one first (`signoff policy set-threshold {name} VALUE`)")
        drift = self.state.last_drift
        breached = [f for f in (drift.findings if drift else ()) if f.alert_type == name and f.breaches]
        # patched: histories recorded before this rule replay as they ran (Temporal versioning).
        if drift is not None and breached and workflow.patched("refuse-promotion-after-drift"):
            self._refuse(req.by, req.reason, name, f"the last drift check ({drift.at:%Y-%m-%d %H:%M} UTC) found "
                         f"drift on {name}: {'; '.join(breached[0].breaches)}; promote after a clean drift check")
        if policy.autonomy.require_evidence:
            ev = evidence(name, self.state.recent.get(name, ()), threshold, policy.autonomy, active_model_id=active,
                          model_changed_at=last_model_change(self.state) if active else None)
            if not ev.recommend_promotion:
                self._refuse(req.by, req.reason, name, f"the evidence does not support promotion: {ev.recommendation}")
        current = self.state.alert_types.get(name, AlertTypeState())
        if req.by in current.pending_promotion:
            self._refuse(req.by, req.reason, name, f"{req.by!r} already approved this promotion; the quorum needs "
                                                   "distinct people")
        approvers = (*self._still_governors(policy, current.pending_promotion, req.by, name), req.by)
        quorum = policy.autonomy.promotion_quorum
        if len(approvers) < quorum:
            self._put(name, current.model_copy(update=dict(pending_promotion=approvers)))
            self._event("autonomy_approval", req.by, req.reason, alert_type=name, after=f"{len(approvers)}/{quorum}")
            return f"promotion of {name} approved by {req.by}: {len(approvers)}/{quorum}, waiting for more approvals"
        self._put(name, current.model_copy(update=dict(
            autonomy="on_the_loop", autonomy_by=",".join(approvers), autonomy_at=workflow.now(), pending_promotion=())))
        self._event("autonomy", req.by, req.reason, alert_type=name, before="in_the_loop", after="on_the_loop")
        return (f"{name} is on the loop at threshold {threshold:.4f} (approved by {', '.join(approvers)}); "
                f"revision {self.state.revision}")

    # ------------------------------------------------------------------ thresholds

    @workflow.update(description='Set an auto-close threshold: {"alert_type": "phishing", "value": 0.97, "by": "carol", "reason": "..."}')
    async def set_threshold(self, req: ThresholdChange) -> str:
        policy = await self._policy()
        self._check_token(policy, "set_threshold", req, req.alert_type)
        self._check_role(policy, req.by, set(policy.governance_roles), "set thresholds", req.alert_type, req.reason)
        name = self._known(policy, req.alert_type, req)
        return self._apply_threshold(policy, name, req.value, req.by, req.reason, to_policy=req.value is None)

    @set_threshold.validator
    def _validate_threshold(self, req: ThresholdChange) -> None:
        _require_reason(req.reason, req.by)
        self._validate_token("set_threshold", req)

    @workflow.update(description='Undo the last threshold change of an alert type: {"alert_type": "phishing", "by": "carol", "reason": "..."}')
    async def revert_threshold(self, req: ThresholdRevert) -> str:
        policy = await self._policy()
        self._check_token(policy, "revert_threshold", req, req.alert_type)
        self._check_role(policy, req.by, set(policy.governance_roles), "revert thresholds", req.alert_type, req.reason)
        name = self._known(policy, req.alert_type, req)
        stack: list[Event] = []  # threshold changes not yet reverted, oldest first
        for e in self.state.events:
            if e.accepted and e.alert_type == name and e.kind == "threshold":
                if e.reverts is None:
                    stack.append(e)
                elif stack:
                    stack.pop()
        if not stack:
            self._refuse(req.by, req.reason, name, f"{name} has no threshold change left to revert")
        last = stack[-1]
        value = None if last.before_from_policy else last.before_value
        return self._apply_threshold(policy, name, value, req.by, req.reason, reverts=last.revision,
                                     to_policy=last.before_from_policy)

    @revert_threshold.validator
    def _validate_revert(self, req: ThresholdRevert) -> None:
        _require_reason(req.reason, req.by)
        self._validate_token("revert_threshold", req)

    def _apply_threshold(self, policy: Policy, name: str, value: float | None, by: str, reason: str,
                         reverts: int | None = None, to_policy: bool = False) -> str:
        before = self._threshold_label(policy, name)
        current = self.state.alert_types.get(name, AlertTypeState())
        before_value, before_from_policy = current.threshold, not current.threshold_set
        unchanged = before_from_policy if to_policy else (current.threshold_set and before_value == value)
        # A change that changes nothing would still bump the policy version every case records.
        # patched: histories recorded before this rule replay as they ran.
        if reverts is None and unchanged and workflow.patched("threshold-unchanged-is-no-revision"):
            return f"{name} threshold is already {before}: nothing changed; revision {self.state.revision}"
        self._put(name, current.model_copy(update=dict(
            threshold_set=not to_policy, threshold=None if to_policy else value, threshold_by=by,
            threshold_at=workflow.now())))
        after = self._threshold_label(policy, name)
        why = reason if reverts is None else f"{reason} (reverts revision {reverts})"
        # Reverts walk back through the changes not yet reverted (an undo stack), each one recorded.
        self._event("threshold", by, why, alert_type=name, before=before, after=after,
                    before_value=before_value, before_from_policy=before_from_policy, reverts=reverts)
        return f"{name} threshold: {before} -> {after}; revision {self.state.revision}"

    # ------------------------------------------------------------------ models

    @workflow.update(description='Approve activating a model (quorum of governance roles): {"model_id": "...", "by": "carol", "reason": "..."}')
    async def promote_model(self, req: ModelChange) -> str:
        policy = await self._policy()
        self._check_token(policy, "promote_model", req, "")
        self._check_role(policy, req.by, set(policy.governance_roles), "promote models", "", req.reason)
        model_id = await self._resolve(req)
        model = self.state.model
        if model.active == model_id:
            return f"model {model_id[:12]} is already active"
        approvers = model.pending_approvers if model.pending == model_id else ()
        if req.by in approvers:
            self._refuse(req.by, req.reason, "", f"{req.by!r} already approved model {model_id[:12]}; the quorum "
                                                 "needs distinct people")
        approvers = (*self._still_governors(policy, approvers, req.by, ""), req.by)
        quorum = policy.autonomy.model_promotion_quorum
        if len(approvers) < quorum:
            self.state = self.state.model_copy(update=dict(
                model=model.model_copy(update=dict(pending=model_id, pending_approvers=approvers))))
            self._event("model_approval", req.by, req.reason, after=f"{model_id} {len(approvers)}/{quorum}")
            return f"promotion of model {model_id[:12]} approved by {req.by}: {len(approvers)}/{quorum}"
        previous = model.active or ""
        await workflow.execute_activity(
            sync_model_store, ModelSync(action="promote", model_id=model_id, by=",".join(approvers), reason=req.reason),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
        )
        self.state = self.state.model_copy(update=dict(model=ModelState(
            active=model_id, history=(*model.history, previous), candidate=None if model.candidate == model_id
            else model.candidate)))
        self._event("model_promote", req.by, req.reason, before=previous or "model store default", after=model_id)
        return (f"model {model_id[:12]} is active (approved by {', '.join(approvers)}); rollback restores "
                f"{previous[:12] or 'the model store default'}; revision {self.state.revision}")

    @promote_model.validator
    def _validate_promote_model(self, req: ModelChange) -> None:
        _require_reason(req.reason, req.by)
        self._validate_token("promote_model", req)

    @workflow.update(description='Roll back to the model active before the last promotion: {"by": "carol", "reason": "..."}')
    async def rollback_model(self, req: ModelRollback) -> str:
        policy = await self._policy()
        self._check_token(policy, "rollback_model", req, "")
        self._check_role(policy, req.by, set(policy.governance_roles), "roll back models", "", req.reason)
        model = self.state.model
        if not model.history:
            self._refuse(req.by, req.reason, "", "no model promotion through governance to roll back")
        target = model.history[-1] or None
        await workflow.execute_activity(
            sync_model_store,
            ModelSync(action="rollback", model_id=target, rolled_back=model.active, by=req.by, reason=req.reason),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
        )
        self.state = self.state.model_copy(update=dict(model=model.model_copy(update=dict(
            active=target, history=model.history[:-1], pending=None, pending_approvers=()))))
        self._event("model_rollback", req.by, req.reason, before=model.active or "", after=target or "model store default")
        now = target[:12] if target else "the model store's previous model (else the shipped default)"
        return f"rolled back model {(model.active or '')[:12]}; active: {now}; revision {self.state.revision}"

    @rollback_model.validator
    def _validate_rollback_model(self, req: ModelRollback) -> None:
        _require_reason(req.reason, req.by)
        self._validate_token("rollback_model", req)

    @workflow.update(description='Score new cases with a candidate model in shadow (recorded, never decides): {"model_id": "...", "by": "erin", "reason": "..."}; model_id "" clears it')
    async def set_candidate(self, req: ModelChange) -> str:
        policy = await self._policy()
        self._check_not_foreign(req.by, req.reason)
        roles = set(policy.governance_roles) | {"detection_engineer"}
        self._check_role(policy, req.by, roles, "name shadow candidates", "", req.reason)
        model_id = await self._resolve(req) if req.model_id else None
        before = self.state.model.candidate or ""
        self.state = self.state.model_copy(update=dict(model=self.state.model.model_copy(update=dict(candidate=model_id))))
        self._event("candidate", req.by, req.reason, before=before, after=model_id or "")
        return f"shadow candidate: {model_id[:12] if model_id else 'none'}"

    @set_candidate.validator
    def _validate_candidate(self, req: ModelChange) -> None:
        _require_reason(req.reason, req.by)
        self._validate_not_foreign()

    # ------------------------------------------------------------------ feedback and drift

    @workflow.signal(description="An analyst's verdict on a case, with the model's score (sent by the case "
                     "workflow); it counts once checked against the case")
    def record_verdict(self, rec: VerdictRecord) -> None:
        if not workflow.patched(CHECK_VERDICTS):
            self._count_unchecked(rec)
            return
        now = workflow.now()
        at = min(rec.at, now) if rec.at is not None else now  # never in the future (the drift window reads it)
        claim = VerdictClaim(alert_type=clip(rec.alert_type, MAX_NAME_CHARS), analyst=clip(rec.analyst, MAX_NAME_CHARS),
                             record=EvidenceRecord.of(rec.model_copy(update=dict(
                                 case_id=clip(rec.case_id, MAX_NAME_CHARS), at=at))))
        if len(self.pending) >= MAX_PENDING:
            self._refuse_verdict(claim, f"{MAX_PENDING} verdicts are already waiting for their check: "
                                        "not counted (the verdict stays in the case's history)")
            return
        self.pending.append(claim)

    async def _check_pending(self) -> None:
        batch, self.pending = self.pending[:VERIFY_BATCH], self.pending[VERIFY_BATCH:]
        try:
            checks: list[VerdictCheck] = await workflow.execute_activity(
                verify_verdicts, VerdictBatch(claims=tuple(batch)), start_to_close_timeout=timedelta(minutes=2),
                retry_policy=QUICK, summary=f"check {len(batch)} verdicts against their cases",
            )
        except ActivityError as err:
            why = f"the check could not run: {clip(str(err.cause or err), 300)}"
            for claim in batch:
                self._refuse_verdict(claim, why)
            return
        for claim, check in zip(batch, checks, strict=True):
            if check.record is None:
                self._refuse_verdict(claim, check.refused)
            else:
                self._count(check.alert_type, check.record)

    def _refuse_verdict(self, claim: VerdictClaim, why: str) -> None:
        rec = claim.record
        self._event("refused", claim.analyst, f"verdict {rec.verdict.value} on case {rec.case_id}",
                    alert_type=claim.alert_type, before=VERDICT_REFUSAL, after=f"verdict not counted: {why}",
                    accepted=False)

    def _count(self, name: str, rec: EvidenceRecord) -> None:
        """Count a checked verdict: one per case (a later verdict on a case replaces the earlier one)."""
        window = self.state.recent.get(name, ())
        counts = self.state.counts.get(name, VerdictCounts())
        earlier = [r for r in window if r.case_id == rec.case_id]
        for old in earlier:  # all-time counters: the replaced verdict no longer counts
            counts = _counts_add(counts, old, -1)
        counts = _counts_add(counts, rec, 1)
        kept = tuple(r for r in window if r.case_id != rec.case_id) if earlier else window
        self.state = self.state.model_copy(update=dict(
            counts={**self.state.counts, name: counts},
            recent={**self.state.recent, name: (*kept, rec)[-self.evidence_window:]},
        ))

    def _carried_pending(self) -> tuple[VerdictClaim, ...]:
        """Unchecked verdicts for the next run, within PENDING_CARRY_CHARS; the rest are refused (recorded)."""
        carried: list[VerdictClaim] = []
        size = 0
        for claim in self.pending:
            size += len(claim.record.case_id) + len(claim.analyst) + len(claim.alert_type) + 120
            if size > PENDING_CARRY_CHARS:
                self._refuse_verdict(claim, "too many verdicts waiting for their check at continue-as-new: "
                                            "not counted (the verdict stays in the case's history)")
            else:
                carried.append(claim)
        return tuple(carried)

    def _count_unchecked(self, rec: VerdictRecord) -> None:
        """Before CHECK_VERDICTS: every signalled verdict counted as sent (kept for replay)."""
        name = rec.alert_type
        counts = self.state.counts.get(name, VerdictCounts())
        tp = rec.verdict == Verdict.true_positive
        above = rec.threshold is not None and rec.benign_confidence is not None and rec.benign_confidence >= rec.threshold
        counts = VerdictCounts(
            reviewed=counts.reviewed + 1,
            agree=counts.agree + int(rec.predicted == rec.verdict),
            agree_tp=counts.agree_tp + int(rec.predicted is not None and (rec.predicted == Verdict.true_positive) == tp),
            above_threshold=counts.above_threshold + int(above),
            above_threshold_tp=counts.above_threshold_tp + int(above and tp),
            sampled_reviews=counts.sampled_reviews + int(rec.review_sampled),
            sampled_misses=counts.sampled_misses + int(rec.review_sampled and tp),
        )
        recent = (*self.state.recent.get(name, ()), EvidenceRecord.of(rec.model_copy(update=dict(
            case_id=clip(rec.case_id, MAX_NAME_CHARS), at=rec.at or workflow.now()))))
        window = self.evidence_window
        self.state = self.state.model_copy(update=dict(
            counts={**self.state.counts, name: counts},
            recent={**self.state.recent, name: recent[-window:]},
        ))

    @workflow.update(description="A drift check's report (accepted only from the running drift check that "
                     "computed it); breached alert types are demoted to in_the_loop")
    async def drift_report(self, report: DriftReport) -> list[str]:
        if workflow.patched(CHECK_DRIFT_REPORTS):
            report = await self._checked_drift_report(report)
            last = self.state.last_drift
            if last is not None and last.check_run_id == report.check_run_id:
                return list(last.demoted)  # the same check's report again (an activity retry): applied once
        policy = await self._policy()
        demoted: list[str] = []
        for finding in report.findings:
            if not finding.breaches:
                continue
            name = finding.alert_type
            why = f"drift: {'; '.join(finding.breaches)}"
            before = self._autonomy(policy, name) if name in policy.alert_types else "in_the_loop"
            if name in policy.alert_types:
                current = self.state.alert_types.get(name, AlertTypeState())
                self._put(name, current.model_copy(update=dict(
                    autonomy="in_the_loop", autonomy_by=SYSTEM_DRIFT, autonomy_at=workflow.now(), pending_promotion=())))
            self._event("drift", SYSTEM_DRIFT, why, alert_type=name, before=before, after="in_the_loop")
            if before == "on_the_loop":
                demoted.append(name)
        self.state = self.state.model_copy(update=dict(last_drift=report.model_copy(update=dict(demoted=tuple(demoted)))))
        return demoted

    async def _checked_drift_report(self, report: DriftReport) -> DriftReport:
        try:
            return await workflow.execute_activity(
                verify_drift_report, report, start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
                summary="check the report against the drift check that computed it",
            )
        except ActivityError as err:
            cause = err.cause
            why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            source = f"drift check {report.check_workflow_id}" if report.check_workflow_id else "unnamed sender"
            self._refuse(source, "drift report", "", f"drift report refused: {why}")
            raise

    # ------------------------------------------------------------------ helpers

    async def _policy(self) -> Policy:
        policy: Policy = await workflow.execute_activity(
            governance_policy, start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
        )
        self.policy, self.policy_at = policy, workflow.now()
        return policy

    # ------------------------------------------------------------------ signed changes

    def _token_refusal(self, policy: Policy | None, update_name: str, req: SignedRequest) -> str | None:
        scope = signed_change(update_name, req)
        if scope is None:
            return None
        change, subject = scope
        now = workflow.now()
        used = {n for n, exp in self.used_nonces.items() if exp >= now.timestamp()}
        # `cryptography` imports its OpenSSL backend lazily; re-imported inside the sandbox, its Rust
        # module aborts the worker (as in workflows/case.py). Verification is pure and deterministic.
        with workflow.unsafe.imports_passed_through():
            return governance_token_refusal(policy, workflow_id=workflow.info().workflow_id, change=change,
                                            subject=subject, person=req.by, token=req.token, now=now,
                                            used_nonces=used)

    def _validate_token(self, update_name: str, req: SignedRequest) -> None:
        """Refuse a change whose token does not prove the person's intent, before anything is written
        (validators do not run on replay: recorded histories replay as they ran)."""
        self._validate_not_foreign()
        policy = self.policy
        if policy is not None and (self.policy_at is None or workflow.now() - self.policy_at > VALIDATOR_POLICY_FRESH):
            policy = None  # an old copy: the handler decides with the policy it reads
        refusal = self._token_refusal(policy, update_name, req)
        if refusal:
            raise ApplicationError(refusal, type=TOKEN_REFUSED, non_retryable=True)

    def _validate_not_foreign(self) -> None:
        if self.foreign:
            raise ApplicationError(self.foreign, type="GovernanceRefused", non_retryable=True)

    def _check_not_foreign(self, by: str, reason: str) -> None:
        """The handlers' check (a foreign workflow's validators refuse first). Behind the patch: a recorded
        history replayed under another id or task queue (the Replayer, tests/replay) looks foreign too."""
        if self.foreign and workflow.patched(START_CHECKED):
            self._refuse(by, reason, "", self.foreign)

    def _check_token(self, policy: Policy, update_name: str, req: SignedRequest, alert_type: str) -> None:
        """The handler's check, against the policy just read (recorded when refused); spends the nonce."""
        self._check_not_foreign(req.by, req.reason)
        # A patch marker of each change's own (its update id): a long-lived run recorded before tokens
        # were checked replays its old changes as they ran, and still checks every new one (one
        # patch id for the whole run would stay off for the rest of that run once replayed off).
        update = workflow.current_update_info()
        if not workflow.patched(f"{SIGNED_CHANGES}:{update.id if update else ''}"):
            return
        refusal = self._token_refusal(policy, update_name, req)
        if refusal:
            self._refuse(req.by, req.reason, alert_type, refusal)
        if req.token:
            self.used_nonces = {**self._live_nonces(), token_nonce(req.token): token_expiry(req.token) or 0}

    def _live_nonces(self) -> dict[str, int]:
        """Spent nonces whose tokens have not expired yet (an expired token is refused anyway)."""
        now = workflow.now().timestamp()
        return {n: exp for n, exp in self.used_nonces.items() if exp >= now}

    async def _scoring_model(self, req: AutonomyChange) -> str:
        """The model that scores cases now: the one governance made active, else the model store's (the
        shipped default when the store has none), as the workers resolve it."""
        if self.state.model.active:
            return self.state.model.active
        try:
            return await workflow.execute_activity(
                resolve_model, "", start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
                summary="the model that scores cases now",
            )
        except ActivityError as err:
            cause = err.cause
            why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            self._refuse(req.by, req.reason, req.alert_type, f"could not tell which model scores cases now: {why}")
            raise

    async def _resolve(self, req: ModelChange) -> str:
        try:
            return await workflow.execute_activity(
                resolve_model, req.model_id, start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
            )
        except ActivityError as err:
            cause = err.cause
            why = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            self._refuse(req.by, req.reason, "", f"model {req.model_id!r}: {why}")
            raise

    def _still_governors(self, policy: Policy, earlier: tuple[str, ...], by: str, alert_type: str) -> tuple[str, ...]:
        """The earlier approvers of a pending promotion that the policy in force still gives a governance role;
        each one dropped is recorded (an event, not a revision) and the quorum counts without them."""
        kept = tuple(a for a in earlier if set(policy.roles_of(a)) & set(policy.governance_roles))
        if kept == earlier or not workflow.patched(PENDING_RECHECKED):
            return earlier
        dropped = [a for a in earlier if a not in kept]
        self._event("refused", by, "approvals of a pending promotion re-checked", alert_type=alert_type,
                    after=f"no longer counted: {', '.join(dropped)} (no governance role in the policy in force); "
                          "the quorum needs approvals from people who hold one now", accepted=False)
        return kept

    def _autonomy(self, policy: Policy, name: str) -> str:
        live = self.state.alert_types.get(name)
        if live is not None and live.autonomy is not None:
            return live.autonomy
        return policy.alert_type(name).autonomy

    def _threshold(self, policy: Policy, name: str) -> float | None:
        live = self.state.alert_types.get(name)
        if live is not None and live.threshold_set:
            return live.threshold
        return policy.alert_type(name).threshold

    def _threshold_label(self, policy: Policy, name: str) -> str:
        live = self.state.alert_types.get(name)
        if live is not None and live.threshold_set:
            return "none" if live.threshold is None else f"{live.threshold:.6f}"
        value = policy.alert_type(name).threshold
        return f"{'none' if value is None else f'{value:.6f}'} (policy file)"

    def _known(self, policy: Policy, name: str, req: AutonomyChange | ThresholdChange | ThresholdRevert) -> str:
        if name not in policy.alert_types:
            self._refuse(req.by, req.reason, name,
                         f"unknown alert type {name!r}; policy has: {', '.join(sorted(policy.alert_types))}")
        return name

    def _check_role(self, policy: Policy, user: str, allowed: set[str], what: str, alert_type: str, reason: str) -> None:
        roles = set(policy.roles_of(user))
        if not roles & allowed:
            self._refuse(user, reason, alert_type,
                         f"{user!r} has roles {sorted(roles)}; to {what} needs one of {sorted(allowed)} (policy)")

    def _refuse(self, by: str, reason: str, alert_type: str, why: str) -> None:
        self._event("refused", by, reason, alert_type=alert_type, after=why, accepted=False)
        raise ApplicationError(why, type="GovernanceRefused", non_retryable=True)

    def _put(self, name: str, value: AlertTypeState) -> None:
        self.state = self.state.model_copy(update=dict(alert_types={**self.state.alert_types, name: value}))

    def _event(self, kind: str, by: str, reason: str, *, alert_type: str = "", before: str = "", after: str = "",
               accepted: bool = True, before_value: float | None = None, before_from_policy: bool = False,
               reverts: int | None = None) -> None:
        revision = self.state.revision + 1 if accepted else self.state.revision
        event = Event(revision=revision, at=workflow.now(), kind=kind, alert_type=clip(alert_type, MAX_NAME_CHARS),
                      by=clip(by, MAX_NAME_CHARS), reason=clip(reason), before=clip(before), after=clip(after),
                      accepted=accepted, before_value=before_value, before_from_policy=before_from_policy,
                      reverts=reverts)
        # At most max_events events and about events_budget characters: the oldest go first, refused
        # verdicts before anything else (a flood of forged verdicts never pushes governance changes out).
        events = [*self.state.events, event]
        self.events_chars += _event_chars(event)
        while len(events) > 1 and (len(events) > self.max_events or self.events_chars > self.events_budget):
            oldest = next((i for i, e in enumerate(events[:-1]) if _is_verdict_refusal(e)), 0)
            self.events_chars -= _event_chars(events.pop(oldest))
        self.state = self.state.model_copy(update=dict(revision=revision, events=tuple(events)))
        if accepted:
            self._publish()

    def _publish(self) -> None:
        """The live state in the memo: cases read it with DescribeWorkflowExecution, which the server
        answers itself, so a busy task queue never delays a decision (a query would wait for a worker)."""
        workflow.upsert_memo({LIVE_MEMO: self.live().model_dump(mode="json")})


VERDICT_REFUSAL = "verdict"  # Event.before of a refused verdict


def _is_verdict_refusal(e: Event) -> bool:
    return not e.accepted and e.before == VERDICT_REFUSAL


def _event_chars(e: Event) -> int:
    return len(e.kind) + len(e.alert_type) + len(e.by) + len(e.reason) + len(e.before) + len(e.after) + \
        EVENT_OVERHEAD_CHARS


def _counts_add(counts: VerdictCounts, rec: EvidenceRecord, sign: int) -> VerdictCounts:
    tp = rec.verdict == Verdict.true_positive
    return VerdictCounts(
        reviewed=counts.reviewed + sign,
        agree=counts.agree + sign * int(rec.predicted == rec.verdict),
        agree_tp=counts.agree_tp + sign * int(rec.predicted is not None and (rec.predicted == Verdict.true_positive) == tp),
        above_threshold=counts.above_threshold + sign * int(rec.above_threshold),
        above_threshold_tp=counts.above_threshold_tp + sign * int(rec.above_threshold and tp),
        sampled_reviews=counts.sampled_reviews + sign * int(rec.review_sampled),
        sampled_misses=counts.sampled_misses + sign * int(rec.review_sampled and tp),
    )


def _workflows() -> list[type]:
    from workflows.drift import DriftCheckWorkflow

    found: list[type] = [GovernanceWorkflow, DriftCheckWorkflow]
    try:
        from workflows.retrain import RetrainWorkflow
    except ModuleNotFoundError:
        return found
    return [*found, RetrainWorkflow]


WORKFLOWS: list[type] = _workflows()
