"""The data contract of a case: what flows into, through and out of a case workflow.

Every model here crosses Temporal's pydantic data converter, so it is recorded in workflow
histories. Keep secrets out of them; add fields with defaults so old histories still decode.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- alerts and cases


class Entity(Frozen):
    """Something an alert is about: a host, an account, an IP, a file, a mailbox, ...

    `type` is lower-case and source-neutral: "host", "account", "ip", "file", "url", "mailbox",
    "mail_message", "process", "cloud_app", ... `attributes` keeps source detail the scorer may use.
    """

    type: str
    value: str
    role: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)


class Alert(Frozen):
    """One alert as the case sees it: source-neutral, small, no raw payload.

    The raw record stays in the alert store; the case keeps what decisions are made from.
    """

    uid: str
    source: str  # "guide" | "ocsf" | a SIEM name
    time: datetime
    title: str
    rule: str = ""  # detector / analytic uid
    category: str = ""
    severity: str = "medium"
    mitre: tuple[str, ...] = ()
    entities: tuple[Entity, ...] = ()
    # Source-specific attributes the scorer may read (strings/numbers only, no secrets).
    attributes: dict[str, str] = Field(default_factory=dict)
    # Why this alert joined its case (correlation rule, matched entity); "" for the first one.
    joined_because: str = ""


class AlertBatch(Frozen):
    """Alerts for one case, delivered in one signal-with-start.

    Large batches carry a sample in full and the rest as counts: the alert store keeps every
    alert, so a case with 400,000 alerts stays far inside Temporal's history limits.
    """

    case_id: str
    alerts: tuple[Alert, ...]  # in full: all of them, or the first ones
    total: int = 0  # alerts in the batch (0: len(alerts))
    rules: dict[str, int] = Field(default_factory=dict)  # per-rule counts over the whole batch
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    batch_id: str = ""  # sha256 of the batch's alert uids: a re-sent batch counts once
    # The merged cases these alerts correlated to (ingest followed `signoff merge` to this case), first the
    # one correlation chose. Empty for alerts correlated to this case itself.
    via: tuple[str, ...] = ()
    ingest_signature: str = ""  # an ingester's signature over the rest (policies/ingest_signing.py)


class CaseStatus(StrEnum):
    open = "open"
    triage = "triage"  # enrich / score / decide running
    awaiting_approval = "awaiting_approval"
    running = "running"  # an approved action is executing
    escalated = "escalated"  # an approval timed out: a human must look
    contained = "contained"  # high-impact actions executed; waiting for an analyst's verdict
    awaiting_verdict = "awaiting_verdict"  # playbook done, nothing contained; an analyst closes it
    rolling_back = "rolling_back"
    rolled_back = "rolled_back"
    rollback_failed = "rollback_failed"
    action_failed = "action_failed"
    auto_closed = "auto_closed"
    closed = "closed"
    merged = "merged"  # the same incident as another case: its alerts went there (`signoff merge`); no verdict


class Verdict(StrEnum):
    true_positive = "TruePositive"
    benign_positive = "BenignPositive"
    false_positive = "FalsePositive"


class DetachedFrom(Frozen):
    """Why a case was opened for one alert: it was taken out of another case (`signoff detach`)."""

    case_id: str  # the case the alert was wrongly correlated into
    alert_uid: str
    by: str
    reason: str
    at: datetime


class CaseInput(Frozen):
    """Start argument of a case workflow. The case id is also the workflow id."""

    case_id: str
    alert_type: str
    severity: str = "medium"
    title: str = ""
    requested_by: str = "signoff-ingest"
    # Alerts known when the case opened; later ones arrive through the `add_alerts` signal.
    alerts: tuple[Alert, ...] = ()
    # Alerts carried over by continue-as-new are summarised, not repeated.
    carried: CaseCarry | None = None
    # The closed case whose alerts went on after it closed (this case is its follow-up).
    follows: str | None = None
    # The case this case's alert was detached from (workflows/case_detach.py).
    detached_from: DetachedFrom | None = None
    ingest_signature: str = ""  # an ingester's signature over the rest (policies/ingest_signing.py)


class CaseCarry(Frozen):
    alert_count: int
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    seen_uids_digest: str = ""


# ---------------------------------------------------------------- playbooks and actions


class RiskTier(StrEnum):
    """How much sign-off a step needs. Policy defines what each tier requires."""

    low = "low"  # tag, enrich, note: runs automatically
    high = "high"  # isolate host, disable account: approval quorum
    critical = "critical"  # irreversible or fleet-wide: the top tier


class Reversibility(StrEnum):
    reversible = "reversible"  # compensation restores the captured state fully
    partial = "partial"  # restores what can be restored (e.g. sessions stay revoked)
    irreversible = "irreversible"  # nothing to restore: needs the top tier


class ActionTarget(Frozen):
    kind: str  # "host" | "account" | "access_key" | "mailbox" | "case" ...
    id: str


class StepPlan(Frozen):
    """One step of a playbook, resolved for a case (targets chosen from its entities)."""

    step_id: str
    action: str
    tier: RiskTier
    reversibility: Reversibility
    compensation: str | None
    target: ActionTarget
    params: dict[str, str] = Field(default_factory=dict)
    description: str = ""


class PlaybookStepRecord(Frozen):
    """One step of a playbook as a case recorded it: the declared action and how the step aims it."""

    step_id: str
    action: str
    target_kind: str
    tier: RiskTier
    reversibility: Reversibility
    compensation: str | None
    description: str = ""
    params: dict[str, str] = Field(default_factory=dict)
    target_types: tuple[str, ...] = ()


class PlaybookRecord(Frozen):
    """The playbook a case plans from, recorded in its history with the policy (docs/playbooks.md):
    a playbook edited and deployed later changes new cases only, and each case says which version it ran."""

    name: str
    description: str = ""
    steps: tuple[PlaybookStepRecord, ...]
    digest: str  # sha256 of the canonical JSON of name, description and steps


class StepState(StrEnum):
    pending = "pending"
    awaiting_approval = "awaiting_approval"
    approved = "approved"
    running = "running"
    executed = "executed"
    skipped = "skipped"  # rejected, or the case was closed before it ran
    failed = "failed"
    escalated = "escalated"
    compensated = "compensated"
    compensation_failed = "compensation_failed"
    kept = "kept"  # not undone: another open case still holds the same action on the target (handed over)


class ActionRequest(Frozen):
    """Input of the `execute_action` activity. `idempotency_key` is stable across retries."""

    case_id: str
    step_id: str
    action: str
    target: ActionTarget
    params: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str


class ActionResult(Frozen):
    action: str
    target: ActionTarget
    before: dict[str, Any]  # the state captured before the action ran
    after: dict[str, Any]  # the state verified after it ran
    already_in_state: bool = False
    detail: str = ""


class CompensationRequest(Frozen):
    case_id: str
    step_id: str
    action: str  # the compensating action's name
    forward_action: str
    target: ActionTarget
    restore_to: dict[str, Any]  # the captured before-state
    idempotency_key: str


class CompensationResult(Frozen):
    action: str
    target: ActionTarget
    restored: dict[str, Any]
    detail: str = ""


# ---------------------------------------------------------------- approvals


class Decision(StrEnum):
    approve = "approve"
    reject = "reject"
    rollback = "rollback"  # case-wide: only in refusal records of rollback requests
    close = "close"  # case-wide: only in refusal records of close requests
    assign = "assign"  # case-wide: who owns the case (signed like a verdict where the policy says so)
    retry = "retry"  # case-wide: run the steps of a failed attempt again (gated ones need fresh approval)
    note = "note"  # case-wide: an entry in the investigation log
    detach = "detach"  # case-wide: take a wrongly correlated alert out of the case into a case of its own
    merge = "merge"  # case-wide: the case is the same incident as another; its alerts go there and it ends merged


class ApprovalRequest(Frozen):
    """What an approver sends, as an update (`approve` / `reject`) or a signal.

    UI form, update `approve`:  {"step": "disable_account", "approver": "alice", "reason": "C2 confirmed"}
    `signoff approve` adds `token`: an Ed25519-signed statement of (case, step, decision, expiry, nonce).
    The Slack chat bridge (signoff/chat/) sends a token signed with its own key, naming the Slack user (`via`).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    step: str
    approver: str
    reason: str
    token: str | None = None


