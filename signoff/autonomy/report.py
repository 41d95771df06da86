"""Drift over time: past drift checks (their workflow results) drawn as one self-contained HTML page."""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from signoff.autonomy.models import DriftReport

SERIES = (("feature_psi_max", "max feature PSI", "#d62728"), ("score_psi", "score PSI", "#1f77b4"),
          ("override_rate", "override rate", "#2ca02c"))


async def collect(client: Client, queue: str, limit: int = 200) -> list[DriftReport]:
    from workflows.drift import DriftCheckWorkflow

    query = f"WorkflowType = 'DriftCheckWorkflow' AND TaskQueue = '{queue}' AND ExecutionStatus = 'Completed'"
    reports: list[DriftReport] = []
    async for wf in client.list_workflows(query, limit=limit):
        handle = client.get_workflow_handle_for(DriftCheckWorkflow.run, wf.id, run_id=wf.run_id)
        reports.append(await handle.result())
    return sorted(reports, key=lambda r: r.at)


def _nice_step(raw: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at least `raw`."""
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))


def _time_ticks(t0: float, t1: float, target: int = 6) -> list[float]:
    """Tick times at a round step (hours or days) across [t0, t1]; just t0 when the span is empty."""
    if t1 <= t0:
        return [t0]
    steps = [60.0 * m for m in (1, 5, 15, 30)] + [3600.0 * h for h in (1, 2, 3, 6, 12)] + [86400.0 * d for d in (1, 2, 7, 14, 30, 91, 365)]
    step = next((s for s in steps if (t1 - t0) / s <= target), steps[-1])
    first = math.ceil(t0 / step) * step
    ticks = [first + i * step for i in range(int((t1 - first) // step) + 1)]
    return ticks or [t0]


def _by_model(points: list[tuple[float, float, str]]) -> list[list[tuple[float, float]]]:
    """Consecutive points measured against the same model, as separate line segments."""
    segments: list[list[tuple[float, float]]] = []
    model = None
    for t, v, m in points:
        if m != model or not segments:
            segments.append([])
            model = m
        segments[-1].append((t, v))
    return segments


def _chart(alert_type: str, reports: list[DriftReport], thresholds: dict[str, float]) -> str:
    width, height, pad, left = 720, 240, 40, 50
    points: dict[str, list[tuple[float, float, str]]] = {k: [] for k, _, _ in SERIES}
    t0, t1 = reports[0].at.timestamp(), reports[-1].at.timestamp()
    span = max(t1 - t0, 1.0)
    ymax = 0.5
    for r in reports:
        for f in r.findings:
            if f.alert_type != alert_type:
                continue
            for key, _, _ in SERIES:
                value = getattr(f, key)
                if value is not None:
                    points[key].append((r.at.timestamp(), value, r.model_id))
                    ymax = max(ymax, value)
    ymax = min(ymax * 1.1, 5.0)
    ystep = _nice_step(ymax / 4)
    ymax = ystep * math.ceil(ymax / ystep - 1e-9)

    def xy(t: float, v: float) -> tuple[float, float]:
        return left + (t - t0) / span * (width - left - pad), height - pad - min(v, ymax) / ymax * (height - 2 * pad)

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">',
             f'<rect x="{left}" y="{pad}" width="{width - left - pad}" height="{height - 2 * pad}" fill="none" stroke="#ccc"/>',
             f'<text x="{left}" y="{pad - 8}" font-size="13">{html.escape(alert_type)}</text>']
    for i in range(round(ymax / ystep) + 1):  # y ticks at a round step
        value = i * ystep
        _, y = xy(t0, value)
        parts.append(f'<line x1="{left}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text class="ytick" x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{value:g}</text>')
    for t in _time_ticks(t0, t1):
        x, _ = xy(t, 0.0)
        label = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d" if span >= 3 * 86400 else "%m-%d %H:%M")
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{height - pad}" y2="{height - pad + 4}" stroke="#666"/>'
                     f'<text class="xtick" x="{x:.1f}" y="{height - pad + 15}" font-size="10" text-anchor="middle">'
                     f'{label}</text>')
    for before, after in zip(reports, reports[1:], strict=False):
        if before.model_id != after.model_id:  # each check measures against its own model's reference
            x, _ = xy(after.at.timestamp(), 0.0)
            parts.append(f'<line class="model-change" x1="{x:.1f}" x2="{x:.1f}" y1="{pad}" y2="{height - pad}" '
                         f'stroke="#555" stroke-dasharray="2 3"><title>model {html.escape(after.model_id[:12])} from '
                         f'this check on</title></line><text x="{x - 3:.1f}" y="{pad + 10}" font-size="10" '
                         f'text-anchor="end" fill="#555">model {html.escape(after.model_id[:8])}</text>')
    for key, label, colour in SERIES:
        limit = thresholds.get(key.replace("_max", ""))
        if limit is not None and limit <= ymax:
            _, y = xy(t0, limit)
            parts.append(f'<line x1="{left}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
                         f'stroke-dasharray="4 4" opacity="0.6"><title>{label} threshold {limit:g}</title></line>')
        coords = [xy(t, v) for t, v, _ in points[key]]
        for segment in _by_model(points[key]):  # no line across a model change: the references differ
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(t, v) for t, v in segment))
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if coords:
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{label} {v:.3f}</title></circle>'
                      for (x, y), (_, v, _) in zip(coords, points[key], strict=True)]
    legend = " ".join(f'<tspan fill="{c}">■ {lbl}</tspan>' for _, lbl, c in SERIES)
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="11">{legend} (dashed: policy thresholds; time in UTC)</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_html(reports: list[DriftReport], path: Path) -> Path:
    types = sorted({f.alert_type for r in reports for f in r.findings})
    thresholds = reports[-1].policy_thresholds if reports else {}
    rows = "".join(
        f"<tr><td>{r.at:%Y-%m-%d %H:%M}</td><td>{html.escape(r.model_id[:12])}</td>"
        f"<td>{html.escape(', '.join(f'{f.alert_type}: {b}' for f in r.findings for b in f.breaches)) or 'none'}</td>"
        f"<td>{html.escape(', '.join(r.demoted)) or '-'}</td><td>{html.escape(r.drift_case_id or '-')}</td></tr>"
        for r in reversed(reports)
    )
    charts = "".join(_chart(t, reports, thresholds) for t in types) if len(reports) else "<p>no drift checks yet</p>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Signoff drift over time</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:4px 8px;font-size:13px}}</style>
</head><body><h1>Drift over time</h1>
<p>{len(reports)} drift checks. Inputs: max PSI over content features; scores: PSI of the benign confidence;
override rate: analysts' verdicts against the model (TP or not). A breach needs the policy threshold and the
noise floor to be exceeded; it demotes the alert type to in_the_loop and opens a drift case. Each check measures
against the reference of the model active then: a dotted vertical line marks a model change, and the lines do
not join across it.</p>
{charts}
<h2>Checks</h2><table><tr><th>at (UTC)</th><th>model</th><th>breaches</th><th>demoted</th><th>drift case</th></tr>{rows}</table>
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
