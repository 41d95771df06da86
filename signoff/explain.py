"""`signoff explain CASE`: why a case went the way it did, rebuilt from its workflow history alone.

Everything comes from the history events (decoded with the data converter): the start input and
`add_alerts` signals (alerts), the activity inputs and results (governance snapshot, enrichment,
score, captured before-states, actions, compensations, escalations), the updates and signals
(approvals, rejections, rollback, verdict, with the caller's identity), and the final case view
when the case has closed. The decision is recomputed with the same pure `decide` function the
workflow ran, and checked against the `Decision` search attribute the workflow recorded.
Refused update attempts never reach Temporal; they come from the CLI's `audit/refused.jsonl`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from policies.revocation import VOIDED
from policies.signing import channel_text, token_channel
from signoff import settings
from signoff.autonomy.models import DRIFT_WORKFLOW_ID, SYSTEM_DRIFT
from signoff.client import BEST_EFFORT_QUERY
from signoff.display import terminal
from signoff.explain_features import recorded_features, render_features
from signoff.history import DecodedHistory, load_history
from signoff.merge_text import merge_explanation, merge_timeline, render_merge, with_merged_alerts
from signoff.models import ApprovalRecord, CaseView, Contribution, Decision, RollbackRequest, ScoreResult

APPROVAL_UPDATES = ("approve", "reject")
APPROVAL_SIGNALS = ("approve_signal", "reject_signal")
# Signals the case checks after they are recorded: their outcome is in its state (the status query).
CHECKED_SIGNALS = (*APPROVAL_SIGNALS, "rollback_signal", "close_signal")


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def contribution_text(c: Contribution, predicted: str) -> str:
    """One TreeSHAP contribution in words (log-odds towards the predicted grade)."""
    if c.contribution >= 0:
        return f"feature {c.feature} = {c.value:g} pushed towards {predicted} by {c.contribution:+.2f}"
    return f"feature {c.feature} = {c.value:g} pushed away from {predicted} by {c.contribution:+.2f}"


def _without_token(payload: Any, *, recorded: bool = False) -> Any:
    """The payload without its token; `signed` says whether it carried one. In a request sent to Temporal a
    `signed` the sender typed into the payload is not taken (QA7: `--input '{..., "signed": true}'` read as
    a signed approval); `recorded=True`: a refused.jsonl record, whose `signed` the CLI wrote."""
    if isinstance(payload, dict):
        out = {k: v for k, v in payload.items() if k != "token" and (recorded or k != "signed")}
        if "token" in payload or ("signed" in payload and not recorded):
            out["signed"] = bool(payload.get("token"))
        return out
    return payload


def refused_attempts(case_id: str) -> list[dict[str, Any]]:
    """Refused updates recorded by the CLI (Temporal keeps no trace of them)."""
    path = settings.home() / "audit" / "refused.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("case_id") == case_id:
            found.append(record)
    return found


def _opened_by(start: dict[str, Any], h: DecodedHistory) -> str:
    """Who opened the case: the person or system in its start input (`requested_by`), not the
    Temporal client that sent the start (that is only the technical origin, `opened_via`)."""
    who = start.get("requested_by")
    if who == SYSTEM_DRIFT:
        return _drift_origin(start)
    return str(who) if who else (h.start_identity or "unknown")


def _drift_origin(start: dict[str, Any]) -> str:
    """A drift case is opened by a drift check: on its Schedule or on demand (`signoff drift check`)."""
    alerts = start.get("alerts") or []
    attrs = (alerts[0].get("attributes") or {}) if alerts and isinstance(alerts[0], dict) else {}
    check = str(attrs.get("drift_check") or "")
    trigger = attrs.get("trigger") or ("schedule" if check.startswith(DRIFT_WORKFLOW_ID) else "on demand" if check else "")
    if not trigger:
        return "signoff drift check"
    return f"signoff drift check ({trigger}" + (f": {check})" if check and trigger != "schedule" else ")")


def _final_view(h: DecodedHistory) -> CaseView | None:
    if isinstance(h.result, dict):
        try:
            return CaseView.model_validate(h.result)
        except ValidationError:
            return None
    return None


def _recorded_decision(h: DecodedHistory) -> str | None:
    for _, attrs in h.search_attributes:
        if "Decision" in attrs:
            values = attrs["Decision"]
            return str(values[0]) if isinstance(values, list) and values else str(values)
    return None


def _alerts(h: DecodedHistory) -> dict[str, Any]:
    seen: dict[str, dict[str, Any]] = {}
    total = 0
    sources: list[list[Any]] = [list((h.start_args[0] or {}).get("alerts", ()))] if h.start_args else []
    for sig in h.signals_named("add_alerts"):
        # A malformed signal is dropped by the workflow; explain skips it the same way.
        batch = sig.args[0] if sig.args and isinstance(sig.args[0], dict) else {}
        raw_alerts = batch.get("alerts")
        alerts_in = [a for a in raw_alerts if isinstance(a, dict) and "uid" in a] if isinstance(raw_alerts, list) else []
        sources.append(alerts_in)
        declared = batch.get("total")
        total += max((declared if isinstance(declared, int) else 0) - len(alerts_in), 0)
    for alerts in sources:
        for a in alerts:
            if a.get("uid") not in seen:
                seen[a["uid"]] = a
    shown = [
        {"uid": a["uid"], "time": a.get("time"), "source": a.get("source"), "title": a.get("title"),
         "rule": a.get("rule", ""), "severity": a.get("severity"),
         "entities": [f"{e['type']}:{e['value']}" for e in a.get("entities", ())],
         "joined_because": a.get("joined_because", "")}
        for a in seen.values()
    ]
    return {"count": len(seen) + total, "recorded_in_history": len(shown), "alerts": shown}


def _score(h: DecodedHistory) -> tuple[ScoreResult | None, str, dict[str, Any] | None]:
    # The first score_case is the one the decision uses; later ones score a shadow candidate.
    runs = h.activities_named("score_case")
    if not runs:
        return None, "the case has no alerts to score", None
    run = runs[0]
    if run.failure:
        return None, f"scoring failed: {run.failure}", None
    if run.result is None:
        return None, "scoring has not finished", None
    score = ScoreResult.model_validate(run.result)
    shadows = [ScoreResult.model_validate(r.result) for r in runs[1:] if r.result is not None]
    predicted = score.predicted.value
    out = {
        "model_id": score.model_id,
        "feature_hash": score.feature_hash,
        "predicted": predicted,
        "confidence": score.confidence,
        "benign_confidence": score.benign_confidence,
        "probabilities": score.probabilities,
        "scored_at": _iso(run.completed_at),
        "contributions": [
            {"feature": c.feature, "value": c.value, "contribution": c.contribution,
             "text": contribution_text(c, predicted)}
            for c in score.contributions
        ],
        "shadow": [{"model_id": sh.model_id, "predicted": sh.predicted.value, "confidence": sh.confidence,
                    "benign_confidence": sh.benign_confidence, "note": "candidate model in shadow: never decides"}
                   for sh in shadows],
        **recorded_features(score),
    }
    return score, "", out


def _decision(h: DecodedHistory, score: ScoreResult | None, problem: str) -> tuple[dict[str, Any] | None, Any]:
    from policies.engine import GovernanceSnapshot
    from workflows.decide import decide

    runs = [r for r in h.activities_named("load_governance") if r.result is not None]
    if not runs:
        return None, None
    snapshots = [GovernanceSnapshot.model_validate(r.result) for r in runs]
    # The snapshot the case decided under, as the workflow chose it (workflows/case.py): its first read,
    # or the re-read before an automatic close. Later reads (before a gated step runs, QA6's recheck)
    # come after the decision: reporting the last one put a decision made under revision 0 under a
    # threshold, policy version and autonomy set minutes or days later (QA8).
    chosen = 0
    if len(runs) > 1 and decide(snapshots[0], score, problem).kind.value == "auto_close":
        chosen = 1
    gov = snapshots[chosen]
    governance = {
        "policy_version": gov.policy_version,
        "alert_type": gov.alert_type,
        "autonomy": gov.autonomy,
        "threshold": gov.threshold,
        "threshold_set_by": gov.threshold_set_by,
        "autonomy_set_by": gov.autonomy_set_by,
        "governance_revision": gov.governance_revision,
        "model_requested": gov.model_id or "the active model",
        "loaded_at": _iso(runs[chosen].completed_at),
        # The time-to-verdict SLA of the policy the case decided under (the governance report judges
        # each case by it, not by whatever policy file the reader has).
        "verdict_sla": dict(gov.policy.verdict_sla),
        # The playbook the case planned from, as recorded when it began (None: recorded before
        # playbooks were; that case planned from the code of the worker that ran it).
        "playbook": {"name": gov.playbook.name, "digest": gov.playbook.digest} if gov.playbook else None,
        # Governance read again after the decision (approvers and keys before a gated step runs):
        # the approvals were checked against these; the decision was not made under them.
        "rechecks": [{"at": _iso(r.completed_at), "policy_version": g.policy_version,
                      "governance_revision": g.governance_revision, "autonomy": g.autonomy,
                      "threshold": g.threshold}
                     for r, g in zip(runs[chosen + 1:], snapshots[chosen + 1:], strict=True)],
    }
    last = snapshots[-1]  # what the case checks rollbacks against now (its rollback quorum)
    if score is None and problem == "scoring has not finished":
        return {"governance": governance, "decision": None}, last
    decision = decide(gov, score, problem)
    recorded = _recorded_decision(h)
    return {
        "governance": governance,
        "decision": {
            "kind": decision.kind.value,
            "reason": decision.reason,
            "autonomy": decision.autonomy,
            "threshold": decision.threshold,
            "policy_version": decision.policy_version,
            "model_id": decision.model_id,
            "confidence": decision.confidence,
            "recorded": recorded,
            "recomputed_matches_recorded": recorded == decision.kind.value if recorded else None,
        },
    }, last


def _approvals(h: DecodedHistory, view: CaseView | None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for upd in h.updates_named(*APPROVAL_UPDATES):
        raw_req = upd.args[0] if upd.args else {}
        req = _without_token(raw_req)
        result = str(upd.result or "")
        refused = result.startswith("refused:") or bool(upd.failure)
        # The chat channel of a bridge token (claim `via`); the workflow verified it when it accepted.
        channel = token_channel(raw_req.get("token")) if isinstance(raw_req, dict) and not refused else None
        records.append({
            "at": _iso(upd.accepted_at), "via": "update", "channel": channel,
            "step": req.get("step"), "approver": req.get("approver"),
            "decision": upd.name, "reason": req.get("reason"), "signed": req.get("signed", False),
            "identity": upd.identity, "update_id": upd.update_id,
            "outcome": "refused" if refused else ("accepted" if upd.completed_at else "in progress"),
            "refusal": result.removeprefix("refused: ") if refused and not upd.failure else upd.failure,
            "result": result, "malformed": None,  # an update's payload is validated before it is written
        })
    _mark_voided(records, view)
    # Signals are always written; the workflow checks them afterwards and keeps the outcome in state.
    signal_outcomes: list[Any] = []
    if view is not None:
        by_signal = [a for s in view.steps for a in s.approvals if a.via == "signal"]
        by_signal += [r for r in view.refusals if r.via == "signal"]
        signal_outcomes = sorted(by_signal, key=lambda r: r.at)
    for i, sig in enumerate(h.signals_named(*APPROVAL_SIGNALS)):
        raw = _without_token(sig.args[0] if sig.args else {})
        req = raw if isinstance(raw, dict) else {"raw": raw}
        outcome, refusal, channel = "recorded (outcome kept in workflow state)", "", None
        if i < len(signal_outcomes):
            rec = signal_outcomes[i]
            outcome, refusal = ("accepted", "") if rec.accepted else (
                "voided" if rec.refusal.startswith(VOIDED) else "refused", rec.refusal)
            channel = rec.channel
        # A signal is written whatever its payload (`temporal workflow signal --input '{"oops": 1}'`):
        # without a step or approver, what was sent is kept (clipped, token removed) to be shown as a
        # malformed signal instead of "step None by None" (QA5).
        named = all(isinstance(req.get(k), str) and req.get(k) for k in ("step", "approver"))
        records.append({
            "at": _iso(sig.at), "via": "signal", "channel": channel,
            "step": req.get("step"), "approver": req.get("approver"),
            "decision": sig.name.removesuffix("_signal"), "reason": req.get("reason"),
            "signed": req.get("signed", False), "identity": sig.identity, "update_id": None,
            "outcome": outcome, "refusal": refusal, "result": "",
            "malformed": None if named else _short(json.dumps(raw, sort_keys=True, default=str), 80),
        })
    return sorted(records, key=lambda r: r["at"] or "")


def _mark_voided(records: list[dict[str, Any]], view: CaseView | None) -> None:
    """An approval accepted by update that the case voided before its step ran (workflows/case_recheck.py:
    its approver, key or trust no longer in the policy in force) did not count: say so, and why. The
    case's state keeps the approvals of each step's last attempt in order; they are the last ones sent."""
    if view is None:
        return
    kept: dict[tuple[str, str], list[Any]] = {}
    for s in view.steps:
        for a in s.approvals:
            if a.via == "update" and a.decision == Decision.approve and (a.accepted or a.refusal.startswith(VOIDED)):
                kept.setdefault((a.step, a.approver), []).append(a)
    sent: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r["decision"] == "approve" and r["outcome"] == "accepted":
            sent.setdefault((str(r["step"]), str(r["approver"])), []).append(r)
    for key, rows in sent.items():
        for row, state in zip(reversed(rows), reversed(kept.get(key, [])), strict=False):
            if not state.accepted:
                row["outcome"], row["refusal"] = "voided", state.refusal


def _actions(h: DecodedHistory) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    captured: dict[str, Any] = {}
    for run in h.activities_named("capture_state"):
        if run.input and run.result is not None:  # as a local activity the input is not recorded
            captured[run.input["step_id"]] = run.result
    actions = []
    for run in h.activities_named("execute_action"):
        req = (run.input or {}).get("request", {})
        result = run.result or {}
        actions.append({
            "step_id": req.get("step_id"), "action": req.get("action"), "target": req.get("target"),
            "params": req.get("params", {}), "idempotency_key": req.get("idempotency_key"),
            "started_at": _iso(run.scheduled_at), "completed_at": _iso(run.completed_at),
            "before": (run.input or {}).get("before", captured.get(req.get("step_id", ""))),
            "after": result.get("after"), "already_in_state": result.get("already_in_state", False),
            "detail": result.get("detail", ""), "attempts": run.attempt,
            "outcome": "failed" if run.failure else ("executed" if run.completed_at else "running"),
            "failure": run.failure,
        })
    compensations = []
    for run in h.activities_named("compensate_action"):
        req = run.input or {}
        compensations.append({
            "step_id": req.get("step_id"), "action": req.get("action"), "undoes": req.get("forward_action"),
            "target": req.get("target"), "restore_to": req.get("restore_to"),
            "restored": (run.result or {}).get("restored"),
            "started_at": _iso(run.scheduled_at), "completed_at": _iso(run.completed_at),
            "outcome": "failed" if run.failure else ("compensated" if run.completed_at else "running"),
            "failure": run.failure,
        })
    return actions, compensations


def _rollback_quorum(gov: Any) -> int:
    """The rollback quorum of the policy the case decided under (its recorded governance snapshot)."""
    quorum = getattr(getattr(gov, "policy", None), "rollback_quorum", 1)
    return quorum if isinstance(quorum, int) and quorum > 1 else 1


def _signal_refusal(h: DecodedHistory, raw: Any, who: str, duplicate: bool, quorum: int, refused: list[Any],
                    view: CaseView | None, last_accepted: int) -> str:
    """Why the case refused a rollback signal ("" if it did not). The case's own refusals (view)
    are matched by who sent them, and consumed; what the history alone shows is inferred."""
    try:
        RollbackRequest.model_validate(raw)
    except ValidationError as exc:  # dropped by the workflow, which escalates instead
        first = exc.errors()[0]
        return f"malformed: {'.'.join(str(p) for p in first.get('loc', ())) or 'input'}: {first.get('msg', 'invalid')}"
    mine = [r for r in refused if r.approver == who]
    # A repeated request in the same round is refused; the case's refusal says so (or names an earlier check).
    match = next((r for r in mine if "has already asked" in r.refusal), mine[0] if mine else None) if duplicate \
        else next((r for r in mine if "has already asked" not in r.refusal), None)
    if match is not None:
        refused.remove(match)
        return str(match.refusal)
    if duplicate:
        return f"{who!r} has already asked for this rollback: it needs {quorum} different people with a rollback role"
    if view is None and last_accepted and not any(c.failure for c in h.activities_named("compensate_action")
                                                  if c.event_id > last_accepted):
        # Without the case's state: a rollback already ran (and did not fail), so the case refused this one.
        return "a rollback was already accepted on this case (inferred from the history)"
    return ""


def _rollbacks(h: DecodedHistory, view: CaseView | None = None, gov: Any = None,
               voided_votes: tuple[ApprovalRecord, ...] | None = None) -> list[dict[str, Any]]:
    """Rollback requests in history order, each "refused", "counted" or "accepted".

    Under a policy `rollback_quorum` of N (read from the governance snapshot recorded in the
    history), the case counts the requests of distinct people until the N-th, which is accepted
    and runs the compensations; then it clears its votes. The same rebuilt here from the history:
    a request by someone already counted in this round is refused (the workflow refuses it); an
    update says itself whether it was only counted. A signal is always written to the history, also
    when the case refused it for another reason: those refusals come from the case
    (view.refusals, via "rollback_signal"), matched in order by who sent them. `voided_votes` (a
    running case's `rollback_vote` refusals, `live_rollback_votes`) stand in for the view's.
    """
    quorum = _rollback_quorum(gov)
    refused = [r for r in view.refusals if r.via == "rollback_signal"] if view else []
    requests = [(u.event_id, u.accepted_at, u.args[0] if u.args else {}, "update", u.identity, u.result,
                 u.completed_at, u.failure) for u in h.updates_named("rollback")]
    requests += [(s.event_id, s.at, s.args[0] if s.args else {}, "signal", s.identity, None, None, "")
                 for s in h.signals_named("rollback_signal")]
    requests.sort(key=lambda r: r[0])
    votes: list[str] = []  # who has asked in the current round, towards the quorum
    last_accepted = 0  # event id of the request that last met the quorum (0: none yet)
    rows: list[tuple[int, datetime, dict[str, Any]]] = []
    round_of: dict[int, int] = {}  # event id -> the quorum round it belongs to (a round ends when a quorum is met)
    current = 0
    for event_id, at, raw, via, identity, result, done, failure in requests:
        req = _without_token(raw) if isinstance(raw, dict) else {"raw": raw}
        who = str(req.get("requested_by"))[:80]
        refusal = failure
        if via == "signal" and not refusal:
            refusal = _signal_refusal(h, raw, who, quorum > 1 and who in votes, quorum, refused, view, last_accepted)
        if refusal:
            outcome = "refused"
        elif isinstance(result, str) and result.startswith("rollback requested by"):
            outcome = "counted"  # the update's reply says so
            votes.append(who)
        elif quorum > 1 and len(votes) + 1 < quorum:
            outcome = "counted"
            votes.append(who)
        else:
            outcome = "accepted"
            votes, last_accepted = [], event_id
        round_of[event_id] = current
        if outcome == "accepted":
            current += 1
        rows.append((event_id, at, {
            "at": _iso(at), "via": via, "requested_by": req.get("requested_by"), "reason": req.get("reason"),
            "signed": bool(raw.get("token")) if isinstance(raw, dict) else False,
            "identity": identity, "result": result, "completed_at": _iso(done),
            "outcome": outcome, "refusal": refusal,
            "channel": token_channel(raw.get("token")) if isinstance(raw, dict) and via == "update" and not refusal
            else None,
        }))
    # Requests counted, then voided when a quorum was met (the identity behind them no longer in force):
    # each voided record marks the latest request of that person counted before it.
    if voided_votes is None:
        voided_votes = tuple(r for r in view.refusals if r.via == "rollback_vote") if view else ()
    for record in voided_votes:
        row = next((r for _, when, r in reversed(rows) if r["outcome"] == "counted"
                    and r["requested_by"] == record.approver and when <= record.at), None)
        if row is not None:
            row["outcome"], row["refusal"] = "voided", record.refusal
    # An accepted request's compensations: those scheduled after it, before the next accepted one.
    accepted = [event_id for event_id, _, row in rows if row["outcome"] == "accepted"]
    out = []
    for event_id, at, row in rows:
        comps = []
        if row["outcome"] == "accepted":
            until = min((e for e in accepted if e > event_id), default=None)
            comps = [c for c in h.activities_named("compensate_action")
                     if c.event_id > event_id and (until is None or c.event_id < until) and c.completed_at]
        last = max((c.completed_at for c in comps if c.completed_at), default=None)
        # who else the quorum counted (QA9: the line named only the last requester; a voided request is not one)
        quorum_with = [r["requested_by"] for e, _, r in rows if r["outcome"] == "counted"
                       and round_of.get(e) == round_of.get(event_id)] if row["outcome"] == "accepted" else []
        out.append({**row, "compensations": len(comps), "quorum_with": quorum_with,
                    "seconds_to_last_compensation": (last - at).total_seconds() if last else None})
    return out


def _verdicts(h: DecodedHistory, view: CaseView | None) -> list[dict[str, Any]]:
    out = []
    for upd in h.updates_named("close"):
        req = upd.args[0] if upd.args else {}
        out.append({"at": _iso(upd.accepted_at), "via": "update", "analyst": req.get("analyst"),
                    "verdict": req.get("verdict"), "reason": req.get("reason"), "identity": upd.identity,
                    "signed": bool(req.get("token")) if isinstance(req, dict) else False,
                    # refused in its handler: a signer the case did not know, checked against the policy in force
                    "accepted": not upd.failure, "refusal": upd.failure or "",
                    # a chat bridge's token (claim `via`), verified by the case when it took the verdict
                    "channel": token_channel(req.get("token")) if isinstance(req, dict) and not upd.failure
                    else None})
    # The case keeps its refusals of close signals (via "close_signal"): matched in order by who sent them.
    refused = [r for r in view.refusals if r.via == "close_signal"] if view else []
    for sig in h.signals_named("close_signal"):
        req = sig.args[0] if sig.args and isinstance(sig.args[0], dict) else {}
        accepted = bool(view and view.verdict and view.verdict.analyst == req.get("analyst")
                        and view.verdict.reason == req.get("reason"))
        refusal = ""
        if view and not accepted:
            match = next((r for r in refused if r.approver == str(req.get("analyst"))[:80]), None)
            if match is not None:
                refused.remove(match)
                refusal = str(match.refusal)
        out.append({"at": _iso(sig.at), "via": "signal", "analyst": req.get("analyst"),
                    "verdict": req.get("verdict"), "reason": req.get("reason"), "identity": sig.identity,
                    "signed": bool(req.get("token")),
                    "accepted": accepted if view else None, "refusal": refusal})
    return sorted(out, key=lambda r: r["at"] or "")


def refused_actor(r: dict[str, Any]) -> Any:
    """Who sent a request refused before Temporal (each kind names its sender in its own field)."""
    return next((r[k] for k in ("approver", "requested_by", "analyst", "by", "author") if r.get(k)), None)


def _short(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[:limit]}..."


def _case_log(h: DecodedHistory) -> dict[str, list[dict[str, Any]]]:
    """Who was given the case, its investigation log (workflows/case_log.py) and the retries of a
    failed attempt (workflows/case_retry.py). Only accepted
    updates reach the history: refused ones are in `refused_attempts` when sent by `signoff`."""
    def rows(name: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
        out = []
        for u in h.updates_named(name):
            req = u.args[0] if u.args and isinstance(u.args[0], dict) else {}
            out.append({"at": _iso(u.accepted_at), **{f: req.get(f) for f in fields}, "signed": bool(req.get("token")),
                        "identity": u.identity, "update_id": u.update_id, "result": u.result, "failure": u.failure})
        return sorted((r for r in out if not r["failure"]), key=lambda r: r["at"] or "")

    return {"assignments": rows("assign", ("assignee", "by", "reason")), "notes": rows("note", ("author", "text")),
            "retries": rows("retry", ("requested_by", "reason"))}


def _detaches(h: DecodedHistory, view: CaseView | None) -> list[dict[str, Any]]:
    """Alerts taken out of the case (`detach_alert`, workflows/case_detach.py), from the history: who,
    when, why, the case opened for the alert (the `open_detached_case` activity), and whether the
    case's score was computed while the alert was in it. A repeat of the same alert is not a second
    detach (the case answered with the first). Refused ones are in `refused_attempts`."""
    opened: dict[str, Any] = {}
    for run in h.activities_named("open_detached_case"):
        uid = ((run.input or {}).get("alert") or {}).get("uid")
        if uid:
            opened[uid] = run
    scored = h.activities_named("score_case")
    scored_at = scored[0].event_id if scored and scored[0].result is not None else None
    arrived = _arrival(h)
    records = {r.alert_uid: r for r in view.detached_alerts} if view else {}
    out: list[dict[str, Any]] = []
    for u in h.updates_named("detach_alert"):
        req = u.args[0] if u.args and isinstance(u.args[0], dict) else {}
        uid = req.get("alert_uid")
        if u.failure or not uid or any(r["alert_uid"] == uid for r in out):
            continue
        opening = opened.get(uid)
        record = records.get(uid)
        new_case, outcome = (record.new_case, record.opened) if record else (None, "")
        if opening is not None:
            new_case = (opening.result or {}).get("case_id") or (opening.input or {}).get("case_id") or new_case
            outcome = f"failed: {opening.failure}" if opening.failure else (opening.result or {}).get("outcome") or outcome
        when = arrived.get(uid)
        out.append({
            "at": _iso(u.accepted_at), "alert_uid": uid, "requested_by": req.get("requested_by"),
            "reason": req.get("reason"), "signed": bool(req.get("token")), "identity": u.identity,
            "update_id": u.update_id, "result": u.result,
            "new_case": new_case, "opened": outcome,
            "score_included": scored_at is not None and when is not None and when < scored_at,
            "skipped_steps": list(record.skipped_steps) if record else [],
            "acted_steps": list(record.acted_steps) if record else [],
        })
    return out


def _arrival(h: DecodedHistory) -> dict[str, int]:
    """The event id at which each alert carried in full reached the case (0: in its start input)."""
    seen: dict[str, int] = {}
    for a in (h.start_args[0] or {}).get("alerts", ()) if h.start_args and isinstance(h.start_args[0], dict) else ():
        if isinstance(a, dict) and "uid" in a:
            seen.setdefault(a["uid"], 0)
    for sig in h.signals_named("add_alerts"):
        batch = sig.args[0] if sig.args and isinstance(sig.args[0], dict) else {}
        for a in batch.get("alerts") or () if isinstance(batch.get("alerts"), list) else ():
            if isinstance(a, dict) and "uid" in a:
                seen.setdefault(a["uid"], sig.event_id)
    return seen


def _timeline(ex: dict[str, Any], h: DecodedHistory) -> list[dict[str, str]]:
    items: list[tuple[str, str]] = [(_iso(h.started_at) or "", f"case opened by {ex['opened_by']}")]
    gov = (ex.get("governance") or {})
    if gov.get("loaded_at"):
        items.append((gov["loaded_at"], f"governance loaded: {gov['alert_type']} is {gov['autonomy']}, "
                                        f"threshold {gov['threshold']} (set by {gov['threshold_set_by']})"))
    for r in gov.get("rechecks") or ():
        items.append((r["at"] or "", f"governance re-read (approvals checked against it; the decision stands): "
                                     f"policy {str(r['policy_version'])[:12]}, revision {r['governance_revision']}"))
    if ex.get("score") and ex["score"].get("scored_at"):
        s = ex["score"]
        items.append((s["scored_at"], f"scored {s['predicted']} (confidence {s['confidence']:.3f}) "
                                      f"by model {s['model_id'][:12]}"))
    for a in ex["approvals"]:
        what = (f"malformed {a['decision']} signal (sent {a['malformed']})" if a.get("malformed") else
                f"{a['decision']} of step {a['step']} by {a['approver']} via {a['via']}")
        items.append((a["at"], f"{what}: {a['outcome']}" + (f" ({a['refusal']})" if a["refusal"] else "")))
    for r in ex["refused_attempts"]:
        items.append((r.get("at", ""), f"{r.get('kind')} by {refused_actor(r)}"
                                       f" refused before reaching Temporal: {r.get('refusal')}"))
    for a in ex["actions"]:
        items.append((a["completed_at"] or a["started_at"], f"{a['action']} on {a['target']['kind']} {a['target']['id']}: "
                                                            f"{a['outcome']}" + (f" ({a['failure']})" if a["failure"] else "")))
    for c in ex["compensations"]:
        items.append((c["completed_at"] or c["started_at"], f"{c['action']} (undo {c['undoes']}) on "
                                                            f"{c['target']['kind']} {c['target']['id']}: {c['outcome']}"))
    for rb in ex["rollbacks"]:
        # QA6: a refused rollback or verdict read in the timeline as if it had been taken.
        refused = f" (refused: {rb['refusal']})" if rb.get("refusal") else ""
        items.append((rb["at"], f"rollback requested by {rb['requested_by']} via {rb['via']}: {rb['reason']}{refused}"))
    for e in ex["escalations"]:
        items.append((e["at"], f"escalated ({e['kind']}): {e['reason']}"))
    for v in ex["verdicts"]:
        refused = "" if v["accepted"] is not False else f" (refused{': ' + v['refusal'] if v.get('refusal') else ''})"
        items.append((v["at"], f"verdict {v['verdict']} by {v['analyst']}: {v['reason']}{refused}"))
    for a in ex.get("assignments", []):
        items.append((a["at"], f"assigned to {a['assignee']} by {a['by']}" + (f": {a['reason']}" if a["reason"] else "")))
    for r in ex.get("retries", []):
        items.append((r["at"], f"retry by {r['requested_by']}: {r['reason']} ({r['result']})"))
    for n in ex.get("notes", []):
        items.append((n["at"], f"note by {n['author']}: {_short(str(n['text']))}"))
    for d in ex.get("detaches", []):
        items.append((d["at"], f"alert {d['alert_uid']} detached by {d['requested_by']} into case {d['new_case']}: "
                               f"{_short(str(d['reason']))}"))
    for r in h.resets:
        items.append((_iso(r.at) or "", f"workflow RESET (`temporal workflow reset`) from run {r.base_run_id} "
                                        f"at event {r.event_id}: {r.reason}; what that run recorded after it is "
                                        "not part of this run"))
    items.extend(merge_timeline(ex))
    if h.closed_at:
        items.append((_iso(h.closed_at) or "", f"workflow {h.close}" + (f": {h.failure}" if h.failure else "")))
    return [{"at": at, "what": what} for at, what in sorted(items, key=lambda kv: kv[0] or "")]


def explanation_from_history(h: DecodedHistory, live_view: CaseView | None = None, *,
                             voided_votes: tuple[ApprovalRecord, ...] | None = None) -> dict[str, Any]:
    """The explanation of one case run; a history whose payloads cannot be decoded (the codec key is
    missing) yields a minimal record that says so instead of failing. `voided_votes`: see `_rollbacks`."""
    try:
        return _explain(h, live_view, voided_votes)
    except (ValidationError, KeyError, TypeError, AttributeError, ValueError):
        if not h.undecodable:
            raise
    return {
        "case_id": h.workflow_id, "run_id": h.run_id, "source": f"{h.source} history ({h.event_count} events)",
        "workflow_status": h.close, "opened_at": _iso(h.started_at), "closed_at": _iso(h.closed_at),
        "opened_by": "", "opened_via": h.start_identity, "undecodable": h.undecodable,
        "complete_decision_record": False,
        "case": {}, "alerts": {"count": 0, "recorded_in_history": 0, "alerts": []}, "enrichment": None,
        "governance": None, "score": None, "scoring_problem": "", "decision": None, "approvals": [],
        "refused_attempts": [], "actions": [], "compensations": [], "rollbacks": [], "escalations": [],
        "verdicts": [], "final": None,
        "timeline": [{"at": _iso(h.started_at) or "", "what": "history payloads cannot be decoded: "
                                                              + "; ".join(h.undecodable)}],
    }


def _explain(h: DecodedHistory, live_view: CaseView | None = None,
             voided_votes: tuple[ApprovalRecord, ...] | None = None) -> dict[str, Any]:
    """The explanation of one case run, as a JSON-ready dict.

    `live_view` (the `status` query of a running case) only fills in what a running case keeps in
    state and not yet in its history: the outcome of approvals, rollbacks and verdicts sent as signals.
    """
    start = h.start_args[0] if h.start_args and isinstance(h.start_args[0], dict) else {}
    view = _final_view(h) or live_view
    score, problem, score_out = _score(h)
    decision_part, gov = _decision(h, score, problem)
    enrich_runs = [r for r in h.activities_named("enrich_case") if r.result is not None]
    actions, compensations = _actions(h)
    ex: dict[str, Any] = {
        "case_id": h.workflow_id,
        "run_id": h.run_id,
        "source": f"{h.source} history ({h.event_count} events)",
        "workflow_status": h.close,
        "opened_at": _iso(h.started_at),
        "closed_at": _iso(h.closed_at),
        "opened_by": _opened_by(start, h),
        "opened_via": h.start_identity,  # the Temporal client that sent the start: technical origin only
        "case": {k: start.get(k) for k in ("alert_type", "severity", "title", "requested_by")},
        "alerts": _alerts(h),
        "enrichment": enrich_runs[-1].result if enrich_runs else None,
        "enriched_at": _iso(enrich_runs[-1].completed_at) if enrich_runs else None,
        "governance": decision_part["governance"] if decision_part else None,
        "score": score_out,
        "scoring_problem": problem,
        "decision": decision_part["decision"] if decision_part else None,
        "approvals": _approvals(h, view),
        "refused_attempts": [_without_token(r, recorded=True) for r in refused_attempts(h.workflow_id)],
        "actions": actions,
        "compensations": compensations,
        "rollbacks": _rollbacks(h, view, gov, voided_votes if view is None else None),
        "escalations": [{"at": _iso(r.scheduled_at), **{k: v for k, v in (r.input or {}).items() if k != "case_id"}}
                        for r in h.activities_named("escalate")],
        "verdicts": _verdicts(h, view),
        **_case_log(h),
        "detaches": _detaches(h, view),
        "detached_from": start.get("detached_from"),
        # Under `require_signed_ingest` (policies/ingest_signing.py): input no ingester signed
        "unsigned_input": list(view.unsigned_input) if view else [],
        "refused_batches": [b.model_dump(mode="json") for b in view.refused_batches] if view else [],
        **merge_explanation(h, view),  # signoff/merge_text.py: merged into another case, or others into this one
        "final": {
            "status": view.status.value if view else None,
            "steps": [{"step_id": s.step_id, "action": s.action, "tier": s.tier.value,
                       "reversibility": s.reversibility.value, "state": s.state.value,
                       "target": s.target.model_dump(), "quorum": s.quorum, "error": s.error,
                       "escalation_level": s.escalation_level}
                      for s in view.steps] if view else [],
            "escalations": list(view.escalations) if view else [],
            "from": "final result" if h.result is not None else "live status query",
        } if view else None,
    }
    _without_detached(ex)
    with_merged_alerts(ex)
    ex["undecodable"] = list(h.undecodable)
    ex["complete_decision_record"] = bool(
        ex["governance"] and ex["decision"] and (ex["score"] or problem) and ex["alerts"]["count"]
        and not h.undecodable
    )
    ex["resets"] = [{"at": _iso(r.at), "event_id": r.event_id, "base_run_id": r.base_run_id, "reason": r.reason,
                     "discarded": None} for r in h.resets]
    ex["timeline"] = _timeline(ex, h)
    return ex


def _discarded_by_reset(ex: dict[str, Any], base: DecodedHistory) -> list[dict[str, Any]]:
    """What the run a reset replaced recorded and this run does not have (QA7: a rejection reset away read as
    if it had never been given): its approvals, rejections, verdicts and actions, newest last."""
    kept_approvals = {(a["at"], a["decision"], a["step"], a["approver"]) for a in ex["approvals"]}
    kept_actions = {(a["started_at"], a["step_id"]) for a in ex["actions"]}
    kept_verdicts = {(v["at"], v["analyst"]) for v in ex["verdicts"]}
    out: list[dict[str, Any]] = []
    for a in _approvals(base, None):
        if (a["at"], a["decision"], a["step"], a["approver"]) not in kept_approvals:
            out.append({"at": a["at"], "what": f"{a['decision']} of step {a['step']} by {a['approver']} via {a['via']}"
                        + (" (signed)" if a["signed"] else "") + f", {a['outcome']}; reason {a['reason']!r}"})
    for act in _actions(base)[0]:
        if (act["started_at"], act["step_id"]) not in kept_actions:
            out.append({"at": act["completed_at"] or act["started_at"],
                        "what": f"{act['action']} on {_target(act['target'])}: {act['outcome']}"})
    for v in _verdicts(base, None):
        if (v["at"], v["analyst"]) not in kept_verdicts:
            out.append({"at": v["at"], "what": f"verdict {v['verdict']} by {v['analyst']}; reason {v['reason']!r}"})
    return sorted(out, key=lambda d: d["at"] or "")


async def _add_reset_discards(client: Any, ex: dict[str, Any]) -> None:
    from signoff.history import decode_history

    for reset in ex.get("resets", []):
        try:
            history = await client.get_workflow_handle(ex["case_id"], run_id=reset["base_run_id"]).fetch_history()
            base = await decode_history(history, client.data_converter)
        except Exception as exc:  # deleted by retention, or unreadable: say so, never fail the explanation
            reset["unreadable"] = f"the run it replaced could not be read: {_short(str(exc))}"
            continue
        reset["discarded"] = _discarded_by_reset(ex, base)


def _without_detached(ex: dict[str, Any]) -> None:
    """Alerts detached from the case no longer count as its alerts: each stays listed, marked with the
    case it went to, and the score says when it was computed with one of them."""
    gone = {d["alert_uid"]: d for d in ex["detaches"]}
    if not gone:
        return
    alerts = ex["alerts"]
    for a in alerts["alerts"]:
        if a["uid"] in gone:
            a["detached_to"] = gone[a["uid"]]["new_case"]
    alerts["count"] -= sum(1 for a in alerts["alerts"] if a["uid"] in gone)
    alerts["detached"] = sorted(gone)
    if ex["score"]:
        ex["score"]["included_detached"] = sorted(uid for uid, d in gone.items() if d["score_included"])


def _unreachable(exc: BaseException) -> bool:
    from temporalio.service import RPCError, RPCStatusCode

    if isinstance(exc, ConnectionError):
        return True
    return isinstance(exc, RPCError) and exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


async def _from_archive(case_id: str, problem: BaseException) -> tuple[DecodedHistory, str]:
    """The newest archived run of the case, read without Temporal (the server is unreachable)."""
    from signoff.client import data_converter
    from signoff.history import apply_archive_record, archive_dir, archived_runs, decode_history, read_archive

    runs = archived_runs(case_id)
    if not runs:
        raise ConnectionError(f"{problem}\nNo archive of {case_id!r} either ({archive_dir()}): "
                              "start Temporal, or archive closed cases with `signoff audit archive`.") from problem
    decoded = []
    for path in runs:
        history, record = read_archive(path)
        one = await decode_history(history, data_converter(), source="archive")
        decoded.append(apply_archive_record(one, record))
    newest = max(decoded, key=lambda d: d.started_at)
    return newest, f"Temporal at {settings.temporal_address()} is unreachable: read the archive {runs[0].parent}"


async def live_rollback_votes(client: Any, h: DecodedHistory) -> tuple[ApprovalRecord, ...] | None:
    """The rollback requests a running case counted, then voided when its quorum was met (the requester
    left the policy, their key was replaced): kept in its state, not yet in its history (QA9). None for an
    ended case (its final view says so), a case without rollback requests, or no worker to answer."""
    if h.close != "running" or not (h.updates_named("rollback") or h.signals_named("rollback_signal")):
        return None
    try:
        view = await client.get_workflow_handle(h.workflow_id, run_id=h.run_id).query(
            "status", result_type=CaseView, rpc_timeout=BEST_EFFORT_QUERY)
    except Exception:  # no worker to answer: the requests stay as the history has them
        return None
    return tuple(r for r in view.refusals if r.via == "rollback_vote")


async def explain_case(case_id: str) -> dict[str, Any]:
    from signoff.client import connect

    try:
        client = await connect()
        history = await load_history(client, case_id)
    except Exception as exc:
        if not _unreachable(exc):
            raise
        archived, note = await _from_archive(case_id, exc)
        from signoff.undo_audit import archived_undo_explanation

        return {**explanation_from_history(archived), "note": note,
                "rollback_after_close": await archived_undo_explanation(case_id)}
    live_view = None
    # a rollback quorum's counted requests can be voided in state (the requester left the policy): the
    # running case's view says so, its history not yet (QA9)
    if history.close == "running" and (history.signals_named(*CHECKED_SIGNALS) or history.updates_named("rollback")):
        try:
            live_view = await client.get_workflow_handle(case_id).query("status", result_type=CaseView,
                                                                         rpc_timeout=BEST_EFFORT_QUERY)
        except Exception:  # no worker to answer: the outcomes of approval signals stay "recorded"
            live_view = None
    ex = explanation_from_history(history, live_view)
    await _add_reset_discards(client, ex)
    if history.close != "running":  # an ended case may have been rolled back since (signoff/undo_audit.py)
        from signoff.undo_audit import undo_explanation

        ex["rollback_after_close"] = await undo_explanation(client, case_id)
    return ex


# ---------------------------------------------------------------- rendering for people


def _target(t: dict[str, Any] | None) -> str:
    return f"{t['kind']} {t['id']}" if t else "?"


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"


def _state(d: Any) -> str:
    return json.dumps(d, sort_keys=True) if d is not None else "(not captured)"


def render_explanation(ex: dict[str, Any], features: bool = False) -> str:
    """The explanation for people; `features`: list every non-zero feature of the scored vector."""
    lines: list[str] = []
    add = lines.append
    case = ex["case"]
    add(f"Case {ex['case_id']}  ({case.get('title') or 'untitled'})")
    via = ex.get("opened_via")
    add(f"  {case.get('alert_type')} / severity {case.get('severity')}; opened {ex['opened_at']} by "
        f"{ex['opened_by'] or '?'}" + (f" (client {via})" if via and via != ex["opened_by"] else "")
        + f"; workflow {ex['workflow_status']}"
        + (f" at {ex['closed_at']}" if ex["closed_at"] else "")
        + (f"; {'final ' if ex['final']['from'] == 'final result' else ''}status {ex['final']['status']}"
           if ex.get("final") else ""))
    add(f"  Source: {ex['source']}, run {ex['run_id']}")
    for r in ex.get("resets", []):
        add(f"  RESET: this run was made at {r['at']} by `temporal workflow reset` of run {r['base_run_id']} "
            f"(reason {r['reason']!r}): the history before event {r['event_id']} was copied; what the old run "
            "recorded after that is not part of this run")
        if r.get("unreadable"):
            add(f"    {r['unreadable']}")
        for d in r.get("discarded") or []:
            add(f"    - DISCARDED by the reset: {d['at']}  {d['what']}")
    if ex.get("note"):
        add(f"  Note: {ex['note']}")
    for problem in ex.get("undecodable", []):
        add(f"  CANNOT DECODE some payloads: {problem}")
    add("")
    alerts = ex["alerts"]
    add(f"Alerts: {alerts['count']} ({alerts['recorded_in_history']} recorded in full in the history"
        + (f", {len(alerts['detached'])} since detached)" if alerts.get("detached") else ")"))
    for a in alerts["alerts"][:10]:
        add(f"  - {a['time']}  {a['title']}  ({a['source']} alert {a['uid']})" + (
            f"  entities {', '.join(a['entities'][:4])}" if a["entities"] else "")
            + (f"  DETACHED into case {a['detached_to']}" if a.get("detached_to") else ""))
    if len(alerts["alerts"]) > 10:
        add(f"  ... and {len(alerts['alerts']) - 10} more (use --json)")
    if d := ex.get("detached_from"):
        add(f"  Detached from case {d.get('case_id')}: alert {d.get('alert_uid')} taken out by {d.get('by')} at "
            f"{d.get('at')} ({d.get('reason')!r})")
    for d in ex.get("detaches", []):
        add(f"  Detached: {d['at']} alert {d['alert_uid']} by {d['requested_by']}{' (signed)' if d['signed'] else ''} "
            f"({d['reason']!r}) into case {d['new_case']}" + (f" ({d['opened']})" if d["opened"] else ""))
        if d["skipped_steps"]:
            add(f"    skipped, their target came only from it: {', '.join(d['skipped_steps'])}")
        if d["acted_steps"]:
            add(f"    executed on a target that came from it (still in effect): {', '.join(d['acted_steps'])}")
    lines.extend(render_merge(ex))
    if ex["enrichment"]:
        add(f"Enrichment: {ex['enrichment'].get('summary') or '(no summary)'}")
        for k, v in sorted((ex["enrichment"].get("facts") or {}).items())[:8]:
            add(f"  {k}: {v}")
    add("")
    gov = ex["governance"]
    if gov:
        add(f"Governance: policy {gov['policy_version'][:16]} (governance revision "
            f"{gov.get('governance_revision', 0)}); {gov['alert_type']} is {gov['autonomy']} "
            f"(set by {gov.get('autonomy_set_by', 'policy file')}), threshold {_num(gov['threshold'])} "
            f"set by {gov['threshold_set_by']}" + (f"; read {gov['loaded_at']}" if gov.get("loaded_at") else ""))
        if gov.get("playbook"):
            add(f"  playbook {gov['playbook']['name']} sha256 {gov['playbook']['digest'][:16]} (as recorded when the "
                "case began; later edits of it change new cases only)")
        for r in gov.get("rechecks") or ():
            add(f"  re-read {r['at']}: policy {str(r['policy_version'])[:16]} (governance revision "
                f"{r['governance_revision']}); approvals were checked against it, the decision above stands")
    s = ex["score"]
    if s:
        add(f"Score: model {s['model_id'][:16]}, feature vector sha256 {s['feature_hash'][:16]}")
        add(f"  predicted {s['predicted']} with calibrated confidence {s['confidence']:.3f}; "
            f"P(not a true positive) = {s['benign_confidence']:.3f}")
        add("  probabilities: " + ", ".join(f"{k} {v:.3f}" for k, v in s["probabilities"].items()))
        if s["contributions"]:
            add("  Top contributions:")
            for c in s["contributions"]:
                add(f"    - {c['text']}")
        lines.extend(render_features(s, features))
        if s.get("included_detached"):
            add(f"  This score was computed with alert(s) since detached: {', '.join(s['included_detached'])} "
                "(the case is not rescored)")
        for sh in s.get("shadow", []):
            add(f"  Shadow: candidate model {sh['model_id'][:16]} predicted {sh['predicted']} "
                f"(confidence {sh['confidence']:.3f}); it never decides")
    elif ex["scoring_problem"]:
        add(f"Score: none ({ex['scoring_problem']})")
    d = ex["decision"]
    if d:
        add(f"Decision: {d['kind'].upper()} because {d['reason']}")
    for problem in ex.get("unsigned_input", []):
        add(f"NOT FROM AN INGESTER: {problem} (nothing ran on its own; the playbook was not planned)")
    for b in ex.get("refused_batches", []):
        add(f"Alerts refused at {b['at']}: {b['alerts']} ({', '.join(b['alert_uids'][:3])}): {b['reason']}")
        if d["recorded"] and not d["recomputed_matches_recorded"]:
            add(f"  WARNING: the workflow recorded {d['recorded']}; recomputing from the history gives {d['kind']}")
    add("")
    add("Approvals and refusals:" if ex["approvals"] or ex["refused_attempts"] else "Approvals: none")
    entries: list[tuple[str, str]] = []
    for a in ex["approvals"]:
        # A malformed signal (a typo in "approver") is kept and refused; its fields may be missing.
        who = str(a["approver"] or "(no approver given)") + (f" via {channel_text(a['channel'])}" if a.get("channel") else "") \
            + (f" (identity {a['identity']})" if a["identity"] else "")
        entries.append((a["at"] or "", f"  - {a['at']}  {a['decision']} step {a['step']} by {who} via {a['via']}"
                        + (" (signed)" if a["signed"] else "") + f": {a['outcome'].upper()}"
                        + ((f" ({a['refusal']})" if a["outcome"] == "voided" else f", refused because {a['refusal']}")
                           if a["refusal"] else "")
                        + (f"; malformed signal, sent: {a['malformed']}" if a.get("malformed") else
                           f"; reason: {a['reason']!r}")))
    for r in ex["refused_attempts"]:
        who = refused_actor(r)
        if r.get("via"):  # refused at the chat bridge or by the case, sent from chat
            who = f"{who or 'nobody in policy'} via {channel_text(r['via'])}"
        entries.append((str(r.get("at", "")), f"  - {r.get('at')}  {r.get('kind')} step {r.get('step', '-')} by {who}: "
                        f"REFUSED before it reached Temporal ({r.get('refusal')}); reason given: {r.get('reason')!r}"))
    for _, line in sorted(entries, key=lambda e: e[0]):
        add(line)
    if ex["actions"]:
        add("")
        add("Actions:")
        for a in ex["actions"]:
            add(f"  - {a['completed_at'] or a['started_at']}  {a['step_id']}: {a['action']} on {_target(a['target'])}: "
                f"{a['outcome']}" + (f" ({a['failure']})" if a["failure"] else ""))
            add(f"      before {_state(a['before'])}  after {_state(a['after'])}"
                + (f"  ({a['detail']})" if a["detail"] else ""))
    if ex["compensations"]:
        add("Compensations:")
        for c in ex["compensations"]:
            add(f"  - {c['completed_at'] or c['started_at']}  {c['action']} undoes {c['undoes']} on {_target(c['target'])}: "
                f"{c['outcome']}; restored {_state(c['restored'] if c['restored'] is not None else c['restore_to'])}"
                + (f" ({c['failure']})" if c["failure"] else ""))
    for rb in ex["rollbacks"]:
        took = rb["seconds_to_last_compensation"]
        if rb.get("refusal"):
            add(f"Rollback {'request voided' if rb.get('outcome') == 'voided' else 'refused'}: {rb['at']} from {rb['requested_by']} via {rb['via']} ({rb['reason']!r}): "
                f"{rb['refusal']}")
            continue
        by = str(rb["requested_by"]) + (f" via {channel_text(rb['channel'])}" if rb.get("channel") else "")
        if rb["outcome"] == "counted":
            add(f"Rollback requested: {rb['at']} by {by} via {rb['via']}{' (signed)' if rb.get('signed') else ''} "
                f"({rb['reason']!r}); "
                "counted towards the policy's rollback quorum" + (f": {rb['result']}" if rb["result"] else ""))
            continue
        with_ = rb.get("quorum_with") or []
        add(f"Rollback: {rb['at']} by {by} via {rb['via']}{' (signed)' if rb.get('signed') else ''} "
            f"({rb['reason']!r}); " + (f"the quorum with {', '.join(map(str, with_))}; " if with_ else "") +
            f"{rb['compensations']} compensations" + (f", done in {took:.1f} s" if took is not None else ""))
    for e in ex["escalations"]:
        add(f"Escalation: {e['at']} ({e.get('kind')}): {e.get('reason')}")
    for v in ex["verdicts"]:
        state = "" if v["accepted"] in (True, None) else (
            f" (refused: {v['refusal']})" if v.get("refusal") else " (refused)")
        by = str(v["analyst"]) + (f" via {channel_text(v['channel'])}" if v.get("channel") else "")
        add(f"Verdict: {v['verdict']} by {by} at {v['at']} via {v['via']}"
            f"{' (signed)' if v.get('signed') else ''}{state}: {v['reason']!r}")
    for r in ex.get("retries", []):
        add(f"Retry: {r['at']} by {r['requested_by']} ({r['reason']!r}): {r['result']}")
    for a in ex.get("assignments", []):
        add(f"Assigned: {a['at']} to {a['assignee']} by {a['by']}" + (f" ({a['reason']!r})" if a["reason"] else ""))
    if ex.get("notes"):
        add("Investigation log:")
        for n in ex["notes"]:
            add(f"  - {n['at']}  {n['author']}{' (signed)' if n['signed'] else ''}: {n['text']}")
    if ex.get("final") and ex["final"]["steps"]:
        add("")
        add("Steps at close:" if ex["final"]["from"] == "final result" else "Steps now (live status query):")
        for st in ex["final"]["steps"]:
            add(f"  - {st['step_id']}: {st['action']} on {_target(st['target'])} (tier {st['tier']}, "
                f"{st['reversibility']}) -> {st['state']}" + (f": {st['error']}" if st["error"] else ""))
    if ex.get("rollback_after_close"):
        from signoff.undo_audit import render_undo

        add("")
        lines.extend(render_undo(ex["rollback_after_close"]))
    add("")
    add("Timeline:")
    for item in ex["timeline"]:
        add(f"  {item['at']}  {item['what']}")
    # The CLI prints through rich: keep square brackets in alert titles or reasons literal. Each entry is
    # one line: a newline or a terminal escape inside alert content is shown as `\n` / `\x1b` (QA10).
    return "\n".join(terminal(line) for line in lines)