class ApprovalRecord(Frozen):
    step: str
    approver: str
    decision: Decision
    reason: str
    at: datetime
    via: str  # "update" | "signal"
    signed: bool = False
    accepted: bool = True
    refusal: str = ""
    # The chat channel an accepted approval came through, as its verified token says ("slack:U0ABC123");
    # None for approvals signed by the approver themself or sent unsigned.
    channel: str | None = None


class RollbackRequest(Frozen):
    model_config = ConfigDict(frozen=True, extra="ignore")

    requested_by: str
    reason: str
    token: str | None = None


class CloseRequest(Frozen):
    """An analyst's verdict; closes the case (skipping steps still waiting)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    analyst: str
    verdict: Verdict
    reason: str
    token: str | None = None  # `signoff close` signs (case, "close", analyst) when the analyst has a key


# A reason or a note lives in history and in every status query: past this, link a ticket.
MAX_REASON_CHARS = 4000


class RetryRequest(Frozen):
    """Run again what a failed step stopped (`retry` update), once the cause is fixed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    requested_by: str
    reason: str
    token: str | None = None  # `signoff retry` signs (case, "retry", requested_by) when they have a key


class RetryRecord(Frozen):
    requested_by: str
    reason: str
    at: datetime
    steps: tuple[str, ...]  # what runs again
    signed: bool = False


