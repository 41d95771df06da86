"""One workflow per case: ingest -> enrich -> score -> decide -> act -> close.

The workflow only orchestrates: every read or write of the outside world is an activity. Humans
act on it through updates (refusable before anything is written) and signals (always written,
then checked): approve, reject, rollback, close. `status` returns the whole case.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.audit import ArchiveRequest, archive_case
    from activities.case import (
        EnrichRequest,
        Escalation,
        GovernanceRequest,
        enrich_case,
        escalate,
        load_governance,
    )
    from activities.response import (
        ExecuteRequest,
        capture_state,
        compensate_action,
        execute_action,
        other_holders,
    )
    from activities.scoring import ScoreRequest, score_case
    from playbooks import Playbook, get_playbook
    from policies.engine import GovernanceSnapshot, approval_refusal, close_roles, parse_duration, quorum_met
    from policies.ingest_signing import ingest_refusal
    from policies.signing import CASE_STEP, MAX_CLOCK_SKEW, token_channel, token_nonce, token_refusal
    from signoff import search_attributes as sa
    from signoff.busy import CASE_BUSY, CASE_BUSY_MESSAGE
    from signoff.display import identifier
    from signoff.holds import hold_key
    from signoff.models import (
        MAX_REASON_CHARS,
        ActionRequest,
        ActionResult,
        Alert,
        AlertBatch,
        ApprovalRecord,
        ApprovalRequest,
        CaseDecision,
        CaseInput,
        CaseStatus,
        CaseView,
        CloseRequest,
        CompensationRequest,
        CompensationResult,
        Decision,
        DecisionKind,
        Enrichment,
        Entity,
        EscalationStage,
        HoldersRequest,
        HoldHandover,
        MergeDelivery,
        RefusedBatch,
        Reversibility,
        RollbackRequest,
        ScoreResult,
        StepPlan,
        StepState,
        StepView,
    )
    from workflows.case_detach import CaseDetach
    from workflows.case_entities import CaseEntities
    from workflows.case_escalation import CaseEscalation
    from workflows.case_log import CaseLog
    from workflows.case_merge import CaseMerge
    from workflows.case_recheck import RECHECK_ROLLBACK, CaseRecheck
    from workflows.case_retry import CaseRetry
    from workflows.decide import decide
    from workflows.feedback import recheck_governance, record_verdict_of, shadow_score
    from workflows.handover import (
        ENDED_HOLDERS,
        ask_ended_holders,
        kept_for_ended,
        restores_only_this,
        tell_holders,
    )

TIMELINE_CAP = 50
ENTITY_CAP = 200
REFUSED_REASON_CAP = 200  # a refused request keeps only the start of its reason (it may be megabytes)
# Patch ids (tests/test_replay.py): cases recorded before these changes replay the way they ran.
ROLLBACK_AFTER_VERDICT = "rollback-after-verdict"  # a rollback accepted after the verdict runs before the end
HARDENED_CHECKS = "signed-rollback-close"  # signed rollback/close, reason caps, future-dated tokens
ALERT_COUNT_ATTRIBUTE = "alert-count-attribute"  # the case publishes its alert count (AlertCount)
SHARED_TARGETS = "shared-targets"  # HeldTargets; a rollback keeps what another open case holds (signoff.holds)
# Update replies say what the bare reply hid: an approved step queued behind an earlier gate, and
# after a rollback the irreversible actions still in effect and the steps that never ran. Taken
# only when there is something to add, so most cases record no marker for it.
CLEARER_REPLIES = "clearer-replies"
# The policy's time-to-verdict SLA (verdict_sla): a case that goes to a human publishes when its
# verdict is due (VerdictDue) and escalates once if none came by then. Taken only where an SLA applies.
VERDICT_SLA = "verdict-sla"
# The policy's rollback_window: after its verdict a case that still has actions in effect stays open
# that long for a rollback. Taken only for such a case under a policy that sets a window.
ROLLBACK_WINDOW = "rollback-window"
# Alert types the policy marks `scored: false` (the drift check's cases) skip scoring and shadow
# scoring. Taken only for such a type.
UNSCORED_TYPES = "unscored-types"
# QA7: whoever detached an alert into a case of its own may not approve that case's steps (a rejected step was
# offered again in the new case and approved by the detacher alone). Taken only when the detacher approves.
DETACHER_NOT_APPROVER = "detacher-not-approver"
# An assignment, note, retry, detach or merge signed with a key the case's copy of the policy does not know (rotated
# since the case opened) is checked against the policy in force, as approvals are, instead of refused
# until the case next re-reads it. Taken only for such a request.
SIGNER_RECHECKED = "signer-rechecked-assign-note-retry"
# A signed start or batch names its case (`case_id`): one signed for another case (read from that case's history
# and sent again by someone with Temporal write) is not an ingester's input for this one. Asked only for such input.
SIGNED_FOR_THIS_CASE = "signed-input-for-this-case"
# A local activity's result can reach the workflow one task late (the SDK completes the task with its marker
# while a query is answered), after signals and updates that came meanwhile; replay delivers it before them,
# so a handler's command that went first live comes second on replay: nondeterminism, the case stuck
# (docs/reliability.md §7). From this patch on, signal handlers wait until no local activity is in flight,
# and the identity re-reads and the before-state capture of a step are activities (updates cannot wait:
# their acceptance is recorded at once). Asked once at the start of `run`, before any local activity.
LOCAL_RESULT_RACE = "local-result-race"
# A step's before-state capture is a local activity again (one workflow task and server round trip fewer per
# step than under LOCAL_RESULT_RACE alone), counted in flight like triage's: signal handlers wait for it, and
# update validators refuse while it runs with the one busy reason (signoff/busy.py) that Signoff's clients send
# again. Only a task completed early (a query answered, a read past 80% of the task timeout) lets an update be
# validated while it runs. Asked once at the start of `run`, right after LOCAL_RESULT_RACE (which it needs).
LOCAL_CAPTURE = "local-capture"
# How long a step's before-state read stays a local activity (retries included) before it is read as an activity:
# well inside the BUSY_RETRY_SECONDS that clients send a refused update again for.
CAPTURE_LOCAL_BUDGET = timedelta(seconds=10)
QUICK = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
# Vendor calls heartbeat (activities/response.py): a worker that dies mid-call is noticed after
# ACTION_HEARTBEAT and the call is retried on another worker (idempotency key: no double action).
# ACTION_TIMEOUT covers the slowest executor's confirmation polling (EDR: 120 x 5 s).
ACTION_HEARTBEAT = timedelta(seconds=15)
ACTION_TIMEOUT = timedelta(minutes=15)
# A case cannot be decided without its policy: an unreadable policy file waits for an operator
# (the case stays visibly in triage) instead of failing the case.
UNTIL_FIXED = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
ESCALATE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1),
                             maximum_attempts=10)
ACTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=["ActionRefused", "NoExecutor", "NonRetryableConnectorError"],
)

_T = TypeVar("_T")


class _Step:
    """Runtime state of one planned step."""

    def __init__(self, plan: StepPlan, quorum: int, auto: bool) -> None:
        self.plan = plan
        self.quorum = quorum
        self.auto = auto
        self.state = StepState.pending if auto else StepState.awaiting_approval
        self.approvals: list[ApprovalRecord] = []
        self.before: dict[str, Any] | None = None
        self.result: ActionResult | None = None
        self.compensation: CompensationResult | None = None
        self.error = ""
        self.note = ""
        self.waiting_since: datetime | None = None
        self.escalates_at: datetime | None = None
        self.escalation_level = 0  # escalations of this wait (workflows/case_escalation.py)
        self.chain: tuple[EscalationStage, ...] = ()  # its tier's escalation chain, as it runs
        self.attempt = 1  # a retry of a failed attempt runs the step again (workflows/case_retry.py)

    def attempt_suffix(self) -> str:
        """Vendor idempotency keys are per attempt: a vendor that remembers the key of the attempt
        before would answer the retry with that attempt's outcome instead of acting. The first
        attempt keeps the key it always had."""
        return "" if self.attempt == 1 else f":a{self.attempt}"

    def start_over(self, attempt: int) -> None:
        """Back to the start of the playbook's flow for a retry: a gated step needs fresh approvals.
        What the failed attempt did (approvals, actions, undo) stays in the history."""
        approved = ", ".join(a.approver for a in self.approvals if a.accepted and a.decision == Decision.approve)
        before = f"; approved by {approved} for the attempt before" if approved else ""
        outcome = self.error or self.state.value
        self.note = f"attempt {attempt} (before: {outcome}{before})"
        self.attempt = attempt
        self.state = StepState.pending if self.auto else StepState.awaiting_approval
        self.approvals = []
        self.before = self.result = self.compensation = None
        self.error = ""
        self.waiting_since = self.escalates_at = None
        self.escalation_level, self.chain = 0, ()

    def view(self) -> StepView:
        return StepView(
            step_id=self.plan.step_id, action=self.plan.action, tier=self.plan.tier,
            reversibility=self.plan.reversibility, target=self.plan.target, state=self.state,
            approvals=tuple(self.approvals), quorum=self.quorum, result=self.result,
            compensation=self.compensation, error=self.error, note=self.note,
            waiting_since=self.waiting_since, escalates_at=self.escalates_at,
            escalation_level=self.escalation_level, escalation_chain=self.chain,
        )


@workflow.defn(name="CaseWorkflow")
class CaseWorkflow(CaseLog, CaseRetry, CaseEscalation, CaseDetach, CaseEntities, CaseRecheck, CaseMerge):
    @workflow.init
    def __init__(self, inp: CaseInput) -> None:
        self.inp = inp
        self.case_status = CaseStatus.open
        self.gov: GovernanceSnapshot | None = None
        self.playbook = ""
        self.timeline: list[Alert] = []
        self.seen_uids: set[str] = set()
        self.seen_batches: set[str] = set()
        self.alert_count = inp.carried.alert_count if inp.carried else 0
        self.first_seen: datetime | None = inp.carried.first_seen if inp.carried else None
        self.last_seen: datetime | None = inp.carried.last_seen if inp.carried else None
        self.rules: dict[str, int] = {}
        self.entities: dict[tuple[str, str], Entity] = {}
        self.enrichment: Enrichment | None = None
        self.score: ScoreResult | None = None
        self.scored_uids: frozenset[str] | None = None  # the alerts the score was computed with (QA9)
        self.shadow: ScoreResult | None = None  # a candidate model's score (shadow mode; never decides)
        self.decision: CaseDecision | None = None
        self.steps: dict[str, _Step] = {}
        self.refusals: list[ApprovalRecord] = []
        self.used_nonces: set[str] = set()
        self.verdict: CloseRequest | None = None
        self.rollback_request: RollbackRequest | None = None
        self.rollback_done = False
        self.rollback_votes: list[RollbackRequest] = []  # towards a rollback_quorum above 1, not met yet
        self.verdict_window_over = False  # the case stopped waiting for a verdict (given, or idle)
        self.finishing = False  # archiving and completing: no rollback can run any more
        self.escalations: list[str] = []
        self.verdict_sla: str | None = None  # the policy's SLA for this case's severity, once it applies
        self.verdict_due: datetime | None = None
        self.overdue_since: datetime | None = None
        self.verdict_clock: asyncio.Task[None] | None = None
        self.rollback_open_until: datetime | None = None  # policy rollback_window, after the verdict
        self._init_log()  # owner and investigation log (workflows/case_log.py)
        self._init_retry()  # running a failed attempt again (workflows/case_retry.py)
        self._init_detach()  # alerts taken out of the case (workflows/case_detach.py)
        self._init_recheck()  # identities in force behind a rollback's quorum (workflows/case_recheck.py)
        self._init_merge()  # merged into another case, or others into this one (workflows/case_merge.py)
        self.action_running = False
        self.local_activities = 0  # in flight now (`_local`); signal handlers wait for none (LOCAL_RESULT_RACE)
        self.local_race_safe = False
        self.local_capture = False  # LOCAL_CAPTURE
        self.search_attributes: dict[str, Any] = {}  # last value upserted, per attribute
        self.deferred_upserts: dict[str, SearchAttributeUpdate[Any]] = {}
        self.faster_triage = False
        self.running = False  # `run` has started
        self.unscored = False  # the policy says this alert type gets no score (UNSCORED_TYPES)
        # Signed case input (policies/ingest_signing.py): batches that came before the policy was read
        # are checked once it is; what was not signed by an ingester is listed, and kept out after.
        self.early_batches: list[tuple[AlertBatch, bool]] = []  # and whether it names another case
        self.start_elsewhere = False  # the start names another case (SIGNED_FOR_THIS_CASE)
        self.unsigned_input: list[str] = []
        self.refused_batches: list[RefusedBatch] = []
        self._add_alerts(inp.alerts)

    # ------------------------------------------------------------------ main line

    @workflow.run
    async def run(self, inp: CaseInput) -> CaseView:
        # Faster triage (docs/benchmarks.md): its search attributes go out in two upserts instead
        # of six (each upsert is a history event and a visibility write on the server), and
        # enrichment and scoring run side by side (one workflow activation fewer). Cases started
        # before this change replay the way they were recorded.
        self.running = True
        self.faster_triage = workflow.patched("faster-triage")
        self.local_race_safe = workflow.patched(LOCAL_RESULT_RACE)
        self.local_capture = self.local_race_safe and workflow.patched(LOCAL_CAPTURE)
        self.start_elsewhere = self._names_another_case(inp)  # asked before the local activity below
        self._set_status(CaseStatus.triage, defer=True)
        self._publish_alert_count(defer=True)
        self._publish_entities(defer=True)
        self._upsert(
            [sa.ALERT_TYPE.value_set(inp.alert_type), sa.CASE_SEVERITY.value_set(inp.severity)]
        )
        # Local activities (lever: fewer server round trips): governance, enrichment and scoring
        # are reads and deterministic computation; their results are recorded as markers.
        self.gov = await self._local(workflow.execute_local_activity(
            load_governance, GovernanceRequest(alert_type=inp.alert_type, case_id=inp.case_id),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=UNTIL_FIXED,
        ))
        policy = self.gov.policy
        self._check_early_input()
        self.playbook = policy.alert_type(inp.alert_type).playbook
        self.unscored = self._unscored()
        # Deferred until the decision: only automatic steps run in between, no human waits on them.
        self._upsert(
            [sa.PLAYBOOK.value_set(self.playbook), sa.POLICY_VERSION.value_set(self.gov.policy_version[:16])],
            defer=True,
        )
        enrichment = self._local(workflow.execute_local_activity(
            enrich_case, EnrichRequest(case_id=inp.case_id, entities=tuple(self.entities.values())),
            start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
        ))
        if self.faster_triage:  # scoring reads the alerts, not the enrichment: no need to wait
            self.enrichment, (self.score, scoring_problem) = await asyncio.gather(enrichment, self._score())
        else:
            self.enrichment = await enrichment
            self.score, scoring_problem = await self._score()
        if not self.unscored:
            self.shadow = await shadow_score(inp, self.gov, tuple(self.timeline), self.score)
        decision = decide(self.gov, self.score, scoring_problem)
        if decision.kind == DecisionKind.auto_close:  # a kill switch may have moved since: re-read
            first = self.gov
            self.gov = await self._local(recheck_governance(inp))
            if first.playbook is not None:  # the case plans from the playbook it began with (`_playbook`)
                self.gov = self.gov.model_copy(update={"playbook": first.playbook})
            decision = decide(self.gov, self.score, scoring_problem)
        if self.unsigned_input:  # not (all) from an ingester: nothing runs on it, a human decides
            decision = decision.model_copy(update={"kind": DecisionKind.analyst, "reason": (
                "the case's input was not (all) signed by an ingester the policy lists, so nothing runs on its own: "
                f"an analyst decides ({self.unsigned_input[0]})")})
        self.decision = decision
        attrs = [sa.DECISION.value_set(self.decision.kind.value)]
        if self.score is not None:
            attrs += [sa.MODEL_VERSION.value_set(self.score.model_id[:16])]
        self._upsert(attrs, defer=True)
        if self.score is not None:
            self._upsert([sa.CONFIDENCE.value_set(self.score.benign_confidence)], defer=True)
        # Flushed with the next upsert: auto-closed status, or AwaitingApproval in `_plan_steps`.

        if self.decision.kind == DecisionKind.auto_close:
            self._set_status(CaseStatus.auto_closed)
            await self._archive()
            return self.view()

        self._start_verdict_clock()
        if self.unsigned_input:
            await self._escalate(Escalation(case_id=inp.case_id, kind="unsigned_input", reason=(
                "input not signed by an ingester: " + "; ".join(self.unsigned_input))[:1000]))
        else:  # a playbook aims at the case's entities: never at ones someone typed in by hand
            self._plan_steps()
        await self._run_steps()
        self._settle_status_after_steps()
        await self._wait_for_close()
        if self.verdict_clock is not None:
            await self.verdict_clock  # done, or finishing an overdue escalation that raced the verdict
        await record_verdict_of(inp, self.gov, self.score, self.decision, self.verdict, self.shadow)
        await self._hold_for_rollback()
        await self._settle_handlers()
        await self._archive()
        return self.view()

    async def _settle_handlers(self) -> None:
        """Before the case completes: run any rollback accepted meanwhile (promise 6), even one that
        came after the verdict; then refuse new ones (`finishing`), so none is accepted and dropped."""
        while True:
            await workflow.wait_condition(lambda: (workflow.all_handlers_finished() and not self.rollback_checking)
                                          or self._rollback_pending())
            if not self._rollback_pending():
                break
            if not workflow.patched(ROLLBACK_AFTER_VERDICT):
                # Recorded before the fix: such a rollback was never run; replay the wait as it was.
                await workflow.wait_condition(workflow.all_handlers_finished)
                break
            await self._rollback()
        self.finishing = True

    async def _hold_for_rollback(self) -> None:
        """After the verdict, keep the case open for the policy's rollback_window while a high-impact
        action it executed can still be undone: closing a case must not end the way back (promise 6). A
        rollback in the window runs in `_settle_handlers`; the window's end completes the case."""
        assert self.gov is not None
        window = self.gov.policy.rollback_window
        # High-impact actions in effect, that is (a tag or a note alone does not hold a case open).
        undoable = any(s.state == StepState.executed and not s.auto and s.before is not None
                       and s.plan.compensation is not None for s in self.steps.values())
        if (not window or not undoable or self._rollback_pending() or self.merged_into is not None
                or not workflow.patched(ROLLBACK_WINDOW)):
            return
        held_for = parse_duration(window)
        self.rollback_open_until = workflow.now() + held_for
        with contextlib.suppress(TimeoutError):  # the window's end: the case completes
            await workflow.wait_condition(self._rollback_pending, timeout=held_for)
        self.rollback_open_until = None

    def _rollback_pending(self) -> bool:
        return self.rollback_request is not None and not self.rollback_done

    async def _archive(self) -> None:
        """Keep this case's history after Temporal deletes it (audit retention). Never fails the case."""
        if not workflow.patched("archive-on-close"):
            return
        try:
            await workflow.execute_activity(
                archive_case,
                ArchiveRequest(workflow_id=self.inp.case_id, run_id=workflow.info().run_id, final_view=self.view()),
                start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
            )
        except ActivityError as err:
            self.escalations.append(f"archiving the history failed: {_cause(err)}; run `signoff audit archive`")

    def _start_verdict_clock(self) -> None:
        """The case goes to a human: if the policy gives its severity a time-to-verdict SLA, publish
        when the verdict is due and watch for it (concurrently with the playbook and its gates)."""
        assert self.gov is not None
        sla = self.gov.policy.verdict_sla_for(self.inp.severity)
        if sla is None:
            return
        # A deprecated patch, like `unscored-types`: the recorded policy decides (one from before the SLA has
        # none), and `patched()` asked right after a local activity whose result ended a heartbeated task
        # would answer False on replay.
        workflow.deprecate_patch(VERDICT_SLA)
        self.verdict_sla = self.gov.policy.verdict_sla[self.inp.severity]
        self.verdict_due = workflow.info().workflow_start_time + sla
        self._upsert([sa.VERDICT_DUE.value_set(self.verdict_due)], defer=True)  # flushed by _plan_steps
        self.verdict_clock = asyncio.create_task(self._watch_verdict_due())

    async def _watch_verdict_due(self) -> None:
        """Escalate once when the verdict is overdue. It never closes or decides: the case waits on."""
        assert self.verdict_due is not None
        answered = lambda: self.verdict is not None or self.verdict_window_over  # noqa: E731
        remaining = self.verdict_due - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(answered, timeout=remaining)
                return
            except TimeoutError:
                pass
        if answered():
            return
        self.overdue_since = workflow.now()
        message = (f"no verdict within {self.verdict_sla} of the case opening (verdict_sla for "
                   f"{self.inp.severity} severity, due {self.verdict_due.isoformat()}); the case stays open "
                   "until an analyst closes it with a verdict")
        self.escalations.append(message)
        await self._escalate(Escalation(case_id=self.inp.case_id, reason=message, kind="verdict_overdue"))

    def _unscored(self) -> bool:
        assert self.gov is not None
        rule = self.gov.policy.alert_type(self.inp.alert_type)  # unknown types fall back, as for the playbook
        # The recorded policy decides (histories from before `scored` existed carry a policy without it:
        # scored, as they ran), so the patch is a deprecated one. `patched()` here, right after the case's
        # first local activity, did not replay when that activity's result ended a heartbeated first task
        # and the case went on in the next (QA6): the marker was in the next task, replay answered False
        # and scheduled a scoring the history never had. A deprecated marker may be missing on replay.
        if rule.scored:
            return False
        workflow.deprecate_patch(UNSCORED_TYPES)
        return True

    async def _score(self) -> tuple[ScoreResult | None, str]:
        """Score the case; a scoring failure sends the case to an analyst, it never fails the case."""
        assert self.gov is not None
        if not self.timeline:
            return None, "the case has no alerts to score"
        if self.unscored:
            return None, (f"alert type {self.inp.alert_type} is not scored (policy `scored: false`: the triage "
                          "model was not trained on it); an analyst decides")
        self.scored_uids = frozenset(a.uid for a in self.timeline)
        try:
            score = await self._local(workflow.execute_local_activity(
                score_case,
                ScoreRequest(case_id=self.inp.case_id, alerts=tuple(self.timeline), model_id=self.gov.model_id),
                start_to_close_timeout=timedelta(seconds=60), retry_policy=QUICK,
            ))
            return score, ""
        except (ActivityError, ApplicationError) as err:  # a failed local activity raises ApplicationError
            return None, f"scoring failed: {_cause(err)}"

    def _plan_steps(self) -> None:
        assert self.gov is not None
        policy = self.gov.policy
        for plan in self._playbook().plan(self.inp.case_id, tuple(self.entities.values())):
            rule = policy.rule_for(plan)
            self.steps[plan.step_id] = _Step(plan, quorum=0 if rule.auto else rule.quorum, auto=rule.auto)
        self._refresh_awaiting()

    def _playbook(self) -> Playbook:
        """The playbook recorded with the case's governance (as it was when the case began); histories
        from before it was recorded carry none and plan from the code, as they ran."""
        assert self.gov is not None
        recorded = self.gov.playbook
        if recorded is not None and recorded.name == self.playbook:
            return Playbook.from_record(recorded)
        return get_playbook(self.playbook)

    def _settle_status_after_steps(self) -> None:
        if self.case_status not in (CaseStatus.rollback_failed, CaseStatus.action_failed, CaseStatus.rolled_back,
                                    CaseStatus.merged):
            contained = any(s.state == StepState.executed and not s.auto for s in self.steps.values())
            self._set_status(CaseStatus.contained if contained else CaseStatus.awaiting_verdict)

    async def _run_steps(self, *, retrying: bool = False) -> None:
        for step in list(self.steps.values()):
            if self._stopping():
                break
            if retrying and step.state not in _TO_RUN:
                continue  # still in effect from the attempt before (or rejected then): left as it is
            if not step.auto:
                await self._gate(step)
                while not self._stopping() and not await self._approvals_still_count(step):
                    await self._gate(step)  # an identity behind its quorum was revoked meanwhile
            if step.state not in (StepState.pending, StepState.approved) or self._stopping():
                continue
            ok = await self._execute(step)
            if not ok:
                await self._on_step_failure(step)
                return
        # Steps never reached (closed or rolled back first) are skipped, recorded.
        for step in self.steps.values():
            if step.state in (StepState.pending, StepState.awaiting_approval, StepState.approved, StepState.escalated):
                step.state = StepState.skipped
                step.error = step.error or "case closed or rolled back before this step ran"
        self._refresh_awaiting()
        if self.rollback_request is not None and not self.rollback_done:
            await self._rollback()

    async def _gate(self, step: _Step) -> None:
        """Block until the step is approved, rejected, or the case is closed; timeouts escalate."""
        assert self.gov is not None
        self._set_status(CaseStatus.awaiting_approval)
        timeout = parse_duration(self.gov.policy.rule_for(step.plan).timeout)
        # State only (workflow time, no command): `signoff show` and the chat say until when it waits.
        step.waiting_since = workflow.now()
        step.escalates_at = step.waiting_since + timeout
        step.chain = self._escalation_chain(step.waiting_since, step)  # a tier's `escalation:` levels
        decided = lambda: step.state in (StepState.approved, StepState.skipped) or self._stopping()  # noqa: E731
        try:
            await workflow.wait_condition(decided, timeout=timeout)
        except TimeoutError:
            # Escalates (each level of the tier's chain in turn) and keeps waiting: it never executes.
            await self._escalate_waiting(step, timeout, decided)
        self._refresh_awaiting()

    async def _execute(self, step: _Step) -> bool:
        plan = step.plan
        request = ActionRequest(
            case_id=self.inp.case_id, step_id=plan.step_id, action=plan.action, target=plan.target,
            params=plan.params, idempotency_key=f"{self.inp.case_id}:{plan.step_id}{step.attempt_suffix()}",
        )
        step.state = StepState.running
        self.action_running = True
        if not step.auto:
            self._set_status(CaseStatus.running)
        try:
            # Recorded (a marker, or the activity's result) before execute_action is scheduled, so the
            # before-state is durable before anything changes. Under LOCAL_CAPTURE a local activity counted in
            # flight (updates refused meanwhile, signals wait); under LOCAL_RESULT_RACE alone an activity.
            if self.local_capture:
                step.before = await self._capture(request)
            elif self.local_race_safe:
                step.before = await workflow.execute_activity(
                    capture_state, request, start_to_close_timeout=timedelta(seconds=60), retry_policy=ACTION_RETRY,
                    summary=f"before-state of {plan.target.kind} {identifier(plan.target.id)}",
                )
            else:
                step.before = await workflow.execute_local_activity(
                    capture_state, request, start_to_close_timeout=timedelta(seconds=60), retry_policy=ACTION_RETRY,
                )
            step.result = await workflow.execute_activity(
                execute_action, ExecuteRequest(request=request, before=step.before or {}),
                start_to_close_timeout=ACTION_TIMEOUT, heartbeat_timeout=ACTION_HEARTBEAT, retry_policy=ACTION_RETRY,
                summary=f"{plan.action} {plan.target.kind} {identifier(plan.target.id)}",
            )
            step.state = StepState.executed
            self._upsert([sa.EXECUTED_ACTIONS.value_set(self._executed_actions()), *self._held_targets()])
            return True
        except (ActivityError, ApplicationError) as err:  # a failed local activity raises ApplicationError
            step.state = StepState.failed
            step.error = _cause(err)
            return False
        finally:
            self.action_running = False
            self._refresh_awaiting()

    async def _capture(self, request: ActionRequest) -> dict[str, Any]:
        """A step's before-state (LOCAL_CAPTURE): a local activity for at most CAPTURE_LOCAL_BUDGET, since updates
        are refused while it is in flight (their senders try again for BUSY_RETRY_SECONDS); a vendor slower than
        that, or failing, gets the read as an activity with the full retry policy, updates accepted meanwhile."""
        summary = f"before-state of {request.target.kind} {identifier(request.target.id)}"
        try:
            return await self._local(workflow.execute_local_activity(
                capture_state, request, schedule_to_close_timeout=CAPTURE_LOCAL_BUDGET, retry_policy=ACTION_RETRY,
                summary=summary,
            ))
        # A failed local activity raises ApplicationError; one out of time raises ActivityError live but a bare
        # temporalio TimeoutError on replay (SDK 1.35): all three take the same path.
        except (ActivityError, ApplicationError, ActivityTimeout):
            return await workflow.execute_activity(
                capture_state, request, start_to_close_timeout=timedelta(seconds=60), retry_policy=ACTION_RETRY,
                summary=summary,
            )

    async def _on_step_failure(self, failed: _Step) -> None:
        assert self.gov is not None
        stopped = []
        for step in self.steps.values():
            if step.state in (StepState.pending, StepState.awaiting_approval, StepState.approved, StepState.escalated):
                step.state = StepState.skipped
                step.error = f"not run: step {failed.plan.step_id} failed before it"
                stopped.append(step.plan.step_id)
        message = f"step {failed.plan.step_id} failed: {failed.error}"
        self.escalations.append(message)
        if self.gov.policy.on_step_failure == "compensate":
            ok = await self._compensate_all(reason=f"automatic: {message}")
            if ok:
                self._set_status(CaseStatus.action_failed)
        else:
            self._set_status(CaseStatus.action_failed)
        self._record_failed_attempt(failed.plan.step_id, stopped)
        await self._escalate(Escalation(case_id=self.inp.case_id, reason=message, step_id=failed.plan.step_id,
                                        kind="action_failed"))

    async def _compensate_all(self, reason: str) -> bool:
        """Run the compensations of executed steps in reverse order. False if any failed."""
        ok = True
        for step in reversed(list(self.steps.values())):
            if step.state not in (StepState.executed, StepState.compensation_failed, StepState.failed):
                continue
            if step.before is None or step.plan.compensation is None:
                continue  # irreversible, or it never captured anything to restore
            if step.state == StepState.executed and await self._kept_for_other_holders(step):
                continue
            try:
                step.compensation = await workflow.execute_activity(
                    compensate_action,
                    CompensationRequest(
                        case_id=self.inp.case_id, step_id=step.plan.step_id, action=step.plan.compensation,
                        forward_action=step.plan.action, target=step.plan.target, restore_to=step.before,
                        idempotency_key=f"{self.inp.case_id}:{step.plan.step_id}{step.attempt_suffix()}:undo",
                    ),
                    start_to_close_timeout=ACTION_TIMEOUT, heartbeat_timeout=ACTION_HEARTBEAT,
                    retry_policy=ACTION_RETRY,
                    summary=f"undo {step.plan.action} {step.plan.target.kind} {identifier(step.plan.target.id)}",
                )
                step.state = StepState.compensated
            except ActivityError as err:
                ok = False
                step.state = StepState.compensation_failed
                step.error = f"compensation failed ({reason}): {_cause(err)}"
        if held := self._held_targets():
            self._upsert(held)
        if not ok:
            self._set_status(CaseStatus.rollback_failed)
            failed = [s.plan.step_id for s in self.steps.values() if s.state == StepState.compensation_failed]
            message = f"compensation failed for {failed}: a human must restore these by hand or retry rollback"
            self.escalations.append(message)
            await self._escalate(Escalation(case_id=self.inp.case_id, reason=message, kind="rollback_failed"))
        return ok

    async def _kept_for_other_holders(self, step: _Step) -> bool:
        """Another open case holds this same action on the same target: leave the target as it is
        and hand that case the state from before this one (its rollback restores the original).
        False (undo as usual) when none does, or none could be told."""
        if not workflow.patched(SHARED_TARGETS) or step.result is None or step.before is None:
            return False
        plan = step.plan
        try:
            holders = await workflow.execute_activity(
                other_holders, HoldersRequest(case_id=self.inp.case_id, key=hold_key(plan.action, plan.target)),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=QUICK,
            )
        except ActivityError as err:
            step.note = f"could not check for other cases holding {plan.target.kind} {plan.target.id}: {_cause(err)}"
            return False
        handover = HoldHandover(from_case=self.inp.case_id, action=plan.action, target=plan.target,
                                before=step.before, after=step.result.after)
        told = await tell_holders(holders, handover)
        if not told:
            return await self._kept_for_ended_holders(step)
        step.state = StepState.kept
        step.note = (f"not undone: case {', '.join(told)} still holds {plan.action} on {plan.target.kind} "
                     f"{plan.target.id}; handed over the state from before this case ({_brief(step.before)}) "
                     "for its rollback")
        return True

    async def _kept_for_ended_holders(self, step: _Step) -> bool:
        """No open case holds the target, but an ended case's action on it is still in effect: leave the
        target as it is (restoring it would release that case's containment). False: undo as usual."""
        if not workflow.patched(ENDED_HOLDERS):
            return False
        plan = step.plan
        assert step.result is not None and step.before is not None
        holders = await ask_ended_holders(self.inp.case_id, hold_key(plan.action, plan.target))
        if isinstance(holders, str):
            step.note = f"could not check for ended cases holding {plan.target.kind} {plan.target.id}: {holders}"
            return False
        if not holders:
            return False
        step.state = StepState.kept
        step.note = kept_for_ended(holders, plan.action, plan.target.kind, plan.target.id, step.before,
                                   step.result.after)
        if restores_only_this(holders, step.result.after):
            message = f"case {self.inp.case_id}: step {plan.step_id} {step.note}"
            self.escalations.append(message)
            await self._escalate(Escalation(case_id=self.inp.case_id, reason=message, step_id=plan.step_id,
                                            kind="rollback_kept"))
        return True

    @workflow.signal(description="Another case rolled back an action this case still holds (signoff.holds)")
    async def take_over_hold(self, handover: HoldHandover) -> None:
        await self._after_local_activities()
        for step in self.steps.values():
            if (step.plan.action, step.plan.target) != (handover.action, handover.target) \
                    or step.state != StepState.executed:
                continue
            if step.before == handover.after:  # this case's captured state was that case's action
                step.before = handover.before
                step.note = (f"took over from case {handover.from_case} (rolled back while this case held "
                             f"{step.plan.target.kind} {step.plan.target.id}): a rollback restores "
                             f"{_brief(handover.before)}")
            else:
                step.note = (f"case {handover.from_case} rolled back while this case held the target; this "
                             f"case's own captured state ({_brief(step.before or {})}) stays the one to restore")

    async def _escalate(self, escalation: Escalation) -> None:
        """Tell a human. A broken escalation channel (webhook down) is recorded on the case and
        visible in its status; it never fails the case, which would drop it from the queue."""
        try:
            await workflow.execute_activity(
                escalate, escalation, start_to_close_timeout=timedelta(seconds=30), retry_policy=ESCALATE_RETRY,
            )
        except ActivityError as err:
            self.escalations.append(f"escalation could not be delivered: {_cause(err)}")

    async def _rollback(self) -> None:
        self._set_status(CaseStatus.rolling_back)
        reason = self.rollback_request.reason if self.rollback_request else ""
        ok = await self._compensate_all(reason=f"rollback requested: {reason}")
        if ok:
            self._set_status(CaseStatus.rolled_back)
            self._upsert([sa.ROLLED_BACK.value_set(True)])
        self.rollback_done = True

    async def _wait_for_close(self) -> None:
        """After the playbook: wait for an analyst's verdict, a rollback, or the idle timeout."""
        assert self.gov is not None
        idle = parse_duration(self.gov.policy.case_idle_close)
        while self.verdict is None and self.merged_into is None:
            try:
                await workflow.wait_condition(
                    lambda: self.verdict is not None or self.retry_pending or self.merged_into is not None
                    or (self.rollback_request is not None and not self.rollback_done),
                    timeout=idle,
                )
            except TimeoutError:
                self.escalations.append(f"closed after {idle} idle with no verdict")
                break
            if self.rollback_request is not None and not self.rollback_done:
                await self._rollback()
            if self.retry_pending:
                if self.verdict is None and self.rollback_request is None:
                    await self._retry()
                else:  # accepted, then overtaken before it could run: the rollback or the verdict wins
                    self._supersede_retry("the rollback" if self.rollback_request is not None else "the verdict")
        self.verdict_window_over = True
        if self.case_status not in (CaseStatus.rolled_back, CaseStatus.rollback_failed, CaseStatus.merged):
            self._set_status(CaseStatus.closed)
        else:
            self._upsert([sa.AWAITING_APPROVAL.value_set(False)])

    # ------------------------------------------------------------------ humans: approvals

    @workflow.update(description='Approve a high-impact step: {"step": "disable_account", "approver": "alice", "reason": "C2 confirmed"}')
    async def approve(self, req: ApprovalRequest) -> str:
        return await self._decide_update(req, Decision.approve)

    @approve.validator
    def _validate_approve(self, req: ApprovalRequest) -> None:
        self._validate(req, Decision.approve)

    @workflow.update(description='Reject a high-impact step (it is skipped): {"step": "disable_account", "approver": "alice", "reason": "false positive"}')
    async def reject(self, req: ApprovalRequest) -> str:
        return await self._decide_update(req, Decision.reject)

    @reject.validator
    def _validate_reject(self, req: ApprovalRequest) -> None:
        self._validate(req, Decision.reject)

    @workflow.signal(description='Approve a step (checked after it is recorded): {"step": "disable_account", "approver": "alice", "reason": "C2 confirmed"}')
    async def approve_signal(self, raw: Any) -> None:
        await self._after_local_activities()
        self._signal(raw, Decision.approve)

    @workflow.signal(description='Reject a step (checked after it is recorded): {"step": "disable_account", "approver": "alice", "reason": "benign"}')
    async def reject_signal(self, raw: Any) -> None:
        await self._after_local_activities()
        self._signal(raw, Decision.reject)

    def _refusal(self, req: ApprovalRequest, decision: Decision, *, hardened: bool = True) -> str | None:
        if self.gov is None:
            return "the case is still being triaged: no step is waiting for approval yet"
        step = self.steps.get(req.step)
        if step is None:
            known = [s for s, st in self.steps.items() if not st.auto]
            return f"case {self.inp.case_id} has no step {req.step!r}; steps needing approval: {known}"
        if step.state not in (StepState.awaiting_approval, StepState.escalated):
            return f"step {req.step!r} is {step.state.value}, not waiting for approval"
        if self.merging is not None:  # its waiting steps are skipped once the target has the alerts
            return (f"case {self.inp.case_id} is being merged into {self.merging.target}: its waiting steps will be "
                    "skipped; decide in that case (or here again if the merge fails)")
        if not req.reason.strip():
            return "a reason is required"
        if len(req.reason) > MAX_REASON_CHARS:
            return (f"the reason is {len(req.reason)} characters; keep it under {MAX_REASON_CHARS} "
                    "(link a ticket for the details)")
        # `cryptography` imports its OpenSSL backend lazily; re-imported inside the sandbox, its Rust
        # module aborts the whole worker process. Verification itself is pure and deterministic.
        with workflow.unsafe.imports_passed_through():
            refusal = token_refusal(
                self.gov.policy, case_id=self.inp.case_id, step=req.step, decision=decision.value,
                approver=req.approver, token=req.token, now=workflow.now(), used_nonces=self.used_nonces,
                max_skew=MAX_CLOCK_SKEW if hardened else None,
            )
        if refusal:
            return refusal
        return approval_refusal(self.gov.policy, step.plan, req.approver, decision,
                                self.inp.requested_by, step.approvals)

    def _detacher_refusal(self, req: ApprovalRequest, decision: Decision) -> str | None:
        """The person who took this case's alert out of another case asked for this case: they may not approve
        its steps (separation of duties, as for the requester), whatever the other case decided about them."""
        origin = self.inp.detached_from
        if origin is None or decision != Decision.approve or req.approver != origin.by:
            return None
        if self.gov is not None and self.gov.policy.rule_for(self.steps[req.step].plan).requester_may_approve:
            return None
        return (f"{req.approver!r} detached this case's alert from case {origin.case_id} and may not approve its steps "
                "(separation of duties): another approver decides")

    def _validate(self, req: ApprovalRequest, decision: Decision) -> None:
        self._refuse_while_local_activity()
        refusal = self._refusal(req, decision) or self._detacher_refusal(req, decision)
        if refusal and self._identity_unknown_to_case(req.token, req.approver, req.step, decision.value):
            return  # signed by someone the case's policy does not know yet: the handler checks the policy in force
        if refusal:
            raise ApplicationError(refusal, type="ApprovalRefused", non_retryable=True)

    async def _decide_update(self, req: ApprovalRequest, decision: Decision) -> str:
        deferred = self._identity_unknown_to_case(req.token, req.approver, req.step, decision.value)
        if deferred:
            self._ask_patches_before_a_local_activity()
            await self._refresh_identities(req.approver)
        answer = self._record(req, decision, via="update")
        if answer.startswith("refused: ") and deferred:
            # Let through by the validator for the policy in force, which refuses it too: refused and recorded.
            raise ApplicationError(answer.removeprefix("refused: "), type="ApprovalRefused", non_retryable=True)
        return answer

    def _record(self, req: ApprovalRequest, decision: Decision, via: str) -> str:
        # Re-checked: state may have moved since validation (and signals have no validator).
        refusal = self._replay_safe(self._refusal(req, decision), lambda: self._refusal(req, decision, hardened=False))
        if refusal is None and (detacher := self._detacher_refusal(req, decision)) \
                and workflow.patched(DETACHER_NOT_APPROVER):
            refusal = detacher
        record = ApprovalRecord(
            step=req.step, approver=req.approver, decision=decision,
            reason=_clip(req.reason) if refusal else req.reason, at=workflow.now(),
            via=via, signed=req.token is not None, accepted=refusal is None, refusal=refusal or "",
            # A verified chat bridge token names its channel (state only: no command changes).
            channel=token_channel(req.token) if refusal is None else None,
        )
        if refusal:
            self.refusals.append(record)
            return f"refused: {refusal}"
        if req.token:
            self.used_nonces.add(token_nonce(req.token))
        step = self.steps[req.step]
        step.approvals.append(record)
        assert self.gov is not None
        if decision == Decision.reject:
            step.state = StepState.skipped
            step.error = f"rejected by {req.approver}: {req.reason}"
            self._refresh_awaiting()
            return f"rejected: step {req.step} will not run"
        approvers = sorted({r.approver for r in step.approvals if r.accepted and r.decision == Decision.approve})
        self._upsert([sa.APPROVERS.value_set(self._all_approvers())])
        if quorum_met(self.gov.policy, step.plan, step.approvals):
            step.state = StepState.approved
            self._refresh_awaiting()
            ahead = self._gate_before(req.step)
            if ahead and workflow.patched(CLEARER_REPLIES):
                return (f"approved: quorum {len(approvers)}/{step.quorum} reached; step {req.step} runs after "
                        f"{ahead} is decided (steps run in playbook order)")
            return f"approved: quorum {len(approvers)}/{step.quorum} reached, step {req.step} will run"
        return f"approval recorded: {len(approvers)}/{step.quorum} ({', '.join(approvers)})"

    def _gate_before(self, step_id: str) -> str | None:
        """The earlier step the case still waits on, when `step_id` is queued behind one (steps run in order)."""
        for s in self.steps.values():
            if s.plan.step_id == step_id:
                return None
            if s.state in (StepState.awaiting_approval, StepState.escalated):
                return s.plan.step_id
        return None

    def _signal(self, raw: Any, decision: Decision) -> None:
        try:
            req = ApprovalRequest.model_validate(raw)
        except ValidationError as exc:
            self.refusals.append(ApprovalRecord(
                step=str(raw.get("step", "")) if isinstance(raw, dict) else "",
                approver=str(raw.get("approver", "")) if isinstance(raw, dict) else "",
                decision=decision, reason="", at=workflow.now(), via="signal", accepted=False,
                refusal=f"malformed approval: {_first_error(exc)}",
            ))
            return
        self._record(req, decision, via="signal")

    # ------------------------------------------------------------------ humans: rollback and close

    @workflow.update(description='Undo every executed action of the case, newest first: {"requested_by": "carol", "reason": "false positive"}')
    async def rollback(self, req: RollbackRequest) -> str:
        await self._check_unknown_identity(Decision.rollback, req.requested_by, req.reason, req.token,
                                           lambda: self._rollback_refusal(req), "RollbackRefused")
        self._accept_rollback(req)
        if self.rollback_checking:  # this request met the quorum: who asked is checked against the policy in force
            await workflow.wait_condition(lambda: not self.rollback_checking)
            answer = self.rollback_check_answer
            if answer.startswith("refused: "):
                raise ApplicationError(answer.removeprefix("refused: "), type="RollbackRefused", non_retryable=True)
            if answer:
                return answer
        if self.rollback_votes:  # only under a rollback_quorum above 1: counted, not yet running
            return self._rollback_vote_text(req)
        await workflow.wait_condition(lambda: self.rollback_done)
        reply = f"rollback {self.case_status.value}: " + ", ".join(
            f"{s.plan.step_id}={s.state.value}" for s in self.steps.values() if s.before is not None
        )
        kept = [s.plan.step_id for s in self.steps.values()
                if s.state == StepState.executed and s.plan.reversibility == Reversibility.irreversible]
        never = [s.plan.step_id for s in self.steps.values() if s.before is None and s.state == StepState.skipped]
        extra = (f"; still in effect (irreversible): {', '.join(kept)}" if kept else "") + (
            f"; never ran: {', '.join(never)}" if never else "")
        if extra and workflow.patched(CLEARER_REPLIES):
            reply += extra
        return reply

    @rollback.validator
    def _validate_rollback(self, req: RollbackRequest) -> None:
        self._refuse_while_local_activity()
        refusal = self._rollback_refusal(req)
        if refusal and self._identity_unknown_to_case(req.token, req.requested_by, CASE_STEP, Decision.rollback.value):
            return  # signed with a key the case's policy does not know (rotated): the handler checks the policy in force
        if refusal:
            raise ApplicationError(refusal, type="RollbackRefused", non_retryable=True)

    @workflow.signal(description='Request a rollback (checked after it is recorded): {"requested_by": "carol", "reason": "false positive"}')
    async def rollback_signal(self, raw: Any) -> None:
        await self._after_local_activities()
        try:
            req = RollbackRequest.model_validate(raw)
        except ValidationError as exc:
            self.escalations.append(f"refused rollback signal: malformed: {_first_error(exc)}")
            return
        refusal = self._replay_safe(self._rollback_refusal(req), lambda: self._rollback_refusal(req, hardened=False))
        if refusal:
            self._refuse_case_decision(Decision.rollback, req.requested_by, req.reason, req.token, refusal)
            return
        self._accept_rollback(req)

    def _accept_rollback(self, req: RollbackRequest) -> None:
        if req.token:
            self.used_nonces.add(token_nonce(req.token))
        quorum = self.gov.policy.rollback_quorum if self.gov else 1
        if quorum > 1 and len(self.rollback_votes) + 1 < quorum:
            self.rollback_votes.append(req)
            return
        if self._check_rollback_later(req):
            return  # accepted by the check, if the requests behind the quorum still count
        self.rollback_votes = []
        self.rollback_request = req
        self.rollback_done = False

    def _rollback_vote_text(self, req: RollbackRequest) -> str:
        assert self.gov is not None
        policy = self.gov.policy
        asked = ", ".join(v.requested_by for v in self.rollback_votes)
        missing = policy.rollback_quorum - len(self.rollback_votes)
        return (f"rollback requested by {req.requested_by} ({len(self.rollback_votes)}/{policy.rollback_quorum}, "
                f"asked: {asked}): nothing is undone until {missing} more person(s) with one of the roles "
                f"{list(policy.rollback_roles)} ask too")

    def _rollback_refusal(self, req: RollbackRequest, *, hardened: bool = True) -> str | None:
        """Why this rollback request must be refused, or None when it will run.

        `hardened=False` gives the checks as they were before HARDENED_CHECKS (replay only).
        """
        if self.gov is None:
            return "the case is still being triaged; nothing has run yet"
        policy = self.gov.policy
        roles = set(policy.roles_of(req.requested_by))
        if not roles & set(policy.rollback_roles):
            return (f"{req.requested_by!r} may not roll back: needs one of the roles "
                    f"{list(policy.rollback_roles)}")
        if not req.reason.strip():
            return "a reason is required"
        if hardened and len(req.reason) > MAX_REASON_CHARS:
            return _too_long(req.reason)
        if self.rollback_request is not None and not self.rollback_done:
            return "a rollback is already running"
        if self.rollback_checking:
            return ("a rollback request met the quorum and is being checked against the policy in force: "
                    "see `signoff show` in a moment")
        if any(v.requested_by == req.requested_by for v in self.rollback_votes):
            return (f"{req.requested_by!r} has already asked for this rollback: it needs "
                    f"{policy.rollback_quorum} different people with a rollback role")
        if self.case_status == CaseStatus.rolled_back:
            return "the case is already rolled back"
        if not any(s.before is not None for s in self.steps.values()):
            return "nothing has been executed on this case: there is nothing to roll back"
        if hardened and self.finishing:
            return (f"the case has finished (status {self.case_status.value}) and is being archived: "
                    "undo its actions by hand, or open a new case")
        if hardened:
            return self._case_token_refusal(Decision.rollback, req.requested_by, req.token)
        return None

    @workflow.update(description='Close the case with a verdict: {"analyst": "alice", "verdict": "FalsePositive", "reason": "known scanner"}')
    async def close(self, req: CloseRequest) -> str:
        await self._check_unknown_identity(Decision.close, req.analyst, req.reason, req.token,
                                           lambda: self._close_refusal(req), "CloseRefused")
        self._accept_close(req)
        return f"closing with verdict {req.verdict.value}"

    @close.validator
    def _validate_close(self, req: CloseRequest) -> None:
        self._refuse_while_local_activity()
        refusal = self._close_refusal(req)
        if refusal and self._identity_unknown_to_case(req.token, req.analyst, CASE_STEP, Decision.close.value):
            return  # signed with a key the case's policy does not know (rotated): the handler checks the policy in force
        if refusal:
            raise ApplicationError(refusal, type="CloseRefused", non_retryable=True)

    @workflow.signal(description='Close with a verdict (checked after it is recorded): {"analyst": "alice", "verdict": "TruePositive", "reason": "confirmed"}')
    async def close_signal(self, raw: Any) -> None:
        await self._after_local_activities()
        try:
            req = CloseRequest.model_validate(raw)
        except ValidationError as exc:
            self.escalations.append(f"refused close signal: malformed: {_first_error(exc)}")
            return
        refusal = self._replay_safe(self._close_refusal(req), lambda: self._close_refusal(req, hardened=False))
        if refusal:
            self._refuse_case_decision(Decision.close, req.analyst, req.reason, req.token, refusal)
            return
        self._accept_close(req)

    def _accept_close(self, req: CloseRequest) -> None:
        if req.token:
            self.used_nonces.add(token_nonce(req.token))
        self.verdict = req

    def _close_refusal(self, req: CloseRequest, *, hardened: bool = True) -> str | None:
        """Why this verdict must be refused, or None when it closes the case.

        With `trust_unsigned_approvals: false` a verdict needs a role that may close
        (`close_roles`: the alert type's own, else the approving tiers' roles) and a
        token signed for (case, "close", analyst).
        """
        if self.gov is None:
            return "the case is still being triaged"
        policy = self.gov.policy
        if req.analyst not in policy.approvers:
            return f"{req.analyst!r} is not an analyst in policy"
        if not req.reason.strip():
            return "a reason is required"
        if hardened and len(req.reason) > MAX_REASON_CHARS:
            return _too_long(req.reason)
        if self.verdict is not None:
            return f"already closed by {self.verdict.analyst}"
        if hardened and self.verdict_window_over:
            return f"the case already closed without a verdict (status {self.case_status.value}); it takes none now"
        if hardened and not policy.deployment.trust_unsigned_approvals:
            allowed = close_roles(policy, self.gov.alert_type)
            roles = policy.roles_of(req.analyst)
            if not set(roles) & set(allowed):
                return f"{req.analyst!r} has roles {list(roles)}; closing a case needs one of {list(allowed)}"
        if hardened:
            return self._case_token_refusal(Decision.close, req.analyst, req.token)
        return None

    def _case_token_refusal(self, decision: Decision, user: str, token: str | None) -> str | None:
        assert self.gov is not None
        if (merging := self._merge_holds(decision)) is not None:  # workflows/case_merge.py (None: no merge)
            return merging
        # Imports passed through for the same reason as in `_refusal` (cryptography's lazy backend).
        with workflow.unsafe.imports_passed_through():
            return token_refusal(
                self.gov.policy, case_id=self.inp.case_id, step=CASE_STEP, decision=decision.value,
                approver=user, token=token, now=workflow.now(), used_nonces=self.used_nonces,
            )

    def _refuse_case_decision(self, decision: Decision, user: str, reason: str, token: str | None,
                              refusal: str, *, signal: bool = True) -> None:
        """A refused rollback or close signal (or an update refused in its handler): kept in the case like
        a refused approval signal."""
        kind = "signal" if signal else "request"
        self.escalations.append(f"refused {decision.value} {kind} from {_clip(user, 80)!r}: {refusal}")
        self.refusals.append(ApprovalRecord(
            step=CASE_STEP, approver=_clip(user, 80), decision=decision, reason=_clip(reason), at=workflow.now(),
            via=f"{decision.value}_signal" if signal else decision.value, signed=token is not None, accepted=False,
            refusal=refusal,
        ))

    async def _check_unknown_identity(self, decision: Decision, user: str, reason: str, token: str | None,
                                      refusal_now: Callable[[], str | None], error_type: str) -> None:
        """A case-wide request let through by its validator for a signer the case's policy does not know
        (`_identity_unknown_to_case`): adopt the identities in force, then check it again; refused and kept."""
        if not self._identity_unknown_to_case(token, user, CASE_STEP, decision.value):
            return
        self._ask_patches_before_a_local_activity()
        await self._refresh_identities(user)
        refusal = refusal_now()
        if refusal:
            self._refuse_case_decision(decision, user, reason, token, refusal, signal=False)
            raise ApplicationError(refusal, type=error_type, non_retryable=True)

    def _signer_unknown(self, refusal: str | None, decision: Decision, user: str, token: str | None) -> bool:
        """An assignment, note or retry refused only, perhaps, because the case's policy does not know its
        signer (`_identity_unknown_to_case`): its validator lets it through to the handler's check."""
        return refusal is not None and self._identity_unknown_to_case(token, user, CASE_STEP, decision.value)

    async def _recheck_unknown_signer(self, decision: Decision, user: str, reason: str, token: str | None,
                                      refusal_now: Callable[[], str | None], error_type: str,
                                      also_ask: tuple[str, ...] = ()) -> None:
        """In the handler of a request `_signer_unknown` let through: the identities in force decide
        (`_check_unknown_identity`); refused, it is kept as a refusal and the update fails. `also_ask`: the
        patches the handler asks after the re-read (a local activity), asked before it (docs/reliability.md
        §7); only on this path, which no history recorded before SIGNER_RECHECKED has."""
        if not self._signer_unknown(refusal_now(), decision, user, token) or not workflow.patched(SIGNER_RECHECKED):
            return
        for patch in also_ask:
            workflow.patched(patch)
        await self._check_unknown_identity(decision, user, reason, token, refusal_now, error_type)

    def _ask_patches_before_a_local_activity(self) -> None:
        """The handler code after a deferred identity re-read (a local activity) may ask these patches; asked
        first, before the activity: a `patched()` first asked right after a local activity that ended a
        heartbeated workflow task answers False on replay (docs/reliability.md §7). Only patches no history
        recorded before them: an older one asked early here would answer (and memoise) False in a history
        that has its marker further on."""
        for patch in (DETACHER_NOT_APPROVER, RECHECK_ROLLBACK):
            workflow.patched(patch)

    def _replay_safe(self, refusal: str | None, before_hardening: Callable[[], str | None]) -> str | None:
        """In a handler (replayed, unlike validators): a refusal that only the HARDENED_CHECKS make
        counts in cases that took the patched path; histories recorded before keep their outcome."""
        if refusal is None or before_hardening() is not None:
            return refusal
        return refusal if workflow.patched(HARDENED_CHECKS) else None

    # ------------------------------------------------------------------ alerts

    @workflow.signal(description="More alerts for this case (sent by the ingester with signal-with-start)")
    async def add_alerts(self, batch: AlertBatch) -> None:
        await self._after_local_activities()
        elsewhere = self._names_another_case(batch)
        if self.gov is None:
            self.early_batches.append((batch, elsewhere))  # checked when the policy is read (`_check_early_input`)
        elif refusal := self._ingest_refusal(batch, elsewhere):
            self._refuse_batch(batch, refusal)
            return
        self._take_batch(batch)

    def _check_early_input(self) -> None:
        """Under `require_signed_ingest`: was the case started, and sent its alerts so far, by an ingester?"""
        assert self.gov is not None
        early, self.early_batches = self.early_batches, []
        if not self.gov.policy.deployment.require_signed_ingest:
            return
        if refusal := self._ingest_refusal(self.inp, self.start_elsewhere):
            self.unsigned_input.append(f"the case's start: {refusal}")
        for batch, elsewhere in early:
            if refusal := self._ingest_refusal(batch, elsewhere):
                uids = ", ".join(a.uid for a in batch.alerts[:3]) + (" ..." if len(batch.alerts) > 3 else "")
                self.unsigned_input.append(f"alerts {uids}: {refusal}")
        for problem in self.unsigned_input:
            self.escalations.append(f"unsigned input: {problem}")

    def _names_another_case(self, model: AlertBatch | CaseInput) -> bool:
        return model.case_id != workflow.info().workflow_id and workflow.patched(SIGNED_FOR_THIS_CASE)

    def _ingest_refusal(self, model: AlertBatch | CaseInput | MergeDelivery, elsewhere: bool = False) -> str | None:
        assert self.gov is not None
        # Imports passed through for the same reason as in `_refusal` (cryptography's lazy backend).
        with workflow.unsafe.imports_passed_through():
            refusal = ingest_refusal(self.gov.policy, model)
        if refusal is None and elsewhere and self.gov.policy.deployment.require_signed_ingest:
            return (f"signed by an ingester for case {getattr(model, 'case_id', '?')}, not for this one: sent again "
                    "from that case's history by someone with Temporal write")
        return refusal

    def _refuse_batch(self, batch: AlertBatch, refusal: str) -> None:
        """Alerts after triage that no ingester signed: kept out of the case, listed (the history has them)."""
        uids = tuple(a.uid[:200] for a in batch.alerts[:20])
        self.refused_batches.append(RefusedBatch(at=workflow.now(), alert_uids=uids,
                                                 alerts=batch.total or len(batch.alerts), reason=refusal))
        self.escalations.append(f"refused {batch.total or len(batch.alerts)} alert(s) ({', '.join(uids[:3])}"
                                f"{' ...' if len(uids) > 3 else ''}): {refusal}")

    def _take_batch(self, batch: AlertBatch) -> None:
        if batch.batch_id:
            if batch.batch_id in self.seen_batches:
                return  # a re-sent batch (ingester retry) never counts twice
            self.seen_batches.add(batch.batch_id)
        count_before = self.alert_count
        fresh = [a for a in batch.alerts if a.uid not in self.seen_uids]
        self._add_alerts(tuple(fresh))
        extra = max(batch.total - len(batch.alerts), 0)
        if extra:
            self.alert_count += extra
            for rule, count in batch.rules.items():
                sampled = sum(1 for a in batch.alerts if a.rule == rule)
                self.rules[rule] = self.rules.get(rule, 0) + max(count - sampled, 0)
            if batch.first_seen and (self.first_seen is None or batch.first_seen < self.first_seen):
                self.first_seen = batch.first_seen
            if batch.last_seen and (self.last_seen is None or batch.last_seen > self.last_seen):
                self.last_seen = batch.last_seen
        self._note_routed(batch, self.alert_count - count_before)  # workflows/case_merge.py
        if self.running:  # the first batch (signal-with-start) is published by `run`'s first upsert
            # Joins a pending deferred upsert (triage, where nothing waits on a human) instead of
            # flushing it early; otherwise its own upsert, only when the count changed.
            # The digests and the count go out together: one history event.
            defer = bool(self.deferred_upserts)
            self._publish_entities(defer=True)
            self._publish_alert_count(defer=True)
            self._upsert([], defer=defer)

    def _add_alerts(self, alerts: tuple[Alert, ...]) -> None:
        for alert in alerts:
            if alert.uid in self.seen_uids:
                continue  # the same alert twice never counts twice
            if len(self.seen_uids) < 10_000:
                self.seen_uids.add(alert.uid)
            self.alert_count += 1
            self.rules[alert.rule] = self.rules.get(alert.rule, 0) + 1
            if self.first_seen is None or alert.time < self.first_seen:
                self.first_seen = alert.time
            if self.last_seen is None or alert.time > self.last_seen:
                self.last_seen = alert.time
            if len(self.timeline) < TIMELINE_CAP:
                self.timeline.append(alert)
            for entity in alert.entities:
                key = (entity.type, entity.value)
                if key not in self.entities and len(self.entities) < ENTITY_CAP:
                    self.entities[key] = entity

    # ------------------------------------------------------------------ queries and helpers

    @workflow.query(description="The whole case: alerts, score, decision, steps, approvals, compensations")
    def status(self) -> CaseView:
        return self.view()

    def view(self) -> CaseView:
        return CaseView(
            case_id=self.inp.case_id, alert_type=self.inp.alert_type, severity=self.inp.severity,
            title=self.inp.title, status=self.case_status, playbook=self.playbook,
            policy_version=self.gov.policy_version if self.gov else "", alert_count=self.alert_count,
            first_seen=self.first_seen, last_seen=self.last_seen, rules=dict(self.rules),
            entities=tuple(self.entities.values()), enrichment=self.enrichment, score=self.score,
            decision=self.decision, steps=tuple(s.view() for s in self.steps.values()),
            refusals=tuple(self.refusals), verdict=self.verdict, rollback=self.rollback_request,
            rollback_votes=tuple(self.rollback_votes),
            escalations=tuple(self.escalations), timeline=tuple(self.timeline), shadow_score=self.shadow,
            verdict_sla=self.verdict_sla, verdict_due=self.verdict_due, overdue_since=self.overdue_since,
            **self._log_view(), retries=tuple(self.retries), retryable_steps=self.failed_attempt,
            **self._detach_view(), **self._merge_view(),
            rollback_open_until=self.rollback_open_until,
            unsigned_input=tuple(self.unsigned_input), refused_batches=tuple(self.refused_batches),
        )

    async def _local(self, local_activity: Awaitable[_T]) -> _T:
        """Await a local activity, counted while in flight (`_after_local_activities`)."""
        self.local_activities += 1
        try:
            return await local_activity
        finally:
            self.local_activities -= 1

    async def _after_local_activities(self) -> None:
        """At the top of a signal handler: wait until no local activity is in flight (LOCAL_RESULT_RACE). A
        result delivered a workflow task late is applied after the signals of that task live, but before
        them on replay; waiting puts the handler after the code that follows the result, both times."""
        if self.local_race_safe and self.local_activities:
            await workflow.wait_condition(lambda: self.local_activities == 0)

    def _refuse_while_local_activity(self) -> None:
        """In an update's validator (never replayed): refused while a local activity is in flight (triage's, and a
        step's before-state read under LOCAL_CAPTURE), in cases that took LOCAL_RESULT_RACE. An accepted update is
        recorded at once, so it cannot wait like a signal; refused, it leaves no trace, and Signoff's clients send it
        again on this one reason (signoff/busy.py)."""
        if self.local_race_safe and self.local_activities:
            raise ApplicationError(CASE_BUSY_MESSAGE, type=CASE_BUSY, non_retryable=True)

    def _stopping(self) -> bool:
        return self.verdict is not None or self.rollback_request is not None or self.merged_into is not None

    def _awaiting(self) -> bool:
        return any(s.state in (StepState.awaiting_approval, StepState.escalated) for s in self.steps.values())

    def _refresh_awaiting(self) -> None:
        self._upsert([sa.AWAITING_APPROVAL.value_set(self._awaiting())])

    def _upsert(self, updates: list[SearchAttributeUpdate[Any]], *, defer: bool = False) -> None:
        """Upsert only what changed: each upsert is a history event and a visibility write.

        `defer=True` holds the change for the next upsert that is not deferred (which sends it
        too). Only for stretches where nothing waits on a human before that next upsert.
        """
        changed = [u for u in updates if self.search_attributes.get(u.key.name, _UNSET) != u.value]
        self.search_attributes.update({u.key.name: u.value for u in changed})
        if not self.faster_triage:
            if changed:
                workflow.upsert_search_attributes(changed)
            return
        self.deferred_upserts.update({u.key.name: u for u in changed})
        if defer or not self.deferred_upserts:
            return
        batch = list(self.deferred_upserts.values())
        self.deferred_upserts.clear()
        workflow.upsert_search_attributes(batch)

    def _publish_alert_count(self, *, defer: bool = False) -> None:
        """`AlertCount` for listings (`signoff cases`): exact from visibility, wherever ingested."""
        if workflow.patched(ALERT_COUNT_ATTRIBUTE):
            self._upsert([sa.ALERT_COUNT.value_set(self.alert_count)], defer=defer)

    def _held_targets(self) -> list[SearchAttributeUpdate[Any]]:
        """`HeldTargets` now (only in cases that took the shared-targets path)."""
        if not workflow.patched(SHARED_TARGETS):
            return []
        held = sorted({hold_key(s.plan.action, s.plan.target) for s in self.steps.values()
                       if s.state == StepState.executed and s.plan.compensation is not None})
        return [sa.HELD_TARGETS.value_set(held)]

    def _set_status(self, status: CaseStatus, *, defer: bool = False) -> None:
        self.case_status = status
        self._upsert([sa.CASE_STATUS.value_set(status.value)], defer=defer)

    def _executed_actions(self) -> list[str]:
        return sorted({s.plan.action for s in self.steps.values() if s.result is not None})

    def _all_approvers(self) -> list[str]:
        return sorted({r.approver for s in self.steps.values() for r in s.approvals if r.accepted})


_UNSET = object()
# A step still to be run (approved ahead of its turn, or escalated and still waiting, included).
_TO_RUN = (StepState.pending, StepState.awaiting_approval, StepState.approved, StepState.escalated)


def _brief(state: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(state.items()))[:200] or "empty"


def _cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)


def _clip(text: str, limit: int = REFUSED_REASON_CAP) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _too_long(reason: str) -> str:
    return (f"the reason is {len(reason)} characters; keep it under {MAX_REASON_CHARS} "
            "(link a ticket for the details)")


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "input"
    return f"{where}: {first.get('msg', 'invalid')}"

