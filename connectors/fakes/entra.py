"""Entra ID token endpoint shared by the Microsoft fakes (MDE, Graph, Sentinel)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from connectors.fakes.base import FakeVendor, reply, route

TOKEN_PATH = re.compile(r"^/[^/]+/oauth2/v2\.0/token$")


class EntraTokenMixin(FakeVendor):
    client_id = "fake-client-id"
    client_secret = "fake-client-secret"
    scope = ""

    def is_token_request(self, request: httpx.Request) -> bool:
        return bool(TOKEN_PATH.match(request.url.path))

    @route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token")
    def issue_token(self, request: httpx.Request, body: Any, tenant: str) -> httpx.Response:
        form = body if isinstance(body, dict) else {}
        if form.get("grant_type") != "client_credentials":
            return reply(400, {"error": "unsupported_grant_type", "error_description": "AADSTS70003"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return reply(401, {"error": "invalid_client",
                               "error_description": "AADSTS7000215: Invalid client secret provided."})
        if self.scope and form.get("scope") != self.scope:
            return reply(400, {"error": "invalid_scope", "error_description": "AADSTS70011: invalid scope"})
        return reply(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": self.token})

    def unauthorized(self) -> httpx.Response:
        return reply(401, {"error": {"code": "Unauthorized", "message": "Authorization token is missing or invalid"}})

    def not_found(self, path: str) -> httpx.Response:
        return reply(404, {"error": {"code": "ResourceNotFound", "message": f"not found: {path}"}})

    def bad_request(self, message: str) -> httpx.Response:
        return reply(400, {"error": {"code": "InvalidRequestBody", "message": message}})
