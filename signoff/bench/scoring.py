"""Scenario `scoring`: the deterministic scorer on real GUIDE incidents, no Temporal.

* single-case latency: `Scorer.load(None).score(alerts)` per incident (features, xgboost,
  calibration and the TreeSHAP explanation), p50 / p99;
* batch throughput: `score_many` over all incidents without explanations;
* explanation cost: per-case time with explanations minus without.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from signoff.bench.data import guide_alert_sets, guide_path
from signoff.bench.harness import percentile

Report = Callable[[str, int, int], None]


def run_scoring(cases: int = 1000, report: Report | None = None) -> dict[str, Any]:
    from signoff.scoring.scorer import Scorer

    report = report or (lambda *_: None)
    loaded = time.perf_counter()
    scorer = Scorer.load(None)
    load_s = time.perf_counter() - loaded
    sets = guide_alert_sets()
    if not sets:
        raise ValueError(f"no GUIDE incidents in {guide_path()}")
    sample = [sets[i % len(sets)] for i in range(cases)]
    scorer.score(sample[0])  # warm-up: first-call allocations are not steady state

    single: list[float] = []
    for done, alerts in enumerate(sample, start=1):
        t0 = time.perf_counter()
        scorer.score(alerts)
        single.append(time.perf_counter() - t0)
        if done % 50 == 0 or done == len(sample):
            report("single-case scoring", done, len(sample))

    t0 = time.perf_counter()
    scorer.score_many(sample, explain=False)
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.score_many(sample, explain=True)
    explained_s = time.perf_counter() - t0
    seconds = sum(single)
    return {
        "scenario": "scoring",
        "cases": len(sample),
        "seconds": round(seconds, 4),
        "cases_per_s": round(len(sample) / seconds, 1),
        "single_p50_ms": round(percentile(single, 50) * 1000, 3),
        "single_p99_ms": round(percentile(single, 99) * 1000, 3),
        "batch_cases_per_s": round(len(sample) / batch_s, 1),
        "batch_seconds": round(batch_s, 4),
        "explained_batch_cases_per_s": round(len(sample) / explained_s, 1),
        "explanation_ms_per_case": round((explained_s - batch_s) / len(sample) * 1000, 3),
        "explanation_share": round((explained_s - batch_s) / explained_s, 3),
        "model_load_s": round(load_s, 3),
        "model_id": scorer.model_id,
        "incidents_available": len(sets),
        "alerts_per_case_mean": round(sum(len(s) for s in sample) / len(sample), 2),
    }
