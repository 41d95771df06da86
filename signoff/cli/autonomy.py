"""`signoff autonomy ...`: the autonomy ladder per alert type, its evidence, promotion and the kill switch."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from signoff.cli._common import emit_json, fail, out, pct, run

app = typer.Typer(help="Earned autonomy per alert type: evidence, promotion (quorum), kill switch.",
                  no_args_is_help=True)

USER = typer.Option(..., "--as", help="who (checked against the policy's roles)")
REASON = typer.Option(..., "--reason", help="why (recorded)")


async def change(update_name: str, arg: Any) -> str:
    """Send a governance change, signed with the person's approver key when they have one (like
    `signoff approve`); a refusal the workflow could not record (its validator's) goes to refused.jsonl."""
    from signoff.autonomy.client import GovernanceRefused, NoWorker, govern, governance_id
    from signoff.client import connect
    from signoff.refused_log import record_governance_refusal

    arg = sign_change(update_name, arg)
    client = await connect()
    try:
        return str(await govern(client, update_name, arg))
    except GovernanceRefused as exc:
        if not exc.recorded:
            record_governance_refusal(update_name, governance_id(), arg.model_dump(mode="json"), str(exc))
        fail(f"refused: {exc}{_next_step(arg, str(exc))}")
    except NoWorker as exc:
        fail(str(exc))


def sign_change(update_name: str, arg: Any) -> Any:
    """`arg` with the person's token for this change (policies/signing.py), or as it is when they have
    no key file (counted only where the policy trusts unsigned changes) or the change needs no token."""
    from signoff.autonomy.client import governance_id
    from signoff.autonomy.models import signed_change
    from signoff.keys import ApproverKeyError, load_private_key

    scope = signed_change(update_name, arg)
    if scope is None or getattr(arg, "token", None):
        return arg
    try:
        key = load_private_key(arg.by)
    except ApproverKeyError as exc:
        fail(str(exc))
    if key is None:
        return arg
    from policies.signing import sign_governance_change

    change_kind, subject = scope
    token = sign_governance_change(key, workflow_id=governance_id(), change=change_kind, subject=subject,
                                   person=arg.by)
    return arg.model_copy(update=dict(token=token))


def _next_step(arg: Any, reason: str) -> str:
    """What the person can do about a refusal on their side (empty when there is nothing to add)."""
    from signoff.keys import ApproverKeyError, key_path

    if "not enough evidence" in reason:  # QA6 L11: the refusal said how much, not how it is earned
        name = getattr(arg, "alert_type", "") or "ALERT_TYPE"
        return (f". Evidence is earned by analysts' verdicts (`signoff close CASE --verdict ...`) on {name} cases "
                "the model in force scored at or above the threshold while they were in the loop (the cases it would have "
                f"closed on its own); `signoff autonomy status` shows how many there are and what is missing")
    user = getattr(arg, "by", "")
    try:
        path = key_path(user)
    except ApproverKeyError:
        return ""
    if getattr(arg, "token", None) is None and "unsigned governance" in reason:
        return (f". No approver key for {user!r} on this machine ({path}): `signoff keys create --as {user}`, "
                f"then the line `signoff keys show --as {user}` prints goes under `approvers:` in the policy the "
                "workers run (by pull request)")
    if "no public key for" in reason:
        return (f". This change was signed with {path}: add the line `signoff keys show --as {user}` prints under "
                "`approvers:` in the policy the workers run (then restart them)")
    if "does not verify" in reason:
        return (f". The key in {path} is not the one the policy holds for {user!r}: use the key whose public key "
                f"is in the policy, or put the line `signoff keys show --as {user}` prints in the policy")
    return ""


async def load_state() -> Any:
    import asyncio

    from signoff.autonomy.client import read_state
    from signoff.client import connect

    client = await connect()
    try:
        return await asyncio.wait_for(read_state(client), 30)
    except TimeoutError:
        fail("the governance workflow did not answer within 30 s: is a worker running (`signoff worker`)?")


def status_rows(alert_type: str | None = None) -> list[dict[str, Any]]:
    from policies.loader import load_policy
    from signoff.autonomy.evidence import evidence, last_model_change
    from signoff.governance_state import snapshot

    policy = load_policy()
    state = run(load_state())
    names = [alert_type] if alert_type else sorted(policy.alert_types)
    if alert_type and alert_type not in policy.alert_types:
        fail(f"unknown alert type {alert_type!r}; policy has: {', '.join(sorted(policy.alert_types))}")
    rows = []
    active = (state.model.active if state else None) or _store_model()
    changed_at = last_model_change(state)
    for name in names:
        snap = snapshot(policy, name, state)
        records = state.recent.get(name, ()) if state else ()
        # As the governance workflow judges a promotion: only the cases the model in force scored count.
        ev = evidence(name, records, snap.threshold, policy.autonomy, snap.candidate_model_id,
                      active_model_id=active, model_changed_at=changed_at)
        if name == policy.drift.open_case_alert_type:  # drift cases are for people, whatever the evidence says
            ev = ev.model_copy(update=dict(recommend_promotion=False, recommendation=(
                "drift cases always go to a person (never scored or closed automatically): no threshold to set")))
        drift = state.last_drift if state else None
        breached = [f for f in (drift.findings if drift else ()) if f.alert_type == name and f.breaches]
        if breached and drift is not None:
            ev = ev.model_copy(update=dict(recommend_promotion=False, recommendation=(
                f"drift found by the last check ({drift.at:%Y-%m-%d %H:%M} UTC): {breached[0].breaches[0]}; "
                f"the shadow evidence ({ev.recommendation}) waits for a clean drift check")))
        live = state.alert_types.get(name) if state else None
        counts = state.counts.get(name) if state else None
        changed = _last_model_change(state)
        rows.append({
            "active_model": active,
            "model_changed": changed,
            "reviewed_before_model_change": (ev.reviewed_earlier_models or 0) if changed else 0,
            "reviewed_other_models": ev.reviewed_earlier_models or 0,
            "alert_type": name,
            "autonomy": snap.autonomy,
            "autonomy_set_by": snap.autonomy_set_by,
            "threshold": snap.threshold,
            "threshold_set_by": snap.threshold_set_by,
            "pending_promotion": list(live.pending_promotion) if live else [],
            "promotion_quorum": policy.autonomy.promotion_quorum,
            "evidence": ev.model_dump(mode="json"),
            "all_time": counts.model_dump(mode="json") if counts else None,
            "policy_version": snap.policy_version,
            "governance_revision": snap.governance_revision,
        })
    return rows


def _last_model_change(state: Any) -> dict[str, Any] | None:
    """The last accepted model promotion or rollback: the evidence before it is about another model."""
    if state is None:
        return None
    event = next((e for e in reversed(state.events)
                  if e.accepted and e.kind in ("model_promote", "model_rollback")), None)
    if event is None:
        return None
    return {"at": event.at, "kind": event.kind, "model": event.after, "by": event.by}


def _store_model() -> str | None:
    """The model cases get when governance names none: this machine's model store's active model (the
    workers read theirs: the same one where they share the store, docs/deployment.md §6)."""
    from signoff.scoring import model_store

    try:
        return model_store.active_model_id()
    except model_store.ModelStoreError:
        return None


def _model_name(model: str | None) -> str:
    if not model:
        return "the model in force"
    return "the model store's default" if model == "model store default" else model[:12]


@app.command()
def status(
    alert_type: str = typer.Argument(None, help="one alert type (default: all)"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per alert type"),
) -> None:
    """Autonomy per alert type with the shadow-mode evidence and the promotion recommendation."""
    rows = status_rows(alert_type)
    if json_out:
        for row in rows:
            emit_json(row)
        return
    table = Table("alert type", "autonomy", "threshold", "reviewed", "agree", "would auto-close",
                  "TPs among them", "precision", "miss 95% ub", "promote?")
    for r in rows:
        ev, m = r["evidence"], r["evidence"]["model"]
        table.add_row(
            r["alert_type"], f"{r['autonomy']} ({r['autonomy_set_by']})",
            "-" if r["threshold"] is None else f"{r['threshold']:.4f} ({r['threshold_set_by']})",
            str(ev["reviewed"]), pct(m["agreement"]), str(m["would_auto_close"]), str(m["misses"]),
            pct(m["precision_at_threshold"]), pct(m["miss_upper95"]),
            "yes" if ev["recommend_promotion"] else "no",
        )
    out.print(table)
    for r in rows:
        ev = r["evidence"]
        line = f"[bold]{r['alert_type']}[/]: {ev['recommendation']}"
        if r["pending_promotion"]:
            line += f" — promotion approved by {', '.join(r['pending_promotion'])} ({len(r['pending_promotion'])}/{r['promotion_quorum']})"
        out.print(line, highlight=False)
        if r["reviewed_before_model_change"]:
            change = r["model_changed"]
            out.print(f"  [yellow]model changed[/] {change['at']:%Y-%m-%d %H:%M} UTC ({change['kind'].replace('_', ' ')} "
                      f"to {_model_name(change['model'])} by {change['by']}): {r['reviewed_before_model_change']} of these "
                      f"{ev['reviewed']} reviewed cases are about earlier models' scores and do not count; the evidence "
                      f"and the recommendation count the {ev['reviewed_active_model']} scored by "
                      f"{_model_name(r['active_model'])} (a promotion needs cases it scored)", highlight=False)
        elif r["reviewed_other_models"]:
            out.print(f"  [yellow]other models[/]: {r['reviewed_other_models']} of these {ev['reviewed']} reviewed cases "
                      f"were scored by another model than {_model_name(r['active_model'])} and do not count",
                      highlight=False)
        cand = ev.get("candidate")
        if cand and cand["scored"]:
            out.print(f"  shadow candidate {ev['candidate_model_id'][:12]}: agreement {pct(cand['agreement'])}, "
                      f"would auto-close {cand['would_auto_close']} ({cand['misses']} TPs), "
                      f"miss 95% ub {pct(cand['miss_upper95'])} on {cand['scored']} reviewed cases", highlight=False)
    if rows:
        out.print(f"policy version {rows[0]['policy_version'][:16]} (governance revision {rows[0]['governance_revision']})")


@app.command()
def promote(
    alert_type: str = typer.Argument(..., help="alert type to put on the loop"),
    user: str = USER,
    reason: str = REASON,
) -> None:
    """Approve putting an alert type on the loop (needs a governance role; policy may require a quorum)."""
    from signoff.autonomy.models import AutonomyChange

    out.print(run(change("set_autonomy", AutonomyChange(alert_type=alert_type, level="on_the_loop", by=user,
                                                        reason=reason))), highlight=False)


@app.command()
def demote(
    alert_type: str = typer.Argument(None, help="alert type (or --all)"),
    all_types: bool = typer.Option(False, "--all", help="every alert type: the kill switch"),
    user: str = USER,
    reason: str = REASON,
) -> None:
    """Back to in_the_loop at once (recorded). Running cases respect it from their next decision."""
    from signoff.autonomy.models import AutonomyChange

    if bool(alert_type) == all_types:
        fail("give one ALERT_TYPE or --all")
    target = "*" if all_types else alert_type
    out.print(run(change("set_autonomy", AutonomyChange(alert_type=target, level="in_the_loop", by=user,
                                                        reason=reason))), highlight=False)


@app.command()
def history(
    json_out: bool = typer.Option(False, "--json", help="one JSON object per event"),
    limit: int = typer.Option(50, help="newest events shown"),
) -> None:
    """Every governance change and refusal: who, when, why, before -> after, revision."""
    state = run(load_state())
    events = list(state.events)[-limit:] if state else []
    print_events(events, json_out)


def print_events(events: list[Any], json_out: bool) -> None:
    """Governance events as JSON lines, or a table a person reads (`autonomy history`, `policy history`)."""
    if json_out:
        for e in events:
            emit_json(e.model_dump(mode="json"))
        return
    table = Table("rev", "at (UTC)", "kind", "alert type", "by", "before -> after", "reason")
    for e in events:
        change_text = f"{e.before} -> {e.after}" if e.accepted else f"[red]refused:[/] {e.after}"
        if e.accepted and e.kind in ("autonomy", "drift") and e.before == e.after:
            change_text = f"{e.after} (unchanged: already so; recorded)"  # QA5: not a change of the line
        table.add_row(str(e.revision), e.at.strftime("%Y-%m-%d %H:%M:%S"), e.kind, e.alert_type, e.by,
                      change_text, e.reason)
    out.print(table)
