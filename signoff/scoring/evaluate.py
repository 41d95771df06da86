"""Evaluate a model on labelled GUIDE incidents: quality, calibration and auto-close safety.

Auto-close rule (the one the case workflow applies): a case is auto-closed when its
`benign_confidence` (calibrated P(grade is not TruePositive)) is >= the threshold of its alert type.
The threshold is the policy's for that alert type when a human has set one, else the model's
recommendation for the risk budget (read from its out-of-fold training predictions); when no
threshold keeps that budget (infeasible recommendation), there is none and nothing auto-closes.

Evaluation is a what-if over every alert type, whatever its autonomy (`autonomy_note` says which
types may close on their own in production).
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

INFEASIBLE = "recommended (infeasible)"
NO_THRESHOLD = "none (infeasible: keep humans in the loop)"


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
    # an infeasible recommendation is no threshold at all: nothing auto-closes (inf is never reached)
    fallback, fallback_source = ((recommendation.threshold, "recommended") if recommendation.feasible
                                 else (float("inf"), INFEASIBLE))
    thresholds = np.empty(len(graded), dtype=np.float64)
    sources: list[str] = []
    alert_types: list[str] = []
    set_by: dict[str, str] = {}
    autonomy: dict[str, str] = {}
    for n, incident in enumerate(graded):
        alert_type = policy.alert_type_for_category(incident.category)
        governed = snapshot(policy, alert_type, live)
        alert_types.append(alert_type)
        autonomy[alert_type] = governed.autonomy
        if governed.threshold is not None:
            thresholds[n] = governed.threshold
            sources.append("policy")
            set_by[alert_type] = governed.threshold_set_by
        else:
            thresholds[n] = fallback
            sources.append(fallback_source)
    closed = benign >= thresholds
    k, n_tp = int((closed & is_tp).sum()), int(is_tp.sum())
    source_set = set(sources)
    threshold_source = source_set.pop() if len(source_set) == 1 else "mixed"
    distinct = sorted(set(thresholds.tolist()))
    # one number only when one threshold applied to every incident; else see thresholds_by_alert_type
    single = float(distinct[0]) if len(distinct) == 1 and np.isfinite(distinct[0]) else None
    by_type: dict[str, Any] = {}
    for alert_type, count in sorted(Counter(alert_types).items()):
        mask = np.asarray([t == alert_type for t in alert_types])
        first = int(np.argmax(mask))
        by_type[alert_type] = {
            "threshold": float(thresholds[first]) if np.isfinite(thresholds[first]) else None,
            "source": sources[first],
            "set_by": set_by.get(alert_type),
            "autonomy": autonomy[alert_type],
            "incidents": count,
            "auto_closed": int(closed[mask].sum()),
            "tp_wrongly_closed": int((closed & is_tp)[mask].sum()),
            "tp_total": int(is_tp[mask].sum()),
            "tp_wrongly_closed_upper95": metrics.clopper_pearson_upper(int((closed & is_tp)[mask].sum()),
                                                                       int(is_tp[mask].sum())),
        }
    manifest = model_store.read_manifest(scorer.model_id)
    trained_on = manifest.get("data", {}).get("sha256")
    curve = metrics.safety_curve(benign, is_tp)
    report = report or settings.home() / "reports" / f"safety-{scorer.model_id[:12]}.html"
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
        "threshold": single,
        "threshold_source": threshold_source,
        "thresholds_by_alert_type": by_type,
        "autonomy_note": autonomy_note(policy, live),
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
    out["within_risk_budget"] = out["tp_wrongly_closed_upper95"] <= risk_budget
    write_safety_report(report, curve, scorer.model_id, single, k, n_tp, float(closed.mean()),
                        risk_budget=risk_budget, operating=_operating_label(single, threshold_source, by_type),
                        warning=out.get("warning"))
    return out


def autonomy_note(policy: Policy, live: GovernanceState | None) -> str:
    """Evaluation is a what-if: it auto-closes every alert type at its threshold. Say which types
    actually may close on their own now (on the loop), and where that autonomy was read from."""
    on_loop = sorted(name for name in policy.alert_types if snapshot(policy, name, live).autonomy == "on_the_loop")
    where = (f"autonomy from live governance (revision {live.revision})" if live is not None
             else "autonomy as in the policy file, since the live governance state was not read: see policy_source")
    now = (f"only types on the loop do: {', '.join(on_loop)}" if on_loop
           else "no type does: every alert type is in the loop")
    return f"what-if: every alert type auto-closes at its threshold; in production {now} ({where})"


def _operating_label(single: float | None, source: str, by_type: dict[str, Any]) -> str:
    if single is not None:
        return f"{single:.4f} ({source})"
    if source == INFEASIBLE:
        return NO_THRESHOLD
    return "per alert type: " + ", ".join(
        f"{name} {'none' if t['threshold'] is None else format(t['threshold'], '.4f')}" for name, t in by_type.items()
    )


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


def _nice_step(span: float, target: int = 5) -> float:
    """A 1/2/2.5/5 x 10^k step giving about `target` intervals over `span`."""
    raw = span / target
    magnitude = 10.0 ** np.floor(np.log10(raw))
    return float(next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw))


def _pct_label(value: float) -> str:
    return f"{value * 100:.2f}".rstrip("0").rstrip(".") + "%"


def _clip(points: list[tuple[float, float]], max_x: float) -> list[tuple[float, float]]:
    """The curve (sorted by x) up to x = max_x, ending exactly on the edge when it goes beyond."""
    kept = [p for p in points if p[0] <= max_x]
    beyond = next((p for p in points if p[0] > max_x), None)
    if beyond is not None:
        if kept:
            (x0, y0), (x1, y1) = kept[-1], beyond
            kept.append((max_x, y0 + (y1 - y0) * (max_x - x0) / (x1 - x0)))
        else:
            kept.append((max_x, beyond[1]))
    return kept


def _budget_verdict(curve: list[metrics.SafetyPoint], tp_total: int, op_upper: float | None,
                    risk_budget: float | None) -> str:
    """What the operating threshold risks, at its 95% bound, against the budget; and whether this data
    can show any threshold keeps the budget (with few true positives even none closed cannot)."""
    if risk_budget is None or not tp_total:
        return ""
    lines: list[str] = []
    if op_upper is not None:
        within = op_upper <= risk_budget
        lines.append(f'<p id="operating-verdict" class="{"within" if within else "over"}"><b>At the operating threshold'
                     f': 95% upper bound {op_upper:.2%} of true positives auto-closed, '
                     f'{"within" if within else "over"} the risk budget {_pct_label(risk_budget)}.</b></p>')
    best = min((p.tp_wrongly_closed_upper95 for p in curve), default=1.0)
    if best > risk_budget:
        needed = metrics.tp_needed_for_budget(risk_budget)
        lines.append(f'<p id="infeasible" class="over"><b>No threshold can be shown to keep the budget on this data:</b> '
                     f'with {tp_total} true positives even none closed gives a 95% upper bound of {best:.2%}; '
                     f'that takes at least {needed} true positives with none closed. Read the measured share as '
                     f'a hint, not as evidence.</p>')
    return "\n".join(lines)


def _warning_html(warning: str | None) -> str:
    return f'<p id="warning" class="over"><b>Warning:</b> {html.escape(warning)}</p>' if warning else ""


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
    risk_budget: float | None = None,
    operating: str | None = None,
    warning: str | None = None,
) -> None:
    """A self-contained HTML page: auto-close share (y) against TPs wrongly closed (x).

    The x axis is zoomed to where decisions are made: 0 .. max(4 x risk budget, the operating point and
    its 95% upper bound, the lowest 95% upper bound of the curve, 2%). `risk_budget` draws the budget line (None: no line); `operating` describes
    the operating threshold (default: `threshold`, or "none set" when None); `warning` is shown above
    the chart (e.g. the data was the model's training data)."""
    width, height = 720, 440
    left, right, top, bottom = 70, 30, 30, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    op_share = tp_closed / tp_total if tp_total else 0.0
    closes_nothing = threshold is None and operating in (None, NO_THRESHOLD)  # no line: no bound to draw for it
    op_upper = metrics.clopper_pearson_upper(tp_closed, tp_total) if tp_total and not closes_nothing else None
    lowest_upper = min((p.tp_wrongly_closed_upper95 for p in curve), default=0.0)  # so the dotted bound shows
    wanted = max(4 * (risk_budget or 0.0), 1.15 * op_share, 1.15 * (op_upper or 0.0), 1.15 * lowest_upper, 0.02)
    step = _nice_step(min(wanted, 1.0))
    max_x = min(1.0, step * float(np.ceil(wanted / step - 1e-9)))

    def xy(px: float, py: float) -> tuple[float, float]:
        return left + plot_w * min(px, max_x) / max_x, top + plot_h * (1.0 - py)

    def polyline(points: list[tuple[float, float]]) -> str:
        return " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(px, py) for px, py in _clip(points, max_x)))

    estimate = sorted((p.tp_wrongly_closed_share, p.auto_closed_share) for p in curve)
    upper = sorted((p.tp_wrongly_closed_upper95, p.auto_closed_share) for p in curve)
    op_x, op_y = xy(op_share, share)
    chosen = operating or ("none set" if threshold is None else f"{threshold:.4f}")
    marker = f"threshold {chosen}" if len(chosen) <= 48 else "thresholds per alert type (listed above)"
    svg: list[str] = [
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    ticks_x = [i * step for i in range(int(round(max_x / step)) + 1)]
    for value in ticks_x:
        x, _ = xy(value, 0.0)
        svg.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>'
                   f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}" stroke="#666"/>'
                   f'<text class="xtick" x="{x:.1f}" y="{top + plot_h + 17}" text-anchor="middle">{_pct_label(value)}</text>')
    for i in range(6):
        value = i / 5
        _, y = xy(0.0, value)
        svg.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<line x1="{left - 5}" x2="{left}" y1="{y:.1f}" y2="{y:.1f}" stroke="#666"/>'
                   f'<text class="ytick" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_pct_label(value)}</text>')
    if risk_budget is not None and 0.0 < risk_budget <= max_x:
        bx, _ = xy(risk_budget, 0.0)
        svg.append(f'<line id="risk-budget" x1="{bx:.1f}" x2="{bx:.1f}" y1="{top}" y2="{top + plot_h}" stroke="#ff7f0e" '
                   f'stroke-width="1.5" stroke-dasharray="6 4"><title>risk budget {_pct_label(risk_budget)}</title></line>'
                   f'<text x="{bx + 4:.1f}" y="{top + 12}" fill="#ff7f0e">risk budget {_pct_label(risk_budget)}</text>')
    svg.append(f'<polyline points="{polyline(upper)}" fill="none" stroke="#1f77b4" stroke-width="1.5" '
               'stroke-dasharray="2 3" opacity="0.8"/>')
    svg.append(f'<polyline points="{polyline(estimate)}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for p in curve:
        if p.tp_wrongly_closed_share <= max_x:
            cx, cy = xy(p.tp_wrongly_closed_share, p.auto_closed_share)
            svg.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2" fill="#1f77b4"><title>threshold {p.threshold:.4f}: '
                       f'auto-closed {p.auto_closed_share:.1%}, TPs closed {p.tp_wrongly_closed}/{p.tp_total} '
                       f'(upper 95% {p.tp_wrongly_closed_upper95:.2%})</title></circle>')
    anchor = "end" if op_x > left + plot_w * 0.6 else "start"
    dx = -8 if anchor == "end" else 8
    if op_upper is not None:
        ux, _ = xy(op_upper, share)
        svg.append(f'<line id="operating-upper" x1="{op_x:.1f}" x2="{ux:.1f}" y1="{op_y:.1f}" y2="{op_y:.1f}" '
                   f'stroke="#d62728" stroke-width="1.5" stroke-dasharray="2 3"><title>95% upper bound at the operating '
                   f'threshold: {op_upper:.2%}</title></line>'
                   f'<line x1="{ux:.1f}" x2="{ux:.1f}" y1="{op_y - 5:.1f}" y2="{op_y + 5:.1f}" stroke="#d62728" '
                   'stroke-width="1.5"/>')
    svg.append(f'<circle id="operating-point" cx="{op_x:.1f}" cy="{op_y:.1f}" r="5" fill="#d62728"/>'
               f'<text x="{op_x + dx:.1f}" y="{op_y + (14 if op_y < top + 20 else -8):.1f}" text-anchor="{anchor}" '
               f'fill="#d62728">{html.escape(marker)}</text>')
    svg.append(f'<text x="{left + plot_w / 2}" y="{height - 28}" text-anchor="middle" font-size="12">share of true '
               f'positives wrongly auto-closed (zoomed: 0 to {_pct_label(max_x)})</text>')
    svg.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" text-anchor="middle" '
               f'font-size="12">auto-closed share of {html.escape(population)}</text>')
    legend = ('<tspan fill="#1f77b4">━ measured share</tspan>  <tspan fill="#1f77b4">┄ 95% upper bound</tspan>'
              + ('  <tspan fill="#ff7f0e">╎ risk budget</tspan>' if risk_budget is not None else '')
              + '  <tspan fill="#d62728">● operating point ┄┤ its 95% upper bound</tspan>')
    svg.append(f'<text class="legend" x="{left}" y="{height - 8}">{legend}</text></svg>')
    rows = "".join(
        f"<tr><td>{p.threshold:.4f}</td><td>{p.auto_closed_share:.3f}</td><td>{p.tp_wrongly_closed}</td>"
        f"<td>{p.tp_wrongly_closed_upper95:.4f}</td></tr>"
        for p in curve[:: max(1, len(curve) // 40)]
    )
    title = html.escape(title or f"Signoff safety curve — model {model_id[:12]}")
    budget = (f" Risk budget {_pct_label(risk_budget)}: a threshold is within it when its 95% upper bound "
              "(dotted) is left of the dashed line." if risk_budget is not None else "")
    verdict = _budget_verdict(curve, tp_total, op_upper, risk_budget)
    if threshold is None and chosen.startswith("per alert type"):
        budget += (" The curve applies one threshold to every case; with thresholds that differ by alert type the"
                    " operating point can lie off it.")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}.over{{color:#b00}}</style></head>
<body><h1>{title}</h1>
<p>Auto-close rule: benign_confidence &gt;= threshold. Operating threshold: {html.escape(chosen)};
auto-closed share {share:.3f}; true positives wrongly closed {tp_closed}/{tp_total}.{budget}</p>
{verdict}{_warning_html(warning)}
{"".join(svg)}
<p>Hover a point for its threshold. Thresholds closing more true positives than {_pct_label(max_x)} are off the
chart: see the table.</p>
<table><tr><th>threshold</th><th>auto-closed share</th><th>TPs closed</th><th>TP share upper 95%</th></tr>{rows}</table>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
