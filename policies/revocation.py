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

from policies.engine import Policy
from signoff.models import ApprovalRecord, Decision, StepPlan

# The refusal of an approval voided before its step ran (signoff/explain.py and the audit export read it).
VOIDED = "voided before the step ran"


def void_reason(case_policy: Policy, current: Policy, plan: StepPlan, record: ApprovalRecord) -> str | None:
    """Why `record` (accepted under `case_policy`) no longer counts under `current`, or None."""
    if not record.accepted or record.decision != Decision.approve:
        return None
    rule = case_policy.rule_for(plan)
    return identity_change(current, record.approver, record.signed, record.channel, rule.roles,
                           may="may approve this tier", again="approve",
                           key_then=signing_key(case_policy, record.approver, record.channel), check_key=True)


def rollback_vote_void_reason(case_policy: Policy, current: Policy, who: str, signed: bool,
                              channel: str | None) -> str | None:
    """Why a rollback request (accepted under `case_policy`, counted towards its quorum) no longer
    counts under `current` when the quorum is met, or None. The same rule as for approvals: rolling
    back a containment during an incident is as consequential as approving one."""
    return identity_change(current, who, signed, channel, case_policy.rollback_roles, may="may roll back",
                           again="ask again", key_then=signing_key(case_policy, who, channel), check_key=True)


def undo_vote_void_reason(current: Policy, who: str, signed: bool, channel: str | None,
                          signed_with: str | None) -> str | None:
    """The same for a request counted by a rollback after close (workflows/case_undo.py). `signed_with`:
    the key its token verified with then (None for requests recorded before it was kept: not compared)."""
    return identity_change(current, who, signed, channel, current.rollback_roles, may="may roll back",
                           again="ask again", key_then=signed_with, check_key=signed_with is not None)


def identity_change(current: Policy, who: str, signed: bool, channel: str | None, roles: tuple[str, ...], *,
                    may: str, again: str, key_then: str | None, check_key: bool) -> str | None:
    """Why a request `who` made (signed with `key_then`, through `channel` if a chat bridge relayed it)
    no longer counts under `current`, which needs one of `roles`; None when it still does."""
    now = current.approvers.get(who)
    if now is None:
        return f"{who!r} is no longer an approver in the policy in force"
    if not set(now.roles) & set(roles):
        return (f"{who!r} no longer has a role that {may} (roles now {list(now.roles)}, "
                f"needs one of {list(roles)})")
    if not signed:
        if not current.deployment.trust_unsigned_approvals:
            return f"unsigned requests are no longer accepted by the policy in force: {again}, signed"
        return None
    bridge, _, chat_user = (channel or "").partition(":")
    if check_key and (key_then is None or signing_key(current, who, channel) != key_then):
        if channel:
            return f"the {bridge} chat bridge's key was revoked or replaced in the policy in force: {again}"
        return (f"the key {who!r} signed with was revoked or replaced in the policy in force: "
                f"{again} with the current key")
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
