"""Fake Microsoft Sentinel incidents (ARM): list, get, PUT with etag concurrency."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from connectors.fakes.base import reply, route
from connectors.fakes.entra import EntraTokenMixin
from connectors.sentinel import API_VERSION, SCOPE

ROOT = (r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
        r"Microsoft\.OperationalInsights/workspaces/(?P<ws>[^/]+)/providers/Microsoft\.SecurityInsights")


_NAME = re.compile(r"^[A-Za-z0-9-]{1,36}$")


class FakeSentinel(EntraTokenMixin):
    name = "sentinel"
    scope = SCOPE

    def __init__(self) -> None:
        super().__init__()
        self.incidents: dict[str, dict[str, Any]] = {}
        self.conflict_next_put = False  # simulate a concurrent edit between our read and our PUT

    def add_incident(self, incident_id: str, title: str, severity: str = "Medium", status: str = "New",
                     created: str = "2026-11-28T09:00:00Z") -> None:
        self.incidents[incident_id] = {
            "id": f"/incidents/{incident_id}", "name": incident_id, "etag": f'"{uuid.uuid4()}"',
            "type": "Microsoft.SecurityInsights/Incidents",
            "properties": {"title": title, "severity": severity, "status": status, "createdTimeUtc": created,
                           "incidentNumber": len(self.incidents) + 1},
        }

    def _version_ok(self, request: httpx.Request) -> bool:
        return request.url.params.get("api-version") == API_VERSION

    def bad_version(self) -> httpx.Response:
        return reply(400, {"error": {"code": "InvalidApiVersionParameter", "message": "unsupported api-version"}})

    @route("GET", ROOT + "/incidents")
    def list_incidents(self, request: httpx.Request, body: Any, **_: str) -> httpx.Response:
        if not self._version_ok(request):
            return self.bad_version()
        values = sorted(self.incidents.values(), key=lambda i: i["properties"]["createdTimeUtc"], reverse=True)
        flt = request.url.params.get("$filter", "")
        if "createdTimeUtc gt " in flt:
            since = flt.split("createdTimeUtc gt ", 1)[1].split()[0]
            values = [v for v in values if v["properties"]["createdTimeUtc"] > since]
        top = request.url.params.get("$top", "50")
        return reply(200, {"value": values[: int(top) if top.isdigit() else 50]})

    @route("GET", ROOT + "/incidents/(?P<incident_id>[^/]+)")
    def get_incident(self, request: httpx.Request, body: Any, incident_id: str, **_: str) -> httpx.Response:
        if not self._version_ok(request):
            return self.bad_version()
        if not _NAME.match(incident_id):
            return self.bad_request("invalid incident name")
        if incident_id not in self.incidents:
            return self.not_found(incident_id)
        return reply(200, self.incidents[incident_id])

    @route("PUT", ROOT + "/incidents/(?P<incident_id>[^/]+)")
    def put_incident(self, request: httpx.Request, body: Any, incident_id: str, **_: str) -> httpx.Response:
        if not self._version_ok(request):
            return self.bad_version()
        if not _NAME.match(incident_id):
            return self.bad_request("invalid incident name")
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or not isinstance(props.get("title"), str) \
                or props.get("status") not in ("New", "Active", "Closed") \
                or props.get("severity") not in ("High", "Medium", "Low", "Informational"):
            return self.bad_request("properties.title, severity and status are required")
        current = self.incidents.get(incident_id)
        if self.conflict_next_put and current is not None:
            self.conflict_next_put = False
            current["etag"] = f'"{uuid.uuid4()}"'
        if current is not None and body.get("etag") not in (None, current["etag"]):
            return reply(409, {"error": {"code": "Conflict", "message": "etag mismatch"}})
        if current is None:
            self.add_incident(incident_id, props["title"])
            current = self.incidents[incident_id]
        current["properties"].update(props)
        current["etag"] = f'"{uuid.uuid4()}"'
        return reply(200, current)
