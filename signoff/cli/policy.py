"""`signoff policy ...`: the policy in force (file + live governance state), thresholds and their history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from signoff.cli._common import emit_json, err, fail, out, pct, run

app = typer.Typer(help="Policy as versioned code: show it, set and revert thresholds (recorded).",
                  no_args_is_help=True)


@app.command()
def show(
    json_out: bool = typer.Option(False, "--json", help="one JSON object"),
    file_only: bool = typer.Option(False, "--file", help="the policy file alone, without Temporal or a worker: "
                                                         "check a policy before deploying it"),
) -> None:
    """The effective policy: the file (its hash) overlaid with the live governance state."""
    from policies.loader import PolicyError, load_policy, policy_path
    from signoff.cli._common import fail_policy
    from signoff.cli.autonomy import load_state
    from signoff.governance_state import snapshot

    try:
        policy = load_policy()
    except PolicyError as exc:  # a bad file: one line saying what to fix, not a traceback
        fail_policy(exc)
    # QA6: checking a policy before deploying it needed a cluster and a worker; `--file` needs neither.
    state = None if file_only else _live_state(load_state)
    types: dict[str, dict[str, Any]] = {}
    for name in sorted(policy.alert_types):
        snap = snapshot(policy, name, state)
        types[name] = {"playbook": policy.alert_types[name].playbook, "autonomy": snap.autonomy,
                       "autonomy_set_by": snap.autonomy_set_by, "threshold": snap.threshold,
                       "threshold_set_by": snap.threshold_set_by}
    any_snap = snapshot(policy, policy.default_alert_type, state)
    doc: dict[str, Any] = {
        "policy_file": str(policy_path()),
        "policy_file_sha256": policy.digest(),
        # Without the live state there is no policy version or revision to tell (the file's hash is above).
        "policy_version": None if file_only else any_snap.policy_version,
        "governance_revision": None if file_only else any_snap.governance_revision,
        "active_model": None if file_only else any_snap.model_id,
        "candidate_model": None if file_only else any_snap.candidate_model_id,
        "deployment": {"trust_unsigned_approvals": policy.deployment.trust_unsigned_approvals,
                       "approval_token_max_ttl": policy.deployment.approval_token_max_ttl,
                       "chat_bridges": sorted(policy.deployment.chat_bridges)},
        "approvers": {name: {"roles": list(a.roles), "public_key": a.public_key, "slack_user": a.slack_user}
                      for name, a in sorted(policy.approvers.items())},
        "verdict_sla": dict(policy.verdict_sla),
        "rollback_window": policy.rollback_window,
        "irreversible_tier": policy.irreversible_tier.value,
        "alert_types": types,
        "tiers": {k.value: v.model_dump(mode="json") for k, v in policy.tiers.items()},
        "governance_roles": list(policy.governance_roles),
        "rollback_roles": list(policy.rollback_roles),
        "rollback_quorum": policy.rollback_quorum,
        "review_sample_rate": policy.review_sample_rate,
        "autonomy": policy.autonomy.model_dump(mode="json"),
        "drift": policy.drift.model_dump(mode="json"),
    }
    if json_out:
        emit_json(doc)
        return
    out.print(f"policy file {doc['policy_file']} (sha256 {policy.digest()[:16]})", highlight=False)
    if file_only:
        out.print("live governance state not read (--file): thresholds and autonomy below are the file's; "
                  "`signoff policy show` without --file adds the changes recorded since", highlight=False)
    else:
        out.print(f"policy version {doc['policy_version'][:16]} = file + governance revision "
                  f"{doc['governance_revision']}", highlight=False)
    table = Table("alert type", "playbook", "autonomy", "set by", "threshold", "set by")
    for name, t in types.items():
        table.add_row(name, t["playbook"], t["autonomy"], t["autonomy_set_by"],
                      "-" if t["threshold"] is None else f"{t['threshold']:.6f}", t["threshold_set_by"])
    out.print(table)
    out.print(f"review sample on the loop: {policy.review_sample_rate:.0%} of automatic closes; "
              f"promotion quorum {policy.autonomy.promotion_quorum}, model promotion quorum "
              f"{policy.autonomy.model_promotion_quorum}; governance roles {list(policy.governance_roles)}",
              highlight=False)
    tiers = ", ".join(f"{k}: {'auto' if v['auto'] else str(v['quorum']) + ' of ' + '/'.join(v['roles'])}"
                      for k, v in doc["tiers"].items())
    out.print(f"tiers: {tiers}", highlight=False)
    window = (f"; rollback window {policy.rollback_window} after the verdict" if policy.rollback_window
              else "; no rollback window: a case ends at its verdict")
    out.print(f"rollback: {policy.rollback_quorum} of {'/'.join(policy.rollback_roles)} must ask{window}", highlight=False)
    trust = policy.deployment.trust_unsigned_approvals
    out.print(f"unsigned approvals: {'counted (lab: trust_unsigned_approvals true)' if trust else 'refused'}; "
              f"signed tokens live at most {policy.deployment.approval_token_max_ttl}", highlight=False)
    approvers = Table("approver", "roles", "public key", "slack user")
    for name, a in doc["approvers"].items():
        key = a["public_key"][:12] + "..." if a["public_key"] else ("NO public key" + ("" if trust else ": cannot approve"))
        approvers.add_row(name, ", ".join(a["roles"]), key, a["slack_user"] or "-")
    out.print(approvers)
    sla = ", ".join(f"{k} {v}" for k, v in policy.verdict_sla.items()) or "none"
    out.print(f"verdict SLA: {sla}; irreversible actions need tier {policy.irreversible_tier.value}", highlight=False)


def _live_state(load_state: Any) -> Any:
    """The governance state from the cluster; when it cannot be read, one line that also says how to
    check the file alone."""
    try:
        return run(load_state())
    except typer.Exit:
        err.print("to check the policy file alone (no Temporal, no worker): `signoff policy show --file`",
                  highlight=False, soft_wrap=True)
        raise


@app.command("set-threshold", context_settings={"ignore_unknown_options": True})  # "-0.1" is a value, not an option
def set_threshold(
    alert_type: str = typer.Argument(..., help="alert type"),
    value: str = typer.Argument(..., help="auto-close threshold on P(not a true positive), 0..1; 'policy' = the file's"),
    user: str = typer.Option(..., "--as", help="who (needs a governance role)"),
    reason: str = typer.Option(..., "--reason", help="why (recorded)"),
) -> None:
    """Set the auto-close threshold of an alert type (recorded: who, why, when; reversible)."""
    from signoff.autonomy.models import ThresholdChange
    from signoff.cli.autonomy import change

    number: float | None = None
    if value.lower() not in ("policy", "file", "none"):
        try:
            number = float(value)
        except ValueError:
            fail(f"VALUE must be a number between 0 and 1 (or 'policy'), not {value!r}")
        if not 0.0 <= number <= 1.0:
            fail(f"VALUE must be between 0 and 1, not {number}")
    out.print(run(change("set_threshold", ThresholdChange(alert_type=alert_type, value=number, by=user,
                                                          reason=reason))), highlight=False)


@app.command("revert-threshold")
def revert_threshold(
    alert_type: str = typer.Argument(..., help="alert type"),
    user: str = typer.Option(..., "--as", help="who (needs a governance role)"),
    reason: str = typer.Option(..., "--reason", help="why (recorded)"),
) -> None:
    """Undo the last threshold change of an alert type (itself recorded, so it can be undone too)."""
    from signoff.autonomy.models import ThresholdRevert
    from signoff.cli.autonomy import change

    out.print(run(change("revert_threshold", ThresholdRevert(alert_type=alert_type, by=user, reason=reason))),
              highlight=False)


@app.command()
def history(
    alert_type: str = typer.Argument(None, help="one alert type (default: all)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per change"),
) -> None:
    """Threshold and autonomy changes: who, when, why, before -> after."""
    from signoff.cli.autonomy import load_state, print_events

    state = run(load_state())
    # The line between people and automation, per alert type; model changes (promotions,
    # rollbacks, candidates, and their refusals) are in `signoff autonomy history`.
    events = [e for e in (state.events if state else ())
              if e.kind in ("threshold", "threshold_revert", "autonomy", "autonomy_approval", "drift", "refused")
              and (e.kind != "refused" or (e.alert_type and e.before != "verdict"))  # not model or verdict refusals
              and (alert_type is None or e.alert_type == alert_type)]
    print_events(events, json_out)


@app.command()
def backtest(
    alert_type: str = typer.Argument(..., help="alert type"),
    thresholds: list[float] = typer.Option([], "--threshold", help="a threshold to try (repeat for more)"),
    risk_budget: float = typer.Option(0.005, help="largest share of true positives auto-closed (95% upper bound)"),
    report: Path = typer.Option(None, help="write the safety curve on the reviewed cases as an HTML page"),
    all_models: bool = typer.Option(False, "--all-models", help="also count cases earlier models scored (their "
                                                                "confidences are on another model's scale)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object"),
) -> None:
    """What a threshold would have done to the cases analysts reviewed: closed, and true positives among them.

    Counts the cases the model in force scored (as a promotion does); --all-models counts every reviewed case."""
    from policies.loader import load_policy
    from signoff.cli.autonomy import load_state
    from signoff.governance_state import snapshot

    policy = load_policy()
    if alert_type not in policy.alert_types:
        fail(f"unknown alert type {alert_type!r}; policy has: {', '.join(sorted(policy.alert_types))}")
    bad = [t for t in thresholds if not 0.0 <= t <= 1.0]
    if bad or not 0.0 < risk_budget < 1.0:
        fail(f"thresholds must be between 0 and 1 (got {bad})" if bad else
             f"--risk-budget must be between 0 and 1, not {risk_budget}")
    state = run(load_state())
    snap = snapshot(policy, alert_type, state)
    records, active, other = _about_active_model(state.recent.get(alert_type, ()) if state else (), state)
    doc = backtest_doc(alert_type, [*records, *other] if all_models else records, snap, thresholds, risk_budget)
    doc["active_model"], doc["scored_by_other_models"], doc["all_models"] = active, len(other), all_models
    if other:
        doc["caveats"].append(
            f"{len(other)} reviewed case(s) were scored by earlier models than {(active or '?')[:12]} (their "
            "confidences are on another model's scale): " + ("counted here (--all-models)" if all_models else
                                                              "left out, as a promotion leaves them out "
                                                              "(--all-models counts them)"))
    if report is not None:
        _write_backtest_report(report, doc)
        doc["report"] = str(report)
    if json_out:
        emit_json(doc)
        return
    _print_backtest(doc)


def backtest_doc(alert_type: str, records: Any, snap: Any, thresholds: list[float], risk_budget: float) -> dict[str, Any]:
    """The backtest of `signoff policy backtest` as one JSON-able document (rows, recommendation, caveats)."""
    from signoff.autonomy.backtest import at_threshold, curve, lowest_within_budget

    active = [(r.benign_confidence, r.verdict) for r in records if r.benign_confidence is not None]
    candidate = [(r.candidate_benign_confidence, r.verdict) for r in records
                 if r.candidate_benign_confidence is not None
                 and snap.candidate_model_id and snap.candidate_model_id.startswith(r.candidate_model_id or "-")]
    tried: list[tuple[str, float]] = []
    if snap.threshold is not None:
        tried.append((f"in force (set by {snap.threshold_set_by})", snap.threshold))
    tried += [("tried", t) for t in thresholds]
    best = lowest_within_budget(active, risk_budget)
    if best is not None:
        tried.append((f"lowest within {risk_budget:.2%} of TPs", best.threshold))
    rows = [{"label": label, "model": "active", **at_threshold(active, t).model_dump()} for label, t in tried]
    if candidate:
        rows += [{"label": label, "model": "candidate", **at_threshold(candidate, t).model_dump()} for label, t in tried]
    times = [r.at for r in records if r.at is not None]
    sampled = sum(1 for r in records if r.review_sampled)
    caveats = []
    if snap.autonomy == "on_the_loop":
        caveats.append(f"{alert_type} is on the loop: cases it closed on its own are in this evidence only when "
                       f"sampled for review ({sampled} here), so shares above the threshold in force are undercounted")
    if best is None and active:
        caveats.append(f"no threshold keeps true positives closed within {risk_budget:.2%} at the 95% bound on "
                       f"{at_threshold(active, 1.0).tp_total} reviewed true positives: "
                       "more reviewed cases are needed before this evidence can back a threshold")
    return {
        "alert_type": alert_type,
        "reviewed": len(records),
        "scored": len(active),
        "review_sampled": sampled,
        "evidence_from": min(times).isoformat() if times else None,
        "evidence_to": max(times).isoformat() if times else None,
        "autonomy": snap.autonomy,
        "threshold_in_force": snap.threshold,
        "threshold_set_by": snap.threshold_set_by,
        "policy_version": snap.policy_version,
        "risk_budget": risk_budget,
        "lowest_within_budget": best.threshold if best is not None else None,
        "candidate_model_id": snap.candidate_model_id if candidate else None,
        "rows": rows,
        "curve": [p.model_dump() for p in curve(active)],
        "caveats": caveats,
    }


def _about_active_model(records: Any, state: Any) -> tuple[list[Any], str | None, list[Any]]:
    """(the reviewed cases the model in force scored, plus the unscored ones; its id; the cases earlier models
    scored), by the rule a promotion counts them (signoff.autonomy.evidence.about_model)."""
    from signoff.autonomy.evidence import about_model, last_model_change
    from signoff.cli.autonomy import _store_model

    records = list(records)
    active = (state.model.active if state else None) or _store_model()
    if active is None or state is None:
        return records, active, []
    _, other = about_model(records, active, last_model_change(state))
    left_out = {id(r) for r in other}
    return [r for r in records if id(r) not in left_out], active, other


def _print_backtest(doc: dict[str, Any]) -> None:
    span = f" from {doc['evidence_from'][:10]} to {doc['evidence_to'][:10]}" if doc["evidence_from"] else ""
    out.print(f"[bold]{doc['alert_type']}[/]: {doc['reviewed']} reviewed cases{span} "
              f"({doc['scored']} scored, the last ones governance keeps), autonomy {doc['autonomy']}", highlight=False)
    if not doc["scored"]:
        out.print("no reviewed case with a score yet: close cases with `signoff close` to build the evidence")
        return
    table = Table("threshold", "", "model", "would auto-close", "TPs among them", "TPs closed of all TPs",
                  "95% ub", "miss rate")
    for r in doc["rows"]:
        table.add_row(f"{r['threshold']:.6f}", r["label"], r["model"],
                      f"{r['would_auto_close']}/{r['scored']} ({pct(r['auto_close_share'])})", str(r["tp_closed"]),
                      f"{r['tp_closed']}/{r['tp_total']} ({pct(r['tp_closed_share'])})",
                      pct(r["tp_closed_upper95"]), pct(r["miss_rate"]))
    out.print(table)
    for caveat in doc["caveats"]:
        err.print(f"[yellow]note[/]: {caveat}", highlight=False)
    if doc.get("report"):
        out.print(f"safety curve on the reviewed cases: {doc['report']}")
    out.print("Only `signoff policy set-threshold` (who, why, recorded) changes what cases do.")


def _write_backtest_report(path: Path, doc: dict[str, Any]) -> None:
    from signoff.scoring.evaluate import write_safety_report
    from signoff.scoring.metrics import SafetyPoint

    points = [SafetyPoint(threshold=p["threshold"], auto_closed=p["would_auto_close"],
                          auto_closed_share=p["auto_close_share"] or 0.0, tp_wrongly_closed=p["tp_closed"],
                          tp_total=p["tp_total"], tp_wrongly_closed_share=p["tp_closed_share"] or 0.0,
                          tp_wrongly_closed_upper95=p["tp_closed_upper95"] if p["tp_closed_upper95"] is not None
                          else 1.0) for p in doc["curve"]]
    in_force = next((r for r in doc["rows"] if r["model"] == "active" and r["label"].startswith("in force")), None)
    all_tps = points[0].tp_total if points else 0  # with no threshold in force: none closed of all of them
    write_safety_report(
        path, points, "", doc["threshold_in_force"],
        in_force["tp_closed"] if in_force else 0, in_force["tp_total"] if in_force else all_tps,
        (in_force["auto_close_share"] or 0.0) if in_force else 0.0,
        title=f"Signoff backtest — {doc['alert_type']}: {doc['scored']} reviewed cases", population="reviewed cases",
        risk_budget=doc["risk_budget"])


@app.command()
def diff(
    base: Path = typer.Argument(..., help="the policy before the change (e.g. `git show main:policies/default.yaml`)"),
    new: Path = typer.Argument(None, help="the policy after it (default: the policy in force, $SIGNOFF_POLICY)"),
    fail_on_weaker: bool = typer.Option(False, "--fail-on-weaker", help="exit 1 when the change weakens governance "
                                                                         "(a CI gate for policy pull requests)"),
    cases: int = typer.Option(0, "--cases", metavar="N", help="also replay the change on the newest N recorded cases "
                                                            "(from Temporal and the archive): steps that would have "
                                                            "waited, approvals that would not count, closes that "
                                                            "would differ"),
    histories: Path = typer.Option(None, "--histories", metavar="DIR", help="replay it on case histories exported as "
                                                                          "JSON (`temporal workflow show --output "
                                                                          "json`) instead of a server"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object"),
) -> None:
    """What a policy change weakens: lower quorums, more people able to approve, slower escalation, ...

    With --cases or --histories, also what it would have done to recorded cases."""
    from policies.loader import PolicyError, load_policy, policy_path
    from policies.review import weakenings
    from signoff.cli._common import fail_policy

    new = new or policy_path()
    for path in (base, new):
        if not path.is_file():
            fail(f"{path} is not a policy file; give the policy before the change and the one after it")
    try:
        before = load_policy(base)
    except PolicyError as exc:  # the base need not keep today's promises; it only has to parse
        fail(f"the base policy cannot be compared: {exc}")
    try:
        after = load_policy(new)
    except PolicyError as exc:
        fail_policy(exc)
    found = weakenings(before, after)
    doc: dict[str, Any] = {"base": str(base), "base_sha256": before.digest(), "new": str(new),
                           "new_sha256": after.digest(), "changed": before.digest() != after.digest(), "weaker": found}
    if cases < 0:
        fail("--cases takes how many of the newest recorded cases to replay the change on (a positive number)")
    if histories is not None or cases:
        from policies.what_if import what_if
        from signoff.cli._recorded import recorded_cases

        explanations = [ex for _, ex in recorded_cases(histories, cases)]
        doc["recorded_cases"] = what_if(before, after, explanations)
    if json_out:
        emit_json(doc)
    else:
        out.print(f"{base} (sha256 {before.digest()[:16]}) -> {new} (sha256 {after.digest()[:16]})", highlight=False)
        if not doc["changed"]:
            out.print("no change", highlight=False)
        for line in found:
            out.print(f"weaker: {line}", highlight=False, soft_wrap=True)
        if doc["changed"] and not found:
            out.print("nothing weaker (the change keeps or tightens every tier, role and threshold)", highlight=False)
        if "recorded_cases" in doc:
            _print_what_if(doc["recorded_cases"])
    if found and fail_on_weaker:
        fail(f"{len(found)} weakening(s) of governance; a person with a governance role must approve this "
             "change on purpose (merge without --fail-on-weaker, or revert the lines above)")


WHAT_IF_WORDS = {
    "would_wait": "steps that ran automatically would wait for sign-off",
    "would_not_run": "steps would not have run on the approvals they had",
    "fewer_approvals": "steps would have run after fewer approvals",
    "would_run_unapproved": "steps would run without anyone's sign-off",
    "would_not_close": "automatic closes would have gone to an analyst",
    "would_close": "cases would have been closed automatically",
}


def _print_what_if(doc: dict[str, Any]) -> None:
    counts = doc["counts"]
    out.print(f"\non {doc['cases']} recorded case(s): {doc['cases_changed']} would have gone otherwise",
              highlight=False)
    for kind, words in WHAT_IF_WORDS.items():
        if counts[kind]:
            out.print(f"  {counts[kind]:>4}  {words}", highlight=False)
    if doc["steps_not_read"]:
        out.print(f"  {len(doc['steps_not_read']):>4}  running case(s) whose steps no worker reported (start a worker "
                  "to judge them)", highlight=False)
    if counts["true_positives_closed"]:
        out.print(f"  {counts['true_positives_closed']:>4}  of those closes were graded TRUE POSITIVE by an analyst",
                  highlight=False)
    for change in doc["changes"][:50]:
        out.print(f"  {change['case_id']}: {change['text']}", highlight=False, soft_wrap=True)
    if len(doc["changes"]) > 50:
        out.print(f"  ... and {len(doc['changes']) - 50} more (--json lists all)", highlight=False)
