"""Identity changes reach running cases: an approval counts when its step runs only if the policy in
force then still stands behind the person who gave it.

A case loads its policy when it opens and checks each approval against that copy. Cases wait for
hours or weeks; meanwhile a laptop is stolen and its key removed, someone leaves the team, or the
deployment moves from the lab (unsigned approvals trusted) to production (signed only). Before a
gated step runs, the case re-reads the policy in force (workflows/case_recheck.py) and this module
says which of the step's approvals no longer count, and why. Trust only tightens for a running
case: a policy that trusts unsigned requests again does not make a refused one count.

Pure and deterministic (it runs in workflow code).
"""

from __future__ import annotations

from policies.engine import Approver, Policy
from signoff.models import ApprovalRecord, Decision, StepPlan

# The refusal of an approval voided before its step ran (signoff/explain.py and the audit export read it).
VOIDED = "voided before the step ran"


def void_reason(case_policy: Policy, current: Policy, plan: StepPlan, record: ApprovalRecord) -> str | None:
    """Why `record` (accepted under `case_policy`) no longer counts under `current`, or None."""
    if not record.accepted or record.decision != Decision.approve:
        return None
    rule = case_policy.rule_for(plan)
    return _identity_change(case_policy, current, record.approver, record.signed, record.channel,
                            rule.roles, "may approve this tier", "approve")


def rollback_vote_void_reason(case_policy: Policy, current: Policy, who: str, signed: bool,
                              channel: str | None) -> str | None:
    """Why a rollback request (accepted under `case_policy`, counted towards its quorum) no longer
    counts under `current` when the quorum is met, or None. The same rule as for approvals: rolling
    back a containment during an incident is as consequential as approving one."""
    return _identity_change(case_policy, current, who, signed, channel, case_policy.rollback_roles,
                            "may roll back", "ask again")


def _identity_change(case_policy: Policy, current: Policy, who: str, signed: bool, channel: str | None,
                     roles: tuple[str, ...], may: str, again: str) -> str | None:
    then, now = case_policy.approvers.get(who), current.approvers.get(who)
    if now is None:
        return f"{who!r} is no longer an approver in the policy in force"
    if not set(now.roles) & set(roles):
        return (f"{who!r} no longer has a role that {may} (roles now {list(now.roles)}, "
                f"needs one of {list(roles)})")
    if not signed:
        if not current.deployment.trust_unsigned_approvals:
            return f"unsigned requests are no longer accepted by the policy in force: {again}, signed"
        return None
    if channel:
        return _channel_change(case_policy, current, channel, then, now, again)
    if then is None or then.public_key != now.public_key:
        return (f"the key {who!r} signed with was revoked or replaced in the policy in force: "
                f"{again} with the current key")
    return None


def _channel_change(case_policy: Policy, current: Policy, channel: str, then: Approver | None,
                    now: Approver, again: str) -> str | None:
    bridge, _, chat_user = channel.partition(":")
    was, is_ = case_policy.deployment.chat_bridges.get(bridge), current.deployment.chat_bridges.get(bridge)
    if is_ is None or was is None or was.public_key != is_.public_key:
        return f"the {bridge} chat bridge's key was revoked or replaced in the policy in force: {again}"
    if bridge == "slack" and now.slack_user != chat_user:
        return f"{bridge.capitalize()} user {chat_user} is no longer this approver's in the policy in force"
    return None


def tightened(case_policy: Policy, current: Policy) -> Policy:
    """The case's policy with the identities in force now (approvers, keys, chat bridges) and the
    stricter of the two trust settings; its tiers, playbooks and thresholds stay those it opened under."""
    trust = case_policy.deployment.trust_unsigned_approvals and current.deployment.trust_unsigned_approvals
    deployment = current.deployment.model_copy(update={"trust_unsigned_approvals": trust})
    return case_policy.model_copy(update={"approvers": current.approvers, "deployment": deployment})


def signing_key(policy: Policy, who: str, channel: str | None) -> str | None:
    """The public key a verified token of `who` was checked with under `policy`: the chat bridge's for
    a token through a bridge (`channel`), else the person's own."""
    if channel:
        bridge = policy.deployment.chat_bridges.get(channel.partition(":")[0])
        return bridge.public_key if bridge else None
    entry = policy.approvers.get(who)
    return entry.public_key if entry else None


def undo_vote_void_reason(current: Policy, who: str, signed: bool, channel: str | None,
                          signed_with: str | None) -> str | None:
    """Why a request counted by a rollback after close (workflows/case_undo.py) no longer counts under
    `current` when the quorum is met, or None. `signed_with`: the key its token verified with then
    (None for requests recorded before it was kept: the key is not compared)."""
    now = current.approvers.get(who)
    if now is None:
        return f"{who!r} is no longer an approver in the policy in force"
    if not set(now.roles) & set(current.rollback_roles):
        return (f"{who!r} no longer has a role that may roll back (roles now {list(now.roles)}, "
                f"needs one of {list(current.rollback_roles)})")
    if not signed:
        if not current.deployment.trust_unsigned_approvals:
            return "unsigned requests are no longer accepted by the policy in force: ask again, signed"
        return None
    if channel and channel.partition(":")[0] == "slack" and now.slack_user != channel.partition(":")[2]:
        return f"Slack user {channel.partition(':')[2]} is no longer this approver's in the policy in force"
    if signed_with is not None and signing_key(current, who, channel) != signed_with:
        return (f"the key {who!r}'s request was signed with was revoked or replaced in the policy in force: "
                "ask again with the current key")
    return None
