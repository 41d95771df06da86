"""Shadow-mode evidence per alert type: agreement, precision at the threshold, misses, and the
promotion recommendation. Pure Python (deterministic; safe in workflow code and in the CLI).

A *miss* is a case the model would have auto-closed (benign confidence >= threshold) that an
analyst graded TruePositive. Promotion is recommended when at least `min_reviewed` such cases were
reviewed and the one-sided 95% Clopper-Pearson upper bound of the miss rate is within `miss_budget`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from policies.engine import AutonomyPolicy
from signoff.autonomy.models import MODEL_PREFIX, EvidenceRecord, GovernanceState, VerdictRecord
from signoff.models import Verdict

MODEL_CHANGES = ("model_promote", "model_rollback")  # governance events after which another model scores cases
R = TypeVar("R", EvidenceRecord, VerdictRecord)


def last_model_change(state: GovernanceState | None) -> datetime | None:
    """When the model that scores cases last changed through governance (None: never, as the state shows).
    The state keeps a bounded list of events: when the model was changed (an active model, or one to roll
    back to) but that event is no longer kept, it was older than every event kept, so the oldest kept
    event's time bounds it (records from before it do not count as evidence about the model in force)."""
    if state is None:
        return None
    changes = [e.at for e in state.events if e.accepted and e.kind in MODEL_CHANGES]
    if changes:
        return max(changes)
    if (state.model.active or state.model.history) and state.events:
        return state.events[0].at
    return None


def about_model(records: Sequence[R], model_id: str, changed_at: datetime | None) -> tuple[list[R], list[R]]:
    """(records about `model_id`, the others). A record names its scoring model (an id prefix) or,
    recorded before records kept it, counts as about the model in force only when its verdict came
    after the last model change `changed_at` (None: the model never changed). Unscored cases are about
    no model: in neither list."""
    mine: list[R] = []
    other: list[R] = []
    for r in records:
        if r.predicted is None and r.benign_confidence is None:
            continue
        if r.model_id:
            ok = model_id.startswith(r.model_id[:MODEL_PREFIX])
        else:
            ok = changed_at is None or (r.at is not None and r.at >= changed_at)
        (mine if ok else other).append(r)
    return mine, other


def _binom_cdf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_term = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        total += math.exp(log_term)
    return min(total, 1.0)


