"""`signoff governance report`: the five questions a SOC lead asks, answered from live state and histories.

1. Where do humans sit in the loop for each alert type, and who moved that line, when?
2. Does every decision trace back to its data and feedback? (audit coverage, last verify result)
3. How fast can a decision be rolled back? (measured: rollback request -> last compensation done)
4. Which actions need approval, at which tier? (policy tiers + playbooks/actions.py declarations)
5. Who controls the automation thresholds? (current values, who set them, when, why)
6. How fast do cases get a verdict? (time to verdict by severity against the policy's verdict_sla)

Sources: the governance workflow's state (query), governance and case workflow histories (live
and archived), the policy file as the fallback, and the audit folder's verify results.
"""

from __future__ import annotations

import asyncio
import html
import math
import statistics
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client

from signoff.audit import CASE_TYPE, GOVERNANCE_TYPE, collect_histories, governance_events, last_verification
from signoff.explain import explanation_from_history

LINE_KINDS = ("autonomy", "threshold", "threshold_revert", "drift")


def _iso(at: Any) -> str | None:
    if at is None:
        return None
    return at.isoformat() if isinstance(at, datetime) else str(at)


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "median": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"count": len(values), "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


async def _governance_state(client: Client, task_queue: str | None) -> Any:
    try:
        from signoff.autonomy.client import read_state
    except ImportError:
        return None
    try:
        return await asyncio.wait_for(read_state(client, task_queue), timeout=10)
    except Exception:  # no governance workflow, or no worker to answer: fall back to histories
        return None


def _governance_id(task_queue: str | None) -> str:
    try:
        from signoff.autonomy.client import governance_id
    except ImportError:
        return "signoff-governance"
    return governance_id(task_queue)


def _events_from_state(state: Any) -> list[dict[str, Any]]:
    return [{"at": _iso(e.at), "kind": e.kind, "alert_type": e.alert_type, "by": e.by, "reason": e.reason,
             "before": e.before, "after": e.after, "accepted": e.accepted, "revision": e.revision}
            for e in state.events]


def _events_from_histories(histories: list[Any]) -> list[dict[str, Any]]:
    found = []
    for h in histories:
        for e in governance_events(h):
            req = e["detail"].get("request") or {}
            kind = {"autonomy_change": "autonomy", "threshold_change": "threshold", "drift_report": "drift",
                    "model_promotion": "model_promote", "model_rollback": "model_rollback",
                    "model_candidate": "candidate"}.get(e["kind"], e["kind"])
            after = req.get("level") or (req.get("value") if "value" in req else "")
            found.append({"at": e["at"], "kind": kind, "alert_type": req.get("alert_type", ""), "by": e["actor"],
                          "reason": req.get("reason", ""), "before": "", "after": "" if after is None else str(after),
                          "accepted": e["detail"]["outcome"] == "accepted", "revision": None})
    return found


def _verify_word(lv: dict[str, Any]) -> str:
    """OK / OK, NOT ANCHORED (nothing but its own hashes vouched for the file) / TAMPERED."""
    if not lv["ok"]:
        return "TAMPERED"
    return "OK, NOT ANCHORED" if lv.get("anchor") == "none" else "OK"


def _parse(at: Any) -> datetime | None:
    if not at:
        return None
    try:
        parsed = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _undo_rollbacks(h: Any) -> list[dict[str, Any]]:
    """Each run of a rollback after close: its row for the report (request -> last compensation of the
    run) and the time each of its compensations took."""
    from signoff.undo import UNDO_SUFFIX
    from signoff.undo_audit import undo_explanation_from_history

    ex = undo_explanation_from_history(h)
    done = [(c, _parse(c["started_at"]), _parse(c["completed_at"])) for c in ex["compensations"]
            if c["completed_at"] and c["started_at"] and not c["failure"]]
    out = []
    for run in ex["runs"]:
        start, end = _parse(run.get("started_at")), _parse(run.get("finished_at"))
        if start is None:
            continue
        mine = [(c, s, e) for c, s, e in done if s is not None and e is not None and s >= start
                and (end is None or s <= end)]
        last = max((e for _, _, e in mine if e is not None), default=None)
        if last is None:
            continue
        # Measured from the request that started the run (the in-case measure starts at the request too).
        asked = [t for t in (_parse(r["at"]) for r in ex["requests"] if not r["refusal"]) if t is not None and t <= start]
        start = max(asked, default=start)
        out.append({"row": {"case_id": h.workflow_id.removesuffix(UNDO_SUFFIX), "at": _iso(start),
                            "requested_by": ", ".join(run.get("requested_by") or []),
                            "reason": "; ".join(run.get("reasons") or []), "compensations": len(mine),
                            "seconds": (last - start).total_seconds(), "after_close": True},
                    "compensations": [(c["undoes"] or "?", (e - s).total_seconds()) for c, s, e in mine
                                      if s is not None and e is not None]})
    return out


