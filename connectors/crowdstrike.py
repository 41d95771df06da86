"""CrowdStrike Falcon: network containment of hosts (OAuth2 client credentials).

- `contain` / `lift_containment`: POST /devices/entities/devices-actions/v2?action_name=... with
  `{"ids": [device_id]}` → 202; the host then moves through `containment_pending` to `contained`
  (and `lift_containment_pending` to `normal`). Reversible.
- `status`: GET /devices/entities/devices/v2?ids=... → `resources[0].status`.

Configuration: SIGNOFF_CROWDSTRIKE_CLIENT_ID, SIGNOFF_CROWDSTRIKE_CLIENT_SECRET (or _FILE),
SIGNOFF_CROWDSTRIKE_BASE_URL (default https://api.crowdstrike.com; us-2/eu-1/gov clouds differ).
"""

from __future__ import annotations

import re

import httpx

from connectors.http import (
    NonRetryableConnectorError,
    NotFoundError,
    OAuth2ClientCredentials,
    Secret,
    VendorClient,
    require_secret,
    setting,
)

VENDOR = "crowdstrike"
DEFAULT_URL = "https://api.crowdstrike.com"
_DEVICE_ID = re.compile(r"^[a-f0-9]{32}$")
STATUSES = ("normal", "containment_pending", "contained", "lift_containment_pending")


class CrowdStrike(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_CROWDSTRIKE_CLIENT_ID and SIGNOFF_CROWDSTRIKE_CLIENT_SECRET (or their _FILE variants)"

    def __init__(self, base_url: str, client_id: str, client_secret: Secret, **kwargs: object) -> None:
        auth = OAuth2ClientCredentials(
            f"{base_url.rstrip('/')}/oauth2/token", client_id, client_secret, vendor=VENDOR,
            hint=self.credential_hint,
        )
        super().__init__(base_url, auth, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> CrowdStrike:
        return cls(
            setting(VENDOR, "base_url", DEFAULT_URL) or DEFAULT_URL,
            require_secret(VENDOR, "client_id").reveal(),
            require_secret(VENDOR, "client_secret"),
            transport=transport,
        )

    @staticmethod
    def check_id(device_id: str) -> str:
        if not _DEVICE_ID.match(device_id):
            raise NonRetryableConnectorError(
                f"crowdstrike: {device_id!r} is not a Falcon device id (32 lower-case hex characters, the AID)",
                vendor=VENDOR,
            )
        return device_id

    async def status(self, device_id: str) -> str:
        """`normal`, `containment_pending`, `contained` or `lift_containment_pending`."""
        response = await self.request(
            "GET", "/devices/entities/devices/v2", params={"ids": self.check_id(device_id)}, allow=(404,)
        )
        resources = response.json().get("resources") or []
        if response.status_code == 404 or not resources:
            raise NotFoundError(f"crowdstrike: no host with device id {device_id}", vendor=VENDOR, status=404)
        return str(resources[0].get("status", "normal"))

    async def contain(self, device_id: str) -> None:
        await self._action("contain", device_id)

    async def lift_containment(self, device_id: str) -> None:
        await self._action("lift_containment", device_id)

    async def _action(self, name: str, device_id: str) -> None:
        response = await self.request(
            "POST", "/devices/entities/devices-actions/v2", params={"action_name": name},
            json={"ids": [self.check_id(device_id)]}, idempotent=True,  # repeating a contain is harmless
        )
        ids = [r.get("id") for r in response.json().get("resources") or []]
        if device_id not in ids:
            raise NonRetryableConnectorError(
                f"crowdstrike: {name} was accepted but did not name device {device_id}", vendor=VENDOR
            )
