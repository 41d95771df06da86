"""What a threshold would have done to the cases analysts already reviewed (a backtest).

`signoff policy backtest ALERT_TYPE` answers the SOC lead's question before a threshold changes:
"had this threshold been in force, which of the cases we reviewed would have closed on their own,
and how many of those did an analyst call a true positive?" It reads the shadow-mode evidence the
governance workflow keeps (one record per reviewed case: benign confidence and the analyst's
grade), so it covers the live model on live cases, where `signoff model evaluate` covers a
labelled file. Deterministic; for the CLI only (its bounds come from scipy, which workflow code
does not import: promotion in the governance workflow uses `signoff.autonomy.evidence.upper95`,
the same bound).

Two rates, because two questions are asked of a threshold:
- the **risk budget** (`signoff model recommend-threshold`): true positives closed / all true
  positives, with its exact 95% upper bound;
- the **miss rate** (autonomy promotion): true positives closed / cases closed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from signoff.models import Verdict
from signoff.scoring.metrics import clopper_pearson_upper as upper95
from signoff.scoring.metrics import recommend_threshold

Scored = tuple[float, Verdict]  # (benign confidence, the analyst's grade) of one reviewed case


class BacktestPoint(BaseModel):
    """Auto-closing every reviewed case with benign confidence >= `threshold`."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    scored: int  # reviewed cases with a score
    would_auto_close: int
    auto_close_share: float | None  # of the scored cases
    tp_total: int  # analyst-graded true positives among the scored cases
    tp_closed: int  # ... that the threshold would have closed (misses)
    tp_closed_share: float | None  # tp_closed / tp_total: what a risk budget limits
    tp_closed_upper95: float | None
    miss_rate: float | None  # tp_closed / would_auto_close: what autonomy promotion limits
    miss_upper95: float | None


def at_threshold(scored: Sequence[Scored], threshold: float) -> BacktestPoint:
    n = len(scored)
    closed = [v for b, v in scored if b >= threshold]
    tp_total = sum(1 for _, v in scored if v == Verdict.true_positive)
    misses = sum(1 for v in closed if v == Verdict.true_positive)
    return BacktestPoint(
        threshold=threshold, scored=n, would_auto_close=len(closed),
        auto_close_share=len(closed) / n if n else None,
        tp_total=tp_total, tp_closed=misses,
        tp_closed_share=misses / tp_total if tp_total else None,
        tp_closed_upper95=upper95(misses, tp_total) if tp_total else None,
        miss_rate=misses / len(closed) if closed else None,
        miss_upper95=upper95(misses, len(closed)) if closed else None,
    )


def lowest_within_budget(scored: Sequence[Scored], risk_budget: float) -> BacktestPoint | None:
    """The lowest threshold (a reviewed case's confidence) whose true positives closed stay within
    `risk_budget` at the 95% upper bound: the one that closes the most within it. None when no
    threshold qualifies (too few reviewed true positives for the bound to get that low). The same
    rule as `signoff model recommend-threshold`, on the reviewed cases."""
    benign = np.array([b for b, _ in scored], dtype=np.float64)
    is_tp = np.array([v == Verdict.true_positive for _, v in scored], dtype=bool)
    rec = recommend_threshold(benign, is_tp, risk_budget)
    return at_threshold(scored, rec.threshold) if rec.feasible else None


def curve(scored: Sequence[Scored], points: int = 41) -> list[BacktestPoint]:
    """The safety curve on the reviewed cases: one point per distinct confidence, thinned to at
    most `points` (always keeping the strictest and the loosest)."""
    levels = sorted({b for b, _ in scored}, reverse=True)
    if len(levels) > points:
        step = (len(levels) - 1) / (points - 1)
        levels = [levels[round(k * step)] for k in range(points)]
    return [at_threshold(scored, t) for t in levels]
