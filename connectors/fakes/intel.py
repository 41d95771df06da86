"""Fakes of the threat-intel lookups: VirusTotal v3 and AbuseIPDB v2."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.fakes.base import FakeVendor, reply, route


class FakeVirusTotal(FakeVendor):
    name = "virustotal"

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, collection: str, object_id: str, malicious: int, harmless: int = 60, reputation: int = 0) -> None:
        self.objects[(collection, object_id)] = {
            "last_analysis_stats": {"malicious": malicious, "suspicious": 0, "harmless": harmless, "undetected": 10},
            "reputation": reputation,
        }

    def authorized(self, request: httpx.Request) -> bool:
        return request.headers.get("x-apikey") == self.token

    def unauthorized(self) -> httpx.Response:
        return reply(401, {"error": {"code": "WrongCredentialsError", "message": "Wrong API key"}})

    def not_found(self, path: str) -> httpx.Response:
        return reply(404, {"error": {"code": "NotFoundError", "message": f"{path} not found"}})

    @route("GET", r"/api/v3/(?P<collection>files|urls|ip_addresses|domains)/(?P<object_id>[^/]+)")
    def get_object(self, request: httpx.Request, body: Any, collection: str, object_id: str) -> httpx.Response:
        attrs = self.objects.get((collection, object_id))
        if attrs is None:
            return self.not_found(object_id)
        return reply(200, {"data": {"type": collection.rstrip("s"), "id": object_id, "attributes": attrs}})


class FakeAbuseIpdb(FakeVendor):
    name = "abuseipdb"

    def __init__(self) -> None:
        super().__init__()
        self.reports: dict[str, tuple[int, int, str]] = {}

    def add(self, ip: str, confidence: int, reports: int, country: str = "NL") -> None:
        self.reports[ip] = (confidence, reports, country)

    def authorized(self, request: httpx.Request) -> bool:
        return request.headers.get("Key") == self.token

    def unauthorized(self) -> httpx.Response:
        return reply(401, {"errors": [{"detail": "Authentication failed. Your API key is either missing, incorrect, "
                                                 "or revoked.", "status": 401}]})

    def bad_request(self, message: str) -> httpx.Response:
        return reply(422, {"errors": [{"detail": message, "status": 422,
                                       "source": {"parameter": "ipAddress"}}]})

    @route("GET", "/api/v2/check")
    def check(self, request: httpx.Request, body: Any) -> httpx.Response:
        import ipaddress

        ip = request.url.params.get("ipAddress", "")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            return self.bad_request("The ip address must be a valid IPv4 or IPv6 address.")
        age = request.url.params.get("maxAgeInDays", "30")
        if not age.isdigit() or not 1 <= int(age) <= 365:
            return reply(422, {"errors": [{"detail": "maxAgeInDays must be between 1 and 365.", "status": 422,
                                           "source": {"parameter": "maxAgeInDays"}}]})
        confidence, reports, country = self.reports.get(ip, (0, 0, ""))
        return reply(200, {"data": {
            "ipAddress": ip, "isPublic": not ipaddress.ip_address(ip).is_private,
            "ipVersion": ipaddress.ip_address(ip).version, "isWhitelisted": False,
            "abuseConfidenceScore": confidence, "countryCode": country or None, "totalReports": reports,
            "numDistinctUsers": reports, "lastReportedAt": None}})
