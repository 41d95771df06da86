"""Lab executors: every declared action, acting on the local lab estate (connectors/lab.py)."""

from __future__ import annotations

import asyncio
import os
from typing import ClassVar

from activities.executors import register
from activities.executors.base import ActionExecutor, State
from connectors.lab import lab
from signoff.models import ActionTarget


class LabExecutor(ActionExecutor):
    kind: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    verify_interval = 0.05

    def _kind(self, target: ActionTarget) -> str:
        return self.kind or target.kind

    async def capture(self, target: ActionTarget) -> State:
        state = lab().read(self._kind(target), target.id)
        return {k: state.get(k) for k in self.keys}

    async def write(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        lab().write(self._kind(target), target.id, state, idempotency_key)
        # A slow vendor (tests kill workers mid-call): SIGNOFF_LAB_DELAY seconds after each change.
        delay = float(os.environ.get("SIGNOFF_LAB_DELAY", "0") or 0)
        if delay > 0:
            await asyncio.sleep(delay)


def _lab(action: str, kind: str, keys: tuple[str, ...], goal: dict) -> type[LabExecutor]:
    @register(action, "lab")
    class _Executor(LabExecutor):
        def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
            return dict(goal)

    _Executor.action, _Executor.kind, _Executor.keys = action, kind, keys
    _Executor.__name__ = _Executor.__qualname__ = f"Lab_{action}"
    return _Executor


_lab("disable_account", "account", ("enabled",), {"enabled": False})
_lab("isolate_host", "host", ("network",), {"network": "isolated"})
_lab("quarantine_email", "mail_message", ("folder",), {"folder": "quarantine"})
_lab("block_sender", "mailbox", ("sender_blocked",), {"sender_blocked": True})
_lab("block_ip", "ip", ("blocked",), {"blocked": True})
_lab("deactivate_access_key", "access_key", ("status",), {"status": "Inactive"})
_lab("block_file_hash", "file", ("blocked",), {"blocked": True})


@register("revoke_sessions", "lab")
class LabRevokeSessions(LabExecutor):
    action, kind, keys = "revoke_sessions", "account", ("sessions_revoked_at",)

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"sessions_revoked_at": idempotency_key}


@register("tag_case", "lab")
class LabTagCase(LabExecutor):
    action, kind, keys = "tag_case", "case", ("tags",)

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        tags = list(before.get("tags") or [])
        tag = params.get("tag", "signoff")
        return {"tags": tags if tag in tags else [*tags, tag]}


@register("add_note", "lab")
class LabAddNote(LabExecutor):
    action, kind, keys = "add_note", "case", ("notes",)

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        notes = list(before.get("notes") or [])
        note = f"[{idempotency_key}] {params.get('text', '')}"
        return {"notes": notes if note in notes else [*notes, note]}


@register("watch_entity", "lab")
class LabWatchEntity(LabExecutor):
    action, kind, keys = "watch_entity", "watchlist", ("watched",)

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"watched": True}
