"""Elastic Security (Kibana detection engine): search alerts, set their workflow status.

- `search_alerts(query, size)`: POST /api/detection_engine/signals/search (an Elasticsearch query
  body) → hits. Read-only.
- `set_status(ids, status)`: POST /api/detection_engine/signals/status `{"signal_ids": [...],
  "status": "open" | "acknowledged" | "closed"}`. Reversible (write the captured status back).
  Explicit ids only: never a query-based bulk update.

Configuration: SIGNOFF_ELASTIC_KIBANA_URL (https://<kibana>:5601, add `/s/<space>` for a space),
SIGNOFF_ELASTIC_API_KEY (or _FILE; the base64 `id:key` API key).
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.http import (
    HeaderAuth,
    NonRetryableConnectorError,
    Secret,
    VendorClient,
    require_secret,
    require_setting,
)

VENDOR = "elastic"
STATUSES = ("open", "acknowledged", "closed")


class ElasticSecurity(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_ELASTIC_API_KEY (or SIGNOFF_ELASTIC_API_KEY_FILE)"

    def __init__(self, kibana_url: str, api_key: Secret, **kwargs: Any) -> None:
        super().__init__(kibana_url, HeaderAuth("Authorization", api_key, "ApiKey "),
                         headers={"kbn-xsrf": "true"}, **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> ElasticSecurity:
        return cls(require_setting(VENDOR, "kibana_url"), require_secret(VENDOR, "api_key"), transport=transport)

    async def search_alerts(self, query: dict[str, Any], size: int = 100,
                            sort: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"query": query, "size": size}
        if sort:
            body["sort"] = sort
        response = await self.request("POST", "/api/detection_engine/signals/search", json=body, idempotent=True)
        return list(response.json().get("hits", {}).get("hits", []))

    async def set_status(self, alert_ids: list[str], status: str) -> int:
        if not alert_ids:
            raise NonRetryableConnectorError("elastic: refusing a status update without alert ids", vendor=VENDOR)
        if status not in STATUSES:
            raise NonRetryableConnectorError(f"elastic: status must be one of {STATUSES}", vendor=VENDOR)
        response = await self.request(
            "POST", "/api/detection_engine/signals/status",
            json={"signal_ids": list(alert_ids), "status": status}, idempotent=True,
        )
        return int(response.json().get("updated", 0))
