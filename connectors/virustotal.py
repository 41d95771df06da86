"""VirusTotal v3 lookups: files (hashes), URLs, IP addresses, domains. Read-only.

A 404 (`NotFoundError` from VT) means "VirusTotal has never seen it": `lookup` returns None.
Configuration: SIGNOFF_VIRUSTOTAL_API_KEY (or _FILE), SIGNOFF_VIRUSTOTAL_BASE_URL.
The public API allows about 4 requests/minute: callers should cache and look up few indicators.
"""

from __future__ import annotations

import base64
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

VENDOR = "virustotal"
DEFAULT_URL = "https://www.virustotal.com"
KINDS = {"file": "files", "url": "urls", "ip": "ip_addresses", "domain": "domains"}


@dataclass(frozen=True)
class Verdict:
    malicious: int
    suspicious: int
    harmless: int
    undetected: int
    reputation: int

    @property
    def summary(self) -> str:
        total = self.malicious + self.suspicious + self.harmless + self.undetected
        return f"{self.malicious}/{total} engines malicious, {self.suspicious} suspicious, reputation {self.reputation}"


class VirusTotal(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_VIRUSTOTAL_API_KEY (or SIGNOFF_VIRUSTOTAL_API_KEY_FILE)"

    def __init__(self, base_url: str, api_key: Secret, **kwargs: Any) -> None:
        super().__init__(base_url, HeaderAuth("x-apikey", api_key), **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> VirusTotal:
        return cls(setting(VENDOR, "base_url", DEFAULT_URL) or DEFAULT_URL, require_secret(VENDOR, "api_key"),
                   transport=transport)

    @staticmethod
    def object_id(kind: str, value: str) -> str:
        if kind == "url":
            return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
        return value

    async def lookup(self, kind: str, value: str) -> Verdict | None:
        if kind not in KINDS:
            raise NonRetryableConnectorError(f"virustotal: cannot look up {kind!r}; use one of {sorted(KINDS)}",
                                             vendor=VENDOR)
        response = await self.request("GET", f"/api/v3/{KINDS[kind]}/{self.object_id(kind, value)}", allow=(404,))
        if response.status_code == 404:
            return None
        attrs = response.json().get("data", {}).get("attributes", {})
        stats = attrs.get("last_analysis_stats", {})
        return Verdict(int(stats.get("malicious", 0)), int(stats.get("suspicious", 0)),
                       int(stats.get("harmless", 0)), int(stats.get("undetected", 0)),
                       int(attrs.get("reputation", 0)))
