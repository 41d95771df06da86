"""Fake CrowdStrike Falcon: OAuth2 token, device status, contain / lift_containment with pending states."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx

from connectors.fakes.base import FakeVendor, reply, route

_ID = re.compile(r"^[a-f0-9]{32}$")


def envelope(resources: list[Any], errors: list[Any] | None = None) -> dict[str, Any]:
    return {"meta": {"query_time": 0.001, "trace_id": secrets.token_hex(8)}, "resources": resources,
            "errors": errors or []}


class FakeCrowdStrike(FakeVendor):
    name = "crowdstrike"
    client_id = "fake-client-id"
    client_secret = "fake-client-secret"

    def __init__(self, pending_reads: int = 2) -> None:
        super().__init__()
        self.pending_reads = pending_reads
        self.hosts: dict[str, str] = {}
        self._countdown: dict[str, int] = {}
        self.tokens_issued = 0

    def add_host(self, device_id: str, status: str = "normal") -> str:
        self.hosts[device_id] = status
        if status.endswith("_pending"):
            self._countdown[device_id] = self.pending_reads
        return device_id

    def is_token_request(self, request: httpx.Request) -> bool:
        return request.url.path == "/oauth2/token"

    @route("POST", "/oauth2/token")
    def issue_token(self, request: httpx.Request, body: Any) -> httpx.Response:
        form = body if isinstance(body, dict) else {}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return reply(403, envelope([], [{"code": 403, "message": "access denied, invalid client credentials"}]))
        self.tokens_issued += 1
        return reply(201, {"access_token": self.token, "token_type": "bearer", "expires_in": 1799})

    @route("GET", "/devices/entities/devices/v2")
    def devices(self, request: httpx.Request, body: Any) -> httpx.Response:
        ids = request.url.params.get_list("ids")
        if not ids:
            return reply(400, envelope([], [{"code": 400, "message": "ids is required"}]))
        found, missing = [], []
        for device_id in ids:
            if device_id in self.hosts:
                self._tick(device_id)
                found.append({"device_id": device_id, "status": self.hosts[device_id],
                              "hostname": f"host-{device_id[:6]}"})
            else:
                missing.append({"code": 404, "message": f"device {device_id} not found"})
        return reply(404 if missing and not found else 200, envelope(found, missing))

    @route("POST", "/devices/entities/devices-actions/v2")
    def action(self, request: httpx.Request, body: Any) -> httpx.Response:
        name = request.url.params.get("action_name")
        if name not in ("contain", "lift_containment"):
            return reply(400, envelope([], [{"code": 400, "message": "invalid action_name"}]))
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and _ID.match(i) for i in ids):
            return reply(400, envelope([], [{"code": 400, "message": "ids must be device ids"}]))
        unknown = [i for i in ids if i not in self.hosts]
        if unknown:
            return reply(404, envelope([], [{"code": 404, "message": f"device {unknown[0]} not found"}]))
        for device_id in ids:
            state = self.hosts[device_id]
            if name == "contain" and state in ("normal", "lift_containment_pending"):
                self.hosts[device_id] = "containment_pending"
                self._countdown[device_id] = self.pending_reads
            elif name == "lift_containment" and state in ("contained", "containment_pending"):
                self.hosts[device_id] = "lift_containment_pending"
                self._countdown[device_id] = self.pending_reads
        return reply(202, envelope([{"id": i, "path": ""} for i in ids]))

    def _tick(self, device_id: str) -> None:
        """A status read: pending states settle after `pending_reads` reads."""
        if device_id not in self._countdown:
            return
        self._countdown[device_id] -= 1
        if self._countdown[device_id] < 0:
            del self._countdown[device_id]
            status = self.hosts[device_id]
            self.hosts[device_id] = {"containment_pending": "contained",
                                     "lift_containment_pending": "normal"}.get(status, status)

    def unauthorized(self) -> httpx.Response:
        return reply(401, envelope([], [{"code": 401, "message": "access denied, authorization failed"}]))


__all__ = ["FakeCrowdStrike"]
