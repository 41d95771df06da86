"""Shadow-mode evidence per alert type: agreement, precision at the threshold, misses, and the
promotion recommendation. Pure Python (deterministic; safe in workflow code and in the CLI).

A *miss* is a case the model would have auto-closed (benign confidence >= threshold) that an
analyst graded TruePositive. Promotion is recommended when at least `min_reviewed` such cases were
reviewed and the one-sided 95% Clopper-Pearson upper bound of the miss rate is within `miss_budget`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from policies.engine import AutonomyPolicy
from signoff.autonomy.models import EvidenceRecord, VerdictRecord
from signoff.models import Verdict


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
    policy: AutonomyPolicy, candidate_model_id: str | None = None,
) -> Evidence:
    """`records`: the governance state's compact `EvidenceRecord`s (one per case), or full `VerdictRecord`s."""
    model = model_evidence([(r.predicted, r.benign_confidence, r.verdict) for r in records], threshold)
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
    return Evidence(
        alert_type=alert_type, threshold=threshold, reviewed=len(records), verdicts=verdicts, model=model,
        candidate=candidate, candidate_model_id=candidate_model_id,
        sampled_reviews=sum(1 for r in records if r.review_sampled),
        sampled_misses=sum(1 for r in records if r.review_sampled and r.verdict == Verdict.true_positive),
        recommend_promotion=ok, recommendation=why,
    )


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
