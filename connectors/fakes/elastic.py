"""Fake Kibana detection engine: alert search (a small query subset) and alert status updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from connectors.fakes.base import FakeVendor, reply, route

STATUSES = ("open", "acknowledged", "closed")


class FakeElastic(FakeVendor):
    name = "elastic"

    def __init__(self) -> None:
        super().__init__()
        self.alerts: dict[str, dict[str, Any]] = {}

    def add_alert(self, alert_id: str, **source: Any) -> None:
        self.alerts[alert_id] = {"kibana.alert.workflow_status": "open", **source}

    def authorized(self, request: httpx.Request) -> bool:
        ok = request.headers.get("Authorization") == f"ApiKey {self.token}"
        return ok and (request.method == "GET" or request.headers.get("kbn-xsrf") is not None)

    def unauthorized(self) -> httpx.Response:
        return reply(401, {"statusCode": 401, "error": "Unauthorized", "message": "unable to authenticate"})

    def not_found(self, path: str) -> httpx.Response:
        return reply(404, {"statusCode": 404, "error": "Not Found", "message": f"Not Found: {path}"})

    def bad_request(self, message: str) -> httpx.Response:
        return reply(400, {"statusCode": 400, "error": "Bad Request", "message": message})

    @route("POST", "/api/detection_engine/signals/search")
    def search(self, request: httpx.Request, body: Any) -> httpx.Response:
        if not isinstance(body, dict):
            return self.bad_request("a JSON body is required")
        size = body.get("size", 10)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return self.bad_request("size must be a non-negative integer")
        hits = [{"_id": i, "_index": ".alerts-security.alerts-default", "_source": s}
                for i, s in self.alerts.items() if _matches(s, body.get("query") or {"match_all": {}})]
        for spec in body.get("sort") or []:
            if isinstance(spec, dict):
                for field, order in spec.items():
                    desc = (order.get("order") if isinstance(order, dict) else order) == "desc"
                    hits.sort(key=_by(field), reverse=desc)
        return reply(200, {"took": 1, "timed_out": False, "hits": {
            "total": {"value": len(hits), "relation": "eq"}, "hits": hits[:size]}})

    @route("POST", "/api/detection_engine/signals/status")
    def status(self, request: httpx.Request, body: Any) -> httpx.Response:
        ids = body.get("signal_ids") if isinstance(body, dict) else None
        status = body.get("status") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or status not in STATUSES:
            return self.bad_request("signal_ids (non-empty) and a valid status are required")
        updated = 0
        for alert_id in ids:
            if isinstance(alert_id, str) and alert_id in self.alerts:
                self.alerts[alert_id]["kibana.alert.workflow_status"] = status
                updated += 1
        return reply(200, {"took": 1, "updated": updated, "total": len(ids), "failures": []})


def _by(field: str) -> Callable[[dict[str, Any]], str]:
    return lambda hit: str(hit["_source"].get(field, ""))


def _matches(source: dict[str, Any], query: Any) -> bool:
    """`match_all`, `term`, `range` (gt/gte on strings or numbers) and `bool.filter|must`."""
    if not isinstance(query, dict) or not query:
        return True
    if "match_all" in query:
        return True
    if "term" in query and isinstance(query["term"], dict):
        return all(str(source.get(k)) == str(v.get("value") if isinstance(v, dict) else v)
                   for k, v in query["term"].items())
    if "range" in query and isinstance(query["range"], dict):
        for field, cond in query["range"].items():
            have = source.get(field)
            if have is None or not isinstance(cond, dict):
                return False
            if "gt" in cond and not str(have) > str(cond["gt"]):
                return False
            if "gte" in cond and not str(have) >= str(cond["gte"]):
                return False
        return True
    if "bool" in query and isinstance(query["bool"], dict):
        parts = [q for key in ("filter", "must") for q in _as_list(query["bool"].get(key))]
        return all(_matches(source, q) for q in parts)
    return True


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
