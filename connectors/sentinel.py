"""Microsoft Sentinel incidents (Azure Resource Manager): list, read, update status.

- `incidents(filter)`: GET .../providers/Microsoft.SecurityInsights/incidents. Read-only.
- `update_incident(id, status, classification, ...)`: read-modify-write PUT with the incident's
  `etag`; on 409/412 (someone else changed it) re-read and re-apply once. Reversible by writing the
  captured status/classification back.

Configuration: SIGNOFF_SENTINEL_TENANT_ID, SIGNOFF_SENTINEL_CLIENT_ID, SIGNOFF_SENTINEL_CLIENT_SECRET
(or _FILE), SIGNOFF_SENTINEL_SUBSCRIPTION_ID, SIGNOFF_SENTINEL_RESOURCE_GROUP,
SIGNOFF_SENTINEL_WORKSPACE, SIGNOFF_SENTINEL_BASE_URL (default https://management.azure.com).
Role: Microsoft Sentinel Responder.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.http import (
    NonRetryableConnectorError,
    OAuth2ClientCredentials,
    Secret,
    VendorClient,
    entra_app_from_env,
    require_setting,
)

VENDOR = "sentinel"
API_VERSION = "2025-09-01"
DEFAULT_URL = "https://management.azure.com"
SCOPE = "https://management.azure.com/.default"


class Sentinel(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_SENTINEL_TENANT_ID, SIGNOFF_SENTINEL_CLIENT_ID and SIGNOFF_SENTINEL_CLIENT_SECRET"

    def __init__(self, base_url: str, token_url: str, client_id: str, client_secret: Secret,
                 subscription: str, resource_group: str, workspace: str, **kwargs: Any) -> None:
        auth = OAuth2ClientCredentials(token_url, client_id, client_secret, scope=SCOPE, vendor=VENDOR,
                                       hint=self.credential_hint)
        super().__init__(base_url, auth, **kwargs)
        self.root = (
            f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
            f"Microsoft.OperationalInsights/workspaces/{workspace}/providers/Microsoft.SecurityInsights"
        )

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> Sentinel:
        return cls(
            *entra_app_from_env(VENDOR, DEFAULT_URL),
            require_setting(VENDOR, "subscription_id"), require_setting(VENDOR, "resource_group"),
            require_setting(VENDOR, "workspace"), transport=transport,
        )

    async def incidents(self, odata_filter: str | None = None, top: int = 50) -> list[dict[str, Any]]:
        params = {"api-version": API_VERSION, "$top": str(top), "$orderby": "properties/createdTimeUtc desc"}
        if odata_filter:
            params["$filter"] = odata_filter
        response = await self.request("GET", f"{self.root}/incidents", params=params)
        return list(response.json().get("value", []))

    async def incident(self, incident_id: str) -> dict[str, Any]:
        response = await self.request("GET", f"{self.root}/incidents/{incident_id}",
                                      params={"api-version": API_VERSION})
        return dict(response.json())

    async def update_incident(self, incident_id: str, **changes: Any) -> dict[str, Any]:
        """Set properties (`status`, `classification`, `classificationComment`, `severity`, ...)."""
        if "status" in changes and changes["status"] not in ("New", "Active", "Closed"):
            raise NonRetryableConnectorError("sentinel: status must be New, Active or Closed", vendor=VENDOR)
        for attempt in range(2):
            current = await self.incident(incident_id)
            props = {k: v for k, v in current.get("properties", {}).items()
                     if k in ("title", "severity", "status", "classification", "classificationComment",
                              "classificationReason", "description", "owner", "labels")}
            props.update(changes)
            response = await self.request(
                "PUT", f"{self.root}/incidents/{incident_id}", params={"api-version": API_VERSION},
                json={"etag": current.get("etag"), "properties": props}, allow=(409, 412),
            )
            if response.status_code in (409, 412) and attempt == 0:
                continue  # changed by someone else since our read: re-read, re-apply
            if response.status_code in (409, 412):
                raise self.error_for("PUT", "incidents", response)
            return dict(response.json())
        raise AssertionError("unreachable")
