"""Identity actions: disable_account (Okta, Entra ID via Graph) and revoke_sessions (irreversible).

disable_account state: Okta `{"status": <Okta user status>}`, Graph `{"account_enabled": bool}`.
Restore puts the captured value back (an account that was already disabled stays disabled).

revoke_sessions has nothing to restore. Its state is a marker that moves forward when sessions are
revoked (Graph `signInSessionsValidFromDateTime`, Okta's latest `user.session.clear` System Log
event), so a retried activity sees that the revocation already happened and does not repeat it,
and verification waits for the vendor's own record, not for a 2xx.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from activities.executors import register
from activities.executors.base import (
    ActionNotConfirmed,
    ConnectorExecutor,
    IrreversibleExecutor,
    State,
    _heartbeat,
    mapped,
)
from activities.executors.base import non_retryable as refuse
from connectors.graph import Graph
from connectors.okta import CANNOT_SIGN_IN, SUSPENDABLE, Okta
from signoff.models import ActionTarget

C = TypeVar("C")


@register("disable_account", "okta")
class OktaDisableAccount(ConnectorExecutor[Okta]):
    action = "disable_account"
    verify_attempts = 20
    verify_interval = 1.0

    def connect(self) -> Okta:
        return Okta.from_env()

    async def read(self, target: ActionTarget) -> State:
        return {"status": await self.connector.status(target.id)}

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        status = before.get("status")
        if status in CANNOT_SIGN_IN:
            return {"status": status}  # already unable to sign in: nothing to do
        if status not in SUSPENDABLE:
            raise refuse(
                f"Okta only suspends ACTIVE users; this account is {status}. Resolve it in Okta "
                "(e.g. finish the password reset or unlock) or choose another backend",
                type="UnsupportedState",
            )
        return {"status": "SUSPENDED"}

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        current = await self.connector.status(target.id)
        wanted = state["status"]
        if wanted == "SUSPENDED" and current in SUSPENDABLE:
            await self.connector.suspend(target.id)
        elif wanted == "ACTIVE" and current == "SUSPENDED":
            await self.connector.unsuspend(target.id)
        elif wanted != current:
            raise refuse(f"Okta cannot move user {target.id} from {current} to {wanted} with suspend/unsuspend; "
                         "restore it by hand", type="UnsupportedState")


@register("disable_account", "graph")
class GraphDisableAccount(ConnectorExecutor[Graph]):
    action = "disable_account"
    verify_attempts = 30
    verify_interval = 2.0  # directory replication

    def connect(self) -> Graph:
        return Graph.from_env()

    async def read(self, target: ActionTarget) -> State:
        return {"account_enabled": bool((await self.connector.user(target.id)).get("accountEnabled"))}

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"account_enabled": False}

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        await self.connector.set_account_enabled(target.id, bool(state["account_enabled"]))


class RevokeSessions(IrreversibleExecutor[C]):
    """Irreversible: `apply` revokes unless the marker already moved past the captured one."""

    action = "revoke_sessions"
    verify_attempts = 30
    verify_interval = 2.0
    marker = "sessions_valid_from"

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        # Done when the vendor's marker moves past the captured one; `revoked` is never captured,
        # so a before-state never counts as "already in the goal state".
        return {"revoked": True}

    async def revoke(self, target: ActionTarget) -> None:
        raise NotImplementedError

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        await self.revoke(target)

    async def apply(self, target: ActionTarget, before: State, params: dict[str, str], key: str) -> State:
        current = await self.capture(target)
        if not self._moved(before, current):
            await mapped(self.revoke(target))
        for _ in range(self.verify_attempts):
            current = await self.capture(target)
            if self._moved(before, current):
                return {**current, "revoked": True}
            await self._pause()
        raise ActionNotConfirmed(
            f"revoke_sessions on {target.id}: the vendor has not recorded the revocation yet "
            f"({self.marker} is still {before.get(self.marker)})"
        )

    def _moved(self, before: State, current: State) -> bool:
        return current.get(self.marker) is not None and current.get(self.marker) != before.get(self.marker)

    async def _pause(self) -> None:
        _heartbeat(f"{self.action}: waiting for the vendor to record the revocation")
        await asyncio.sleep(self.verify_interval)


@register("revoke_sessions", "graph")
class GraphRevokeSessions(RevokeSessions[Graph]):
    def connect(self) -> Graph:
        return Graph.from_env()

    async def read(self, target: ActionTarget) -> State:
        user = await self.connector.user(target.id)
        return {self.marker: user.get("signInSessionsValidFromDateTime")}

    async def revoke(self, target: ActionTarget) -> None:
        await self.connector.revoke_sign_in_sessions(target.id)


@register("revoke_sessions", "okta")
class OktaRevokeSessions(RevokeSessions[Okta]):
    marker = "sessions_cleared_at"

    def connect(self) -> Okta:
        return Okta.from_env()

    async def read(self, target: ActionTarget) -> State:
        await self.connector.user(target.id)  # 404 → NotFound for an unknown user
        return {self.marker: await self.connector.last_session_clear(target.id)}

    async def revoke(self, target: ActionTarget) -> None:
        await self.connector.clear_sessions(target.id)
