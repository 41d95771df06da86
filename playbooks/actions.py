"""The response actions a playbook may use, each declared with its risk and its undo, side by side.

A declaration is data: what the action does, how much sign-off it needs, whether it can be undone
and which compensation undoes it. Executors (activities/executors/) implement them per backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from signoff.models import Reversibility, RiskTier

LOW, HIGH, CRITICAL = RiskTier.low, RiskTier.high, RiskTier.critical
REVERSIBLE, PARTIAL, IRREVERSIBLE = Reversibility.reversible, Reversibility.partial, Reversibility.irreversible


@dataclass(frozen=True)
class ActionSpec:
    name: str
    target_kind: str  # entity type the action works on ("case" for the case itself)
    tier: RiskTier
    reversibility: Reversibility
    compensation: str | None  # restores the state captured before the action; None if irreversible
    description: str


ACTIONS: dict[str, ActionSpec] = {}


def declare(
    name: str,
    target_kind: str,
    tier: RiskTier,
    reversibility: Reversibility,
    compensation: str | None,
    description: str,
) -> ActionSpec:
    """Declare an action once. A second, different declaration under the same name is refused (it
    would change the sign-off of every playbook using it); the identical one again is a no-op."""
    if reversibility != IRREVERSIBLE and compensation is None:
        raise ValueError(f"action {name!r} is {reversibility.value} and must declare its compensation")
    if reversibility == IRREVERSIBLE and compensation is not None:
        raise ValueError(f"action {name!r} is irreversible: it cannot declare a compensation")
    # The policy would raise it to the top tier anyway, but `signoff show`, `explain` and the audit
    # trail print the declared tier: an irreversible step labelled "high" misleads every reader.
    if reversibility == IRREVERSIBLE and tier != CRITICAL:
        raise ValueError(f"action {name!r} is irreversible: declare it CRITICAL (irreversible actions need the "
                         f"top tier), not {tier.value.upper()}")
    # Low steps run without approval; one a rollback cannot fully undo must wait for a person.
    if reversibility == PARTIAL and tier == LOW:
        raise ValueError(f"action {name!r} is partial (a rollback cannot fully undo it) and LOW (runs without "
                         "approval): declare it HIGH, or make its restore complete and declare it REVERSIBLE")
    spec = ActionSpec(name, target_kind, tier, reversibility, compensation, description)
    existing = ACTIONS.get(name)
    if existing is not None and existing != spec:
        # Replacing a declaration would silently change the sign-off every playbook using it needs.
        raise ValueError(
            f"action {name!r} is already declared; refusing to re-declare it with {_changes(existing, spec)}: "
            "declare a new action under a new name instead"
        )
    ACTIONS[name] = existing or spec  # the identical declaration again (a module reload) is a no-op
    return ACTIONS[name]


def _changes(old: ActionSpec, new: ActionSpec) -> str:
    """`tier high -> low, ...`: the fields a re-declaration would change."""
    fields = ("target_kind", "tier", "reversibility", "compensation", "description")
    return ", ".join(
        f"{f} {_text(getattr(old, f))} -> {_text(getattr(new, f))}" for f in fields if getattr(old, f) != getattr(new, f)
    )


def _text(value: object) -> str:
    return str(value.value) if isinstance(value, RiskTier | Reversibility) else repr(value)


# Low-stakes steps: run automatically, still recorded and still undone on rollback.
TAG_CASE = declare("tag_case", "case", LOW, REVERSIBLE, "restore_case_tags", "Tag the case")
ADD_NOTE = declare("add_note", "case", LOW, REVERSIBLE, "restore_case_notes", "Add an analyst note to the case")
WATCH_ENTITY = declare(
    "watch_entity", "any", LOW, REVERSIBLE, "restore_watchlist", "Put the entity on the SOC watchlist"
)

# High-impact steps: wait for the approvals their tier requires.
DISABLE_ACCOUNT = declare(
    "disable_account", "account", HIGH, REVERSIBLE, "restore_account", "Disable the user account"
)
REVOKE_SESSIONS = declare(
    "revoke_sessions", "account", CRITICAL, IRREVERSIBLE, None,
    "Revoke every sign-in session and refresh token of the account (cannot be undone)",
)
ISOLATE_HOST = declare(
    "isolate_host", "host", HIGH, REVERSIBLE, "restore_host_network",
    "Contain the host: cut its network except the management channel",
)
QUARANTINE_EMAIL = declare(
    "quarantine_email", "mail_message", HIGH, REVERSIBLE, "restore_email", "Move the message to quarantine"
)
BLOCK_SENDER = declare(
    "block_sender", "mailbox", HIGH, REVERSIBLE, "restore_sender", "Block the sender at the mail gateway"
)
BLOCK_IP = declare("block_ip", "ip", HIGH, REVERSIBLE, "restore_ip", "Block the IP address at the perimeter")
DEACTIVATE_ACCESS_KEY = declare(
    "deactivate_access_key", "access_key", HIGH, REVERSIBLE, "restore_access_key",
    "Deactivate the cloud access key",
)
BLOCK_FILE_HASH = declare(
    "block_file_hash", "file", HIGH, REVERSIBLE, "restore_file_hash",
    "Block the file's hash on the endpoints (EDR blocklist: running copies are quarantined)",
)