async def build_report(client: Client, task_queue: str | None = None) -> dict[str, Any]:
    from playbooks import get_playbook
    from playbooks.actions import ACTIONS
    from policies.loader import load_policy

    policy = load_policy()
    state = await _governance_state(client, task_queue)
    from signoff.undo import UNDO_TYPE

    collected = await collect_histories(client, (CASE_TYPE, GOVERNANCE_TYPE, UNDO_TYPE))
    cases = [h for h in collected.histories if h.workflow_type == CASE_TYPE]
    undos = [h for h in collected.histories if h.workflow_type == UNDO_TYPE]
    gov_histories = [h for h in collected.histories if h.workflow_type == GOVERNANCE_TYPE
                     and h.workflow_id == _governance_id(task_queue)]
    events = _events_from_state(state) if state is not None else _events_from_histories(gov_histories)
    events.sort(key=lambda e: e["at"] or "")
    explanations = [explanation_from_history(h) for h in cases]

    # 1. humans in the loop, per alert type
    decisions: dict[str, dict[str, int]] = {}
    for ex in explanations:
        at = (ex.get("governance") or {}).get("alert_type") or ex["case"].get("alert_type") or "?"
        kind = (ex.get("decision") or {}).get("kind") or "pending"
        decisions.setdefault(at, {}).setdefault(kind, 0)
        decisions[at][kind] += 1
    alert_types = []
    for name, rule in sorted(policy.alert_types.items()):
        live = state.alert_types.get(name) if state is not None else None
        autonomy, autonomy_by, autonomy_at = rule.autonomy, "policy file", None
        threshold, threshold_by, threshold_at = rule.threshold, "policy file", None
        if live is not None and live.autonomy is not None:
            autonomy, autonomy_by, autonomy_at = live.autonomy, live.autonomy_by, _iso(live.autonomy_at)
        if live is not None and live.threshold_set:
            threshold, threshold_by, threshold_at = live.threshold, live.threshold_by, _iso(live.threshold_at)
        last_threshold = next((e for e in reversed(events) if e["alert_type"] == name and e["accepted"]
                               and e["kind"] in ("threshold", "threshold_revert")), None)
        counts = decisions.get(name, {})
        total = sum(counts.values())
        try:
            gated = [s.step_id for s in get_playbook(rule.playbook).steps
                     if not policy.tiers[_effective(policy, s.action.name)].auto]
        except Exception:  # a playbook missing from this build: report it, do not fail
            gated = []
        alert_types.append({
            "alert_type": name, "playbook": rule.playbook, "autonomy": autonomy, "autonomy_by": autonomy_by,
            "autonomy_at": autonomy_at, "threshold": threshold, "threshold_by": threshold_by,
            "threshold_at": threshold_at, "threshold_reason": last_threshold["reason"] if last_threshold else "",
            "gated_steps": gated, "cases": total, "decisions": counts,
            "human_share": (1 - counts.get("auto_close", 0) / total) if total else None,
        })
    # QA5: a kill switch or drift breach that found an alert type already in the loop is recorded (it pins
    # the level over the policy file) but did not move the line: counted apart, not listed as a move.
    line_moves = [e for e in events if e["kind"] in LINE_KINDS and not _unchanged(e)]
    line_pins = sum(1 for e in events if e["kind"] in LINE_KINDS and _unchanged(e))

    # 2. traceability
    complete = [ex for ex in explanations if ex["complete_decision_record"]]
    closed_by_people = _closed_by_people(explanations)
    with_feedback = [ex for ex in closed_by_people if ex["verdicts"]]
    traceability = {
        "cases": len(explanations), "complete_decision_records": len(complete),
        "coverage": len(complete) / len(explanations) if explanations else None,
        "incomplete": [ex["case_id"] for ex in explanations if not ex["complete_decision_record"]][:20],
        "closed_by_people": len(closed_by_people), "with_feedback": len(with_feedback),
        "live_histories": collected.live, "archived_histories": collected.archived,
        "last_verify": last_verification(),
    }

    # 3. rollback speed
    rollbacks: list[dict[str, Any]] = []
    compensation_seconds: dict[str, list[float]] = {}
    for ex in explanations:
        for rb in ex["rollbacks"]:
            if rb["seconds_to_last_compensation"] is not None:
                rollbacks.append({"case_id": ex["case_id"], "at": rb["at"], "requested_by": rb["requested_by"],
                                  "reason": rb["reason"], "compensations": rb["compensations"],
                                  "seconds": rb["seconds_to_last_compensation"]})
        for c in ex["compensations"]:
            if c["completed_at"] and c["started_at"] and not c["failure"]:
                took = (datetime.fromisoformat(c["completed_at"]) - datetime.fromisoformat(c["started_at"])).total_seconds()
                compensation_seconds.setdefault(c["undoes"] or "?", []).append(took)
    # Rollbacks after a case ended (`CASE-undo`): counted and measured too (QA8: the report left them
    # out while the audit export listed them).
    for h in undos:
        for rb in _undo_rollbacks(h):
            rollbacks.append(rb["row"])
            for undoes, took in rb["compensations"]:
                compensation_seconds.setdefault(undoes, []).append(took)
    rollback = {
        "rollbacks": sorted(rollbacks, key=lambda r: r["at"] or ""),
        "seconds": _stats([r["seconds"] for r in rollbacks]),
        "per_action": {k: _stats(v) for k, v in sorted(compensation_seconds.items())},
    }

    # 4. approval matrix
    tiers = {t.value: {"auto": tr.auto, "quorum": 0 if tr.auto else tr.quorum, "roles": list(tr.roles),
                       "requester_may_approve": tr.requester_may_approve, "timeout": tr.timeout,
                       "escalation": _chain(tr)}
             for t, tr in policy.tiers.items()}
    actions = []
    for spec in sorted(ACTIONS.values(), key=lambda a: (_tier_rank(_effective(policy, a.name).value), a.name)):
        eff = _effective(policy, spec.name)
        tier_rule = policy.tiers[eff]
        actions.append({"action": spec.name, "target": spec.target_kind, "declared_tier": spec.tier.value,
                        "tier": eff.value, "reversibility": spec.reversibility.value,
                        "compensation": spec.compensation, "auto": tier_rule.auto,
                        "quorum": 0 if tier_rule.auto else tier_rule.quorum, "roles": list(tier_rule.roles),
                        "timeout": None if tier_rule.auto else tier_rule.timeout,
                        "escalation": None if tier_rule.auto else _chain(tier_rule), "description": spec.description})

    # 5. who controls the thresholds
    governors = sorted(user for user, a in policy.approvers.items() if set(a.roles) & set(policy.governance_roles))
    model_events = [e for e in events if e["kind"] in ("model_promote", "model_rollback", "candidate")]
    model_now = (state.model.active if state is not None else None) or MODEL_STORE_DEFAULT
    control = {
        "governance_roles": list(policy.governance_roles), "people": governors,
        "kill_switch_roles": list(getattr(policy.autonomy, "kill_switch_roles", ()) or ()) if policy.autonomy else [],
        "thresholds": [{**{k: a[k] for k in ("alert_type", "threshold", "threshold_by", "threshold_at",
                                             "threshold_reason")},
                        "model_when_set": _model_at(_iso(a["threshold_at"]), model_events, model_now)}
                       for a in alert_types],
        "refused_changes": [e for e in events if not e["accepted"]][-20:],
        "model": {"active": state.model.active if state is not None else None, "now": model_now,
                  "candidate": state.model.candidate if state is not None else None,
                  "events": model_events[-20:]},
        "governance_revision": state.revision if state is not None else 0,
    }
    return {
        "generated_at": datetime.now(UTC).isoformat(), "namespace": client.namespace,
        "policy_version": policy.digest(), "governance_source": "governance workflow" if state is not None
        else ("governance histories" if gov_histories else "policy file only"),
        "humans_in_the_loop": {"alert_types": alert_types, "line_moves": line_moves,
                              "already_in_the_loop": line_pins},
        "traceability": traceability, "rollback": rollback,
        "approvals": {"tiers": tiers, "irreversible_tier": policy.irreversible_tier.value, "actions": actions},
        "threshold_control": control,
        "time_to_verdict": _time_to_verdict(explanations, policy, datetime.now(UTC)),
    }


