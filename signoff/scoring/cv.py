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
from signoff.scoring.train import LabelledCases, Progress, TrainParams, fit, matrix, predict_raw

Grouping = Literal["incident", "org"]


def outer_folds(cases: LabelledCases, grouping: Grouping, k: int, seed: int) -> list[np.ndarray]:
    x = np.zeros(len(cases))
    if grouping == "incident":
        split = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, cases.labels)
    else:
        split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, cases.labels, cases.orgs)
    return [np.sort(test) for _, test in split]


def grouped_cv(
    cases: LabelledCases,
    params: TrainParams,
    grouping: Grouping,
    k: int = 5,
    progress: Progress | None = None,
) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    n = len(cases)
    probs = np.zeros((n, 3), dtype=np.float64)
    closed = np.zeros(n, dtype=bool)
    predicted = np.zeros(n, dtype=np.int64)
    folds: list[dict[str, Any]] = []
    for number, test in enumerate(outer_folds(cases, grouping, k, params.seed + 100), start=1):
        train_rows = np.setdiff1d(np.arange(n), test)
        label = f"{grouping} fold {number}/{k}"

        def fold_progress(message: str, label: str = label) -> None:
            say(f"{label}: {message}")

        bundle, oof = fit(cases, train_rows, params, fold_progress)
        is_tp_train = cases.labels[train_rows] == metrics.TP
        recommendation = metrics.recommend_threshold(
            1.0 - oof.calibrated[:, metrics.TP], is_tp_train, params.risk_budget
        )
        x_test = matrix(cases, test, bundle.stats)
        p = bundle.calibration.apply(predict_raw(bundle.booster, x_test, params.nthread), x_test)
        probs[test] = p
        predicted[test] = bundle.calibration.decide(p, x_test)
        benign = 1.0 - p[:, metrics.TP]
        closed[test] = benign >= recommendation.threshold
        at = metrics.safety_at(benign, cases.labels[test] == metrics.TP, recommendation.threshold)
        fold_f1, _ = metrics.classification(cases.labels[test], predicted[test])
        folds.append(
            {
                "fold": number,
                "incidents": len(test),
                "organisations": len({cases.orgs[i] for i in test}),
                "unseen_org_share": float(
                    np.mean([cases.orgs[i] not in {cases.orgs[j] for j in train_rows} for i in test])
                ),
                "macro_f1": fold_f1,
                "decision_bias_unseen": list(bundle.calibration.decision_unseen),
                "threshold": recommendation.threshold,
                "threshold_train_auto_close_share": recommendation.at.auto_closed_share,
                "auto_closed_share": at.auto_closed_share,
                "tp_wrongly_closed": at.tp_wrongly_closed,
                "tp_total": at.tp_total,
            }
        )
    labels = cases.labels
    macro, per_class = metrics.classification(labels, predicted)
    is_tp = labels == metrics.TP
    k_tp = int((closed & is_tp).sum())
    n_tp = int(is_tp.sum())
    return {
        "grouping": grouping,
        "folds": k,
        "incidents": n,
        "organisations": len(set(cases.orgs)),
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
        "per_fold": folds,
    }


def cv_report(cases: LabelledCases, params: TrainParams, k: int = 5, progress: Progress | None = None) -> dict[str, Any]:
    return {
        "incident_grouped": grouped_cv(cases, params, "incident", k, progress),
        "org_grouped": grouped_cv(cases, params, "org", k, progress),
        "params": params.model_dump(),
    }
