"""Splunk (Enterprise / Enterprise Security): search jobs and notable event updates.

- `search(spl, earliest, latest)`: POST /services/search/jobs → `sid`; poll
  GET /services/search/jobs/{sid} until `dispatchState` is DONE (FAILED → error); then
  GET /services/search/jobs/{sid}/results. Read-only.
- `update_notables(event_ids, status, comment)`: POST /services/notable_update (ES). Reversible
  by writing the previous status back (callers capture it first). Explicit ids only.

Configuration: SIGNOFF_SPLUNK_BASE_URL (https://<host>:8089), SIGNOFF_SPLUNK_TOKEN (or _FILE;
a Splunk authentication token, sent as `Authorization: Bearer`).
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.http import (
    HeaderAuth,
    NonRetryableConnectorError,
    RetryableConnectorError,
    Secret,
    VendorClient,
    require_secret,
    require_setting,
)

VENDOR = "splunk"


class Splunk(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_SPLUNK_TOKEN (or SIGNOFF_SPLUNK_TOKEN_FILE)"
    poll_interval = 1.0
    poll_attempts = 120

    def __init__(self, base_url: str, token: Secret, **kwargs: Any) -> None:
        super().__init__(base_url, HeaderAuth("Authorization", token, "Bearer "), **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> Splunk:
        return cls(require_setting(VENDOR, "base_url"), require_secret(VENDOR, "token"), transport=transport)

    async def search(self, spl: str, earliest: str = "-15m", latest: str = "now", count: int = 1000
                     ) -> list[dict[str, Any]]:
        if not spl.lstrip().startswith(("search ", "|")):
            spl = f"search {spl}"
        response = await self.request(
            "POST", "/services/search/jobs",
            data={"search": spl, "earliest_time": earliest, "latest_time": latest, "output_mode": "json"},
            idempotent=False,
        )
        sid = str(response.json()["sid"])
        for _ in range(self.poll_attempts):
            job = await self.request("GET", f"/services/search/jobs/{sid}", params={"output_mode": "json"})
            content = job.json()["entry"][0]["content"]
            state = content.get("dispatchState")
            if state == "DONE":
                break
            if state == "FAILED":
                raise NonRetryableConnectorError(
                    f"splunk: search job {sid} failed: {content.get('messages')}; check the SPL", vendor=VENDOR
                )
            await self._sleep(self.poll_interval)
        else:
            raise RetryableConnectorError(f"splunk: search job {sid} is still running", vendor=VENDOR)
        results = await self.request(
            "GET", f"/services/search/jobs/{sid}/results", params={"output_mode": "json", "count": str(count)}
        )
        return list(results.json().get("results", []))

    async def update_notables(self, event_ids: list[str], status: str, comment: str = "") -> int:
        if not event_ids:
            raise NonRetryableConnectorError("splunk: refusing a notable update without event ids", vendor=VENDOR)
        response = await self.request(
            "POST", "/services/notable_update",
            data={"ruleUIDs": list(event_ids), "status": status, "comment": comment, "output_mode": "json"},
            idempotent=True,
        )
        body = response.json()
        if not body.get("success", False) or body.get("failure_count", 0):
            raise NonRetryableConnectorError(f"splunk: notable update failed: {body.get('message')}", vendor=VENDOR)
        return int(body.get("success_count", len(event_ids)))

