"""Merges in words and records (workflows/case_merge.py): `signoff show`, `signoff explain` (and
`--json`), and the audit export read a case's merges from here, on both sides.

From the history: the source's accepted `merge_into` update (who, when, why, signed, update id) and
its `deliver_merge` activity (what the target answered, or why it failed); the target's
`accept_merge` update (the alerts it took, and whether its score was computed before they came).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signoff.history import DecodedHistory
    from signoff.models import CaseView


def merge_lines(view: CaseView) -> list[str]:
    """`signoff show`: what this case was merged into, and what was merged into it."""
    lines = []
    if (m := view.merged_into) is not None:
        lines.append(f"MERGED into case {m.target} by {m.by} at {m.at:%Y-%m-%d %H:%M} UTC ({m.reason}): "
                     f"{m.alerts} alert(s) sent there; no verdict (nothing goes to the model's feedback)")
        if m.skipped_steps:
            lines.append(f"  skipped, never run: {', '.join(m.skipped_steps)}")
        if m.acted_steps:
            lines.append(f"  still in effect: {', '.join(m.acted_steps)} (`signoff rollback {view.case_id} --as USER "
                         "--reason TEXT` undoes them)")
        if m.handed_over_steps:
            lines.append(f"  handed over to case {m.target}, which holds the same: {', '.join(m.handed_over_steps)} "
                         f"(its rollback undoes them)")
    for f in view.merged_from:
        lines.append(f"merged in: case {f.source} by {f.by} at {f.at:%Y-%m-%d %H:%M} UTC ({f.reason}); "
                     f"{f.alerts_added} alert(s) added of {f.alerts_sent}, {f.entities_added} new entit(ies)")
        if f.after_scoring:
            lines.append(f"  the case's score was computed before case {f.source} was merged in (it is not rescored)")
    for source, count in view.routed_from_merged.items():
        lines.append(f"routed in: {count} later alert(s) correlated to case {source}, which was merged "
                     "(ingest sends them here)")
    return lines


def _iso(when: Any) -> str | None:
    return when.isoformat() if when is not None else None


def merge_explanation(h: DecodedHistory, view: CaseView | None) -> dict[str, Any]:
    """`merged_into` (this case was merged into another: the accepted request and its delivery),
    `merge_failures` (deliveries that failed: the case stayed open) and `merged_from` (cases merged
    into this one), for `signoff explain --json`."""
    deliveries = h.activities_named("deliver_merge")
    merged_into: dict[str, Any] | None = None
    failures: list[dict[str, Any]] = []
    for u in h.updates_named("merge_into"):
        req = u.args[0] if u.args and isinstance(u.args[0], dict) else {}
        if u.failure or not req.get("target"):
            continue
        result = str(u.result or "")
        if result.startswith("not merged"):
            failures.append({"at": _iso(u.accepted_at), "target": req.get("target"), "requested_by": req.get("requested_by"),
                             "reason": req.get("reason"), "result": result})
            continue
        if merged_into is not None:
            continue  # a repeat: the case answered with the first
        run = next((d for d in deliveries if (d.input or {}).get("target") == req["target"] and not d.failure), None)
        record = view.merged_into if view is not None else None
        merged_into = {
            "at": _iso(u.accepted_at), "target": req["target"], "requested_by": req.get("requested_by"),
            "reason": req.get("reason"), "signed": bool(req.get("token")), "identity": u.identity,
            "update_id": u.update_id, "result": u.result,
            "delivered": (run.result if run is not None else None) or (record.delivered if record else ""),
            "alerts": record.alerts if record else None,
            "skipped_steps": list(record.skipped_steps) if record else [],
            "acted_steps": list(record.acted_steps) if record else [],
            "handed_over_steps": list(record.handed_over_steps) if record else [],
        }
    scored = h.activities_named("score_case")
    scored_at = scored[0].event_id if scored and scored[0].result is not None else None
    merged_from: list[dict[str, Any]] = []
    for u in h.updates_named("accept_merge"):
        d = u.args[0] if u.args and isinstance(u.args[0], dict) else {}
        if u.failure or not d.get("source") or any(m["source"] == d["source"] for m in merged_from):
            continue
        batch = d.get("batch") or {}
        alerts = [a for a in batch.get("alerts") or () if isinstance(a, dict) and "uid" in a]
        merged_from.append({
            "at": _iso(u.accepted_at), "source": d["source"], "requested_by": d.get("by"), "reason": d.get("reason"),
            "signed": bool(d.get("signed")), "identity": u.identity, "update_id": u.update_id, "result": u.result,
            "alerts_sent": batch.get("total") or len(alerts), "alert_uids": [a["uid"] for a in alerts],
            "entities": [f"{e.get('type')}:{e.get('value')}" for e in d.get("entities") or () if isinstance(e, dict)],
            "after_scoring": scored_at is not None and u.event_id > scored_at,
            "_alerts": alerts,
        })
    return {"merged_into": merged_into, "merge_failures": failures, "merged_from": merged_from,
            "routed_from_merged": _routed_in(h)}


def _routed_in(h: DecodedHistory) -> list[dict[str, Any]]:
    """Alert batches ingest sent here after correlating them to a merged case (`AlertBatch.via`),
    per that case: when first and last, through which merged cases, how many alerts (a re-sent batch once)."""
    routed: dict[str, dict[str, Any]] = {}
    batches: set[str] = set()
    for s in h.signals_named("add_alerts"):
        batch = s.args[0] if s.args and isinstance(s.args[0], dict) else {}
        via = [str(v) for v in batch.get("via") or ()]
        if not via or (batch.get("batch_id") and batch["batch_id"] in batches):
            continue
        batches.add(batch.get("batch_id") or "")
        entry = routed.setdefault(via[0], {"source": via[0], "via": via, "first_at": _iso(s.at), "alerts_sent": 0,
                                           "alert_uids": []})
        entry["last_at"] = _iso(s.at)
        entry["alerts_sent"] += int(batch.get("total") or 0) or len(batch.get("alerts") or ())
        entry["alert_uids"].extend(a["uid"] for a in batch.get("alerts") or () if isinstance(a, dict) and "uid" in a)
    return list(routed.values())


def with_merged_alerts(ex: dict[str, Any]) -> None:
    """Alerts merged in count as the case's own (marked with the case they came from); the score says
    when it was computed before them (the case is not rescored)."""
    alerts = ex["alerts"]
    known = {a["uid"] for a in alerts["alerts"]}
    for m in ex.get("merged_from", []):
        raw = m.pop("_alerts", [])
        new = [a for a in raw if a["uid"] not in known]
        known.update(a["uid"] for a in new)
        alerts["alerts"].extend(
            {"uid": a["uid"], "time": a.get("time"), "source": a.get("source"), "title": a.get("title"),
             "rule": a.get("rule", ""), "severity": a.get("severity"),
             "entities": [f"{e['type']}:{e['value']}" for e in a.get("entities", ())],
             "joined_because": a.get("joined_because", ""), "merged_from": m["source"]} for a in new)
        alerts["count"] += len(new) + max(int(m["alerts_sent"] or 0) - len(raw), 0)
        alerts["recorded_in_history"] = len(alerts["alerts"])
    late = [m["source"] for m in ex.get("merged_from", []) if m["after_scoring"]]
    if late and ex.get("score"):
        ex["score"]["merged_after_scoring"] = late


def merge_timeline(ex: dict[str, Any]) -> list[tuple[str, str]]:
    items = []
    if m := ex.get("merged_into"):
        items.append((m["at"] or "", f"merged into case {m['target']} by {m['requested_by']}: {m['reason']}"))
    for f in ex.get("merge_failures", []):
        items.append((f["at"] or "", f"merge into case {f['target']} by {f['requested_by']} failed: the case stayed open"))
    for f in ex.get("merged_from", []):
        items.append((f["at"] or "", f"case {f['source']} merged in by {f['requested_by']}: {f['reason']}"))
    for r in ex.get("routed_from_merged", []):
        items.append((r["first_at"] or "", f"alerts correlated to merged case {r['source']} routed here by ingest"))
    return items


def render_merge(ex: dict[str, Any]) -> list[str]:
    """`signoff explain`: the merge lines, under the case's alerts."""
    lines = []
    if m := ex.get("merged_into"):
        lines.append(f"  MERGED into case {m['target']}: {m['at']} by {m['requested_by']}"
                     f"{' (signed)' if m['signed'] else ''} ({m['reason']!r}); its alerts went there; no verdict, "
                     "nothing went to the model's feedback")
        if m["skipped_steps"]:
            lines.append(f"    skipped, never run: {', '.join(m['skipped_steps'])}")
        if m["acted_steps"]:
            lines.append(f"    still in effect after the merge: {', '.join(m['acted_steps'])} "
                         f"(`signoff rollback {ex['case_id']}` undoes them)")
        if m.get("handed_over_steps"):
            lines.append(f"    handed over to case {m['target']}, which holds the same: "
                         f"{', '.join(m['handed_over_steps'])} (its rollback undoes them)")
    for f in ex.get("merge_failures", []):
        lines.append(f"  Merge into case {f['target']} by {f['requested_by']} at {f['at']} FAILED (escalated; the case "
                     "stayed open)")
    for f in ex.get("merged_from", []):
        lines.append(f"  Merged in: case {f['source']} at {f['at']} by {f['requested_by']}"
                     f"{' (signed)' if f['signed'] else ''} ({f['reason']!r}): {f['alerts_sent']} alert(s)")
        if f["after_scoring"]:
            lines.append(f"    this case's score was computed before case {f['source']} was merged in; it includes "
                         "none of its alerts (the case is not rescored)")
    for r in ex.get("routed_from_merged", []):
        lines.append(f"  Routed in: {r['alerts_sent']} later alert(s) correlated to case {r['source']}, which was "
                     f"merged ({' -> '.join([*r['via'], ex['case_id']])}); first {r['first_at']}")
    return lines
