"""`signoff policy ...`: the policy in force (file + live governance state), thresholds and their history."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from signoff.cli._common import emit_json, fail, out, run

app = typer.Typer(help="Policy as versioned code: show it, set and revert thresholds (recorded).",
                  no_args_is_help=True)


@app.command()
def show(json_out: bool = typer.Option(False, "--json", help="one JSON object")) -> None:
    """The effective policy: the file (its hash) overlaid with the live governance state."""
    from policies.loader import load_policy, policy_path
    from signoff.cli.autonomy import load_state
    from signoff.governance_state import snapshot

    policy = load_policy()
    state = run(load_state())
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
        "policy_version": any_snap.policy_version,
        "governance_revision": any_snap.governance_revision,
        "active_model": any_snap.model_id,
        "candidate_model": any_snap.candidate_model_id,
        "alert_types": types,
        "tiers": {k.value: v.model_dump(mode="json") for k, v in policy.tiers.items()},
        "governance_roles": list(policy.governance_roles),
        "review_sample_rate": policy.review_sample_rate,
        "autonomy": policy.autonomy.model_dump(mode="json"),
        "drift": policy.drift.model_dump(mode="json"),
    }
    if json_out:
        emit_json(doc)
        return
    out.print(f"policy file {doc['policy_file']} (sha256 {policy.digest()[:16]})", highlight=False)
    out.print(f"policy version {doc['policy_version'][:16]} = file + governance revision {doc['governance_revision']}",
              highlight=False)
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
    events = [e for e in (state.events if state else ())
              if e.kind in ("threshold", "autonomy", "autonomy_approval", "drift", "refused")
              and (alert_type is None or e.alert_type == alert_type)]
    print_events(events, json_out)