def upper95(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of k/n (exact Clopper-Pearson), by bisection."""
    if n <= 0 or k >= n:
        return 1.0
    if k == 0:
        return 1.0 - (1.0 - confidence) ** (1.0 / n)
    lo, hi = k / n, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid) > 1.0 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


class ModelEvidence(BaseModel):
    model_config = ConfigDict(frozen=True)

    scored: int  # reviewed cases with a score
    agreement: float | None  # analyst grade == predicted grade
    agreement_tp: float | None  # agree on "true positive or not"
    override_rate: float | None  # 1 - agreement_tp
    tp_total: int  # analyst-graded true positives
    would_auto_close: int  # reviewed cases at or above the threshold
    misses: int  # ... graded TruePositive (TPs the model would have auto-closed)
    precision_at_threshold: float | None  # share of would-auto-close cases that were not TPs
    miss_rate: float | None
    miss_upper95: float | None


class Evidence(BaseModel):
    model_config = ConfigDict(frozen=True)

    alert_type: str
    threshold: float | None
    reviewed: int
    verdicts: dict[str, int]
    model: ModelEvidence
    candidate: ModelEvidence | None = None
    candidate_model_id: str | None = None
    sampled_reviews: int = 0
    sampled_misses: int = 0
    recommend_promotion: bool = False
    recommendation: str = ""
    # When asked about the model that scores cases now (`active_model_id`): `model` and the
    # recommendation count only the reviewed cases about it; the others were about earlier models.
    active_model_id: str | None = None
    reviewed_active_model: int | None = None
    reviewed_earlier_models: int | None = None


def model_evidence(pairs: Sequence[tuple[Verdict | None, float | None, Verdict]], threshold: float | None) -> ModelEvidence:
    """`pairs`: (predicted, benign confidence, analyst verdict) per reviewed case."""
    scored = [(p, b, v) for p, b, v in pairs if p is not None and b is not None]
    n = len(scored)
    tp = Verdict.true_positive
    agree = sum(1 for p, _, v in scored if p == v)
    agree_tp = sum(1 for p, _, v in scored if (p == tp) == (v == tp))
    above = [(b, v) for _, b, v in scored if threshold is not None and b is not None and b >= threshold]
    misses = sum(1 for _, v in above if v == tp)
    return ModelEvidence(
        scored=n,
        agreement=agree / n if n else None,
        agreement_tp=agree_tp / n if n else None,
        override_rate=1 - agree_tp / n if n else None,
        tp_total=sum(1 for _, _, v in scored if v == tp),
        would_auto_close=len(above),
        misses=misses,
        precision_at_threshold=(len(above) - misses) / len(above) if above else None,
        miss_rate=misses / len(above) if above else None,
        miss_upper95=upper95(misses, len(above)) if above else None,
    )


def evidence(
    alert_type: str, records: Sequence[EvidenceRecord] | Sequence[VerdictRecord], threshold: float | None,
    policy: AutonomyPolicy, candidate_model_id: str | None = None, active_model_id: str | None = None,
    model_changed_at: datetime | None = None,
) -> Evidence:
    """`records`: the governance state's compact `EvidenceRecord`s (one per case), or full `VerdictRecord`s.

    With `active_model_id` (the model that scores cases now) and `model_changed_at` (`last_model_change`),
    the model's figures and the recommendation count only the cases about that model (`about_model`):
    analysts' verdicts on another model's scores say nothing about this one."""
    earlier: Sequence[EvidenceRecord | VerdictRecord] = ()
    judged: Sequence[EvidenceRecord | VerdictRecord] = records
    if active_model_id is not None:
        judged, earlier = about_model(records, active_model_id, model_changed_at)  # type: ignore[type-var,assignment]
    model = model_evidence([(r.predicted, r.benign_confidence, r.verdict) for r in judged], threshold)
    candidate = None
    if candidate_model_id:
        # Evidence records keep a prefix of the candidate's id (full records the whole id).
        mine = [r for r in records if r.candidate_model_id and candidate_model_id.startswith(r.candidate_model_id)]
        candidate = model_evidence([(r.candidate_predicted, r.candidate_benign_confidence, r.verdict) for r in mine],
                                   threshold)
    verdicts: dict[str, int] = {}
    for r in records:
        verdicts[r.verdict.value] = verdicts.get(r.verdict.value, 0) + 1
    ok, why = recommendation(model, threshold, policy)
    if active_model_id is not None and earlier and not ok:
        why = f"{why}. {_earlier_models_note(active_model_id, len(judged), len(earlier), model, threshold, policy)}"
    return Evidence(
        alert_type=alert_type, threshold=threshold, reviewed=len(records), verdicts=verdicts, model=model,
        candidate=candidate, candidate_model_id=candidate_model_id,
        sampled_reviews=sum(1 for r in records if r.review_sampled),
        sampled_misses=sum(1 for r in records if r.review_sampled and r.verdict == Verdict.true_positive),
        recommend_promotion=ok, recommendation=why, active_model_id=active_model_id,
        reviewed_active_model=len(judged) if active_model_id is not None else None,
        reviewed_earlier_models=len(earlier) if active_model_id is not None else None,
    )


def _earlier_models_note(model_id: str, mine: int, earlier: int, model: ModelEvidence, threshold: float | None,
                         policy: AutonomyPolicy) -> str:
    more = max(policy.min_reviewed - model.would_auto_close, 0)
    todo = (f"review {more} more cases scored by {model_id[:12]} at or above the threshold" if more and threshold is not None
            else f"review more cases scored by {model_id[:12]}")
    return (f"Model {model_id[:12]} scores cases now: {mine} reviewed cases are about it, {earlier} were about "
            f"earlier models (their verdicts judged another model's scores: not counted); {todo}")


def recommendation(model: ModelEvidence, threshold: float | None, policy: AutonomyPolicy) -> tuple[bool, str]:
    if threshold is None:
        return False, "no threshold set: `signoff policy set-threshold` first (a human sets the line)"
    n = model.would_auto_close
    if n < policy.min_reviewed:
        return False, (f"not enough evidence: {n} reviewed cases at or above threshold {threshold:.4f}, "
                       f"policy needs {policy.min_reviewed}")
    assert model.miss_upper95 is not None
    if model.miss_upper95 > policy.miss_budget:
        return False, (f"miss rate {model.misses}/{n}: 95% upper bound {model.miss_upper95:.2%} exceeds the "
                       f"budget {policy.miss_budget:.2%}")
    return True, (f"{n} reviewed cases at or above {threshold:.4f}, {model.misses} true positives among them: "
                  f"95% upper bound {model.miss_upper95:.2%} <= budget {policy.miss_budget:.2%}")
