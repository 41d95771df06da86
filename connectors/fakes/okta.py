"""Fake Okta: users, lifecycle suspend/unsuspend/deactivate, clear sessions, System Log events."""

from __future__ import annotations

import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.fakes.base import FakeVendor, reply, route

_CLOCK = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def okta_error(status: int, code: str, summary: str) -> httpx.Response:
    return reply(status, {"errorCode": code, "errorSummary": summary, "errorLink": code,
                          "errorId": uuid.uuid4().hex[:20], "errorCauses": []})


class FakeOkta(FakeVendor):
    name = "okta"

    def __init__(self, log_lag_reads: int = 1) -> None:
        super().__init__()
        self.users: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []
        self.log_lag_reads = log_lag_reads  # the System Log shows an event after this many reads
        self._pending_events: list[list[Any]] = []
        self._seq = itertools.count(1)

    def add_user(self, user_id: str, status: str = "ACTIVE", sessions: int = 2) -> str:
        self.users[user_id] = {"id": user_id, "status": status, "profile": {"login": f"{user_id}@example.com"}}
        self.sessions[user_id] = sessions
        return user_id

    def _now(self) -> str:
        return (_CLOCK + timedelta(seconds=next(self._seq))).isoformat().replace("+00:00", "Z")

    def authorized(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"SSWS {self.token}"

    def unauthorized(self) -> httpx.Response:
        return okta_error(401, "E0000011", "Invalid token provided")

    def not_found(self, path: str) -> httpx.Response:
        return okta_error(404, "E0000007", f"Not found: Resource not found: {path}")

    def bad_request(self, message: str) -> httpx.Response:
        return okta_error(400, "E0000001", f"Api validation failed: {message}")

    @route("GET", r"/api/v1/users/(?P<user_id>[^/]+)")
    def get_user(self, request: httpx.Request, body: Any, user_id: str) -> httpx.Response:
        if user_id not in self.users:
            return self.not_found(user_id)
        return reply(200, self.users[user_id])

    @route("POST", r"/api/v1/users/(?P<user_id>[^/]+)/lifecycle/(?P<verb>suspend|unsuspend|deactivate)")
    def lifecycle(self, request: httpx.Request, body: Any, user_id: str, verb: str) -> httpx.Response:
        user = self.users.get(user_id)
        if user is None:
            return self.not_found(user_id)
        status = user["status"]
        if verb == "suspend":
            if status != "ACTIVE":
                return self.bad_request("Cannot suspend a user that is not active")
            user["status"] = "SUSPENDED"
        elif verb == "unsuspend":
            if status != "SUSPENDED":
                return self.bad_request("Cannot unsuspend a user that is not suspended")
            user["status"] = "ACTIVE"
        else:
            if status == "DEPROVISIONED":
                return self.bad_request("User is already deactivated")
            user["status"] = "DEPROVISIONED"
            self.sessions[user_id] = 0
        return reply(200, {})

    @route("DELETE", r"/api/v1/users/(?P<user_id>[^/]+)/sessions")
    def clear_sessions(self, request: httpx.Request, body: Any, user_id: str) -> httpx.Response:
        if user_id not in self.users:
            return self.not_found(user_id)
        self.sessions[user_id] = 0
        event = {"uuid": str(uuid.uuid4()), "published": self._now(), "eventType": "user.session.clear",
                 "outcome": {"result": "SUCCESS"}, "target": [{"id": user_id, "type": "User"}]}
        self._pending_events.append([self.log_lag_reads, event])
        return httpx.Response(204)

    @route("GET", r"/api/v1/logs")
    def logs(self, request: httpx.Request, body: Any) -> httpx.Response:
        for pending in self._pending_events:
            pending[0] -= 1
        self.events.extend(e for n, e in self._pending_events if n < 0)
        self._pending_events = [p for p in self._pending_events if p[0] >= 0]
        flt = request.url.params.get("filter", "")
        kind = re.search(r'eventType eq "([^"]+)"', flt)
        target = re.search(r'target\.id eq "([^"]+)"', flt)
        found = [e for e in self.events
                 if (not kind or e["eventType"] == kind.group(1))
                 and (not target or any(t["id"] == target.group(1) for t in e["target"]))]
        if request.url.params.get("sortOrder") == "DESCENDING":
            found = list(reversed(found))
        limit = request.url.params.get("limit")
        if limit and limit.isdigit():
            found = found[: int(limit)]
        return reply(200, found)
