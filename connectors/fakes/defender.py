"""Fake Microsoft Defender for Endpoint: machines and isolate/unisolate machine actions."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.defender import SCOPE
from connectors.fakes.base import reply, route
from connectors.fakes.entra import EntraTokenMixin

_CLOCK = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class FakeDefender(EntraTokenMixin):
    name = "defender"
    scope = SCOPE

    def __init__(self, pending_reads: int = 2, outcome: str = "Succeeded") -> None:
        super().__init__()
        self.pending_reads = pending_reads
        self.outcome = outcome  # what pending actions end as: Succeeded | Failed | TimeOut
        self.machines: set[str] = set()
        self.actions: dict[str, dict[str, Any]] = {}
        self._countdown: dict[str, int] = {}
        self._seq = itertools.count(1)

    def add_machine(self, machine_id: str, isolated: str | None = None) -> str:
        """`isolated`: None, "Full" or "Selective" (an isolation that already Succeeded)."""
        self.machines.add(machine_id)
        if isolated:
            self._new_action(machine_id, "Isolate", isolated, "Succeeded", "someone else")
        return machine_id

    def _new_action(self, machine_id: str, kind: str, scope: str | None, status: str,
                    comment: str) -> dict[str, Any]:
        created = (_CLOCK + timedelta(seconds=next(self._seq))).isoformat().replace("+00:00", "Z")
        action_id = str(uuid.uuid4())
        action: dict[str, Any] = {
            "id": action_id, "type": kind, "scope": scope, "requestor": "signoff-app",
            "requestorComment": comment, "status": status, "machineId": machine_id,
            "computerDnsName": f"{machine_id[:8]}.corp", "creationDateTimeUtc": created,
            "lastUpdateDateTimeUtc": created,
        }
        self.actions[action_id] = action
        if status == "Pending":
            self._countdown[action_id] = self.pending_reads
        return action

    def _tick(self) -> None:
        for action_id in list(self._countdown):
            self._countdown[action_id] -= 1
            action = self.actions[action_id]
            if self._countdown[action_id] < 0:
                del self._countdown[action_id]
                action["status"] = self.outcome
            else:
                action["status"] = "InProgress"

    @route("GET", r"/api/machines/(?P<machine_id>[^/]+)")
    def machine(self, request: httpx.Request, body: Any, machine_id: str) -> httpx.Response:
        if machine_id not in self.machines:
            return self.not_found(request.url.path)
        return reply(200, {"id": machine_id, "computerDnsName": f"{machine_id[:8]}.corp", "healthStatus": "Active"})

    @route("GET", r"/api/machineactions")
    def list_actions(self, request: httpx.Request, body: Any) -> httpx.Response:
        self._tick()
        flt = request.url.params.get("$filter", "")
        values = [a for a in self.actions.values() if not flt or f"'{a['machineId']}'" in flt]
        return reply(200, {"@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions",
                           "value": values})

    @route("GET", r"/api/machineactions/(?P<action_id>[^/]+)")
    def get_action(self, request: httpx.Request, body: Any, action_id: str) -> httpx.Response:
        self._tick()
        if action_id not in self.actions:
            return self.not_found(request.url.path)
        return reply(200, self.actions[action_id])

    @route("POST", r"/api/machines/(?P<machine_id>[^/]+)/(?P<verb>isolate|unisolate)")
    def isolate(self, request: httpx.Request, body: Any, machine_id: str, verb: str) -> httpx.Response:
        if machine_id not in self.machines:
            return self.not_found(request.url.path)
        if not isinstance(body, dict) or not isinstance(body.get("Comment"), str):
            return self.bad_request("Comment is required")
        kind = "Isolate" if verb == "isolate" else "Unisolate"
        scope = None
        if kind == "Isolate":
            scope = body.get("IsolationType", "Full")
            if scope not in ("Full", "Selective"):
                return self.bad_request("IsolationType must be Full or Selective")
        for action in self.actions.values():
            if action["machineId"] == machine_id and action["status"] in ("Pending", "InProgress"):
                return reply(400, {"error": {"code": "ActiveRequestAlreadyExists",
                                             "message": "Action is already in progress"}})
        return reply(201, self._new_action(machine_id, kind, scope, "Pending", body["Comment"]))
