"""Evaluate a model on labelled GUIDE incidents: quality, calibration and auto-close safety.

Auto-close rule (the one the case workflow applies): a case is auto-closed when its
`benign_confidence` (calibrated P(grade is not TruePositive)) is >= the threshold of its alert type.
The threshold is the policy's for that alert type when a human has set one, else the model's
recommendation for the risk budget (read from its out-of-fold training predictions).
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from policies import Policy
from signoff import settings
from signoff.autonomy.models import GovernanceState
from signoff.governance_state import snapshot, versioned
from signoff.scoring import metrics, model_store
from signoff.scoring.features import CLASSES, org_known
from signoff.scoring.scorer import Scorer
from signoff.scoring.train import Progress
from signoff.sources.guide import GuideRead


def recommended_for(model_id: str, risk_budget: float) -> metrics.ThresholdRecommendation:
    """The threshold recommendation for `risk_budget` from the model's OOF training predictions."""
    manifest = model_store.read_manifest(model_id)
    oof = manifest.get("oof")
    if not oof:
        raise ValueError(f"model {model_id[:12]} has no out-of-fold predictions in its manifest; retrain it")
    return metrics.recommend_threshold(
        np.asarray(oof["benign_confidence"], dtype=np.float64),
        np.asarray(oof["true_positive"], dtype=bool),
        risk_budget,
    )


def evaluate(
    read: GuideRead,
    *,
    policy: Policy,
    model_id: str | None = None,
    risk_budget: float = 0.005,
    report: Path | None = None,
    data_sha256: str = "",
    progress: Progress | None = None,
    live: GovernanceState | None = None,
    policy_source: str = "policy file",
) -> dict[str, Any]:
    """`live`: the governance workflow's state (thresholds set with `signoff policy set-threshold`),
    overlaid on `policy` exactly as cases see it; None evaluates at the policy file's values."""
    say = progress or (lambda _msg: None)
    graded = [i for i in read.incidents if i.grade is not None]
    if not graded:
        raise ValueError("no graded incidents (IncidentGrade) in the data: nothing to evaluate against")
    scorer = Scorer.load(model_id)
    say(f"scoring {len(graded)} incidents with model {scorer.model_id[:12]}")
    x = np.vstack([scorer.features(i.alerts) for i in graded])
    results = scorer.score_rows(x)
    index = {c: n for n, c in enumerate(CLASSES)}
    labels = np.asarray([index[i.grade] for i in graded if i.grade is not None], dtype=np.int64)
    probs = np.asarray([[r.probabilities[c.value] for c in CLASSES] for r in results], dtype=np.float64)
    predicted = np.asarray([index[r.predicted] for r in results], dtype=np.int64)
    benign = np.asarray([r.benign_confidence for r in results], dtype=np.float64)
    is_tp = labels == metrics.TP
    macro, per_class = metrics.classification(labels, predicted)

    recommendation = recommended_for(scorer.model_id, risk_budget)
    thresholds = np.empty(len(graded), dtype=np.float64)
    sources: list[str] = []
    alert_types: list[str] = []
    set_by: dict[str, str] = {}
    for n, incident in enumerate(graded):
        alert_type = policy.alert_type_for_category(incident.category)
        governed = snapshot(policy, alert_type, live)
        alert_types.append(alert_type)
        if governed.threshold is not None:
            thresholds[n] = governed.threshold
            sources.append("policy")
            set_by[alert_type] = governed.threshold_set_by
        else:
            thresholds[n] = recommendation.threshold
            sources.append("recommended")
    closed = benign >= thresholds
    k, n_tp = int((closed & is_tp).sum()), int(is_tp.sum())
    source_set = set(sources)
    threshold_source = source_set.pop() if len(source_set) == 1 else "mixed"
    distinct = sorted(set(thresholds.tolist()))
    by_type: dict[str, Any] = {}
    for alert_type, count in sorted(Counter(alert_types).items()):
        mask = np.asarray([t == alert_type for t in alert_types])
        first = int(np.argmax(mask))
        by_type[alert_type] = {
            "threshold": float(thresholds[first]),
            "source": sources[first],
            **({"set_by": set_by[alert_type]} if alert_type in set_by else {}),
            "incidents": count,
            "auto_closed": int(closed[mask].sum()),
            "tp_wrongly_closed": int((closed & is_tp)[mask].sum()),
            "tp_total": int(is_tp[mask].sum()),
        }
    manifest = model_store.read_manifest(scorer.model_id)
    trained_on = manifest.get("data", {}).get("sha256")
    curve = metrics.safety_curve(benign, is_tp)
    report = report or settings.home() / "reports" / f"safety-{scorer.model_id[:12]}.html"
    write_safety_report(report, curve, scorer.model_id, float(distinct[0]) if len(distinct) == 1 else None,
                        k, n_tp, float(closed.mean()))
    out: dict[str, Any] = {
        "incidents": len(graded),
        "ungraded_incidents": len(read.incidents) - len(graded),
        "rows": read.rows,
        "rejected": len(read.rejected),
        "macro_f1": macro,
        "per_class": {name: r.model_dump() for name, r in per_class.items()},
        "accuracy": float((predicted == labels).mean()),
        "ece": metrics.ece_top_label(probs, labels),
        "ece_benign": metrics.ece_binary(benign, ~is_tp),
        "threshold": float(distinct[0]) if len(distinct) == 1 else float(recommendation.threshold),
        "threshold_source": threshold_source,
        "thresholds_by_alert_type": by_type,
        "auto_close_rule": "auto-close when benign_confidence >= threshold",
        "risk_budget": risk_budget,
        "recommended_threshold": recommendation.model_dump(),
        "auto_closed": int(closed.sum()),
        "auto_closed_share": float(closed.mean()),
        "tp_wrongly_closed": k,
        "tp_total": n_tp,
        "tp_wrongly_closed_share": k / n_tp if n_tp else 0.0,
        "tp_wrongly_closed_upper95": metrics.clopper_pearson_upper(k, n_tp),
        "model_sha256": scorer.model_id,
        "data_sha256": data_sha256,
        "safety_curve": str(report),
        "policy_version": versioned(policy, live),
        "policy_source": policy_source,
    }
    known = org_known(x)
    out["by_organisation_history"] = {
        name: _slice_summary(labels[mask], probs[mask], predicted[mask], closed[mask])
        for name, mask in (("known", known), ("never_seen", ~known))
    }
    trained_cases = set(manifest.get("oof", {}).get("case_ids", []))
    overlap = sum(1 for i in graded if i.case_id in trained_cases)
    out["training_overlap"] = overlap
    if (trained_on and data_sha256 and trained_on == data_sha256) or overlap:
        out["warning"] = (
            f"{overlap} of {len(graded)} incidents were in the model's training data: these numbers are "
            "optimistic; measure on new incidents or use `signoff model cv`"
        )
    return out


