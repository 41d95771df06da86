"""Okta: suspend / unsuspend users, clear their sessions, deactivate (SSWS API token).

- `suspend` / `unsuspend`: POST /api/v1/users/{id}/lifecycle/suspend|unsuspend. Reversible
  (Okta only suspends ACTIVE users; unsuspend returns them to ACTIVE).
- `clear_sessions`: DELETE /api/v1/users/{id}/sessions. IRREVERSIBLE (sessions cannot be restored).
  Confirmed through the System Log (`user.session.clear` for the user), not by the 204 alone.
- `deactivate`: POST /api/v1/users/{id}/lifecycle/deactivate. IRREVERSIBLE in effect (app
  assignments and factors are lost; Okta calls a later delete "destructive"). Not used by any
  playbook; offered for completeness and labelled so.

Configuration: SIGNOFF_OKTA_ORG_URL (https://<org>.okta.com), SIGNOFF_OKTA_API_TOKEN (or _FILE).
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.http import HeaderAuth, Secret, VendorClient, require_secret, require_setting

VENDOR = "okta"
SUSPENDABLE = ("ACTIVE",)
CANNOT_SIGN_IN = ("SUSPENDED", "DEPROVISIONED", "STAGED", "PROVISIONED")


class Okta(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_OKTA_API_TOKEN (or SIGNOFF_OKTA_API_TOKEN_FILE) and SIGNOFF_OKTA_ORG_URL"

    def __init__(self, org_url: str, token: Secret, **kwargs: Any) -> None:
        super().__init__(org_url, HeaderAuth("Authorization", token, "SSWS "),
                         headers={"Accept": "application/json"}, **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> Okta:
        return cls(require_setting(VENDOR, "org_url"), require_secret(VENDOR, "api_token"), transport=transport)

    async def user(self, user_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/api/v1/users/{user_id}")).json())

    async def status(self, user_id: str) -> str:
        return str((await self.user(user_id)).get("status"))

    async def suspend(self, user_id: str) -> None:
        await self.request("POST", f"/api/v1/users/{user_id}/lifecycle/suspend", idempotent=True)

    async def unsuspend(self, user_id: str) -> None:
        await self.request("POST", f"/api/v1/users/{user_id}/lifecycle/unsuspend", idempotent=True)

    async def deactivate(self, user_id: str) -> None:
        """IRREVERSIBLE in effect. Needs the top approval tier wherever it is used."""
        await self.request("POST", f"/api/v1/users/{user_id}/lifecycle/deactivate", idempotent=False)

    async def clear_sessions(self, user_id: str) -> None:
        """IRREVERSIBLE: every session of the user ends (also OAuth tokens with oauthTokens=true)."""
        await self.request("DELETE", f"/api/v1/users/{user_id}/sessions", params={"oauthTokens": "true"})

    async def last_session_clear(self, user_id: str) -> str | None:
        """`published` time of the latest `user.session.clear` System Log event for the user."""
        response = await self.request(
            "GET", "/api/v1/logs",
            params={"filter": f'eventType eq "user.session.clear" and target.id eq "{user_id}"',
                    "sortOrder": "DESCENDING", "limit": "1"},
        )
        events = response.json() or []
        return str(events[0]["published"]) if events else None
