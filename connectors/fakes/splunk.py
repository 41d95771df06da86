"""Fake Splunk: search jobs that run for a few polls, results from seeded events, notable updates."""

from __future__ import annotations

import itertools
import re
from typing import Any

import httpx

from connectors.fakes.base import FakeVendor, reply, route

NOTABLE_STATUSES = {"0", "1", "2", "3", "4", "5"}  # unassigned, new, in progress, pending, resolved, closed


class FakeSplunk(FakeVendor):
    name = "splunk"

    def __init__(self, running_polls: int = 1) -> None:
        super().__init__()
        self.running_polls = running_polls
        self.events: list[dict[str, Any]] = []  # what searches return (index=notable)
        self.notables: dict[str, dict[str, str]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._sid = itertools.count(1)

    def add_notable(self, event_id: str, **fields: str) -> None:
        event = {"event_id": event_id, "status": "1", **fields}
        self.events.append(event)
        self.notables[event_id] = {"status": "1", "comment": ""}

    def unauthorized(self) -> httpx.Response:
        return reply(401, {"messages": [{"type": "WARN", "text": "call not properly authenticated"}]})

    def not_found(self, path: str) -> httpx.Response:
        return reply(404, {"messages": [{"type": "ERROR", "text": f"Unknown sid or endpoint {path}"}]})

    def bad_request(self, message: str) -> httpx.Response:
        return reply(400, {"messages": [{"type": "ERROR", "text": message}]})

    @route("POST", "/services/search/jobs")
    def create_job(self, request: httpx.Request, body: Any) -> httpx.Response:
        if not isinstance(body, dict) or not str(body.get("search", "")).strip():
            return self.bad_request("Missing search")
        sid = f"signoff.{next(self._sid)}"
        self.jobs[sid] = {"search": body["search"], "polls": self.running_polls}
        return reply(201, {"sid": sid})

    @route("GET", r"/services/search/jobs/(?P<sid>[^/]+)")
    def job(self, request: httpx.Request, body: Any, sid: str) -> httpx.Response:
        job = self.jobs.get(sid)
        if job is None:
            return self.not_found(sid)
        state = "RUNNING" if job["polls"] > 0 else "DONE"
        job["polls"] -= 1
        return reply(200, {"entry": [{"name": sid, "content": {
            "sid": sid, "dispatchState": state, "isDone": state == "DONE", "resultCount": len(self._match(job))}}]})

    @route("GET", r"/services/search/jobs/(?P<sid>[^/]+)/results")
    def results(self, request: httpx.Request, body: Any, sid: str) -> httpx.Response:
        job = self.jobs.get(sid)
        if job is None:
            return self.not_found(sid)
        if job["polls"] >= 0:
            return reply(204)  # not done yet
        count = request.url.params.get("count", "100")
        rows = self._match(job)[: int(count) if count.isdigit() and int(count) > 0 else None]
        return reply(200, {"preview": False, "init_offset": 0, "results": rows})

    def _match(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """A tiny SPL subset: `field=value` terms and `_time>EPOCH` filter the seeded events."""
        terms = re.findall(r'(\w+)(=|>)"?([^"\s|]+)"?', job["search"])
        rows = []
        for event in self.events:
            ok = True
            for key, op, value in terms:
                if key in ("search", "index", "earliest", "latest"):
                    continue
                have = str(event.get(key, ""))
                ok = ok and (have == value if op == "=" else _num(have) > _num(value))
            if ok:
                rows.append({**event, "status": self.notables.get(event["event_id"], {}).get("status", "1")})
        return rows

    @route("POST", "/services/notable_update")
    def notable_update(self, request: httpx.Request, body: Any) -> httpx.Response:
        form = body if isinstance(body, dict) else {}
        ids = httpx.QueryParams(request.content.decode()).get_list("ruleUIDs")
        status = form.get("status")
        if not ids or status not in NOTABLE_STATUSES:
            return self.bad_request("ruleUIDs and a valid status are required")
        done = 0
        for event_id in ids:
            if event_id in self.notables:
                self.notables[event_id] = {"status": status, "comment": form.get("comment", "")}
                done += 1
        return reply(200, {"success": done == len(ids), "success_count": done,
                           "failure_count": len(ids) - done, "message": f"{done} event(s) updated"})


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("-inf")
