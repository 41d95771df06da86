"""Tell the other open cases that hold a target that a rollback leaves it to them (signal
`take_over_hold`): shared by a case's own rollback and the rollback of an ended case."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from signoff.models import HoldHandover


async def tell_holders(holders: list[str], handover: HoldHandover) -> list[str]:
    """The holders that were told, in order; one that closed meanwhile no longer holds the target."""
    told = []
    for holder in holders:
        try:
            await workflow.get_external_workflow_handle(holder).signal("take_over_hold", handover)
            told.append(holder)
        except Exception:  # it closed meanwhile: it no longer holds the target
            continue
    return told