MODEL_STORE_DEFAULT = "model store default"  # how governance names "no model promoted through it"


def _model_at(at: str | None, model_events: list[dict[str, Any]], now: str) -> str | None:
    """The model that scored cases when a threshold was set (None: a policy file value, set for no model).

    A threshold is a line on one model's scores; the report flags one whose model has changed since."""
    if at is None:
        return None
    changes = [e for e in model_events if e["accepted"] and e["kind"] in ("model_promote", "model_rollback")]
    before = [e for e in changes if (e["at"] or "") <= at]
    if before:
        return str(before[-1]["after"] or MODEL_STORE_DEFAULT)
    after = [e for e in changes if (e["at"] or "") > at]
    return str(after[0]["before"] or MODEL_STORE_DEFAULT) if after else now


def _model_changed(th: dict[str, Any], model: dict[str, Any]) -> bool:
    return bool(th.get("model_when_set")) and th["model_when_set"] != model.get("now")


def _short(model: str) -> str:
    return "the model store's default model" if model == MODEL_STORE_DEFAULT else model[:12]


def _unchanged(event: dict[str, Any]) -> bool:
    """An accepted autonomy or drift record whose level was already the one it set."""
    return bool(event["accepted"]) and event["kind"] in ("autonomy", "drift") and event["before"] == event["after"]