class AssignRequest(Frozen):
    """Give the case an owner (`assign` update): the analyst who works it. `by` is who decides that."""

    assignee: str
    by: str
    reason: str = ""
    token: str | None = None  # `signoff assign` signs (case, "assign", by) when `by` has a key


class NoteRequest(Frozen):
    """An entry in the case's investigation log (`note` update): what someone found or did."""

    author: str
    text: str
    token: str | None = None  # `signoff note` signs (case, "note", author) when the author has a key


class Assignment(Frozen):
    assignee: str
    by: str
    reason: str
    at: datetime
    signed: bool = False


class CaseNote(Frozen):
    author: str
    text: str
    at: datetime
    signed: bool = False


class DetachRequest(Frozen):
    """Take an alert out of the case (`detach_alert` update): correlated wrongly, it gets a case of its own."""

    alert_uid: str
    requested_by: str
    reason: str
    token: str | None = None  # `signoff detach` signs (case, "detach", requested_by) when they have a key


class DetachRecord(Frozen):
    """An alert taken out of the case: who, when, why, and where it went (workflows/case_detach.py)."""

    alert_uid: str
    requested_by: str
    reason: str
    at: datetime
    new_case: str  # the case opened for it (`<case>-dN`; its follow-up if that one had closed)
    opened: str = ""  # "opened" | "joined" (it was open already) | "had it" | "failed: ..." ("" while opening)
    signed: bool = False
    alert_title: str = ""
    entities_removed: tuple[str, ...] = ()  # "type:value" only this alert brought to the case
    skipped_steps: tuple[str, ...] = ()  # waiting steps whose target came only from this alert
    acted_steps: tuple[str, ...] = ()  # steps executed (or running) on a target that came only from it
    score_included: bool = False  # the case's score was computed while the alert was in it (not rescored)


class MergeRequest(Frozen):
    """Merge this case into another running case (`merge_into` update, workflows/case_merge.py)."""

    target: str
    requested_by: str
    reason: str
    token: str | None = None  # `signoff merge` signs (source case, "merge", requested_by) when they have a key


