"""The case's entity digests in visibility (`CaseEntities`, signoff.entity_index): which other cases
share a host, an account, an IP. Part of CaseWorkflow (a mixin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from signoff import search_attributes as sa
    from signoff.entity_index import index_text

if TYPE_CHECKING:
    from temporalio.common import SearchAttributeUpdate

    from signoff.models import Entity

# Cases recorded before the index replay without its upsert; taken only when there is something to publish.
ENTITY_INDEX = "entity-index"


class CaseEntities:
    # Set by CaseWorkflow.
    entities: dict[tuple[str, str], Entity]
    search_attributes: dict[str, Any]

    def _upsert(self, updates: list[SearchAttributeUpdate[Any]], *, defer: bool = False) -> None:
        raise NotImplementedError  # CaseWorkflow's

    def _publish_entities(self, *, defer: bool) -> None:
        """Publish the digests when they changed (a new alert brought a new value, a detach took one)."""
        text = index_text(entity.value for entity in self.entities.values())
        if self.search_attributes.get(sa.CASE_ENTITIES.name, "") == text or not workflow.patched(ENTITY_INDEX):
            return
        self._upsert([sa.CASE_ENTITIES.value_set(text)], defer=defer)