def _closed_by_people(explanations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ended cases a person had to decide: not closed by the model, and not merged into another case
    (QA9: a merged case has no verdict by design, the case it went to carries it)."""
    return [ex for ex in explanations if ex["workflow_status"] != "running" and not ex.get("merged_into")
            and (ex.get("decision") or {}).get("kind") != "auto_close"]


def _time_to_verdict(explanations: list[dict[str, Any]], policy: Any, now: datetime) -> list[dict[str, Any]]:
    """Per severity, for cases that went to a human: open to verdict (seconds), verdicts within the
    policy's verdict_sla or late, the open ones and how many of them are past it, and how many
    escalated as overdue (the case's own record, under the policy it decided under)."""
    from policies.engine import SEVERITIES, parse_duration

    rows: dict[str, dict[str, Any]] = {}
    for ex in explanations:
        kind = (ex.get("decision") or {}).get("kind")
        if kind in (None, "auto_close") or not ex.get("opened_at"):
            continue  # still in triage or closed by the model: no verdict was due (a merged case counts as merged)
        severity = ex["case"].get("severity") or "medium"
        # QA6: each case is judged by the SLA of the policy it decided under (recorded in its history),
        # not by the reader's policy file: a report run with another file called 77 escalated cases
        # "0 past due", or 360 cases under a 24h SLA past a 1m one.
        recorded = (ex.get("governance") or {}).get("verdict_sla")
        sla_text = recorded.get(severity) if isinstance(recorded, dict) else policy.verdict_sla.get(severity)
        sla = parse_duration(sla_text) if sla_text else None
        row = rows.setdefault(severity, {"seconds": [], "within_sla": 0, "late": 0, "open": 0, "open_overdue": 0,
                                         "closed_without_verdict": 0, "merged": 0, "escalated_overdue": 0,
                                         "slas": set()})
        if sla_text:
            row["slas"].add(sla_text)
        opened = datetime.fromisoformat(ex["opened_at"])
        row["escalated_overdue"] += any(e.get("kind") == "verdict_overdue" for e in ex["escalations"])
        given = next((v for v in ex["verdicts"] if v["accepted"] is not False and v["at"]), None)
        if given is not None:
            took = (datetime.fromisoformat(given["at"]) - opened).total_seconds()
            row["seconds"].append(took)
            if sla is not None:
                row["within_sla" if took <= sla.total_seconds() else "late"] += 1
        elif ex.get("merged_into"):  # QA9: its verdict is the target's; neither late nor a missing verdict
            row["merged"] += 1
        elif ex["workflow_status"] == "running":
            row["open"] += 1
            row["open_overdue"] += sla is not None and now - opened > sla
        else:  # ended with no verdict (idle close, terminated): the worst breach, never "within"
            row["closed_without_verdict"] += 1
            row["late"] += sla is not None
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return [{"severity": severity, "sla": _sla_label(row.pop("slas"), policy.verdict_sla.get(severity)),
             "verdicts": _stats(row.pop("seconds")), **row}
            for severity, row in sorted(rows.items(), key=lambda kv: order.get(kv[0], len(order)))]


def _chain(rule: Any) -> str:
    """When a waiting step escalates and whom it tells: "after 4h (lead), after 12h (ir_manager)", or
    "after 4h" for a tier with a timeout alone. Telling someone never lets them approve."""
    levels = getattr(rule, "escalation", ()) or ()
    if not levels:
        return f"after {rule.timeout}"
    return ", ".join(f"after {lv.after}" + (f" ({'/'.join(lv.notify)})" if lv.notify else "") for lv in levels)


def _sla_label(recorded: set[str], in_file: str | None) -> str | None:
    """The SLA the cases of a severity were judged by: one value, or each one when policies changed."""
    from policies.engine import parse_duration

    if not recorded:
        return in_file
    if len(recorded) == 1:
        return next(iter(recorded))
    return " / ".join(sorted(recorded, key=parse_duration)) + " (by the policy each case decided under)"


def _effective(policy: Any, action: str) -> Any:
    from playbooks.actions import ACTIONS

    spec = ACTIONS[action]
    return policy.irreversible_tier if spec.reversibility.value == "irreversible" else spec.tier


def _tier_rank(tier: str) -> int:
    return {"low": 0, "high": 1, "critical": 2}.get(tier, 3)


# ---------------------------------------------------------------- text


def _fmt_s(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def render_text(r: dict[str, Any]) -> str:
    lines = [f"Signoff governance report, {r['generated_at']} (namespace {r['namespace']}, "
             f"policy {r['policy_version'][:12]}, governance from {r['governance_source']})", ""]
    add = lines.append
    add("1. Where humans sit in the loop")
    for a in r["humans_in_the_loop"]["alert_types"]:
        thr = "none" if a["threshold"] is None else f"{a['threshold']:.4f}"
        add(f"   {a['alert_type']:<22} {a['autonomy']:<12} threshold {thr:<8} (autonomy by {a['autonomy_by']}, "
            f"threshold by {a['threshold_by']}); {a['cases']} case{'' if a['cases'] == 1 else 's'}; "
            f"gated steps: {', '.join(a['gated_steps']) or '-'}")
    moves = r["humans_in_the_loop"]["line_moves"]
    if len(moves) > 10:
        add(f"   (the last 10 of {len(moves)} changes of the line; all are in --json and `signoff policy history`)")
    if pins := r["humans_in_the_loop"].get("already_in_the_loop"):
        add(f"   ({pins} demotion(s) found the alert type already in the loop: recorded, the line did not move)")
    for m in moves[-10:]:
        add(f"   moved {m['at']}: {m['kind']} {m['alert_type']} {m['before']} -> {m['after']} by {m['by']} ({m['reason']})"
            + ("" if m["accepted"] else " REFUSED"))
    t = r["traceability"]
    cov = "n/a" if t["coverage"] is None else f"{t['coverage']:.0%}"
    add("2. Does every decision trace back?")
    add(f"   {t['complete_decision_records']}/{t['cases']} cases have a complete decision record ({cov}); "
        f"{t['with_feedback']}/{t['closed_by_people']} human-handled closed cases carry analyst feedback")
    lv = t["last_verify"]
    add("   last audit verify: " + ("never run" if not lv else f"{_verify_word(lv)} at {lv['at']} "
                                   f"({lv['records']} records, {lv['file']})"))
    rb = r["rollback"]
    add("3. How fast can a decision be rolled back?")
    add(f"   {rb['seconds']['count']} rollbacks measured: median {_fmt_s(rb['seconds']['median'])}, "
        f"p95 {_fmt_s(rb['seconds']['p95'])}, max {_fmt_s(rb['seconds']['max'])} (request -> last compensation)")
    add("4. Which actions need approval at which tier")
    for a in r["approvals"]["actions"]:
        need = "automatic" if a["auto"] else f"quorum {a['quorum']} of {'/'.join(a['roles'])}, escalates {a['escalation']}"
        add(f"   {a['action']:<22} {a['tier']:<9} {a['reversibility']:<12} undo: {a['compensation'] or 'none'}; {need}")
    c = r["threshold_control"]
    add("5. Who controls the automation thresholds")
    add(f"   roles {', '.join(c['governance_roles'])}: {', '.join(c['people'])}")
    model = c["model"]
    for th in c["thresholds"]:
        value = "none" if th["threshold"] is None else th["threshold"]
        add(f"   {th['alert_type']:<22} {value} set by {th['threshold_by']} at {th['threshold_at'] or '-'}"
            + (f" because {th['threshold_reason']}" if th["threshold_reason"] else ""))
        if _model_changed(th, model):
            add(f"   {'':<22} MODEL CHANGED: set while {_short(th['model_when_set'])} scored cases; "
                f"{_short(model['now'])} scores them now (the same value closes other cases: `signoff model "
                f"evaluate`, `signoff policy backtest {th['alert_type']}`)")
    add(f"   active model: {_short(model['now'])}; shadow candidate: {(model['candidate'] or 'none')[:12]}; "
        f"{len(model['events'])} model changes recorded")
    add("6. How fast do cases get a verdict? (cases that went to a human, open to verdict)")
    for v in r["time_to_verdict"]:
        stats = v["verdicts"]
        sla = f"SLA {v['sla']}: {v['within_sla']} within, {v['late']} late" if v["sla"] else "no SLA"
        if v["closed_without_verdict"]:
            sla += f" ({v['closed_without_verdict']} closed without a verdict)"
        if v.get("merged"):
            sla += f"; {v['merged']} merged into other cases (their verdict is the other case's)"
        add(f"   {v['severity']:<13} {stats['count']} verdicts, median {_fmt_span(stats['median'])}, p95 "
            f"{_fmt_span(stats['p95'])}; {sla}; {v['open']} open ({v['open_overdue']} past due); "
            f"{v['escalated_overdue']} escalated as overdue")
    if not r["time_to_verdict"]:
        add("   no case has gone to a human yet")
    return "\n".join(lines)


def _fmt_span(seconds: float | int | None) -> str:
    """Times to verdict run from seconds to days."""
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


# ---------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


_CSS = """
:root{--ink:#1d2433;--muted:#5b6578;--line:#e3e7ef;--bg:#f5f7fb;--card:#fff;--accent:#3651d4;--ok:#1f8a5b;
--warn:#b7791f;--bad:#c53030;--low:#2f855a;--high:#c05621;--critical:#9b2c2c}
*{box-sizing:border-box}body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:var(--bg)}header{background:linear-gradient(120deg,#1f2a5a,#3651d4);color:#fff;padding:28px 40px 52px}
header h1{margin:0;font-size:24px;font-weight:650;letter-spacing:.2px}header .sub{opacity:.85;margin-top:4px;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
.answers{display:grid;grid-template-columns:repeat(5,1fr);gap:12px;margin:-44px 0 24px}
.answer{background:var(--card);border-radius:12px;padding:14px 16px;box-shadow:0 2px 10px rgba(20,30,60,.08)}
.answer .q{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.6px}
.answer .a{font-size:22px;font-weight:700;margin-top:4px}.answer .n{color:var(--muted);font-size:12px}
section{background:var(--card);border-radius:14px;padding:20px 24px;margin-bottom:18px;box-shadow:0 1px 4px rgba(20,30,60,.06)}
section h2{margin:0 0 4px;font-size:17px}section .lead{color:var(--muted);margin:0 0 14px}
table{border-collapse:collapse;width:100%;font-size:13px}th{text-align:left;color:var(--muted);font-weight:600;
font-size:11.5px;text-transform:uppercase;letter-spacing:.5px;border-bottom:1px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:middle}tr:last-child td{border-bottom:0}
.pill{display:inline-block;border-radius:999px;padding:1px 10px;font-size:12px;font-weight:600;white-space:nowrap}
.in{background:#e8edff;color:#2b3fa8}.on{background:#e3f6ec;color:#1f6b47}.low{background:#e3f6ec;color:var(--low)}
.high{background:#fdecdf;color:var(--high)}.critical{background:#fbe3e3;color:var(--critical)}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}.muted{color:var(--muted)}
.grid2{display:grid;grid-template-columns:260px 1fr;gap:24px;align-items:center}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.nw{white-space:nowrap}.moves li{margin:4px 0}.moves{padding-left:18px;margin:8px 0 0}footer{color:var(--muted);font-size:12px;text-align:center}
"""


def _donut(fraction: float | None, label: str) -> str:
    r, c = 52, 2 * math.pi * 52
    frac = fraction or 0.0
    color = "#1f8a5b" if frac >= 0.999 else ("#b7791f" if frac >= 0.9 else "#c53030")
    text = "n/a" if fraction is None else f"{frac:.0%}"
    return (f'<svg width="150" height="150" viewBox="0 0 150 150" role="img" aria-label="{_e(label)}">'
            f'<circle cx="75" cy="75" r="{r}" fill="none" stroke="#e3e7ef" stroke-width="16"/>'
            f'<circle cx="75" cy="75" r="{r}" fill="none" stroke="{color}" stroke-width="16" stroke-linecap="round" '
            f'stroke-dasharray="{c * frac:.1f} {c:.1f}" transform="rotate(-90 75 75)"/>'
            f'<text x="75" y="80" text-anchor="middle" font-size="26" font-weight="700" fill="#1d2433">{text}</text>'
            f'<text x="75" y="100" text-anchor="middle" font-size="11" fill="#5b6578">{_e(label)}</text></svg>')


def _threshold_bar(value: float | None, autonomy: str) -> str:
    """A 0..1 scale of P(not a true positive); the shaded part right of the marker closes automatically."""
    width, x0 = 230, 4
    span = width - 2 * x0
    track = (f'<svg width="{width}" height="30" viewBox="0 0 {width} 30">'
             f'<rect x="{x0}" y="13" width="{span}" height="6" rx="3" fill="#e3e7ef"/>'
             f'<text x="{x0}" y="29" font-size="8.5" fill="#8a93a6">0</text>'
             f'<text x="{width - x0}" y="29" font-size="8.5" fill="#8a93a6" text-anchor="end">1</text>')
    if value is None:
        return track + f'<text x="{x0}" y="9" font-size="10" fill="#5b6578">no threshold: every case to a human</text></svg>'
    x = x0 + value * span
    color = "#1f8a5b" if autonomy == "on_the_loop" else "#3651d4"
    anchor = "end" if value > 0.5 else "start"
    label_x = x - 4 if value > 0.5 else x + 4
    note = "auto-close above" if autonomy == "on_the_loop" else "shadow only"
    return (track + f'<rect x="{x:.1f}" y="13" width="{x0 + span - x:.1f}" height="6" rx="3" fill="{color}" opacity=".35"/>'
            f'<line x1="{x:.1f}" y1="9" x2="{x:.1f}" y2="23" stroke="{color}" stroke-width="2.5"/>'
            f'<text x="{label_x:.1f}" y="9" font-size="10" fill="{color}" text-anchor="{anchor}">'
            f'{note} {value:.3f}</text></svg>')


def _bars(rows: list[tuple[str, float]], unit_max: float | None = None) -> str:
    if not rows:
        return '<p class="muted">No rollback has run yet: nothing measured.</p>'
    top = unit_max or max(v for _, v in rows) or 1.0
    h = 24 * len(rows) + 8
    parts = [f'<svg width="100%" height="{h}" viewBox="0 0 760 {h}" preserveAspectRatio="xMinYMin meet">']
    for i, (label, v) in enumerate(rows):
        y = 4 + i * 24
        w = max(2.0, 520 * v / top)
        parts.append(f'<text x="0" y="{y + 14}" font-size="11" fill="#5b6578">{_e(label[:26])}</text>'
                     f'<rect x="180" y="{y + 3}" width="{w:.1f}" height="14" rx="4" fill="#3651d4" opacity=".8"/>'
                     f'<text x="{186 + w:.1f}" y="{y + 14}" font-size="11" fill="#1d2433">{_e(_fmt_s(v))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(r: dict[str, Any]) -> str:
    loop = r["humans_in_the_loop"]
    t = r["traceability"]
    rb = r["rollback"]
    ap = r["approvals"]
    c = r["threshold_control"]
    on = [a for a in loop["alert_types"] if a["autonomy"] == "on_the_loop"]
    gated = [a for a in ap["actions"] if not a["auto"]]
    lv = t["last_verify"]
    verify_text = "never run" if not lv else ("intact" if lv["ok"] else "TAMPERED") + (
        ", not anchored" if lv and lv["ok"] and lv.get("anchor") == "none" else "")
    answers = [
        ("Humans in the loop", f"{len(loop['alert_types']) - len(on)}/{len(loop['alert_types'])}",
         f"alert types in the loop; {len(on)} on the loop"),
        ("Decisions traceable", "n/a" if t["coverage"] is None else f"{t['coverage']:.0%}",
         f"{t['complete_decision_records']} of {t['cases']} cases; trail {verify_text}"),
        ("Rollback (median)", _fmt_s(rb["seconds"]["median"]), f"p95 {_fmt_s(rb['seconds']['p95'])} over "
                                                               f"{rb['seconds']['count']} rollbacks"),
        ("Actions gated", f"{len(gated)}/{len(ap['actions'])}", "need a human quorum; never auto-executed"),
        ("Threshold owners", str(len(c["people"])), ", ".join(c["people"]) or "nobody"),
    ]
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Signoff governance report</title>"
           f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body>",
           f"<header><h1>Governance report</h1><div class=sub>Signoff &middot; namespace {_e(r['namespace'])} &middot; "
           f"generated {_e(r['generated_at'][:19].replace('T', ' '))} UTC &middot; policy "
           f"<span class=mono>{_e(r['policy_version'][:12])}</span> &middot; governance from "
           f"{_e(r['governance_source'])}</div></header><main><div class=answers>"]
    for q, a, n in answers:
        out.append(f"<div class=answer><div class=q>{_e(q)}</div><div class=a>{_e(a)}</div><div class=n>{_e(n)}</div></div>")
    out.append("</div>")

    # 1
    out.append("<section><h2>1 &middot; Where humans sit in the loop</h2><p class=lead>Per alert type: who decides, "
               "the auto-close threshold (cases right of the line close automatically when on the loop), and who "
               "moved the line. The scale is P(not a true positive); the shaded part closes automatically only when the "
               "alert type is on the loop. High-impact steps stay gated at every level.</p><table><tr><th>Alert type</th>"
               "<th>Autonomy</th><th>Threshold</th><th>Autonomy set by</th><th>Cases</th><th>Human-handled</th>"
               "<th>Gated steps</th></tr>")
    for a in loop["alert_types"]:
        pill = ("<span class='pill on'>on the loop</span>" if a["autonomy"] == "on_the_loop"
                else "<span class='pill in'>in the loop</span>")
        share = "&ndash;" if a["human_share"] is None else f"{a['human_share']:.0%}"
        out.append(f"<tr><td><b>{_e(a['alert_type'])}</b><div class=muted>{_e(a['playbook'])}</div></td><td>{pill}</td>"
                   f"<td>{_threshold_bar(a['threshold'], a['autonomy'])}</td><td class=nw>{_e(a['autonomy_by'])}"
                   f"<div class=muted>{_e((a['autonomy_at'] or '')[:16].replace('T', ' '))}</div></td>"
                   f"<td>{a['cases']}</td><td>{share}</td><td class=muted>{_e(', '.join(a['gated_steps']) or '-')}</td></tr>")
    out.append("</table>")
    moves = loop["line_moves"][-12:]
    if moves:
        out.append("<h3 style='font-size:14px;margin:16px 0 0'>Who moved the line</h3><ul class=moves>")
        for m in reversed(moves):
            state = "" if m["accepted"] else " <span class=bad>refused</span>"
            out.append(f"<li><span class=mono>{_e((m['at'] or '')[:19].replace('T', ' '))}</span> &middot; <b>{_e(m['by'])}</b> "
                       f"{_e(m['kind'])} <b>{_e(m['alert_type'])}</b> {_e(m['before'])} &rarr; {_e(m['after'])}{state}"
                       f" <span class=muted>&ldquo;{_e(m['reason'])}&rdquo;</span></li>")
        out.append("</ul>")
    else:
        out.append("<p class=muted style='margin-top:12px'>The line has not moved: every alert type runs on the policy "
                   "file's values.</p>")
    out.append("</section>")

    # 2
    lv_html = ("<span class=muted>not verified yet: run <span class=mono>signoff audit export</span> then "
               "<span class=mono>signoff audit verify</span></span>") if not lv else (
        f"<span class={'ok' if lv['ok'] else 'bad'}>{'chain intact' if lv['ok'] else 'TAMPERED'}</span> "
        f"&middot; {lv['records']} records &middot; {_e(lv['at'][:19].replace('T', ' '))} &middot; "
        f"<span class=mono>{_e(lv['file'])}</span>")
    incomplete = ", ".join(t["incomplete"][:8]) or "none"
    out.append(f"<section><h2>2 &middot; Does every decision trace back to its data and feedback?</h2>"
               f"<p class=lead>A complete decision record: alerts, governance snapshot (policy version, threshold), "
               f"model id and feature hash (or the recorded scoring failure) and the decision, in the case's history."
               f"</p><div class=grid2>{_donut(t['coverage'], 'decision records')}<div><table>"
               f"<tr><td>Cases</td><td><b>{t['cases']}</b> ({t['live_histories']} live histories, "
               f"{t['archived_histories']} from the archive)</td></tr>"
               f"<tr><td>Complete decision records</td><td><b>{t['complete_decision_records']}</b></td></tr>"
               f"<tr><td>Analyst feedback</td><td><b>{t['with_feedback']}</b> of {t['closed_by_people']} closed cases "
               f"handled by people carry a verdict</td></tr><tr><td>Incomplete</td><td class=mono>{_e(incomplete)}</td></tr>"
               f"<tr><td>Last audit verify</td><td>{lv_html}</td></tr></table></div></div></section>")

    # 3
    rows = [(f"{x['case_id']}", x["seconds"]) for x in rb["rollbacks"][-15:]]
    per = "".join(f"<tr><td>{_e(k)}</td><td>{v['count']}</td><td>{_fmt_s(v['median'])}</td><td>{_fmt_s(v['max'])}</td></tr>"
                  for k, v in rb["per_action"].items())
    out.append(f"<section><h2>3 &middot; How fast can a decision be rolled back?</h2><p class=lead>Measured in the "
               f"histories: from the rollback request to the last compensation completed (compensations restore the "
               f"captured before-state, newest first). Median <b>{_fmt_s(rb['seconds']['median'])}</b>, p95 "
               f"<b>{_fmt_s(rb['seconds']['p95'])}</b>, max <b>{_fmt_s(rb['seconds']['max'])}</b>.</p>"
               f"{_bars(rows)}")
    if per:
        out.append(f"<table style='margin-top:10px'><tr><th>Undo of</th><th>Runs</th><th>Median</th><th>Max</th></tr>{per}</table>")
    out.append("</section>")

    # 4
    out.append("<section><h2>4 &middot; Which actions need approval, at which tier</h2><p class=lead>From the policy "
               f"tiers and the action declarations. Irreversible actions are raised to the "
               f"<b>{_e(ap['irreversible_tier'])}</b> tier. Timeouts escalate to a person; they never execute."
               "</p><table><tr><th>Action</th><th>Target</th><th>Tier</th><th>Undo</th><th>Needs</th></tr>")
    for a in ap["actions"]:
        undo = ("<span class=bad>irreversible</span>" if a["reversibility"] == "irreversible"
                else f"{_e(a['compensation'])}<div class=muted>{_e(a['reversibility'])}</div>")
        need = ("<span class=muted>automatic (recorded, undone on rollback)</span>" if a["auto"] else
                f"<b>{a['quorum']}</b> approver{'s' if a['quorum'] > 1 else ''} of {_e(' / '.join(a['roles']))}"
                f"<div class=muted>requester may not approve &middot; escalates {_e(a['escalation'])}</div>")
        out.append(f"<tr><td><b>{_e(a['action'])}</b><div class=muted>{_e(a['description'])}</div></td>"
                   f"<td>{_e(a['target'])}</td><td><span class='pill {_e(a['tier'])}'>{_e(a['tier'])}</span></td>"
                   f"<td>{undo}</td><td>{need}</td></tr>")
    out.append("</table></section>")

    # 5
    out.append(f"<section><h2>5 &middot; Who controls the automation thresholds</h2><p class=lead>Only holders of "
               f"<b>{_e(', '.join(c['governance_roles']))}</b> may set thresholds or promote autonomy: "
               f"<b>{_e(', '.join(c['people']) or 'nobody')}</b>. The model and the vendor never do. Governance revision "
               f"{c['governance_revision']}.</p><table><tr><th>Alert type</th><th>Threshold</th><th>Set by</th>"
               "<th>When</th><th>Why</th></tr>")
    for th in c["thresholds"]:
        val = "none" if th["threshold"] is None else f"{th['threshold']:.4f}"
        changed = (f"<div class='bad model-changed'>model changed: set while {_e(_short(th['model_when_set']))} scored "
                   f"cases; {_e(_short(c['model']['now']))} scores them now</div>" if _model_changed(th, c["model"]) else "")
        out.append(f"<tr><td><b>{_e(th['alert_type'])}</b></td><td class=mono>{val}</td><td>{_e(th['threshold_by'])}</td>"
                   f"<td class=muted>{_e((th['threshold_at'] or '-')[:19].replace('T', ' '))}</td>"
                   f"<td>{_e(th['threshold_reason'] or '-')}{changed}</td></tr>")
    out.append("</table>")
    if c["refused_changes"]:
        out.append("<h3 style='font-size:14px;margin:16px 0 0'>Refused change attempts</h3><ul class=moves>")
        for e in reversed(c["refused_changes"][-8:]):
            out.append(f"<li><span class=mono>{_e((e['at'] or '')[:19].replace('T', ' '))}</span> &middot; <b>{_e(e['by'])}</b> "
                       f"{_e(e['kind'])} {_e(e['alert_type'])}: <span class=bad>{_e(e['after'] or 'refused')}</span></li>")
        out.append("</ul>")
    model = c["model"]
    active = model["active"][:16] if model["active"] else "the model store's active model"
    candidate = model["candidate"][:16] if model["candidate"] else "none"
    out.append(f"<p class=muted style='margin-top:12px'>Active model: <span class=mono>{_e(active)}</span>"
               f" &middot; shadow candidate: <span class=mono>{_e(candidate)}</span>"
               f" &middot; {len(model['events'])} model changes recorded.</p></section>")
    # 6
    out.append("<section><h2>6 &middot; How fast do cases get a verdict?</h2><p class=lead>Cases that went to a "
               "person, from when the case opened to the analyst&rsquo;s verdict, by severity, against the policy&rsquo;s "
               "<span class=mono>verdict_sla</span>. Past it a case escalates once and leads "
               "<span class=mono>signoff cases --overdue</span>; the clock never closes or decides anything.</p>")
    if r["time_to_verdict"]:
        out.append("<table><tr><th>Severity</th><th>SLA</th><th>Verdicts</th><th>Median</th><th>p95</th>"
                   "<th>Within SLA</th><th>Late</th><th>Open</th><th>Open, past due</th><th>Escalated</th></tr>")
        for v in r["time_to_verdict"]:
            st = v["verdicts"]
            late = f"<span class=bad>{v['late']}</span>" if v["late"] else "0"
            past = f"<span class=bad>{v['open_overdue']}</span>" if v["open_overdue"] else "0"
            out.append(f"<tr><td><b>{_e(v['severity'])}</b></td><td class=mono>{_e(v['sla'] or 'none')}</td>"
                       f"<td>{st['count']}</td><td>{_fmt_span(st['median'])}</td><td>{_fmt_span(st['p95'])}</td>"
                       f"<td>{v['within_sla']}</td><td>{late}</td><td>{v['open']}</td><td>{past}</td>"
                       f"<td>{v['escalated_overdue']}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p class=muted>No case has gone to a human yet.</p>")
    out.append("</section>")
    out.append("<footer>Generated by <span class=mono>signoff governance report</span> from Temporal workflow histories "
               "and live governance state. Verify the underlying trail with <span class=mono>signoff audit verify</span>."
               "</footer></main></body></html>")
    return "".join(out)
