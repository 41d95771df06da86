"""isolate_host on Linux hosts with nftables (see connectors/nftables_hosts.py)."""

from __future__ import annotations

from activities.executors import register
from activities.executors.base import ConnectorExecutor, State
from connectors.nftables_hosts import NftablesHosts
from signoff.models import ActionTarget


@register("isolate_host", "nftables")
class NftablesIsolateHost(ConnectorExecutor[NftablesHosts]):
    """State: `{"contained": bool}`. A host already contained stays contained on restore."""

    action = "isolate_host"
    verify_attempts = 10
    verify_interval = 0.2

    def connect(self) -> NftablesHosts:
        return NftablesHosts.from_env()

    async def read(self, target: ActionTarget) -> State:
        return {"contained": await self.connector.is_contained(target.id)}

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"contained": True}

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        if state["contained"]:
            await self.connector.contain(target.id)
        else:
            await self.connector.release(target.id)
