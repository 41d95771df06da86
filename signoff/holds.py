"""Shared targets: when two open cases hold the same action on the same target.

Case A isolates a host; case B, on the same host, is approved too (its captured state is "already
isolated"). Rolling A back must not reconnect a host B still holds contained, and B's later
rollback must restore the state from before A, not B's "isolated". So each case publishes what it
holds (the `HeldTargets` search attribute, as digests), and a rollback that finds another holder
keeps the target as it is and hands that holder its own captured state (`HoldHandover`). Pure and
deterministic: safe in workflow code.
"""

from __future__ import annotations

import hashlib

from signoff.models import ActionTarget


def hold_key(action: str, target: ActionTarget) -> str:
    """The digest a case publishes for `action` on `target` (no names in visibility)."""
    return hashlib.sha256(f"{action}\x1f{target.kind}\x1f{target.id}".encode()).hexdigest()[:24]
