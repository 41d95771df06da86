"""Fake Microsoft Graph users: accountEnabled PATCH (eventually consistent) and revokeSignInSessions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors.fakes.base import reply, route
from connectors.fakes.entra import EntraTokenMixin
from connectors.graph import SCOPE

_CLOCK = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


class FakeGraph(EntraTokenMixin):
    name = "graph"
    scope = SCOPE

    def __init__(self, replication_reads: int = 1) -> None:
        super().__init__()
        self.replication_reads = replication_reads  # reads that still show the old value after a write
        self.users: dict[str, dict[str, Any]] = {}
        self._stale: dict[str, tuple[int, dict[str, Any]]] = {}
        self._seq = itertools.count(1)

    def _now(self) -> str:
        return (_CLOCK + timedelta(minutes=next(self._seq))).isoformat().replace("+00:00", "Z")

    def add_user(self, user_id: str, enabled: bool = True) -> str:
        self.users[user_id] = {"id": user_id, "userPrincipalName": user_id, "accountEnabled": enabled,
                               "signInSessionsValidFromDateTime": self._now()}
        return user_id

    def not_found(self, path: str) -> httpx.Response:
        return reply(404, {"error": {"code": "Request_ResourceNotFound",
                                     "message": f"Resource '{path}' does not exist"}})

    @route("GET", r"/v1\.0/users/(?P<user_id>[^/]+)")
    def get_user(self, request: httpx.Request, body: Any, user_id: str) -> httpx.Response:
        if user_id not in self.users:
            return self.not_found(user_id)
        user = self.users[user_id]
        if user_id in self._stale:
            left, old = self._stale[user_id]
            if left > 0:
                self._stale[user_id] = (left - 1, old)
                user = old
            else:
                del self._stale[user_id]
        select = request.url.params.get("$select")
        if select:
            user = {k: v for k, v in user.items() if k in select.split(",")}
        return reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity", **user})

    @route("PATCH", r"/v1\.0/users/(?P<user_id>[^/]+)")
    def patch_user(self, request: httpx.Request, body: Any, user_id: str) -> httpx.Response:
        if user_id not in self.users:
            return self.not_found(user_id)
        if not isinstance(body, dict) or not body or set(body) - {"accountEnabled", "displayName"}:
            return self.bad_request("Invalid property in the request body")
        if "accountEnabled" in body and not isinstance(body["accountEnabled"], bool):
            return self.bad_request("accountEnabled must be a boolean")
        self._stale[user_id] = (self.replication_reads, dict(self.users[user_id]))
        self.users[user_id].update(body)
        return httpx.Response(204)

    @route("POST", r"/v1\.0/users/(?P<user_id>[^/]+)/revokeSignInSessions")
    def revoke(self, request: httpx.Request, body: Any, user_id: str) -> httpx.Response:
        if user_id not in self.users:
            return self.not_found(user_id)
        self._stale[user_id] = (self.replication_reads, dict(self.users[user_id]))
        self.users[user_id]["signInSessionsValidFromDateTime"] = self._now()
        return reply(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
                           "value": True})
