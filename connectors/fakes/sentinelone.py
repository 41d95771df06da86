"""Fake SentinelOne: agents and network disconnect / connect with transitional states."""

from __future__ import annotations

import re
from typing import Any

import httpx

from connectors.fakes.base import FakeVendor, reply, route

API = "/web/api/v2.1"
_ID = re.compile(r"^[0-9]{1,19}$")


class FakeSentinelOne(FakeVendor):
    name = "sentinelone"

    def __init__(self, pending_reads: int = 2) -> None:
        super().__init__()
        self.pending_reads = pending_reads
        self.agents: dict[str, str] = {}
        self._countdown: dict[str, int] = {}

    def add_agent(self, agent_id: str, network: str = "connected") -> str:
        self.agents[agent_id] = network
        return agent_id

    def authorized(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"ApiToken {self.token}"

    def unauthorized(self) -> httpx.Response:
        return reply(401, {"errors": [{"code": 4010010, "detail": "Authentication Failed", "title": "Unauthorized"}]})

    def not_found(self, path: str) -> httpx.Response:
        return reply(404, {"errors": [{"code": 4040010, "detail": f"not found: {path}", "title": "Not Found"}]})

    def bad_request(self, message: str) -> httpx.Response:
        return reply(400, {"errors": [{"code": 4000010, "detail": message, "title": "Validation Error"}]})

    @route("GET", f"{API}/agents")
    def list_agents(self, request: httpx.Request, body: Any) -> httpx.Response:
        ids = [i for part in request.url.params.get_list("ids") for i in part.split(",")]
        if not ids or not all(_ID.match(i) for i in ids):
            return self.bad_request("ids: a comma-separated list of agent ids is required")
        data = []
        for agent_id in ids:
            if agent_id in self.agents:
                self._tick(agent_id)
                data.append({"id": agent_id, "computerName": f"agent-{agent_id[-4:]}",
                             "networkStatus": self.agents[agent_id]})
        return reply(200, {"data": data, "pagination": {"totalItems": len(data), "nextCursor": None}})

    @route("POST", f"{API}/agents/actions/(?P<verb>disconnect|connect)")
    def action(self, request: httpx.Request, body: Any, verb: str) -> httpx.Response:
        flt = body.get("filter") if isinstance(body, dict) else None
        ids = flt.get("ids") if isinstance(flt, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and _ID.match(i) for i in ids):
            return self.bad_request("filter.ids is required (no filter-only bulk actions)")
        affected = 0
        for agent_id in ids:
            if agent_id not in self.agents:
                continue
            affected += 1
            state = self.agents[agent_id]
            if verb == "disconnect" and state in ("connected", "connecting"):
                self.agents[agent_id] = "disconnecting"
                self._countdown[agent_id] = self.pending_reads
            elif verb == "connect" and state in ("disconnected", "disconnecting"):
                self.agents[agent_id] = "connecting"
                self._countdown[agent_id] = self.pending_reads
        return reply(200, {"data": {"affected": affected}})

    def _tick(self, agent_id: str) -> None:
        if agent_id not in self._countdown:
            return
        self._countdown[agent_id] -= 1
        if self._countdown[agent_id] < 0:
            del self._countdown[agent_id]
            self.agents[agent_id] = {"disconnecting": "disconnected", "connecting": "connected"}.get(
                self.agents[agent_id], self.agents[agent_id])
