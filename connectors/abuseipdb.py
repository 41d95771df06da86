"""AbuseIPDB v2 IP reputation lookups (`GET /api/v2/check`). Read-only.

Configuration: SIGNOFF_ABUSEIPDB_API_KEY (or _FILE), SIGNOFF_ABUSEIPDB_BASE_URL.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import httpx

from connectors.http import (
    HeaderAuth,
    NonRetryableConnectorError,
    Secret,
    VendorClient,
    require_secret,
    setting,
)

VENDOR = "abuseipdb"
DEFAULT_URL = "https://api.abuseipdb.com"


@dataclass(frozen=True)
class IpReport:
    ip: str
    abuse_confidence: int
    total_reports: int
    country: str
    whitelisted: bool

    @property
    def summary(self) -> str:
        flag = ", whitelisted" if self.whitelisted else ""
        return f"abuse confidence {self.abuse_confidence}%, {self.total_reports} reports, {self.country or '??'}{flag}"


class AbuseIpdb(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_ABUSEIPDB_API_KEY (or SIGNOFF_ABUSEIPDB_API_KEY_FILE)"

    def __init__(self, base_url: str, api_key: Secret, **kwargs: Any) -> None:
        super().__init__(base_url, HeaderAuth("Key", api_key), headers={"Accept": "application/json"}, **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> AbuseIpdb:
        return cls(setting(VENDOR, "base_url", DEFAULT_URL) or DEFAULT_URL, require_secret(VENDOR, "api_key"),
                   transport=transport)

    async def check(self, ip: str, max_age_days: int = 90) -> IpReport:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise NonRetryableConnectorError(f"abuseipdb: {ip!r} is not an IP address", vendor=VENDOR) from None
        response = await self.request("GET", "/api/v2/check",
                                      params={"ipAddress": ip, "maxAgeInDays": str(max_age_days)})
        data = response.json().get("data", {})
        return IpReport(str(data.get("ipAddress", ip)), int(data.get("abuseConfidenceScore", 0)),
                        int(data.get("totalReports", 0)), str(data.get("countryCode") or ""),
                        bool(data.get("isWhitelisted")))
