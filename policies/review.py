"""What a policy change does to governance, for its pull request: `signoff policy diff BASE NEW`.

Both files may keep every promise (the loader accepts them) and the new one still be weaker: a lower
quorum, more people able to approve a tier, unsigned approvals trusted, a kill switch fewer people
may pull. Each such change is named here, so a reviewer (and CI) sees it instead of a YAML diff.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.engine import Policy, parse_duration
from signoff.models import RiskTier


def weakenings(base: Policy, new: Policy) -> list[str]:
    """Each way `new` is easier to pass, slower to tell a human, or easier to automate than `base`."""
    found: list[str] = []
    for tier in RiskTier:
        found += _tier(tier, base, new)
    found += _wider("rollback_roles", base, new, base.rollback_roles, new.rollback_roles, "request a rollback")
    found += _wider("governance_roles", base, new, base.governance_roles, new.governance_roles,
                    "change thresholds, autonomy and models")
    if new.rollback_quorum < base.rollback_quorum:
        found.append(f"rollback_quorum {base.rollback_quorum} -> {new.rollback_quorum}: fewer people must ask "
                     "before a containment is undone")
    if new.deployment.trust_unsigned_approvals and not base.deployment.trust_unsigned_approvals:
        found.append("deployment.trust_unsigned_approvals false -> true: unsigned approvals (Temporal UI, "
                     "`temporal` CLI) now count")
    if _longer(new.deployment.approval_token_max_ttl, base.deployment.approval_token_max_ttl):
        found.append(f"deployment.approval_token_max_ttl {base.deployment.approval_token_max_ttl} -> "
                     f"{new.deployment.approval_token_max_ttl}: signed approvals stay usable longer")
    for name, rule in sorted(new.alert_types.items()):
        old = base.alert_types.get(name)
        if old is None:
            continue
        if rule.autonomy == "on_the_loop" and old.autonomy == "in_the_loop":
            found.append(f"alert_types.{name}.autonomy in_the_loop -> on_the_loop: its confident benign cases "
                         "close without an analyst")
        if rule.threshold is not None and (old.threshold is None or rule.threshold < old.threshold):
            found.append(f"alert_types.{name}.threshold {old.threshold} -> {rule.threshold}: more cases "
                         "auto-close when on the loop")
        if rule.close_roles is not None and old.close_roles is not None:
            found += _wider(f"alert_types.{name}.close_roles", base, new, old.close_roles, rule.close_roles,
                            f"close {name} cases")
    auto_old, auto_new = base.autonomy, new.autonomy
    for field in ("promotion_quorum", "model_promotion_quorum", "min_reviewed"):
        if getattr(auto_new, field) < getattr(auto_old, field):
            found.append(f"autonomy.{field} {getattr(auto_old, field)} -> {getattr(auto_new, field)}")
    if auto_new.miss_budget > auto_old.miss_budget:
        found.append(f"autonomy.miss_budget {auto_old.miss_budget} -> {auto_new.miss_budget}: promotion accepts "
                     "more missed true positives")
    if auto_old.require_evidence and not auto_new.require_evidence:
        found.append("autonomy.require_evidence true -> false: alert types may go on the loop with no evidence")
    fewer = _people(base, auto_old.kill_switch_roles + base.governance_roles) - \
        _people(new, auto_new.kill_switch_roles + new.governance_roles)
    if fewer:
        found.append(f"autonomy.kill_switch_roles: {sorted(fewer)} may no longer demote an alert type")
    for field in ("feature_psi", "score_psi", "override_rate", "min_cases", "min_verdicts"):
        if getattr(new.drift, field) > getattr(base.drift, field):
            found.append(f"drift.{field} {getattr(base.drift, field)} -> {getattr(new.drift, field)}: drift is "
                         "noticed later")
    if _longer(new.drift.schedule, base.drift.schedule):
        found.append(f"drift.schedule {base.drift.schedule} -> {new.drift.schedule}: drift is checked less often")
    for severity, due in sorted(base.verdict_sla.items()):
        after = new.verdict_sla.get(severity)
        if after is None:
            found.append(f"verdict_sla.{severity} {due} -> none: {severity} cases no longer go overdue")
        elif _longer(after, due):
            found.append(f"verdict_sla.{severity} {due} -> {after}")
    if new.review_sample_rate < base.review_sample_rate:
        found.append(f"review_sample_rate {base.review_sample_rate} -> {new.review_sample_rate}: analysts review "
                     "fewer automatically closed cases")
    return found


def _tier(tier: RiskTier, base: Policy, new: Policy) -> list[str]:
    old, rule, field = base.tiers[tier], new.tiers[tier], f"tiers.{tier.value}"
    if rule.auto and not old.auto:
        return [f"{field}.auto false -> true: its steps run without approval"]
    if rule.auto:
        return []
    found = []
    if rule.quorum < old.quorum:
        found.append(f"{field}.quorum {old.quorum} -> {rule.quorum}")
    if rule.requester_may_approve and not old.requester_may_approve:
        found.append(f"{field}.requester_may_approve false -> true: requesters may approve their own steps")
    found += _wider(f"{field}.roles", base, new, old.roles, rule.roles, verb="approve its steps")
    old_chain = [lv.after for lv in old.escalation] or [old.timeout]
    new_chain = [lv.after for lv in rule.escalation] or [rule.timeout]
    if len(new_chain) < len(old_chain):
        found.append(f"{field}.escalation has {len(new_chain)} level(s), was {len(old_chain)}: fewer people are told "
                     "about a step left waiting")
    for i, (was, now) in enumerate(zip(old_chain, new_chain, strict=False)):
        if _longer(now, was):
            found.append(f"{field}.escalation[{i}] after {was} -> {now}: a waiting step escalates later")
    return found


def _wider(field: str, base: Policy, new: Policy, old_roles: Iterable[str], new_roles: Iterable[str],
           verb: str) -> list[str]:
    """More people hold one of the roles now: a role added to the list, or an approver given one."""
    more = _people(new, tuple(new_roles)) - _people(base, tuple(old_roles))
    if not more:
        return []
    added = sorted(set(new_roles) - set(old_roles))
    why = f" (roles added: {added})" if added else " (approvers given one of its roles)"
    return [f"{field}: {sorted(more)} may now {verb}{why}"]


def _people(policy: Policy, roles: tuple[str, ...]) -> set[str]:
    return set(policy.holders_of(roles))


def _longer(now: str, was: str) -> bool:
    return parse_duration(now) > parse_duration(was)
