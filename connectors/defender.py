"""Microsoft Defender for Endpoint: isolate / release machines (machine actions, polled).

- `isolate(machine, comment, isolation_type)`: POST /api/machines/{id}/isolate → 201 MachineAction
  `Pending`, later `InProgress` → `Succeeded` | `Failed` | `TimeOut` | `Cancelled`. Reversible.
- `unisolate(machine, comment)`: POST /api/machines/{id}/unisolate.
- `isolation(machine)`: the machine's isolation derived from its latest Isolate/Unisolate action
  (MDE has no isolation field on the machine itself).

Configuration: SIGNOFF_DEFENDER_TENANT_ID, SIGNOFF_DEFENDER_CLIENT_ID, SIGNOFF_DEFENDER_CLIENT_SECRET
(or _FILE), SIGNOFF_DEFENDER_BASE_URL (default https://api.securitycenter.microsoft.com),
SIGNOFF_DEFENDER_LOGIN_URL (default https://login.microsoftonline.com). App permission Machine.Isolate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from connectors.http import (
    NonRetryableConnectorError,
    OAuth2ClientCredentials,
    Secret,
    VendorClient,
    entra_app_from_env,
)

VENDOR = "defender"
DEFAULT_URL = "https://api.securitycenter.microsoft.com"
SCOPE = "https://api.securitycenter.microsoft.com/.default"
ACTIVE = ("Pending", "InProgress")


@dataclass(frozen=True)
class Isolation:
    state: str  # "isolated" | "released" | "isolating" | "releasing"
    scope: str | None = None  # "Full" | "Selective" for an isolation


class Defender(VendorClient):
    vendor = VENDOR
    credential_hint = (
        "SIGNOFF_DEFENDER_TENANT_ID, SIGNOFF_DEFENDER_CLIENT_ID and SIGNOFF_DEFENDER_CLIENT_SECRET "
        "(or _FILE); the app needs Machine.Isolate and Machine.Read.All"
    )

    def __init__(self, base_url: str, token_url: str, client_id: str, client_secret: Secret,
                 **kwargs: Any) -> None:
        auth = OAuth2ClientCredentials(token_url, client_id, client_secret, scope=SCOPE, vendor=VENDOR,
                                       hint=self.credential_hint)
        super().__init__(base_url, auth, **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> Defender:
        return cls(*entra_app_from_env(VENDOR, DEFAULT_URL), transport=transport)

    async def machine(self, machine_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/api/machines/{machine_id}")).json())

    async def machine_action(self, action_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/api/machineactions/{action_id}")).json())

    async def isolation_actions(self, machine_id: str) -> list[dict[str, Any]]:
        response = await self.request(
            "GET", "/api/machineactions",
            params={"$filter": f"machineId eq '{machine_id}' and (type eq 'Isolate' or type eq 'Unisolate')"},
        )
        actions = [a for a in response.json().get("value", []) if a.get("machineId") == machine_id]
        return sorted(actions, key=lambda a: str(a.get("creationDateTimeUtc", "")), reverse=True)

    async def isolation(self, machine_id: str) -> Isolation:
        await self.machine(machine_id)  # 404 → NotFoundError for an unknown machine
        for action in await self.isolation_actions(machine_id):
            kind, status = action.get("type"), action.get("status")
            if status in ACTIVE:
                return Isolation("isolating" if kind == "Isolate" else "releasing", action.get("scope"))
            if status == "Succeeded":
                return Isolation("isolated" if kind == "Isolate" else "released", action.get("scope"))
            # Failed / TimeOut / Cancelled changed nothing: look at the one before
        return Isolation("released")

    async def isolate(self, machine_id: str, comment: str, isolation_type: str = "Full") -> dict[str, Any] | None:
        if isolation_type not in ("Full", "Selective"):
            raise NonRetryableConnectorError(
                f"defender: isolation type must be Full or Selective, not {isolation_type!r}", vendor=VENDOR
            )
        return await self._post(f"/api/machines/{machine_id}/isolate",
                                {"Comment": comment, "IsolationType": isolation_type})

    async def unisolate(self, machine_id: str, comment: str) -> dict[str, Any] | None:
        return await self._post(f"/api/machines/{machine_id}/unisolate", {"Comment": comment})

    async def _post(self, path: str, body: dict[str, str]) -> dict[str, Any] | None:
        response = await self.request("POST", path, json=body, idempotent=True, allow=(400,))
        if response.status_code == 400:
            error = (response.json() or {}).get("error", {})
            if error.get("code") == "ActiveRequestAlreadyExists":
                return None  # the same action is already pending: verify will follow it
            raise self.error_for("POST", path, response)
        return dict(response.json())
