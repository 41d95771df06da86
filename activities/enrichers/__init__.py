"""Enrichers add context to a case. Each one is active only when its backend is configured.

An enricher is an async function `(entities) -> dict[str, str]` of facts; register it with
`@enricher("name")`. Facts are short strings: they are recorded in the case history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from connectors.lab import lab
from signoff.models import Enrichment, Entity

Enricher = Callable[[tuple[Entity, ...]], Awaitable[dict[str, str]]]
_ENRICHERS: dict[str, Enricher] = {}


def enricher(name: str) -> Callable[[Enricher], Enricher]:
    def add(fn: Enricher) -> Enricher:
        _ENRICHERS[name] = fn
        return fn

    return add


@enricher("lab")
async def lab_context(entities: tuple[Entity, ...]) -> dict[str, str]:
    """Current containment state of the case's accounts and hosts in the lab estate."""
    facts: dict[str, str] = {}
    for entity in entities[:20]:
        if entity.type == "account":
            state = lab().read("account", entity.value)
            facts[f"account {entity.value}"] = "enabled" if state.get("enabled") else "disabled"
        elif entity.type == "host":
            facts[f"host {entity.value}"] = str(lab().read("host", entity.value).get("network"))
    return facts


def active_enrichers() -> dict[str, Enricher]:
    _load_optional()
    return dict(_ENRICHERS)


def _load_optional() -> None:
    """Vendor enrichers register themselves when their module imports (activities/enrichers/*)."""
    import importlib
    import pkgutil

    import activities.enrichers as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


async def enrich_entities(case_id: str, entities: tuple[Entity, ...]) -> Enrichment:
    facts: dict[str, str] = {}
    sources = []
    for name, fn in sorted(active_enrichers().items()):
        found = await fn(entities)
        if found:
            sources.append(name)
            facts.update(found)
    kinds: dict[str, int] = {}
    for entity in entities:
        kinds[entity.type] = kinds.get(entity.type, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no entities"
    return Enrichment(summary=f"{len(entities)} entities ({summary})", facts=facts, sources=tuple(sources))
