"""The policy engine: pure functions over a `Policy`. No I/O, safe inside workflow code."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from datetime import timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from signoff.models import ApprovalRecord, Decision, PlaybookRecord, Reversibility, RiskTier, StepPlan


class TieredStep(Protocol):
    """A step as planned (StepPlan) or as a case shows it (StepView): what its tier depends on."""

    @property
    def tier(self) -> RiskTier: ...
    @property
    def reversibility(self) -> Reversibility: ...

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# Case severities, least to most severe (signoff.ingest takes a case's worst alert severity).
SEVERITIES = ("informational", "low", "medium", "high", "critical")


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"duration {text!r} is not like '30s', '15m', '4h' or '7d'")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Approver(_Model):
    roles: tuple[str, ...]
    public_key: str | None = None  # base64 raw Ed25519 public key
    # The approver's Slack user id (e.g. U0ABC123): approvals through the Slack chat bridge count
    # for this approver only when they come from exactly this Slack user (policies/signing.py).
    slack_user: str | None = None


# Which approver field names the chat user each chat bridge vouches for (token claim `via`: "slack:U0ABC123").
CHAT_IDENTITY_FIELDS = {"slack": "slack_user"}
# A Slack member id: U... (W... on Enterprise Grid), upper-case letters and digits, compared exactly.
CHAT_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
CHAT_TEAM_ID = re.compile(r"[TE][A-Z0-9]{2,}")  # a Slack workspace (T...) or Enterprise Grid org (E...)


class ChatBridge(_Model):
    """A chat bridge (signoff/chat/) that verifies its platform's request signatures and signs each
    approval it relays with its own Ed25519 key."""

    public_key: str  # base64 raw Ed25519 public key (`signoff chat key create` prints the policy line)
    # The platform's workspace whose users may approve (Slack: the team id, T0123ABCD). Chat user ids
    # are only unique within a workspace: with this set, the bridge refuses every user of another one
    # (an app installed in several workspaces, a Slack Connect channel shared with another organisation).
    team_id: str | None = None


class EscalationLevel(_Model):
    """One level of a tier's escalation chain: when a step has waited `after` (from when it started
    waiting) without its approvals, the people holding the `notify` roles are told. Telling someone
    never lets them approve: the tier's roles and quorum still decide."""

    after: str
    notify: tuple[str, ...]

    @field_validator("after")
    @classmethod
    def _after_is_a_duration(cls, value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError(f"after is {value!r}: give a duration above zero, like '4h'")
        return value

    @field_validator("notify")
    @classmethod
    def _notifies_someone(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        if not roles:
            raise ValueError("notify is empty: name the role(s) whose holders this level tells, like [lead]")
        return roles


class TierRule(_Model):
    auto: bool = False
    quorum: int = 1
    roles: tuple[str, ...] = ()
    requester_may_approve: bool = False
    # The first (or only) escalation: how long a step waits for its approvals before a human is told.
    timeout: str = "4h"
    # An escalation chain (docs/playbooks.md): levels with strictly increasing `after`; the first
    # level's `after` is the timeout (left out, `timeout` is taken from it). Empty: one level at `timeout`.
    escalation: tuple[EscalationLevel, ...] = ()

    @field_validator("timeout")
    @classmethod
    def _valid_timeout(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _timeout_from_chain(cls, data: Any) -> Any:
        """`escalation:` without `timeout:`: the first level is the timeout (not the 4h default)."""
        if isinstance(data, dict) and "timeout" not in data:
            chain = data.get("escalation")
            if isinstance(chain, list | tuple) and chain and isinstance(chain[0], dict) and "after" in chain[0]:
                data = {**data, "timeout": chain[0]["after"]}
        return data

    @model_validator(mode="after")
    def _chain_is_ordered(self) -> TierRule:
        if not self.escalation:
            return self
        first = self.escalation[0].after
        if parse_duration(self.timeout) != parse_duration(first):
            raise ValueError(f"timeout {self.timeout} and escalation[0].after {first} disagree: the first level is the "
                             "timeout; drop timeout or give both the same duration")
        for i in range(1, len(self.escalation)):
            before, level = self.escalation[i - 1].after, self.escalation[i].after
            if parse_duration(level) <= parse_duration(before):
                raise ValueError(f"escalation[{i}].after {level} is not later than escalation[{i - 1}].after {before}: "
                                 "each level counts from when the step started waiting, so durations must increase")
        return self


class AlertTypeRule(_Model):
    playbook: str
    autonomy: Literal["in_the_loop", "on_the_loop"] = "in_the_loop"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # False for alert types the triage model was not trained on (the drift check's own cases): no
    # score, no explanation from it; an analyst decides. A score there would only look like evidence.
    scored: bool = True
    # Who may decide a case of this type as a whole (close, retry, detach), instead of the approving
    # tiers' roles (`close_roles`): the drift check's cases are for detection engineers. None: the default.
    close_roles: tuple[str, ...] | None = None

    @field_validator("close_roles")
    @classmethod
    def _some_close_role(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("close_roles is empty: nobody could close these cases; leave it out for the default "
                             "(the roles of the tiers that need an approval)")
        return value


class Deployment(_Model):
    trust_unsigned_approvals: bool = False
    approval_token_max_ttl: str = "1h"
    # Chat bridges whose signed approvals count, by platform (only "slack" so far): `{slack: {public_key: ...}}`.
    chat_bridges: dict[str, ChatBridge] = Field(default_factory=dict)
    # Signed case input (policies/ingest_signing.py): with `require_signed_ingest`, a case acts only on
    # alerts signed by an ingester key listed here (base64 raw Ed25519 public keys, `signoff keys
    # ingest-show`); anyone else with Temporal write access who starts a case or sends it alerts is
    # recorded, and nothing runs on what they sent. Several keys: rotation.
    ingest_keys: tuple[str, ...] = ()
    require_signed_ingest: bool = False


class AutonomyPolicy(_Model):
    """How autonomy is earned and changed (policy `autonomy:` section)."""

    promotion_quorum: int = Field(default=1, ge=1)  # distinct governance-role holders to go on the loop
    model_promotion_quorum: int = Field(default=2, ge=1)  # distinct governance-role holders to activate a model
    kill_switch_roles: tuple[str, ...] = ()  # who may demote (besides governance_roles)
    require_evidence: bool = True  # refuse promotion until the shadow evidence supports it
    min_reviewed: int = Field(default=50, ge=1)  # reviewed cases above the threshold before promotion
    miss_budget: float = Field(default=0.05, gt=0.0, le=1.0)  # max 95% upper bound of TPs auto-closed


class DriftPolicy(_Model):
    """When the inputs, scores or analysts say the model no longer fits (policy `drift:` section)."""

    schedule: str = "1h"  # how often the drift check runs (a Temporal Schedule)
    window: str = "7d"  # cases started within this window are compared with the reference
    min_cases: int = Field(default=30, ge=1)  # fewer cases of an alert type: no verdict on its drift
    max_cases: int = Field(default=200, ge=1)  # newest cases per alert type that are read
    feature_psi: float = Field(default=0.25, gt=0.0)  # max PSI of any input feature
    score_psi: float = Field(default=0.25, gt=0.0)  # PSI of the benign-confidence distribution
    override_rate: float = Field(default=0.35, gt=0.0, le=1.0)  # analysts overruling the model
    min_verdicts: int = Field(default=20, ge=1)  # fewer recent verdicts: override rate not judged
    open_case_alert_type: str = "model_drift"

    @field_validator("schedule", "window")
    @classmethod
    def _valid_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class Policy(_Model):
    version: int
    deployment: Deployment = Deployment()
    approvers: dict[str, Approver]
    tiers: dict[RiskTier, TierRule]
    irreversible_tier: RiskTier = RiskTier.critical
    rollback_roles: tuple[str, ...] = ()
    # How many different people with a rollback role must ask before a case's actions are undone:
    # undoing a containment (reconnecting a host, re-enabling an account) is itself high-impact.
    rollback_quorum: int = Field(default=1, ge=1)
    # How long a case stays open after its verdict while something it executed is still in effect,
    # so that a rollback stays possible (promise 6) before the case ends. None: it ends at the verdict.
    rollback_window: str | None = None
    governance_roles: tuple[str, ...] = ()
    on_step_failure: Literal["compensate", "hold"] = "compensate"
    alert_types: dict[str, AlertTypeRule]
    default_alert_type: str
    alert_type_map: dict[str, str] = Field(default_factory=dict)
    review_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    case_idle_close: str = "30d"
    # How long a case may wait for an analyst's verdict, by case severity, before it is overdue
    # (time to verdict from when the case opened). A breach escalates once and marks the case
    # overdue in the queue; it never closes or decides anything. A severity not listed has no SLA.
    verdict_sla: dict[str, str] = Field(default_factory=dict)
    # Sections other modules own (correlation, drift, autonomy) live beside these.
    correlation: dict | None = None
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    autonomy: AutonomyPolicy = Field(default_factory=AutonomyPolicy)

    @field_validator("tiers", mode="before")
    @classmethod
    def _known_tiers(cls, tiers: Any) -> Any:
        if isinstance(tiers, dict):
            unknown = sorted(str(k) for k in tiers if str(k) not in {t.value for t in RiskTier})
            if unknown:
                names = " or ".join(f"'{t.value}'" for t in RiskTier).replace(" or ", ", ", len(RiskTier) - 2)
                raise ValueError(
                    f"{', '.join('tiers.' + u for u in unknown)}: Signoff has no such tier (tiers are {names}); a "
                    "step's tier is its action's declaration (playbooks/actions.py): give the approvals to high or "
                    "critical"
                )
        return tiers

    @field_validator("tiers")
    @classmethod
    def _all_tiers(cls, tiers: dict[RiskTier, TierRule]) -> dict[RiskTier, TierRule]:
        missing = [t.value for t in RiskTier if t not in tiers]
        if missing:
            raise ValueError(f"policy must define every tier; missing: {', '.join(missing)}")
        return tiers

    @field_validator("verdict_sla")
    @classmethod
    def _sla_by_severity(cls, sla: dict[str, str]) -> dict[str, str]:
        unknown = sorted(k for k in sla if k not in SEVERITIES)
        if unknown:
            raise ValueError(f"verdict_sla has severities {unknown}; case severities are {', '.join(SEVERITIES)}")
        for severity, text in sla.items():
            if parse_duration(text) <= timedelta(0):
                raise ValueError(f"verdict_sla.{severity} is {text!r}: give a duration above zero, like '4h'")
        return sla

    @field_validator("rollback_window")
    @classmethod
    def _window_is_a_duration(cls, window: str | None) -> str | None:
        if window is not None and parse_duration(window) <= timedelta(0):
            raise ValueError(f"rollback_window is {window!r}: give a duration above zero, like '7d', or leave it out")
        return window

    def verdict_sla_for(self, severity: str) -> timedelta | None:
        """The case's time-to-verdict SLA, or None when its severity has none."""
        text = self.verdict_sla.get(severity)
        return parse_duration(text) if text else None

    def digest(self) -> str:
        """The policy version every decision records: sha256 of the canonical JSON."""
        dumped = self.model_dump(mode="json")
        # Fields added later hash only when set: a policy file that does not use them keeps its version.
        if not dumped["deployment"].get("chat_bridges"):
            dumped["deployment"].pop("chat_bridges", None)
        if not dumped["deployment"].get("ingest_keys"):
            dumped["deployment"].pop("ingest_keys", None)
        if not dumped["deployment"].get("require_signed_ingest"):
            dumped["deployment"].pop("require_signed_ingest", None)
        for bridge in dumped["deployment"].get("chat_bridges", {}).values():
            if bridge.get("team_id") is None:
                bridge.pop("team_id", None)
        if dumped.get("rollback_quorum") == 1:
            dumped.pop("rollback_quorum", None)
        if not dumped.get("verdict_sla"):
            dumped.pop("verdict_sla", None)
        if dumped.get("rollback_window") is None:
            dumped.pop("rollback_window", None)
        for approver in dumped["approvers"].values():
            if approver.get("slack_user") is None:
                approver.pop("slack_user", None)
        for rule in dumped["alert_types"].values():
            if rule.get("scored") is True:
                rule.pop("scored", None)
            if rule.get("close_roles") is None:
                rule.pop("close_roles", None)
        for tier in dumped["tiers"].values():
            if not tier.get("escalation"):
                tier.pop("escalation", None)
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def approver_for_chat_user(self, bridge: str, chat_user: str) -> str | None:
        """The approver whose policy entry declares `chat_user` for `bridge` ("slack"), or None."""
        field = CHAT_IDENTITY_FIELDS.get(bridge)
        if field is None or not chat_user:
            return None
        for name, approver in self.approvers.items():
            if getattr(approver, field) == chat_user:
                return name
        return None

    def alert_type_for_category(self, category: str) -> str:
        return self.alert_type_map.get(category, self.default_alert_type)

    def alert_type(self, name: str) -> AlertTypeRule:
        return self.alert_types.get(name) or self.alert_types[self.default_alert_type]

    def effective_tier(self, step: TieredStep) -> RiskTier:
        if step.reversibility == "irreversible":
            return self.irreversible_tier
        return step.tier

    def rule_for(self, step: TieredStep) -> TierRule:
        return self.tiers[self.effective_tier(step)]

    def roles_of(self, user: str) -> tuple[str, ...]:
        approver = self.approvers.get(user)
        return approver.roles if approver else ()

    def holders_of(self, roles: Collection[str]) -> tuple[str, ...]:
        """The approvers holding one of `roles`, by name (who an escalation level tells)."""
        return tuple(sorted(name for name, a in self.approvers.items() if set(a.roles) & set(roles)))


def approval_refusal(
    policy: Policy,
    step: StepPlan,
    approver: str,
    decision: Decision,
    requested_by: str,
    prior: list[ApprovalRecord],
) -> str | None:
    """Why this approval must be refused, or None when it may count.

    The same check guards updates (in the validator, before anything is written) and signals
    (in the handler, after the signal is already in history).
    """
    rule = policy.rule_for(step)
    if rule.auto:
        return f"step {step.step_id!r} is tier {policy.effective_tier(step).value}: it needs no approval"
    if approver not in policy.approvers:
        names = sorted(policy.approvers)
        listed = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        return f"{approver!r} is not an approver in policy (approvers: {listed})"
    roles = policy.roles_of(approver)
    if not set(roles) & set(rule.roles):
        return (
            f"{approver!r} has roles {list(roles)}; tier {policy.effective_tier(step).value} "
            f"needs one of {list(rule.roles)}"
        )
    if approver == requested_by and not rule.requester_may_approve:
        return f"{approver!r} requested this step and may not approve it (separation of duties)"
    if any(r.approver == approver and r.accepted for r in prior if r.step == step.step_id):
        return f"{approver!r} has already decided step {step.step_id!r}; a quorum needs distinct approvers"
    return None


def quorum_met(policy: Policy, step: StepPlan, records: list[ApprovalRecord]) -> bool:
    approvers = {
        r.approver
        for r in records
        if r.step == step.step_id and r.accepted and r.decision == Decision.approve
    }
    return len(approvers) >= policy.rule_for(step).quorum


TOP_TIER = RiskTier.critical  # irreversible actions need it (SPEC promise 5)
AUTO_TIERS = frozenset({RiskTier.low})  # tagging, enrichment, notes: the only steps that may run unapproved


KILL_SWITCH_ROLES = "autonomy.kill_switch_roles"


def _role_lists(policy: Policy) -> list[tuple[str, tuple[str, ...]]]:
    """The policy's role lists besides the tiers' (checked role by role with their quorum)."""
    lists = [("rollback_roles", policy.rollback_roles), ("governance_roles", policy.governance_roles),
             (KILL_SWITCH_ROLES, policy.autonomy.kill_switch_roles)]
    return lists + [(f"alert_types.{name}.close_roles", rule.close_roles)
                    for name, rule in sorted(policy.alert_types.items()) if rule.close_roles is not None]


def promise_violations(policy: Policy, playbooks: Collection[str] | None = None) -> list[str]:
    """Why `policy` breaks the risk-tier promise (SPEC promise 5), one line each; [] when it keeps it.

    Checked when a policy file is loaded (`policies.loader`), not when a `Policy` is decoded from a
    case history: cases recorded under an older policy must replay as they ran. `playbooks` are the
    registered playbook names; None skips that check.
    """
    problems: list[str] = []
    if policy.irreversible_tier != TOP_TIER:
        problems.append(
            f"irreversible_tier is {policy.irreversible_tier.value!r}: irreversible actions need the top tier; "
            f"set irreversible_tier: {TOP_TIER.value}"
        )
    holders: dict[str, list[str]] = {}
    for name, approver in policy.approvers.items():
        for role in approver.roles:
            holders.setdefault(role, []).append(name)
    known_roles = sorted(holders)
    for tier in RiskTier:
        rule = policy.tiers.get(tier)
        if rule is None:
            continue  # the model already refuses a policy without every tier
        field = f"tiers.{tier.value}"
        if rule.auto:
            if tier not in AUTO_TIERS:
                problems.append(
                    f"{field}.auto is true: only the low tier (tagging, enrichment, notes) may run without approval; "
                    f"set {field}.auto: false with the roles and quorum that must approve"
                )
            elif rule.escalation:
                problems.append(f"{field}.escalation is set, but the tier is automatic: its steps never wait for "
                                "approval, so nothing would escalate; drop it")
            continue
        if rule.quorum < 1:
            problems.append(f"{field}.quorum is {rule.quorum}: a tier that needs approval needs a quorum of 1 or more")
        if not rule.roles:
            problems.append(
                f"{field}.roles is empty: nobody could approve its steps; name the roles that may "
                f"(roles approvers hold: {known_roles})"
            )
            continue
        unheld = [r for r in rule.roles if r not in holders]
        if unheld:
            problems.append(
                f"{field}.roles names {unheld}, which no approver holds; roles approvers hold: {known_roles}; "
                "fix the name or give an approver that role"
            )
        for i, level in enumerate(rule.escalation):
            nobody = [r for r in level.notify if r not in holders]
            if nobody:
                problems.append(
                    f"{field}.escalation[{i}].notify names {nobody}, which no approver holds: nobody would be told; "
                    f"roles approvers hold: {known_roles}; fix the name or give an approver that role"
                )
        eligible = sorted({name for r in rule.roles for name in holders.get(r, ())})
        if rule.quorum > len(eligible):
            problems.append(
                f"{field}.quorum is {rule.quorum} but only {len(eligible)} approver(s) {eligible} hold one of its "
                f"roles {list(rule.roles)}: the quorum could never be met; lower it or add approvers with those roles"
            )
    problems += _tier_order_violations(policy)
    # A list that nobody matches leaves no one able to undo a case (promise 6) or to change governance ...
    for field, roles in (("rollback_roles", policy.rollback_roles), ("governance_roles", policy.governance_roles)):
        if not any(r in holders for r in roles):
            what = "roll back a case" if field == "rollback_roles" else "change governance"
            problems.append(f"{field} is {list(roles)}, which no approver holds: nobody could {what}; name the roles "
                            f"that may (roles approvers hold: {known_roles}) or give an approver one of them")
    for name, type_rule in sorted(policy.alert_types.items()):
        if type_rule.close_roles is not None and not any(r in holders for r in type_rule.close_roles):
            problems.append(f"alert_types.{name}.close_roles is {list(type_rule.close_roles)}, which no approver "
                            f"holds: nobody could close a {name} case; name the roles that may (roles approvers "
                            f"hold: {known_roles}) or leave it out for the approving tiers' roles")
    # ... and a list that some approver matches can still hide a typo ("ir-laed" beside "lead"): it
    # would silently let fewer people do what the list was written for.
    for field, roles in _role_lists(policy):
        unheld = [r for r in roles if r not in holders]
        if unheld and (len(unheld) < len(roles) or field == KILL_SWITCH_ROLES):
            problems.append(f"{field} names {unheld}, which no approver holds; roles approvers hold: {known_roles}; "
                            "fix the name or give an approver that role")
    may_roll_back = sorted({name for r in policy.rollback_roles for name in holders.get(r, ())})
    if may_roll_back and policy.rollback_quorum > len(may_roll_back):
        problems.append(
            f"rollback_quorum is {policy.rollback_quorum} but only {len(may_roll_back)} approver(s) {may_roll_back} hold "
            f"one of rollback_roles {list(policy.rollback_roles)}: no rollback could ever run; lower it or add people"
        )
    problems += chat_identity_violations(policy)
    problems += ingest_key_violations(policy)
    alert_types = sorted(policy.alert_types)
    if policy.default_alert_type not in policy.alert_types:
        problems.append(
            f"default_alert_type is {policy.default_alert_type!r}, which is not in alert_types; "
            f"name one of {alert_types}"
        )
    for category, name in policy.alert_type_map.items():
        if name not in policy.alert_types:
            problems.append(
                f"alert_type_map.{category} is {name!r}, which is not in alert_types; name one of {alert_types}"
            )
    drift_type = policy.drift.open_case_alert_type
    if drift_type not in policy.alert_types:
        # Drift cases would be governed as the default type: scored by the model whose drift they
        # report, closed by its close roles instead of the detection engineers'.
        problems.append(
            f"drift.open_case_alert_type is {drift_type!r}, which is not in alert_types: drift cases would be "
            f"governed as {policy.default_alert_type!r}; add alert_types.{drift_type} (scored: false) or name one "
            f"of {alert_types}"
        )
    if playbooks is not None:
        for name, typed in policy.alert_types.items():
            if typed.playbook not in playbooks:
                problems.append(
                    f"alert_types.{name}.playbook is {typed.playbook!r}, which is not a registered playbook; "
                    f"known: {sorted(playbooks)}; fix the name or register the playbook (docs/playbooks.md)"
                )
    return problems


def _tier_order_violations(policy: Policy) -> list[str]:
    """A higher tier is never easier to pass than the one below it (promise 5: the top tier is the
    strictest): not a smaller quorum from the same people, not self-approval the lower tier forbids."""
    problems: list[str] = []
    order = list(RiskTier)
    for lower, higher in zip(order, order[1:], strict=False):
        low_rule, high_rule = policy.tiers.get(lower), policy.tiers.get(higher)
        if low_rule is None or high_rule is None or low_rule.auto:
            continue
        field = f"tiers.{higher.value}"
        # Fewer approvals from a narrower, more senior set of roles can be a fair trade; fewer from
        # everyone the lower tier accepts (and maybe more) is simply weaker.
        if high_rule.quorum < low_rule.quorum and set(low_rule.roles) <= set(high_rule.roles):
            problems.append(
                f"{field}.quorum is {high_rule.quorum}, below tiers.{lower.value}.quorum {low_rule.quorum}, and every "
                f"role that may approve tiers.{lower.value} may approve it: a higher tier must not be easier to pass; "
                f"raise it to {low_rule.quorum} or more, or narrow its roles"
            )
        if high_rule.requester_may_approve and not low_rule.requester_may_approve:
            problems.append(
                f"{field}.requester_may_approve is true while tiers.{lower.value} forbids it: a higher tier must not "
                f"let requesters approve their own steps; set {field}.requester_may_approve: false"
            )
    return problems


def ingest_key_violations(policy: Policy) -> list[str]:
    """Signed case input: every ingester key parses, and a policy that requires signatures lists one."""
    import base64
    import binascii

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    problems: list[str] = []
    for i, key in enumerate(policy.deployment.ingest_keys):
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(key, validate=True))
        except (ValueError, binascii.Error):
            problems.append(f"deployment.ingest_keys[{i}] is not a base64 Ed25519 public key (32 bytes); paste the "
                            "line `signoff keys ingest-show` prints")
    if policy.deployment.require_signed_ingest and not policy.deployment.ingest_keys:
        problems.append("deployment.require_signed_ingest is true but deployment.ingest_keys is empty: every case "
                        "would be refused its alerts; create the ingesters' key with `signoff keys ingest-create` "
                        "and add the line it prints")
    return problems


def chat_identity_violations(policy: Policy) -> list[str]:
    """Chat approvals (anchors gap 8): each bridge key parses, each chat user maps to one approver."""
    import base64
    import binascii

    # Imported here, not at module level: the engine is imported inside the workflow sandbox.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    problems: list[str] = []
    for name, entry in policy.deployment.chat_bridges.items():
        field = f"deployment.chat_bridges.{name}"
        if name not in CHAT_IDENTITY_FIELDS:
            problems.append(f"{field}: no chat bridge is called {name!r}; known: {sorted(CHAT_IDENTITY_FIELDS)}")
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(entry.public_key, validate=True))
        except (ValueError, binascii.Error):
            problems.append(f"{field}.public_key is not a base64 Ed25519 public key (32 bytes); paste the line "
                            "`signoff chat key show` prints")
        if entry.team_id is not None and not CHAT_TEAM_ID.fullmatch(entry.team_id):
            problems.append(f"{field}.team_id is {entry.team_id!r}: give the Slack team id (e.g. T0123ABCD, "
                            "from the workspace URL app.slack.com/client/T.../)")
    for bridge, id_field in CHAT_IDENTITY_FIELDS.items():
        users: dict[str, list[str]] = {}
        for name, approver in policy.approvers.items():
            value = getattr(approver, id_field)
            if value is None:
                continue
            if not CHAT_USER_ID.fullmatch(value):
                problems.append(f"approvers.{name}.{id_field} is {value!r}: give the {bridge} member id as Slack shows "
                                "it (e.g. U0ABC123: profile, Copy member ID); ids are matched exactly")
                continue
            users.setdefault(value, []).append(name)
        for user, names in sorted(users.items()):
            if len(names) > 1:
                problems.append(f"approvers {names} all declare {id_field} {user}: one {bridge} user may act as one "
                                "approver only; fix the ids")
    return problems


class GovernanceSnapshot(_Model):
    """What a case decides under: the policy file plus the live governance state for its alert type.

    Autonomy and threshold come from the governance workflow (who moved the line, when, why);
    the policy file gives the defaults.
    """

    policy: Policy
    policy_version: str
    alert_type: str
    autonomy: Literal["in_the_loop", "on_the_loop"]
    threshold: float | None
    threshold_set_by: str = "policy file"
    model_id: str | None = None  # the active model; None scores with the shipped default
    autonomy_set_by: str = "policy file"
    governance_revision: int = 0  # revision of the live governance state (0: policy file only)
    candidate_model_id: str | None = None  # a candidate model scoring in shadow (recorded, never decides)
    review_sampled: bool = False  # on the loop: this case is in the analysts' review sample
    # The alert type's playbook as the worker's code declared it when the case began (None in histories
    # from before it was recorded: those plan from the code). A case plans from this, so a playbook
    # edited and deployed while it runs neither changes its steps nor breaks its replay.
    playbook: PlaybookRecord | None = None


def close_roles(policy: Policy, alert_type: str | None = None) -> tuple[str, ...]:
    """Who may decide a case as a whole (close it with a verdict, retry a failed attempt, detach an
    alert): the alert type's own `close_roles` when the policy sets them, else the roles that may
    approve a gated step (every non-automatic tier's roles)."""
    if alert_type is not None:
        own = policy.alert_type(alert_type).close_roles
        if own is not None:
            return own
    roles: list[str] = []
    for rule in (policy.tiers[tier] for tier in RiskTier):  # lowest tier first, whatever the file's order
        if not rule.auto:
            roles += [r for r in rule.roles if r not in roles]
    return tuple(roles)
