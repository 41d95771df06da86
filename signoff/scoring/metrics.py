"""Metrics the SOC lead reads: macro-F1, per-grade precision/recall, calibration error, and the
auto-close safety numbers (share closed, true positives wrongly closed, 95% upper bound)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.stats import beta
from sklearn.metrics import f1_score, precision_recall_fscore_support

from signoff.scoring.features import CLASSES

TP = 0  # index of TruePositive in CLASSES


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a binomial proportion k/n (exact, Clopper-Pearson)."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n - k))


def tp_needed_for_budget(risk_budget: float, confidence: float = 0.95) -> int | None:
    """The fewest true positives, none of them closed, whose upper bound is within the budget (None: no budget)."""
    if not 0.0 < risk_budget < 1.0:
        return None
    return int(np.ceil(np.log(1.0 - confidence) / np.log(1.0 - risk_budget) - 1e-9))


def ece_top_label(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the predicted grade's probability (15 equal-width bins)."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    return _ece(conf, correct, bins)


def ece_binary(p: np.ndarray, outcome: np.ndarray, bins: int = 15) -> float:
    """Calibration error of a probability of a binary outcome (e.g. benign_confidence vs not-TP)."""
    return _ece(np.asarray(p, dtype=np.float64), np.asarray(outcome, dtype=np.float64), bins)


def _ece(conf: np.ndarray, hit: np.ndarray, bins: int) -> float:
    if len(conf) == 0:
        return 0.0
    idx = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(hit[mask].mean() - conf[mask].mean())
    return float(total / len(conf))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: int = len(CLASSES)) -> float:
    """Macro-F1 over the grades (fast path: equals `classification(...)[0]`)."""
    total = 0.0
    for c in range(classes):
        tp = float(np.sum((predicted == c) & (labels == c)))
        fp = float(np.sum((predicted == c) & (labels != c)))
        fn = float(np.sum((predicted != c) & (labels == c)))
        total += 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return total / classes


class ClassReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    support: int


def classification(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, dict[str, ClassReport]]:
    ids = list(range(len(CLASSES)))
    macro = float(f1_score(labels, predicted, labels=ids, average="macro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(labels, predicted, labels=ids, zero_division=0)
    per = {
        CLASSES[i].value: ClassReport(precision=float(p[i]), recall=float(r[i]), f1=float(f[i]), support=int(s[i]))
        for i in ids
    }
    return macro, per


class SafetyPoint(BaseModel):
    """Auto-closing every case with benign_confidence >= threshold."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    auto_closed: int
    auto_closed_share: float
    tp_wrongly_closed: int
    tp_total: int
    tp_wrongly_closed_share: float
    tp_wrongly_closed_upper95: float


def safety_at(benign: np.ndarray, is_tp: np.ndarray, threshold: float) -> SafetyPoint:
    closed = benign >= threshold
    k = int((closed & is_tp).sum())
    n = int(is_tp.sum())
    return SafetyPoint(
        threshold=float(threshold),
        auto_closed=int(closed.sum()),
        auto_closed_share=float(closed.mean()) if len(closed) else 0.0,
        tp_wrongly_closed=k,
        tp_total=n,
        tp_wrongly_closed_share=k / n if n else 0.0,
        tp_wrongly_closed_upper95=clopper_pearson_upper(k, n),
    )


class ThresholdRecommendation(BaseModel):
    model_config = ConfigDict(frozen=True)

    risk_budget: float
    threshold: float
    feasible: bool  # False: no threshold keeps the bound within budget; 1.0 closes nothing
    at: SafetyPoint


def recommend_threshold(benign: np.ndarray, is_tp: np.ndarray, risk_budget: float) -> ThresholdRecommendation:
    """The lowest threshold whose 95% upper bound on the share of true positives auto-closed stays
    within `risk_budget`, i.e. the most automation the budget buys on these (out-of-fold) cases.

    Auto-close means benign_confidence >= threshold. Lowering the threshold only ever adds closed
    cases, so the feasible thresholds are the top of the ranking down to the first breach.
    """
    benign = np.asarray(benign, dtype=np.float64)
    is_tp = np.asarray(is_tp, dtype=bool)
    n_tp = int(is_tp.sum())
    order = np.argsort(-benign, kind="stable")
    values = benign[order]
    tps = np.cumsum(is_tp[order])
    best: float | None = None
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        if clopper_pearson_upper(int(tps[j]), n_tp) > risk_budget:
            break
        best = float(values[i])
        i = j + 1
    if best is None:
        return ThresholdRecommendation(
            risk_budget=risk_budget, threshold=1.0, feasible=False, at=safety_at(benign, is_tp, 1.0)
        )
    return ThresholdRecommendation(
        risk_budget=risk_budget, threshold=best, feasible=True, at=safety_at(benign, is_tp, best)
    )


def safety_curve(benign: np.ndarray, is_tp: np.ndarray, points: int = 101) -> list[SafetyPoint]:
    """Auto-close share vs TPs wrongly closed over thresholds (for the safety-curve chart)."""
    thresholds: Sequence[float] = sorted({*np.round(np.linspace(0.0, 1.0, points), 6).tolist(),
                                          *np.quantile(benign, np.linspace(0, 1, points)).tolist()})
    return [safety_at(benign, is_tp, t) for t in thresholds]
