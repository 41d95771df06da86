"""The governance state and the requests that change it. Pure pydantic: crosses Temporal's converter.

Every change carries who and why; the workflow adds when (workflow time) and the revision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from signoff.models import Verdict

Autonomy = Literal["in_the_loop", "on_the_loop"]
GOVERNANCE_WORKFLOW_ID = "signoff-governance"
DRIFT_WORKFLOW_ID = "signoff-drift-check"
DRIFT_SCHEDULE_ID = "signoff-drift-schedule"
SYSTEM_DRIFT = "signoff-drift"
TOKEN_REFUSED = "GovernanceTokenRefused"  # failure type of a governance validator's token refusal (nothing recorded)
CASE_WORKFLOW_TYPE = "CaseWorkflow"
DRIFT_CHECK_WORKFLOW_TYPE = "DriftCheckWorkflow"
MAX_TEXT_CHARS = 1000  # free text (reasons, refusals) kept in the governance state, per field
MAX_NAME_CHARS = 200  # who / alert type / case id as kept in the state


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut: the state stays bounded whatever
    people type (the full text stays in the workflow history, where it arrived)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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
    token: str | None = None  # the person's signed token (policies/signing.py, sign_governance_change)


class ThresholdChange(_Request):
    """Set the auto-close threshold (None: back to the policy file's value)."""

    alert_type: str
    value: float | None = Field(default=None, ge=0.0, le=1.0)
    by: str
    reason: str
    token: str | None = None


class ThresholdRevert(_Request):
    alert_type: str
    by: str
    reason: str
    token: str | None = None


class ModelChange(_Request):
    """Approve a model promotion (counts towards the quorum), or name a shadow candidate."""

    model_id: str
    by: str
    reason: str
    token: str | None = None


class ModelRollback(_Request):
    by: str
    reason: str
    token: str | None = None


SignedRequest = AutonomyChange | ThresholdChange | ThresholdRevert | ModelChange | ModelRollback
ANY_SUBJECT = "*"


def signed_change(update_name: str, req: SignedRequest) -> tuple[str, str] | None:
    """What a person's token for this governance update is bound to: (change, subject), or None for
    an update that needs no token (`set_candidate`: a shadow model scores, it never decides).

    The threshold value is part of the change ("set_threshold=0.97", "set_threshold=policy"), so a
    token for one value does not set another.
    """
    if update_name == "set_threshold" and isinstance(req, ThresholdChange):
        return f"set_threshold={'policy' if req.value is None else repr(float(req.value))}", req.alert_type
    if update_name == "revert_threshold" and isinstance(req, ThresholdRevert):
        return "revert_threshold", req.alert_type
    if update_name == "set_autonomy" and isinstance(req, AutonomyChange):
        return ("demote" if req.level == "in_the_loop" else "promote"), req.alert_type
    if update_name == "promote_model" and isinstance(req, ModelChange):
        return "promote_model", req.model_id
    if update_name == "rollback_model" and isinstance(req, ModelRollback):
        return "rollback_model", ANY_SUBJECT
    return None


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


_GRADE = {Verdict.true_positive: "T", Verdict.benign_positive: "B", Verdict.false_positive: "F"}
_GRADE_OF = {v: k for k, v in _GRADE.items()}
CANDIDATE_PREFIX = 16  # hex characters of a shadow candidate's model id kept per evidence record
MODEL_PREFIX = CANDIDATE_PREFIX  # ... and of the model that scored the case
CONFIDENCE_DECIMALS = 10  # evidence keeps confidences to 1e-10 (the decision-time flag `a` is exact)
_INDEX = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _rounded(value: float | None) -> float | None:
    return round(value, CONFIDENCE_DECIMALS) if value is not None else None




class EvidenceRecord(_M):
    """One reviewed case, as the shadow-mode evidence keeps it: what `evidence()`, the drift check and
    retraining read, nothing else (no free text, no full model ids).

    It travels as a JSON array (the governance state carries up to `evidence_window` of them per alert
    type through continue-as-new): `[case_id, codes, benign_confidence, at, candidate, candidate_predicted,
    candidate_benign_confidence, model]` where `codes` is the analyst's grade letter, the model's predicted
    grade letter (`-`: not scored), then `s` (in the review sample) and `a` (at or above the threshold
    in force when the case was decided); `at` is epoch seconds; the candidate fields are left off when
    no shadow candidate scored the case (null when only `model` follows); `model`, the scoring model's id
    prefix, is left off for records from before it was kept (they still parse and serialise as they were).
    Grades: T(ruePositive), B(enignPositive), F(alsePositive).
    """

    case_id: str
    verdict: Verdict
    predicted: Verdict | None = None
    benign_confidence: float | None = None
    at: datetime | None = None
    review_sampled: bool = False
    above_threshold: bool = False  # benign confidence >= the threshold in force when the case was decided
    candidate_model_id: str | None = None  # the shadow candidate's model id prefix (CANDIDATE_PREFIX chars)
    candidate_predicted: Verdict | None = None
    candidate_benign_confidence: float | None = None
    model_id: str | None = None  # the scoring model's id prefix (MODEL_PREFIX chars); None: recorded before it was kept

    @classmethod
    def of(cls, rec: VerdictRecord) -> EvidenceRecord:
        return cls(**_fields_of(rec))

    @field_validator("at")
    @classmethod
    def _whole_seconds(cls, at: datetime | None) -> datetime | None:
        return at.replace(microsecond=0) if at is not None else None

    @field_validator("benign_confidence", "candidate_benign_confidence")
    @classmethod
    def _kept_decimals(cls, value: float | None) -> float | None:
        return _rounded(value)

    @model_serializer(mode="plain")
    def _as_array(self) -> list[Any]:
        codes = _GRADE[self.verdict] + (_GRADE[self.predicted] if self.predicted else "-")
        codes += ("s" if self.review_sampled else "") + ("a" if self.above_threshold else "")
        at = int(self.at.timestamp()) if self.at is not None else None
        out: list[Any] = [self.case_id, codes, self.benign_confidence, at]
        if self.candidate_model_id is not None or self.model_id is not None:
            cand = _GRADE[self.candidate_predicted] if self.candidate_predicted else None
            out += [self.candidate_model_id, cand, self.candidate_benign_confidence]
        if self.model_id is not None:
            out.append(self.model_id)
        return out

    @model_validator(mode="before")
    @classmethod
    def _from_array(cls, data: Any) -> Any:
        if isinstance(data, dict):  # a full VerdictRecord (state carried by an older run), or field names
            if "reason" in data or "analyst" in data:
                return _fields_of(VerdictRecord.model_validate(data))
            return data
        if not isinstance(data, (list, tuple)) or len(data) < 4:
            raise ValueError("an evidence record is [case_id, codes, benign_confidence, at, ...]")
        case_id, codes, benign, at = data[:4]
        codes = str(codes)
        fields: dict[str, Any] = dict(
            case_id=case_id, verdict=_GRADE_OF[codes[0]], predicted=_GRADE_OF.get(codes[1:2]),
            benign_confidence=benign, at=datetime.fromtimestamp(at, UTC) if at is not None else None,
            review_sampled="s" in codes[2:], above_threshold="a" in codes[2:],
        )
        if len(data) >= 7:
            fields.update(candidate_model_id=data[4], candidate_predicted=_GRADE_OF.get(data[5] or ""),
                          candidate_benign_confidence=data[6])
        if len(data) >= 8:
            fields.update(model_id=data[7])
        return fields


def _fields_of(rec: VerdictRecord) -> dict[str, Any]:
    above = rec.threshold is not None and rec.benign_confidence is not None and rec.benign_confidence >= rec.threshold
    return dict(
        case_id=rec.case_id, verdict=rec.verdict, predicted=rec.predicted, benign_confidence=rec.benign_confidence,
        at=rec.at, review_sampled=rec.review_sampled, above_threshold=above,
        candidate_model_id=rec.candidate_model_id[:CANDIDATE_PREFIX] if rec.candidate_model_id else None,
        candidate_predicted=rec.candidate_predicted, candidate_benign_confidence=rec.candidate_benign_confidence,
        model_id=rec.model_id[:MODEL_PREFIX] if rec.model_id else None,
    )


def evidence_columns(records: tuple[EvidenceRecord, ...]) -> dict[str, Any]:
    """An alert type's evidence window, column by column (what the governance state carries).

    `codes`: three characters per record: the analyst's grade letter, the model's (`-`: not scored),
    and a digit (1: in the review sample, +2: at or above the threshold in force at the decision).
    `at`: epoch seconds, each one as the difference to the previous record's. Confidences to
    CONFIDENCE_DECIMALS decimals. The candidate columns are there only when a shadow candidate scored
    a case of the window: `candidates` lists the candidates' id prefixes, `candidate_codes` has two
    characters per record (the candidate's index in `candidates`, `-`: none; its grade letter).
    The model columns are there only when a record of the window names its scoring model: `models` lists
    the id prefixes, `model_codes` one character per record (the index in `models`, `-`: not kept).
    """
    codes, at, previous = [], [], 0
    for r in records:
        codes.append(_GRADE[r.verdict] + (_GRADE[r.predicted] if r.predicted else "-")
                     + str(int(r.review_sampled) + 2 * int(r.above_threshold)))
        seconds = int(r.at.timestamp()) if r.at is not None else previous
        at.append(seconds - previous)
        previous = seconds
    columns: dict[str, Any] = {"case_id": [r.case_id for r in records], "codes": "".join(codes),
                               "benign_confidence": [_rounded(r.benign_confidence) for r in records], "at": at}
    candidates = sorted({r.candidate_model_id for r in records if r.candidate_model_id})[-len(_INDEX):]
    if candidates:
        index = {c: _INDEX[i] for i, c in enumerate(candidates)}
        columns.update(
            candidates=candidates,
            candidate_codes="".join(
                (index[r.candidate_model_id] + (_GRADE[r.candidate_predicted] if r.candidate_predicted else "-"))
                if r.candidate_model_id in index else "--" for r in records),
            candidate_benign_confidence=[_rounded(r.candidate_benign_confidence) for r in records])
    # The newest len(_INDEX) models; a record of an older one loses its id (it then counts as from before
    # a model change, never as evidence about the model in force).
    models = list(dict.fromkeys(r.model_id for r in reversed(records) if r.model_id))[:len(_INDEX)][::-1]
    if models:
        at_index = {m: _INDEX[i] for i, m in enumerate(models)}
        columns.update(models=models, model_codes="".join(at_index.get(r.model_id or "", "-") for r in records))
    return columns


def evidence_rows(columns: dict[str, Any]) -> tuple[EvidenceRecord, ...]:
    """`evidence_columns` back to records."""
    ids, codes, benign, at = columns["case_id"], columns["codes"], columns["benign_confidence"], columns["at"]
    candidates = columns.get("candidates") or []
    models = columns.get("models") or []
    rows, seconds = [], 0
    for i, case_id in enumerate(ids):
        code = codes[3 * i: 3 * i + 3]
        seconds += at[i]
        flags = int(code[2])
        row: dict[str, Any] = dict(
            case_id=case_id, verdict=_GRADE_OF[code[0]], predicted=_GRADE_OF.get(code[1]),
            benign_confidence=benign[i], at=datetime.fromtimestamp(seconds, UTC), review_sampled=bool(flags & 1),
            above_threshold=bool(flags & 2))
        if candidates and columns["candidate_codes"][2 * i] != "-":
            which, grade = columns["candidate_codes"][2 * i: 2 * i + 2]
            row.update(candidate_model_id=candidates[_INDEX.index(which)], candidate_predicted=_GRADE_OF.get(grade),
                       candidate_benign_confidence=columns["candidate_benign_confidence"][i])
        if models and columns["model_codes"][i] != "-":
            row.update(model_id=models[_INDEX.index(columns["model_codes"][i])])
        rows.append(EvidenceRecord(**row))
    return tuple(rows)


class VerdictClaim(_M):
    """A verdict as signalled, waiting to be checked against its case (nothing counts before that)."""

    alert_type: str
    analyst: str
    record: EvidenceRecord


class VerdictBatch(_M):
    claims: tuple[VerdictClaim, ...]


class VerdictCheck(_M):
    """The outcome of checking one claim against its case: the record to count, or why not."""

    case_id: str
    alert_type: str
    record: EvidenceRecord | None = None  # built from the case itself (its score, decision and verdict)
    refused: str = ""


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
    drift_case_joined: bool = False  # the breach went to a drift case that was already open
    # The drift check run that computed this report: governance accepts a report only when that run is
    # a running DriftCheckWorkflow on its task queue whose `compute_drift` result is this report.
    check_workflow_id: str | None = None
    check_run_id: str | None = None

    def figures(self) -> dict[str, Any]:
        """What the drift check measured (without what was done about it, or who sent it)."""
        return self.model_dump(mode="json", exclude={"demoted", "drift_case_id", "drift_case_joined",
                                                     "check_workflow_id", "check_run_id"})

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
    recent: dict[str, tuple[EvidenceRecord, ...]] = Field(default_factory=dict)  # one per case, newest last
    model: ModelState = ModelState()
    events: tuple[Event, ...] = ()
    last_drift: DriftReport | None = None

    @field_serializer("recent")
    def _recent_as_columns(self, recent: dict[str, tuple[EvidenceRecord, ...]]) -> dict[str, Any]:
        # Columns, not one object per record: continue-as-new carries up to evidence_window per alert type.
        return {name: evidence_columns(records) for name, records in recent.items()}

    @field_validator("recent", mode="before")
    @classmethod
    def _recent_from_columns(cls, value: Any) -> Any:
        if isinstance(value, dict):  # columns; or lists of records (older runs' carried state)
            return {name: evidence_rows(v) if isinstance(v, dict) else v for name, v in value.items()}
        return value


class GovernanceInput(_M):
    state: GovernanceState = GovernanceState()
    max_events: int = 500  # governance events kept in the state (all of them stay in the histories)
    evidence_window: int = 1000  # recent verdicts kept per alert type
    ensure_schedule: bool = True  # on first start: create the drift check Schedule if it is missing
    history_limit: int = 10_000  # continue-as-new beyond this many history events (or when Temporal suggests it)
    pending: tuple[VerdictClaim, ...] = ()  # verdicts not yet checked when the previous run continued as new
    events_budget: int = 64_000  # characters of events kept in the state (newest first; max_events at most)
    used_nonces: dict[str, int] = {}  # nonces of governance tokens spent, with their expiry (epoch seconds)
