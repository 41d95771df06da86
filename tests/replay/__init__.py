"""Recorded workflow histories and what tests read from them."""

from __future__ import annotations

import json

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory


def recorded_patches(history: WorkflowHistory) -> set[str]:
    """Patch ids recorded in the history (`core_patch` markers carry the id as a JSON payload)."""
    found = set()
    for event in history.events:
        attrs = event.marker_recorded_event_attributes
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and attrs.marker_name == "core_patch":
            found.add(json.loads(attrs.details["patch-data"].payloads[0].data)["id"])
    return found
