"""isolate_host on EDR platforms: CrowdStrike Falcon, Microsoft Defender for Endpoint, SentinelOne.

Common state: `{"network": "contained" | "normal" | "containing" | "releasing"}` (plus vendor
detail a restore needs, e.g. MDE's isolation scope). Containment is asynchronous at every vendor:
`verify` polls until the vendor reports the end state; a 2xx to the request proves nothing.
A host that was contained (or on its way) before the case stays contained on restore.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TypeVar

from activities.executors import register
from activities.executors.base import ConnectorExecutor, State
from connectors.crowdstrike import CrowdStrike
from connectors.defender import Defender
from connectors.sentinelone import SentinelOne
from signoff.models import ActionTarget

CONTAINED, NORMAL, CONTAINING, RELEASING = "contained", "normal", "containing", "releasing"
C = TypeVar("C")


class EdrIsolateHost(ConnectorExecutor[C]):
    action = "isolate_host"
    verify_attempts = 120  # x 5 s: EDR containment usually confirms within minutes (ACTION_TIMEOUT 15 min)
    verify_interval = 5.0

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"network": CONTAINED}

    def settled(self, state: State) -> State:
        network = state.get("network")
        if network == CONTAINING:
            return {**state, "network": CONTAINED}
        if network == RELEASING:
            return {**state, "network": NORMAL}
        return state

    async def change(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        if self.settled(state)["network"] == CONTAINED:
            await self.contain(target, state, idempotency_key)
        else:
            await self.release(target, idempotency_key)

    @abstractmethod
    async def contain(self, target: ActionTarget, state: State, idempotency_key: str) -> None: ...

    @abstractmethod
    async def release(self, target: ActionTarget, idempotency_key: str) -> None: ...


@register("isolate_host", "crowdstrike")
class CrowdStrikeIsolateHost(EdrIsolateHost[CrowdStrike]):
    NETWORK = {"normal": NORMAL, "containment_pending": CONTAINING, "contained": CONTAINED,
               "lift_containment_pending": RELEASING}

    def connect(self) -> CrowdStrike:
        return CrowdStrike.from_env()

    async def read(self, target: ActionTarget) -> State:
        status = await self.connector.status(target.id)
        return {"network": self.NETWORK.get(status, status)}

    async def contain(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        await self.connector.contain(target.id)

    async def release(self, target: ActionTarget, idempotency_key: str) -> None:
        await self.connector.lift_containment(target.id)


@register("isolate_host", "defender")
class DefenderIsolateHost(EdrIsolateHost[Defender]):
    """MDE isolation keeps its scope: a host isolated `Selective` before is restored `Selective`."""

    NETWORK = {"isolated": CONTAINED, "released": NORMAL, "isolating": CONTAINING, "releasing": RELEASING}

    def connect(self) -> Defender:
        return Defender.from_env()

    async def read(self, target: ActionTarget) -> State:
        iso = await self.connector.isolation(target.id)
        state: State = {"network": self.NETWORK[iso.state]}
        if iso.state in ("isolated", "isolating"):
            state["scope"] = iso.scope or "Full"
        return state

    def goal(self, before: State, params: dict[str, str], idempotency_key: str) -> State:
        return {"network": CONTAINED, "scope": params.get("isolation_type", "Full")} \
            if before.get("network") not in (CONTAINED, CONTAINING) else {"network": CONTAINED}

    async def contain(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        await self.connector.isolate(target.id, f"Signoff {idempotency_key}", state.get("scope") or "Full")

    async def release(self, target: ActionTarget, idempotency_key: str) -> None:
        await self.connector.unisolate(target.id, f"Signoff {idempotency_key}")


@register("isolate_host", "sentinelone")
class SentinelOneIsolateHost(EdrIsolateHost[SentinelOne]):
    NETWORK = {"connected": NORMAL, "connecting": RELEASING, "disconnected": CONTAINED,
               "disconnecting": CONTAINING}

    def connect(self) -> SentinelOne:
        return SentinelOne.from_env()

    async def read(self, target: ActionTarget) -> State:
        status = await self.connector.network_status(target.id)
        return {"network": self.NETWORK.get(status, status)}

    async def contain(self, target: ActionTarget, state: State, idempotency_key: str) -> None:
        await self.connector.disconnect(target.id)

    async def release(self, target: ActionTarget, idempotency_key: str) -> None:
        await self.connector.connect(target.id)
