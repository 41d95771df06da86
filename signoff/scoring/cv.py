"""Grouped cross-validation: how the scorer does on incidents and organisations it has not seen.

Each outer fold runs the full training (`train.fit`: OOF history features, OOF calibration,
threshold recommended from the training folds only) and then scores the held-out fold, which
never influences any choice. Two groupings:

* `incident`: held-out folds are new incidents (their organisations mostly known);
* `org`: held-out folds are whole organisations never seen in training.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from signoff.scoring import metrics
from signoff.scoring.parallel import fold_map
from signoff.scoring.train import LabelledCases, Progress, TrainParams, fit, matrix, predict_raw

Grouping = Literal["incident", "org"]


def outer_folds(cases: LabelledCases, grouping: Grouping, k: int, seed: int) -> list[np.ndarray]:
    x = np.zeros(len(cases))
    if grouping == "incident":
        split = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, cases.labels)
    else:
        split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, cases.labels, cases.orgs)
    return [np.sort(test) for _, test in split]


def _outer_fold(cases: LabelledCases, params: TrainParams, number: int, test: np.ndarray) -> dict[str, Any]:
    """Train on everything but `test` (threshold from those rows only), then score `test`."""
    n = len(cases)
    train_rows = np.setdiff1d(np.arange(n), test)
    bundle, oof = fit(cases, train_rows, params)
    is_tp_train = cases.labels[train_rows] == metrics.TP
    recommendation = metrics.recommend_threshold(1.0 - oof.calibrated[:, metrics.TP], is_tp_train, params.risk_budget)
    x_test = matrix(cases, test, bundle.stats)
    probs = bundle.calibration.apply(predict_raw(bundle.booster, x_test, params.nthread), x_test)
    predicted = bundle.calibration.decide(probs, x_test)
    benign = 1.0 - probs[:, metrics.TP]
    at = metrics.safety_at(benign, cases.labels[test] == metrics.TP, recommendation.threshold)
    train_orgs = {cases.orgs[j] for j in train_rows}
    return {
        "probs": probs,
        "predicted": predicted,
        "closed": benign >= recommendation.threshold,
        "fold": {
            "fold": number,
            "incidents": len(test),
            "organisations": len({cases.orgs[i] for i in test}),
            "unseen_org_share": float(np.mean([cases.orgs[i] not in train_orgs for i in test])),
            "macro_f1": metrics.classification(cases.labels[test], predicted)[0],
            "decision_bias_unseen": list(bundle.calibration.decision_unseen),
            "threshold": recommendation.threshold,
            "threshold_train_auto_close_share": recommendation.at.auto_closed_share,
            "auto_closed_share": at.auto_closed_share,
            "tp_wrongly_closed": at.tp_wrongly_closed,
            "tp_total": at.tp_total,
        },
    }


def _summary(
    cases: LabelledCases, params: TrainParams, grouping: Grouping, folds: list[np.ndarray], results: list[dict[str, Any]]
) -> dict[str, Any]:
    n = len(cases)
    probs = np.zeros((n, 3), dtype=np.float64)
    closed = np.zeros(n, dtype=bool)
    predicted = np.zeros(n, dtype=np.int64)
    for test, result in zip(folds, results, strict=True):
        probs[test] = result["probs"]
        predicted[test] = result["predicted"]
        closed[test] = result["closed"]
    labels = cases.labels
    macro, per_class = metrics.classification(labels, predicted)
    is_tp = labels == metrics.TP
    k_tp = int((closed & is_tp).sum())
    n_tp = int(is_tp.sum())
    return {
        "grouping": grouping,
        "folds": len(folds),
        "incidents": n,
        "organisations": len(set(cases.orgs)),
        "seed": params.seed,
        "macro_f1": macro,
        "per_class": {name: r.model_dump() for name, r in per_class.items()},
        "decision_rule": "argmax(log p + bias of the regime: known / never-seen organisation), "
        "biases fitted on each fold's training data (out-of-fold)",
        "ece": metrics.ece_top_label(probs, labels),
        "ece_benign": metrics.ece_binary(1.0 - probs[:, metrics.TP], ~is_tp),
        "risk_budget": params.risk_budget,
        "threshold_source": "recommended from each fold's training data (out-of-fold), never the test fold",
        "auto_closed_share": float(closed.mean()),
        "tp_wrongly_closed": k_tp,
        "tp_total": n_tp,
        "tp_wrongly_closed_share": k_tp / n_tp if n_tp else 0.0,
        "tp_wrongly_closed_upper95": metrics.clopper_pearson_upper(k_tp, n_tp),
        "per_fold": [r["fold"] for r in results],
    }


def cv_report(
    cases: LabelledCases,
    params: TrainParams,
    k: int = 5,
    progress: Progress | None = None,
    groupings: tuple[Grouping, ...] = ("incident", "org"),
    jobs: int = 1,
) -> dict[str, Any]:
    """Grouped CV for each grouping. Every outer fold is independent, so they run on up to `jobs`
    processes (each fold's training on one); the report is the same for any `jobs`."""
    say = progress or (lambda _msg: None)
    splits = {g: outer_folds(cases, g, k, params.seed + 100) for g in groupings}
    owners = [(g, number) for g in groupings for number in range(1, len(splits[g]) + 1)]
    tasks = [(params, number, splits[g][number - 1]) for g, number in owners]
    say(f"{len(tasks)} outer folds on {max(1, min(jobs, len(tasks)))} process(es)")
    results = fold_map(_outer_fold, cases, tasks, jobs, done=lambda i: say(f"{owners[i][0]} fold {owners[i][1]}/{k} done"))
    report: dict[str, Any] = {}
    for g in groupings:
        mine = [r for (owner, _), r in zip(owners, results, strict=True) if owner == g]
        report[f"{g}_grouped"] = _summary(cases, params, g, splits[g], mine)
    report["params"] = params.model_dump()
    return report