class MergedInto(Frozen):
    """This case was merged into `target`: its alerts went there and it ended `merged` (no verdict)."""

    target: str
    by: str
    reason: str
    at: datetime
    signed: bool = False
    alerts: int = 0  # the alerts sent (all the case counted; past the timeline's cap as counts)
    skipped_steps: tuple[str, ...] = ()  # steps not yet run, skipped ("merged into TARGET")
    acted_steps: tuple[str, ...] = ()  # executed steps still in effect (`signoff rollback SOURCE` undoes them)
    delivered: str = ""  # what the target answered
    handed_over_steps: tuple[str, ...] = ()  # executed steps the target holds too: handed to it (signoff.holds)


class MergedFrom(Frozen):
    """A case merged into this one (`accept_merge`): who, when, why, and what it brought."""

    source: str
    by: str
    reason: str
    at: datetime
    signed: bool = False
    alerts_sent: int = 0  # the source's alert count
    alerts_added: int = 0  # how many counted here (alerts this case already had count once)
    entities_added: int = 0
    after_scoring: bool = False  # this case was scored before they came: it is not rescored
    source_title: str = ""


class MergeDelivery(Frozen):
    """What a merged case sends its target (activities/merge.py): the alerts on their normal path
    (an `AlertBatch` whose batch id makes a re-delivery count once) and the entities they brought."""

    source: str
    target: str
    by: str
    reason: str
    at: datetime
    signed: bool = False
    batch: AlertBatch
    entities: tuple[Entity, ...] = ()  # the source's entities (past its timeline's cap too)
    source_title: str = ""
    ingest_signature: str = ""  # the sending worker's ingester signature over the rest


# ---------------------------------------------------------------- enrichment, scoring, decision


class Enrichment(Frozen):
    summary: str = ""
    facts: dict[str, str] = Field(default_factory=dict)
    sources: tuple[str, ...] = ()


class Contribution(Frozen):
    feature: str
    value: float  # the feature's value for this case
    contribution: float  # TreeSHAP log-odds contribution towards the predicted class


class ScoreResult(Frozen):
    model_id: str  # sha256 of the model artifact
    feature_hash: str  # sha256 of the feature vector bytes
    probabilities: dict[str, float]  # per grade (Verdict values)
    predicted: Verdict
    confidence: float  # calibrated probability of `predicted`
    benign_confidence: float  # calibrated P(not a true positive): what auto-close is judged on
    contributions: tuple[Contribution, ...] = ()
    # The feature vector itself, so the score can be recomputed offline with the model artifact:
    # base64 of its little-endian float32 bytes (signoff/scoring/recorded_vector.py), whose sha256 is
    # `feature_hash`; "" in scores recorded before it was kept.
    feature_vector: str = ""
    feature_schema: str = ""  # the feature names it is ordered by: '<schema version>:<digest of the names>'


class DecisionKind(StrEnum):
    auto_close = "auto_close"
    respond = "respond"  # run the playbook; gated steps wait for approval
    analyst = "analyst"  # no confident automation: a human decides


class CaseDecision(Frozen):
    kind: DecisionKind
    reason: str
    autonomy: str
    threshold: float | None
    policy_version: str
    model_id: str | None = None
    confidence: float | None = None


# ---------------------------------------------------------------- status query


class EscalationStage(Frozen):
    """One level of a waiting step's escalation chain (policy `tiers.X.escalation`)."""

    level: int  # 1 = first
    after: str  # from when the step started waiting (the policy's duration)
    notify: tuple[str, ...]  # roles told
    people: tuple[str, ...]  # approvers holding those roles (told; they may approve only if the tier lets them)
    due: datetime
    at: datetime | None = None  # when it escalated; None: not yet


class StepView(Frozen):
    step_id: str
    action: str
    tier: RiskTier
    reversibility: Reversibility
    target: ActionTarget
    state: StepState
    approvals: tuple[ApprovalRecord, ...] = ()
    quorum: int = 0
    result: ActionResult | None = None
    compensation: CompensationResult | None = None
    error: str = ""
    note: str = ""  # a hold handed over to or taken from another case (shared targets)
    # When the case reached this gated step, and when it escalates if the approvals are not in
    # (steps are gated one at a time: a later step has neither yet).
    waiting_since: datetime | None = None
    escalates_at: datetime | None = None
    # How many escalations this wait has made (the tier's chain, or its single timeout), and, under
    # a tier with an `escalation:` chain, each level: who it tells, when it is due, when it fired.
    escalation_level: int = 0
    escalation_chain: tuple[EscalationStage, ...] = ()


