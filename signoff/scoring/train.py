"""Deterministic training: labelled cases → model artifact + manifest.

Pipeline (`fit_pipeline`), used for the final model and inside every cross-validation fold:
1. history statistics are computed out-of-fold over the training cases (a case's history features
   never include its own label), the final statistics from all training cases;
2. one xgboost softprob model on content + history features (class-balanced weights, nthread=1,
   fixed seed: same data + seed → same bytes).

Calibration and threshold: `train` runs the pipeline K times on K-1 folds and predicts the held-out
fold, giving out-of-fold (OOF) probabilities for every training case; the calibration map is fitted
on those, and the threshold recommendation is read from the calibrated OOF benign confidence.
"""

from __future__ import annotations

import dataclasses
import platform
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
import sklearn
import xgboost as xgb
from pydantic import BaseModel, ConfigDict
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from signoff.models import Alert
from signoff.scoring import artifact, metrics
from signoff.scoring.artifact import Bundle, Calibration, CalibrationMap
from signoff.scoring.features import (
    CLASSES,
    FEATURE_NAMES,
    N_CONTENT,
    N_HISTORY,
    SCHEMA_VERSION,
    HistoryStats,
    content_features,
    cross_features,
    fit_history,
    history_features,
    history_keys,
    org_known,
    org_of,
)
from signoff.scoring.parallel import fold_map
from signoff.sources.guide import GuideRead

Progress = Callable[[str], None]


class TrainParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 7
    folds: int = 5  # OOF folds for calibration and for history statistics
    # The booster is the average of `bags` boosters, each trained on its own random out-of-fold
    # split of the history features (merged into one booster: `merge_boosters`). A training
    # case's out-of-fold history depends on which cases shared its fold; averaging over splits
    # takes that noise out (docs/scoring.md: +0.005 out-of-fold macro-F1 in 7 of 8 paired runs) at
    # the scoring cost of one 300-round booster.
    bags: int = 5
    rounds: int = 60  # per bag
    max_depth: int = 5
    eta: float = 0.25
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 2.0
    reg_lambda: float = 1.0
    class_balance: bool = True
    # Also train on a copy of the cases whose history features are computed leaving their whole
    # organisation out: teaches the model what a never-seen organisation looks like. 0 disables.
    unseen_org_weight: float = 1.0
    # Fit a separate calibration map for never-seen organisations (K more out-of-fold models).
    calibrate_unseen_orgs: bool = True
    # Weight each case by (cases of its organisation)^-org_weight_power: big organisations do not
    # dominate what the model learns, so patterns that hold across organisations win.
    org_weight_power: float = 0.0
    # Fit per-grade decision biases (argmax of log p + bias) maximising out-of-fold macro-F1, for
    # never-seen organisations (there the calibrated argmax under-predicts TP/FP); known
    # organisations keep plain argmax unless `decision_bias_known`.
    decision_bias_unseen: bool = True
    decision_bias_known: bool = False
    nthread: int = 1
    risk_budget: float = 0.005
    history_smoothing: float = 1.0  # m of the m-estimate pulling history grade mixes to the prior

    def xgb_params(self) -> dict[str, Any]:
        return {
            "objective": "multi:softprob",
            "num_class": len(CLASSES),
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "nthread": self.nthread,
            "seed": self.seed,
            "eval_metric": "mlogloss",
        }


@dataclass
class LabelledCases:
    case_ids: list[str]
    alerts: list[tuple[Alert, ...]]
    labels: np.ndarray  # index into CLASSES
    orgs: list[str]

    def __post_init__(self) -> None:
        self.keys = [history_keys(a) for a in self.alerts]
        self.content = np.asarray([content_features(a) for a in self.alerts], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.case_ids)


