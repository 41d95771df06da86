"""The governance state and the requests that change it. Pure pydantic: crosses Temporal's converter.

Every change carries who and why; the workflow adds when (workflow time) and the revision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from signoff.models import Verdict

Autonomy = Literal["in_the_loop", "on_the_loop"]
GOVERNANCE_WORKFLOW_ID = "signoff-governance"
DRIFT_WORKFLOW_ID = "signoff-drift-check"
DRIFT_SCHEDULE_ID = "signoff-drift-schedule"
SYSTEM_DRIFT = "signoff-drift"


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# ---------------------------------------------------------------- requests (updates / signals)


class AutonomyChange(_Request):
    """Promote (on_the_loop) or demote (in_the_loop) an alert type; `alert_type="*"`: all of them."""

    alert_type: str
    level: Autonomy
    by: str
    reason: str


class ThresholdChange(_Request):
    """Set the auto-close threshold (None: back to the policy file's value)."""

    alert_type: str
    value: float | None = Field(default=None, ge=0.0, le=1.0)
    by: str
    reason: str


class ThresholdRevert(_Request):
    alert_type: str
    by: str
    reason: str


class ModelChange(_Request):
    """Approve a model promotion (counts towards the quorum), or name a shadow candidate."""

    model_id: str
    by: str
    reason: str


class ModelRollback(_Request):
    by: str
    reason: str


class VerdictRecord(_M):
    """An analyst's verdict on a case with what the model (and a shadow candidate) said about it."""

    case_id: str
    alert_type: str
    verdict: Verdict
    analyst: str
    reason: str
    at: datetime | None = None
    model_id: str | None = None
    predicted: Verdict | None = None
    benign_confidence: float | None = None
    threshold: float | None = None  # the threshold in force when the case was decided
    autonomy: str = "in_the_loop"
    decision: str = ""
    review_sampled: bool = False  # an on-the-loop case sampled for review instead of auto-closing
    candidate_model_id: str | None = None
    candidate_predicted: Verdict | None = None
    candidate_benign_confidence: float | None = None


class DriftFinding(_M):
    alert_type: str
    cases: int
    verdicts: int
    feature_psi_max: float | None = None
    feature_psi_top: dict[str, float] = Field(default_factory=dict)
    feature_noise_floor: float | None = None
    score_psi: float | None = None
    score_noise_floor: float | None = None
    override_rate: float | None = None
    breaches: tuple[str, ...] = ()
    note: str = ""


class DriftReport(_M):
    at: datetime
    model_id: str
    reference: str  # where the reference came from
    window: str
    findings: tuple[DriftFinding, ...]
    policy_thresholds: dict[str, float] = Field(default_factory=dict)
    demoted: tuple[str, ...] = ()
    drift_case_id: str | None = None

    @property
    def breached(self) -> list[DriftFinding]:
        return [f for f in self.findings if f.breaches]


class DriftCheckInput(_M):
    act: bool = True  # demote breached alert types and open a drift case (False: figures only)
    alert_types: tuple[str, ...] = ()
    drift_case_alert_type: str = "model_drift"


# ---------------------------------------------------------------- state


class Event(_M):
    """One recorded governance change (or refusal): the audit trail of the governance workflow."""

    revision: int
    at: datetime
    kind: str  # autonomy | threshold | threshold_revert | model_approval | model_promote | model_rollback | candidate | drift | refused
    alert_type: str = ""
    by: str
    reason: str
    before: str = ""
    after: str = ""
    accepted: bool = True
    before_value: float | None = None  # threshold changes: the value before (for revert)
    before_from_policy: bool = False  # threshold changes: the policy file's value was in force before
    reverts: int | None = None  # a revert: the revision it undid


class AlertTypeState(_M):
    autonomy: Autonomy | None = None  # None: the policy file's value
    autonomy_by: str = ""
    autonomy_at: datetime | None = None
    threshold_set: bool = False  # False: the policy file's threshold
    threshold: float | None = None
    threshold_by: str = ""
    threshold_at: datetime | None = None
    pending_promotion: tuple[str, ...] = ()  # approvers so far (quorum)


class VerdictCounts(_M):
    """All-time counters, each verdict judged at the threshold in force when its case was decided."""

    reviewed: int = 0
    agree: int = 0  # analyst grade == model's predicted grade
    agree_tp: int = 0  # agree on "true positive or not"
    above_threshold: int = 0  # the model would have auto-closed it
    above_threshold_tp: int = 0  # ... and the analyst said TruePositive (a miss)
    sampled_reviews: int = 0
    sampled_misses: int = 0


class ModelState(_M):
    active: str | None = None  # None: the model store's active model (else the shipped default)
    history: tuple[str, ...] = ()  # models active before, newest last (rollback pops)
    candidate: str | None = None  # scores in shadow on new cases
    pending: str | None = None  # a promotion waiting for its quorum
    pending_approvers: tuple[str, ...] = ()


class GovernanceState(_M):
    revision: int = 0
    alert_types: dict[str, AlertTypeState] = Field(default_factory=dict)
    counts: dict[str, VerdictCounts] = Field(default_factory=dict)
    recent: dict[str, tuple[VerdictRecord, ...]] = Field(default_factory=dict)
    model: ModelState = ModelState()
    events: tuple[Event, ...] = ()
    last_drift: DriftReport | None = None


class GovernanceInput(_M):
    state: GovernanceState = GovernanceState()
    max_events: int = 500  # governance events kept in the state (all of them stay in the histories)
    evidence_window: int = 1000  # recent verdicts kept per alert type
    ensure_schedule: bool = True  # on first start: create the drift check Schedule if it is missing
    history_limit: int = 10_000  # continue-as-new beyond this many history events (or when Temporal suggests it)
