"""Drift over time: past drift checks (their workflow results) drawn as one self-contained HTML page."""

from __future__ import annotations

import html
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


def _chart(alert_type: str, reports: list[DriftReport], thresholds: dict[str, float]) -> str:
    width, height, pad = 720, 220, 40
    points: dict[str, list[tuple[float, float]]] = {k: [] for k, _, _ in SERIES}
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
                    points[key].append((r.at.timestamp(), value))
                    ymax = max(ymax, value)
    ymax = min(ymax * 1.1, 5.0)

    def xy(t: float, v: float) -> tuple[float, float]:
        return pad + (t - t0) / span * (width - 2 * pad), height - pad - min(v, ymax) / ymax * (height - 2 * pad)

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" stroke="#ccc"/>',
             f'<text x="{pad}" y="{pad - 8}" font-size="13">{html.escape(alert_type)}</text>',
             f'<text x="4" y="{pad + 4}" font-size="10">{ymax:.2f}</text>',
             f'<text x="4" y="{height - pad}" font-size="10">0</text>']
    for key, label, colour in SERIES:
        limit = thresholds.get(key.replace("_max", ""))
        if limit is not None and limit <= ymax:
            _, y = xy(t0, limit)
            parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
                         f'stroke-dasharray="4 4" opacity="0.6"><title>{label} threshold {limit:g}</title></line>')
        coords = [xy(t, v) for t, v in points[key]]
        if coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{label} {v:.3f}</title></circle>'
                      for (x, y), (_, v) in zip(coords, points[key], strict=True)]
    legend = " ".join(f'<tspan fill="{c}">■ {lbl}</tspan>' for _, lbl, c in SERIES)
    parts.append(f'<text x="{pad}" y="{height - 10}" font-size="11">{legend} (dashed: policy thresholds)</text>')
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
noise floor to be exceeded; it demotes the alert type to in_the_loop and opens a drift case.</p>
{charts}
<h2>Checks</h2><table><tr><th>at (UTC)</th><th>model</th><th>breaches</th><th>demoted</th><th>drift case</th></tr>{rows}</table>
</body></html>"""
    path.write_text(page)
    return path