def cases_from_guide(read: GuideRead) -> LabelledCases:
    """The graded incidents of a GUIDE read (ungraded ones cannot be trained or evaluated on)."""
    index = {c: i for i, c in enumerate(CLASSES)}
    graded = [i for i in read.incidents if i.grade is not None]
    if not graded:
        raise ValueError("no graded incidents in the data: training needs IncidentGrade values")
    return LabelledCases(
        case_ids=[i.case_id for i in graded],
        alerts=[i.alerts for i in graded],
        labels=np.asarray([index[i.grade] for i in graded if i.grade is not None], dtype=np.int64),
        orgs=[org_of(i.alerts) for i in graded],
    )


def folds_of(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Test-index arrays of a stratified K-fold split (deterministic for a seed)."""
    k = max(2, min(k, int(np.bincount(labels, minlength=len(CLASSES)).max())))
    counts = np.bincount(labels, minlength=len(CLASSES))
    if counts[counts > 0].min() < k:  # tiny data: plain shuffled split
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(labels))
        return [np.sort(order[i::k]) for i in range(k)]
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [np.sort(test) for _, test in splitter.split(np.zeros(len(labels)), labels)]


def org_folds(orgs: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    """Test-index arrays of a K-fold split that keeps each organisation in one fold."""
    unique = sorted(set(orgs))
    k = max(2, min(k, len(unique)))
    order = np.random.default_rng(seed).permutation(len(unique))
    bucket = {unique[j]: n % k for n, j in enumerate(order)}
    assigned = np.asarray([bucket[o] for o in orgs])
    return [np.flatnonzero(assigned == f) for f in range(k) if (assigned == f).any()]


def _history_matrix(cases: LabelledCases, rows: np.ndarray, stats: HistoryStats) -> np.ndarray:
    return np.asarray([history_features(cases.keys[i], stats) for i in rows], dtype=np.float32)


def _cross_matrix(cases: LabelledCases, rows: np.ndarray, stats: HistoryStats) -> np.ndarray:
    return np.asarray([cross_features(cases.keys[i], cases.orgs[i], stats) for i in rows], dtype=np.float32)


def _fit_stats(cases: LabelledCases, rows: Sequence[int], smoothing: float, cross: bool = True) -> HistoryStats:
    return fit_history(cases.keys, cases.labels, cases.orgs, rows, smoothing, cross=cross)


def matrix(cases: LabelledCases, rows: np.ndarray, stats: HistoryStats) -> np.ndarray:
    """Feature rows of `rows` scored with `stats` (what the scorer computes: `features.vector`)."""
    return np.hstack([cases.content[rows], _history_matrix(cases, rows, stats), _cross_matrix(cases, rows, stats)])


BAG_SEED_STEP = 1000  # bag b trains with seed + b * BAG_SEED_STEP (its folds and its trees)


def fit_pipeline(cases: LabelledCases, rows: np.ndarray, params: TrainParams) -> tuple[xgb.Booster, HistoryStats]:
    """Train on `rows`: `params.bags` boosters, each on its own out-of-fold history split, merged
    into one; return it with the full-row statistics."""
    rows = np.asarray(rows)
    full_stats = _fit_stats(cases, rows.tolist(), params.history_smoothing)
    boosters = [
        _fit_bag(cases, rows, params.model_copy(update={"seed": params.seed + BAG_SEED_STEP * bag}), full_stats)
        for bag in range(max(1, params.bags))
    ]
    return (boosters[0] if len(boosters) == 1 else artifact.merge_boosters(boosters)), full_stats


def _fit_bag(cases: LabelledCases, rows: np.ndarray, params: TrainParams, full_stats: HistoryStats) -> xgb.Booster:
    """One booster: OOF history features over this seed's folds, then xgboost."""
    labels = cases.labels[rows]
    splits = [folds_of(labels, params.folds, params.seed + 1)]
    if params.unseen_org_weight > 0:
        by_org = org_folds([cases.orgs[i] for i in rows], params.folds, params.seed + 3)
        if len(by_org) >= 2:  # with a single organisation there is no "unseen organisation" to learn
            splits.append(by_org)
    # Cross-organisation features: for a training case, computed from the OTHER organisation folds
    # (its own organisation is never in them), identical in both copies. Not from all rows: a value
    # unique to (organisation, key) would let the trees memorise that organisation's grades in-sample.
    cross = np.zeros((len(rows), len(FEATURE_NAMES) - N_CONTENT - N_HISTORY), dtype=np.float32)
    cross_folds = org_folds([cases.orgs[i] for i in rows], params.folds, params.seed + 5)
    if len(cross_folds) >= 2:
        for test in cross_folds:
            keep = np.ones(len(rows), dtype=bool)
            keep[test] = False
            cross[test] = _cross_matrix(cases, rows[test], _fit_stats(cases, rows[keep].tolist(), params.history_smoothing))
    else:
        cross = _cross_matrix(cases, rows, full_stats)
    blocks, block_labels, block_weights = [], [], []
    for n, folds in enumerate(splits):
        hist = np.zeros((len(rows), N_HISTORY), dtype=np.float32)
        for test in folds:
            train_mask = np.ones(len(rows), dtype=bool)
            train_mask[test] = False
            stats = _fit_stats(cases, rows[train_mask].tolist(), params.history_smoothing, cross=False)
            hist[test] = _history_matrix(cases, rows[test], stats)
        blocks.append(np.hstack([cases.content[rows], hist, cross]))
        block_labels.append(labels)
        block_weights.append(np.full(len(rows), 1.0 if n == 0 else params.unseen_org_weight, dtype=np.float64))
    x = np.vstack(blocks)
    all_labels = np.concatenate(block_labels)
    weights = np.concatenate(block_weights)
    if params.class_balance:
        counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
        per_class = len(rows) / (len(CLASSES) * np.maximum(counts, 1.0))
        weights = weights * per_class[all_labels]
    if params.org_weight_power > 0:
        sizes = Counter(cases.orgs[i] for i in rows)
        per_row = np.asarray([sizes[cases.orgs[i]] ** -params.org_weight_power for i in rows], dtype=np.float64)
        per_row *= len(rows) / per_row.sum()
        weights = weights * np.tile(per_row, len(splits))
    labels = all_labels
    dtrain = xgb.DMatrix(x, label=labels, weight=weights.astype(np.float32), feature_names=list(FEATURE_NAMES), nthread=params.nthread)
    return xgb.train(params.xgb_params(), dtrain, num_boost_round=params.rounds)


def predict_raw(booster: xgb.Booster, x: np.ndarray, nthread: int = 1) -> np.ndarray:
    """Uncalibrated class probabilities; the same call the scorer makes."""
    raw = booster.inplace_predict(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(raw, dtype=np.float64).reshape(len(x), len(CLASSES))


def fit_map(raw: np.ndarray, labels: np.ndarray, fallback: CalibrationMap | None = None) -> CalibrationMap:
    """Matrix scaling fitted by multinomial logistic regression on log-probabilities."""
    if len(labels) < 10 * len(CLASSES) or len(np.unique(labels)) < len(CLASSES):
        return fallback or CalibrationMap.identity()
    model = LogisticRegression(C=1.0, max_iter=1000, tol=1e-10)
    model.fit(np.log(np.clip(raw, artifact.EPS, 1.0)), labels)
    return CalibrationMap(
        weights=tuple(tuple(float(x) for x in row) for row in model.coef_),
        bias=tuple(float(x) for x in model.intercept_),
    )


def fit_calibration(
    raw: np.ndarray, known: np.ndarray, labels: np.ndarray, raw_unseen: np.ndarray, labels_unseen: np.ndarray
) -> Calibration:
    """`known` map from OOF cases whose organisation had history; `unseen` map from the rest plus
    the leave-organisation-out OOF predictions."""
    known_map = fit_map(raw[known], labels[known])
    unseen_raw = np.vstack([raw[~known], raw_unseen])
    unseen_labels = np.concatenate([labels[~known], labels_unseen])
    return Calibration(known=known_map, unseen=fit_map(unseen_raw, unseen_labels, fallback=known_map))


BIAS_GRID = tuple(round(-1.5 + 0.05 * i, 2) for i in range(61))


def fit_decision_bias(probs: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """Biases (0 for TruePositive, b for BenignPositive, FalsePositive) on log-probabilities that
    maximise macro-F1 on these out-of-fold predictions; ties go to the smallest biases."""
    zero = (0.0,) * len(CLASSES)
    if len(labels) < 10 * len(CLASSES) or len(np.unique(labels)) < len(CLASSES):
        return zero
    logs = np.log(np.clip(np.asarray(probs, dtype=np.float64), artifact.EPS, 1.0))
    best, best_key = zero, (-metrics.classification(labels, logs.argmax(axis=1))[0], 0.0)
    for b_bp in BIAS_GRID:
        for b_fp in BIAS_GRID:
            bias = np.asarray([0.0, b_bp, b_fp])
            f1 = metrics.macro_f1(labels, (logs + bias).argmax(axis=1))
            key = (-round(f1, 12), abs(b_bp) + abs(b_fp))
            if key < best_key:
                best, best_key = (0.0, float(b_bp), float(b_fp)), key
    return best


class OofPredictions(BaseModel):
    """Out-of-fold predictions of every training case and the calibration fitted on them.

    `raw`/`x_org_n`: stratified K-fold by incident (what new incidents of known organisations
    look like); `raw_unseen`: K-fold by organisation (what never-seen organisations look like).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    raw: Any  # np.ndarray (n, 3)
    known: Any  # np.ndarray (n,) bool: the case's organisation had history in its fold
    raw_unseen: Any  # np.ndarray (n, 3) or (0, 3)
    calibrated: Any  # np.ndarray (n, 3): `raw` through the shipped calibration
    cross_fitted: Any  # np.ndarray (n, 3): `raw` calibrated by maps fitted without the case
    cross_fitted_unseen: Any  # np.ndarray (n, 3) or (0, 3): same for `raw_unseen`
    calibration: Calibration


def _fold_task(
    cases: LabelledCases, rows: np.ndarray, test: np.ndarray | None, params: TrainParams
) -> tuple[np.ndarray, np.ndarray] | tuple[xgb.Booster, HistoryStats]:
    """One training run of `fit`, in any process. With `test`: train on `rows` minus `test` and
    return the test rows' raw probabilities and whether their organisation had history. Without:
    the final pipeline on all `rows`."""
    if test is None:
        return fit_pipeline(cases, rows, params)
    mask = np.ones(len(rows), dtype=bool)
    mask[test] = False
    booster, stats = fit_pipeline(cases, rows[mask], params)
    x = matrix(cases, rows[test], stats)
    return predict_raw(booster, x, params.nthread), org_known(x)


def _train_folds(
    cases: LabelledCases, rows: np.ndarray, params: TrainParams, progress: Progress, jobs: int, final: bool
) -> tuple[OofPredictions, tuple[xgb.Booster, HistoryStats] | None]:
    """The out-of-fold models (K folds by incident, K by organisation) and, with `final`, the final
    model: all independent, so they run on up to `jobs` processes with the same result."""
    labels = cases.labels[rows]
    by_incident = folds_of(labels, params.folds, params.seed)
    by_org = org_folds([cases.orgs[i] for i in rows], params.folds, params.seed + 4)
    if not (params.calibrate_unseen_orgs and len(by_org) >= 2):
        by_org = []
    tests: list[np.ndarray | None] = [*by_incident, *by_org, *([None] if final else [])]
    names = [f"out-of-fold model {n}/{len(by_incident)}" for n in range(1, len(by_incident) + 1)]
    names += [f"leave-organisations-out model {n}/{len(by_org)}" for n in range(1, len(by_org) + 1)]
    names += ["final model"] if final else []
    progress(f"{len(tests)} models on {max(1, min(jobs, len(tests)))} process(es)")
    results = fold_map(
        _fold_task, cases, [(rows, test, params) for test in tests], jobs, done=lambda i: progress(f"{names[i]} done")
    )

    def gather(folds: list[np.ndarray], parts: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        raw = np.zeros((len(rows), len(CLASSES)), dtype=np.float64)
        known = np.zeros(len(rows), dtype=bool)
        for test, (raw_test, known_test) in zip(folds, parts, strict=True):
            raw[test] = raw_test
            known[test] = known_test
        return raw, known

    raw, known = gather(by_incident, results[: len(by_incident)])
    if by_org:
        raw_unseen, _ = gather(by_org, results[len(by_incident) : len(by_incident) + len(by_org)])
        labels_unseen = labels
    else:
        raw_unseen, labels_unseen = np.zeros((0, len(CLASSES))), np.zeros(0, dtype=np.int64)
    oof = _calibrate_oof(cases, rows, params, raw, known, raw_unseen, labels_unseen)
    return oof, (results[-1] if final else None)  # type: ignore[return-value]


def oof_predictions(
    cases: LabelledCases, rows: np.ndarray, params: TrainParams, progress: Progress, jobs: int = 1
) -> OofPredictions:
    return _train_folds(cases, rows, params, progress, jobs, final=False)[0]


def _calibrate_oof(
    cases: LabelledCases,
    rows: np.ndarray,
    params: TrainParams,
    raw: np.ndarray,
    known: np.ndarray,
    raw_unseen: np.ndarray,
    labels_unseen: np.ndarray,
) -> OofPredictions:
    labels = cases.labels[rows]
    calibration = fit_calibration(raw, known, labels, raw_unseen, labels_unseen)
    # Cross-fitting: each case is calibrated by maps fitted without it (honest ECE). For the
    # never-seen-organisation predictions the maps are fitted without the case's whole organisation
    # (its grades are correlated), which is what a new organisation gets.
    cross = np.zeros_like(raw)
    cross_unseen = np.zeros_like(raw_unseen)
    for test in folds_of(labels, params.folds, params.seed + 2):
        keep = np.ones(len(rows), dtype=bool)
        keep[test] = False
        keep_unseen = keep if len(raw_unseen) else np.zeros(0, dtype=bool)
        fold_cal = fit_calibration(raw[keep], known[keep], labels[keep], raw_unseen[keep_unseen], labels_unseen[keep_unseen])
        cross[test] = np.where(known[test, None], fold_cal.known.apply(raw[test]), fold_cal.unseen.apply(raw[test]))
    if len(raw_unseen):
        for test in org_folds([cases.orgs[i] for i in rows], params.folds, params.seed + 6):
            keep = np.ones(len(rows), dtype=bool)
            keep[test] = False
            fold_cal = fit_calibration(raw[keep], known[keep], labels[keep], raw_unseen[keep], labels_unseen[keep])
            cross_unseen[test] = fold_cal.unseen.apply(raw_unseen[test])
    calibrated = np.where(known[:, None], calibration.known.apply(raw), calibration.unseen.apply(raw))
    zero = (0.0,) * len(CLASSES)
    calibration = dataclasses.replace(
        calibration,
        decision_known=fit_decision_bias(cross[known], labels[known]) if params.decision_bias_known else zero,
        decision_unseen=fit_decision_bias(
            np.vstack([cross[~known], cross_unseen]), np.concatenate([labels[~known], labels_unseen])
        )
        if params.decision_bias_unseen
        else zero,
    )
    return OofPredictions(
        raw=raw,
        known=known,
        raw_unseen=raw_unseen,
        calibrated=calibrated,
        cross_fitted=cross,
        cross_fitted_unseen=cross_unseen,
        calibration=calibration,
    )


@dataclass
class TrainedModel:
    bundle: Bundle
    artifact: bytes
    model_id: str
    manifest: dict[str, Any]
    oof: OofPredictions


def fit(
    cases: LabelledCases, rows: np.ndarray, params: TrainParams, progress: Progress | None = None, jobs: int = 1
) -> tuple[Bundle, OofPredictions]:
    """The whole training on `rows`: OOF calibration and the final model on all rows. `jobs`
    processes share the work; the result is the same bytes for any `jobs`."""
    oof, final = _train_folds(cases, rows, params, progress or (lambda _msg: None), jobs, final=True)
    assert final is not None
    booster, stats = final
    return Bundle(booster=booster, stats=stats, calibration=oof.calibration, nthread=params.nthread), oof


def library_versions() -> dict[str, str]:
    return {
        "xgboost": xgb.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def oof_report(labels: np.ndarray, oof: OofPredictions, risk_budget: float) -> dict[str, Any]:
    probs = oof.cross_fitted
    cal = oof.calibration
    decided = artifact.decide(probs, oof.known, cal.decision_known, cal.decision_unseen)
    macro, per_class = metrics.classification(labels, decided)
    benign = 1.0 - oof.calibrated[:, metrics.TP]
    recommendation = metrics.recommend_threshold(benign, labels == metrics.TP, risk_budget)
    return {
        "scheme": "stratified K-fold by incident over the training data, out-of-fold predictions",
        "decision_rule": "argmax(log p + bias of the regime); biases fitted on these out-of-fold predictions",
        "macro_f1": macro,
        "per_class": {k: v.model_dump() for k, v in per_class.items()},
        "accuracy": float((decided == labels).mean()),
        "log_loss": float(log_loss(labels, probs, labels=list(range(len(CLASSES))))),
        "ece": metrics.ece_top_label(probs, labels),
        "ece_benign": metrics.ece_binary(1.0 - probs[:, metrics.TP], labels != metrics.TP),
        "ece_uncalibrated": metrics.ece_top_label(oof.raw, labels),
        "org_known_share": float(np.mean(oof.known)),
        **(
            {
                "unseen_org_macro_f1": metrics.classification(
                    labels,
                    artifact.decide(
                        oof.cross_fitted_unseen, np.zeros(len(labels), dtype=bool), cal.decision_known, cal.decision_unseen
                    ),
                )[0],
                "unseen_org_ece": metrics.ece_top_label(oof.cross_fitted_unseen, labels),
            }
            if len(oof.cross_fitted_unseen)
            else {}
        ),
        "threshold": recommendation.model_dump(),
    }


def train(
    cases: LabelledCases,
    params: TrainParams,
    data: dict[str, Any],
    progress: Progress | None = None,
    jobs: int = 1,
) -> TrainedModel:
    """Train on all cases; `data` describes the input (sha256, path name, rows) for the manifest."""
    rows = np.arange(len(cases))
    bundle, oof = fit(cases, rows, params, progress, jobs)
    blob = artifact.dump(bundle)
    model_id = artifact.sha256(blob)
    labels = cases.labels
    report = oof_report(labels, oof, params.risk_budget)
    manifest = {
        "model_sha256": model_id,
        "format": artifact.FORMAT,
        "schema_version": SCHEMA_VERSION,
        "classes": [c.value for c in CLASSES],
        "feature_names": list(FEATURE_NAMES),
        "data": {
            **data,
            "incidents": len(cases),
            "organisations": len(set(cases.orgs)),
            "grades": {c.value: int((labels == i).sum()) for i, c in enumerate(CLASSES)},
        },
        "params": params.model_dump(),
        "xgboost_params": params.xgb_params(),
        "seed": params.seed,
        "libraries": library_versions(),
        "cv": report,
        "calibration": {
            **oof.calibration.to_json(),
            "method": "matrix scaling (multinomial logistic regression on log-probabilities), "
            "fitted on out-of-fold predictions of the training data",
            "ece_before": report["ece_uncalibrated"],
            "ece_after": report["ece"],
        },
        "recommended_threshold": report["threshold"],
        "oof": {
            "case_ids": cases.case_ids,
            "benign_confidence": [float(x) for x in 1.0 - oof.calibrated[:, metrics.TP]],
            "true_positive": [int(x == metrics.TP) for x in labels],
        },
    }
    return TrainedModel(bundle=bundle, artifact=blob, model_id=model_id, manifest=manifest, oof=oof)