def _slice_summary(labels: np.ndarray, probs: np.ndarray, predicted: np.ndarray, closed: np.ndarray) -> dict[str, Any]:
    """The headline figures for a subset of the evaluated incidents (e.g. never-seen organisations)."""
    if not len(labels):
        return {"incidents": 0}
    is_tp = labels == metrics.TP
    k, n_tp = int((closed & is_tp).sum()), int(is_tp.sum())
    return {
        "incidents": int(len(labels)),
        "macro_f1": metrics.classification(labels, predicted)[0],
        "ece": metrics.ece_top_label(probs, labels),
        "auto_closed_share": float(closed.mean()),
        "tp_wrongly_closed": k,
        "tp_total": n_tp,
        "tp_wrongly_closed_upper95": metrics.clopper_pearson_upper(k, n_tp),
    }


def write_safety_report(
    path: Path,
    curve: list[metrics.SafetyPoint],
    model_id: str,
    threshold: float | None,
    tp_closed: int,
    tp_total: int,
    share: float,
    title: str | None = None,
    population: str = "incidents",
) -> None:
    """A self-contained HTML page: auto-close share (y) against TPs wrongly closed (x)."""
    width, height, pad = 640, 400, 50
    max_x = max((p.tp_wrongly_closed_share for p in curve), default=0.0) or 1.0
    max_x = min(1.0, max(0.02, max_x))

    def xy(px: float, py: float) -> tuple[float, float]:
        return pad + (width - 2 * pad) * min(px, max_x) / max_x, height - pad - (height - 2 * pad) * py

    points = sorted((p.tp_wrongly_closed_share, p.auto_closed_share) for p in curve)
    line = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(px, py) for px, py in points))
    op_x, op_y = xy(tp_closed / tp_total if tp_total else 0.0, share)
    rows = "".join(
        f"<tr><td>{p.threshold:.4f}</td><td>{p.auto_closed_share:.3f}</td><td>{p.tp_wrongly_closed}</td>"
        f"<td>{p.tp_wrongly_closed_upper95:.4f}</td></tr>"
        for p in curve[:: max(1, len(curve) // 40)]
    )
    title = html.escape(title or f"Signoff safety curve — model {model_id[:12]}")
    chosen = "per alert type (policy)" if threshold is None else f"{threshold:.4f}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}</style></head>
<body><h1>{title}</h1>
<p>Auto-close rule: benign_confidence &gt;= threshold. Operating threshold: {chosen};
auto-closed share {share:.3f}; true positives wrongly closed {tp_closed}/{tp_total}.</p>
<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">
<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#999"/>
<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>
<circle cx="{op_x:.1f}" cy="{op_y:.1f}" r="5" fill="#d62728"/>
<text x="{width / 2}" y="{height - 10}" text-anchor="middle">share of true positives wrongly auto-closed (0 to {max_x:.3f})</text>
<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">auto-closed share of {html.escape(population)} (0 to 1)</text>
</svg>
<table><tr><th>threshold</th><th>auto-closed share</th><th>TPs closed</th><th>TP share upper 95%</th></tr>{rows}</table>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
