"""SentinelOne: disconnect / reconnect agents from the network (ApiToken auth).

- `disconnect(agent)`: POST /web/api/v2.1/agents/actions/disconnect `{"filter": {"ids": [id]}}` →
  `{"data": {"affected": N}}`; the agent's `networkStatus` goes `disconnecting` → `disconnected`.
- `connect(agent)`: POST /web/api/v2.1/agents/actions/connect (→ `connecting` → `connected`).
  Reversible. Calls always name explicit ids (never a filter-only bulk call) and check `affected`.

Configuration: SIGNOFF_SENTINELONE_BASE_URL (the console, e.g. https://usea1.sentinelone.net),
SIGNOFF_SENTINELONE_API_TOKEN (or _FILE).
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.http import (
    HeaderAuth,
    NonRetryableConnectorError,
    NotFoundError,
    Secret,
    VendorClient,
    require_secret,
    require_setting,
)

VENDOR = "sentinelone"
API = "/web/api/v2.1"


class SentinelOne(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_SENTINELONE_API_TOKEN (or SIGNOFF_SENTINELONE_API_TOKEN_FILE)"

    def __init__(self, base_url: str, token: Secret, **kwargs: Any) -> None:
        super().__init__(base_url, HeaderAuth("Authorization", token, "ApiToken "), **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> SentinelOne:
        return cls(require_setting(VENDOR, "base_url"), require_secret(VENDOR, "api_token"), transport=transport)

    async def agent(self, agent_id: str) -> dict[str, Any]:
        data = (await self.request("GET", f"{API}/agents", params={"ids": agent_id})).json().get("data") or []
        found = [a for a in data if str(a.get("id")) == agent_id]
        if not found:
            raise NotFoundError(f"sentinelone: no agent with id {agent_id}", vendor=VENDOR)
        return dict(found[0])

    async def network_status(self, agent_id: str) -> str:
        """`connected`, `connecting`, `disconnected` or `disconnecting`."""
        return str((await self.agent(agent_id)).get("networkStatus", "connected"))

    async def disconnect(self, agent_id: str) -> None:
        await self._action("disconnect", agent_id)

    async def connect(self, agent_id: str) -> None:
        await self._action("connect", agent_id)

    async def _action(self, name: str, agent_id: str) -> None:
        if not agent_id:
            raise NonRetryableConnectorError("sentinelone: refusing a network action without an agent id",
                                             vendor=VENDOR)
        response = await self.request(
            "POST", f"{API}/agents/actions/{name}", json={"filter": {"ids": [agent_id]}}, idempotent=True
        )
        affected = (response.json().get("data") or {}).get("affected")
        if affected != 1:
            raise NonRetryableConnectorError(
                f"sentinelone: {name} affected {affected} agents, expected exactly 1 ({agent_id})", vendor=VENDOR
            )