class HoldersRequest(Frozen):
    """Which other open cases hold `key` (a `signoff.holds.hold_key`): activity input."""

    case_id: str
    key: str


class EndedHolder(Frozen):
    """An ended case whose action on a target is still in effect (as `signoff contained` reads it): a
    rollback of another case holding the same target leaves the target to it (it cannot be handed over)."""

    case_id: str
    status: str
    before: dict[str, Any] | None = None  # the state that case captured before its action (its rollback restores it)


class HoldHandover(Frozen):
    """A case rolling back an action another open case still holds hands that case the state from
    before its own action, so the last holder's rollback restores the real original."""

    from_case: str
    action: str
    target: ActionTarget
    before: dict[str, Any]  # the state before `from_case`'s action
    after: dict[str, Any]  # the state `from_case`'s action left


class CaseView(Frozen):
    case_id: str
    alert_type: str
    severity: str
    title: str
    status: CaseStatus
    playbook: str
    policy_version: str
    alert_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    rules: dict[str, int]
    entities: tuple[Entity, ...]
    enrichment: Enrichment | None
    score: ScoreResult | None
    decision: CaseDecision | None
    steps: tuple[StepView, ...]
    refusals: tuple[ApprovalRecord, ...]
    verdict: CloseRequest | None = None
    rollback: RollbackRequest | None = None
    # Rollback requests counted towards the policy's rollback_quorum that has not been met yet.
    rollback_votes: tuple[RollbackRequest, ...] = ()
    escalations: tuple[str, ...] = ()
    timeline: tuple[Alert, ...] = ()  # the first alerts of the case, capped
    shadow_score: ScoreResult | None = None  # a candidate model's score in shadow mode (never decides)
    # The policy's time-to-verdict SLA for the case's severity (verdict_sla): when the verdict is
    # due, and when the case went past it without one (it escalated then). None: no SLA applies.
    verdict_sla: str | None = None
    verdict_due: datetime | None = None
    overdue_since: datetime | None = None
    assignee: str | None = None  # who owns the case now (the last accepted assignment)
    assignments: tuple[Assignment, ...] = ()
    notes: tuple[CaseNote, ...] = ()  # the investigation log, oldest first
    retries: tuple[RetryRecord, ...] = ()  # accepted retries of failed attempts, oldest first
    retryable_steps: tuple[str, ...] = ()  # what `signoff retry` would run again (after a failed step)
    detached_alerts: tuple[DetachRecord, ...] = ()  # alerts taken out of this case, oldest first
    detached_from: DetachedFrom | None = None  # this case was opened for an alert taken out of that case
    merged_into: MergedInto | None = None  # this case was merged into another (workflows/case_merge.py)
    merged_from: tuple[MergedFrom, ...] = ()  # cases merged into this one, oldest first
    # Alerts ingest sent here after correlating them to a case merged into this one (directly or along a
    # chain): that merged case -> how many counted here.
    routed_from_merged: dict[str, int] = Field(default_factory=dict)
    # After the verdict, while what the case executed is still in effect: a rollback is possible until
    # then (policy rollback_window); the case ends at that time.
    rollback_open_until: datetime | None = None
    # Under `require_signed_ingest`: what reached the case without an ingester's signature. Before
    # triage (the case's start, its first batches) it makes the case a human's alone: no automatic
    # close, no playbook; after, such a batch is kept out of the case (`refused_batches`).
    unsigned_input: tuple[str, ...] = ()
    refused_batches: tuple[RefusedBatch, ...] = ()


class RefusedBatch(Frozen):
    """Alerts sent to a case that it did not take: not signed by an ingester the policy lists."""

    at: datetime
    alert_uids: tuple[str, ...]  # the first ones, in full (the batch is in the history as sent)
    alerts: int
    reason: str


CaseInput.model_rebuild()
CaseView.model_rebuild()
