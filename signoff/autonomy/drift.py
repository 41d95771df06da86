"""Drift figures: population stability index (PSI) of input features and scores against a model's
training reference, per alert type. Numeric code: activities and the CLI only, never workflows.

The reference (`reference.json` beside a model's artifact) holds, per training incident category:
histogram counts of every content feature (shared quantile bin edges, 5 bins at most) and of the
out-of-fold benign confidence (10 equal bins on [0, 1]). Per-category counts let the drift check
build the reference of an alert type under the policy in force (the categories that map to it).
Content features only: history features are look-ups into the training labels themselves, so their
in-sample distribution says nothing about new data.

PSI = sum over bins of (p_now - p_ref) * ln(p_now / p_ref), with +0.5 per bin (Jeffreys smoothing).
A figure counts as a breach only above the policy threshold AND above the noise floor: the PSI that
sampling noise alone reaches 1 time in 1000 for this many cases (chi-square approximation).
Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a real shift.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.engine import Policy
from signoff.models import Alert

REFERENCE = "reference.json"
FEATURE_BINS = 5
SCORE_BINS = 10
FLOOR = 1e-4


def content_names() -> list[str]:
    from signoff.scoring.features import FEATURE_NAMES

    return [n for n in FEATURE_NAMES if not n.startswith("hist_")]


def content_matrix(cases: Sequence[Sequence[Alert]]) -> np.ndarray:
    from signoff.scoring.features import content_features

    return np.asarray([content_features(list(a)) for a in cases], dtype=np.float64).reshape(len(cases), -1)


def category_of(alerts: Sequence[Alert]) -> str:
    """The incident category as GUIDE ingest names it: the most frequent alert category."""
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a.category] = counts.get(a.category, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else ""


def _edges(values: np.ndarray) -> list[float]:
    qs = np.quantile(values, [i / FEATURE_BINS for i in range(1, FEATURE_BINS)]) if len(values) else []
    return sorted({float(q) for q in qs})


def feature_bins(x: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin index per value: bin i holds edges[i-1] < x <= edges[i]."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="left")


def score_bins(scores: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(scores, dtype=np.float64) * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)


def build_reference(cases: Sequence[Sequence[Alert]], benign_oof: Sequence[float], model_id: str,
                    source: str) -> dict[str, Any]:
    """The drift reference of a model from its training cases and their out-of-fold benign confidence."""
    if len(cases) != len(benign_oof):
        raise ValueError("one out-of-fold score per training case is needed")
    names = content_names()
    x = content_matrix(cases)
    edges = {name: _edges(x[:, j]) for j, name in enumerate(names)}
    cats = [category_of(a) for a in cases]
    sbins = score_bins(np.asarray(benign_oof))
    by_category: dict[str, Any] = {}
    for cat in sorted(set(cats)):
        rows = np.asarray([i for i, c in enumerate(cats) if c == cat])
        features = {}
        for j, name in enumerate(names):
            idx = feature_bins(x[rows, j], edges[name])
            features[name] = np.bincount(idx, minlength=len(edges[name]) + 1).astype(int).tolist()
        by_category[cat] = {
            "cases": len(rows),
            "features": features,
            "score": np.bincount(sbins[rows], minlength=SCORE_BINS).astype(int).tolist(),
        }
    return {
        "model_sha256": model_id,
        "source": source,
        "cases": len(cases),
        "feature_names": names,
        "feature_edges": edges,
        "score_bins": SCORE_BINS,
        "by_category": by_category,
    }


def reference_path(model_id: str) -> Path:
    from signoff.scoring import model_store

    local = model_store.store_dir() / model_id
    if (local / "model.json").exists() or not (model_store.default_dir() / "model.json").exists():
        return local / REFERENCE
    if model_store.default_model_id() == model_id:
        return model_store.default_dir() / REFERENCE
    return local / REFERENCE


def load_reference(model_id: str) -> dict[str, Any] | None:
    path = reference_path(model_id)
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save_reference(model_id: str, reference: dict[str, Any], path: Path | None = None) -> Path:
    target = path or reference_path(model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(reference, sort_keys=True, separators=(",", ":")) + "\n")
    return target


def reference_for(reference: dict[str, Any], policy: Policy, alert_type: str) -> dict[str, Any] | None:
    """Summed per-category counts of the categories that map to `alert_type` under `policy`."""
    names = reference["feature_names"]
    total: dict[str, Any] = {"cases": 0, "features": {n: None for n in names}, "score": None}
    for cat, part in reference["by_category"].items():
        if policy.alert_type_for_category(cat) != alert_type:
            continue
        total["cases"] += part["cases"]
        for n in names:
            counts = np.asarray(part["features"][n])
            prev = total["features"][n]
            total["features"][n] = counts if prev is None else prev + counts
        score = np.asarray(part["score"])
        total["score"] = score if total["score"] is None else total["score"] + score
    return total if total["cases"] else None


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI with Jeffreys smoothing (+0.5 per bin), so an empty bin in a small sample is not infinite."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.sum() == 0 or a.sum() == 0:
        return 0.0
    p = np.maximum((e + 0.5) / (e.sum() + 0.5 * len(e)), FLOOR)
    q = np.maximum((a + 0.5) / (a.sum() + 0.5 * len(a)), FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def noise_floor(bins: int, n: int, n_ref: int, quantile: float = 0.999) -> float:
    """PSI that sampling noise alone reaches with probability 1 - quantile (chi-square approximation:
    PSI ~ (1/n + 1/N) * chi2(bins - 1) for two samples of one distribution)."""
    from scipy.stats import chi2

    if n <= 0 or bins < 2:
        return float("inf")
    return float(chi2.ppf(quantile, bins - 1) * (1.0 / n + 1.0 / max(n_ref, 1)))


def feature_psi(ref: dict[str, Any], edges: dict[str, list[float]], cases: Sequence[Sequence[Alert]]) -> dict[str, float]:
    names = content_names()  # the column order of content_matrix (JSON may have sorted `edges`)
    if set(names) != set(edges):
        raise ValueError("the drift reference was built for another feature schema: rebuild it (`signoff drift reference`)")
    x = content_matrix(cases)
    out = {}
    for j, name in enumerate(names):
        counts = np.bincount(feature_bins(x[:, j], edges[name]), minlength=len(edges[name]) + 1)
        out[name] = round(psi(ref["features"][name], counts), 6)
    return out


def score_psi(ref: dict[str, Any], scores: Sequence[float]) -> float:
    counts = np.bincount(score_bins(np.asarray(scores)), minlength=SCORE_BINS)
    return round(psi(ref["score"], counts), 6)


def finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def finding(
    alert_type: str,
    reference: dict[str, Any] | None,
    policy: Policy,
    alerts: Sequence[Sequence[Alert]],
    scores: Sequence[float],
    overrides: Sequence[bool],
) -> dict[str, Any]:
    """The drift figures of one alert type and which policy thresholds they breach (a DriftFinding's fields).

    `alerts`: recent cases' alerts; `scores`: benign confidences of those scored by the reference's model;
    `overrides`: per recent analyst verdict, whether it overruled the model (TP vs not).
    """
    rules = policy.drift
    out: dict[str, Any] = {"alert_type": alert_type, "cases": len(alerts), "verdicts": len(overrides)}
    breaches: list[str] = []
    notes: list[str] = []
    ref = reference_for(reference, policy, alert_type) if reference else None
    if reference is None:
        notes.append("the active model has no drift reference (`signoff drift reference`)")
    elif ref is None:
        notes.append("no training cases of this alert type in the reference")
    elif len(alerts) < rules.min_cases:
        notes.append(f"{len(alerts)} recent cases < min_cases {rules.min_cases}: inputs and scores not judged")
    else:
        edges = reference["feature_edges"]
        per_feature = feature_psi(ref, edges, alerts)
        top = sorted(per_feature.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        out["feature_psi_top"] = dict(top)
        out["feature_psi_max"] = top[0][1]
        floors = {n: noise_floor(len(edges[n]) + 1, len(alerts), ref["cases"]) for n in per_feature}
        out["feature_noise_floor"] = round(floors[top[0][0]], 6)
        shifted = sorted(((v, n) for n, v in per_feature.items() if v > rules.feature_psi and v > floors[n]),
                         reverse=True)
        if shifted:
            value, name = shifted[0]
            more = f" and {len(shifted) - 1} more features" if len(shifted) > 1 else ""
            breaches.append(f"input feature {name} PSI {value:.3f} > {rules.feature_psi} "
                            f"(noise floor {floors[name]:.3f}){more}")
        if len(scores) >= rules.min_cases:
            value = score_psi(ref, scores)
            out["score_psi"] = value
            floor = noise_floor(SCORE_BINS, len(scores), ref["cases"])
            out["score_noise_floor"] = round(floor, 6)
            if value > rules.score_psi and value > floor:
                breaches.append(f"score PSI {value:.3f} > {rules.score_psi} (noise floor {floor:.3f})")
        else:
            notes.append(f"{len(scores)} cases scored by the active model < min_cases: scores not judged")
    if len(overrides) >= rules.min_verdicts:
        rate = sum(overrides) / len(overrides)
        out["override_rate"] = round(rate, 6)
        if rate > rules.override_rate:
            breaches.append(f"analysts overrode the model on {rate:.0%} of {len(overrides)} verdicts "
                            f"> {rules.override_rate:.0%}")
    out["breaches"] = tuple(breaches)
    out["note"] = "; ".join(notes)
    return out


def save_training_reference(trained: Any, cases: Any, directory: Path) -> Path:
    """Beside a freshly trained model (`signoff model train`): its drift reference from the OOF scores."""
    ref = build_reference(cases.alerts, trained.manifest["oof"]["benign_confidence"], trained.model_id,
                          str(trained.manifest.get("data", {}).get("name", "training data")))
    return save_reference(trained.model_id, ref, directory / REFERENCE)
