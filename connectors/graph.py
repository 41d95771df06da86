"""Microsoft Graph (Entra ID users): enable / disable sign-in, revoke sign-in sessions.

- `set_account_enabled(user, bool)`: PATCH /v1.0/users/{id} `{"accountEnabled": ...}` → 204.
  Reversible. Graph is eventually consistent: reads may show the old value for a while.
- `revoke_sign_in_sessions(user)`: POST /v1.0/users/{id}/revokeSignInSessions. IRREVERSIBLE: it
  moves `signInSessionsValidFromDateTime` forward; every refresh token issued before is dead.

Configuration: SIGNOFF_GRAPH_TENANT_ID, SIGNOFF_GRAPH_CLIENT_ID, SIGNOFF_GRAPH_CLIENT_SECRET
(or _FILE), SIGNOFF_GRAPH_BASE_URL (default https://graph.microsoft.com), SIGNOFF_GRAPH_LOGIN_URL.
Application permissions: User.ReadWrite.All (User.RevokeSessions.All for revocation).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from connectors.http import (
    OAuth2ClientCredentials,
    Secret,
    VendorClient,
    entra_app_from_env,
)

VENDOR = "graph"
DEFAULT_URL = "https://graph.microsoft.com"
SCOPE = "https://graph.microsoft.com/.default"
SELECT = "id,userPrincipalName,accountEnabled,signInSessionsValidFromDateTime"


class Graph(VendorClient):
    vendor = VENDOR
    credential_hint = (
        "SIGNOFF_GRAPH_TENANT_ID, SIGNOFF_GRAPH_CLIENT_ID and SIGNOFF_GRAPH_CLIENT_SECRET (or _FILE)"
    )

    def __init__(self, base_url: str, token_url: str, client_id: str, client_secret: Secret,
                 **kwargs: Any) -> None:
        auth = OAuth2ClientCredentials(token_url, client_id, client_secret, scope=SCOPE, vendor=VENDOR,
                                       hint=self.credential_hint)
        super().__init__(base_url, auth, **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> Graph:
        return cls(*entra_app_from_env(VENDOR, DEFAULT_URL), transport=transport)

    @staticmethod
    def _path(user: str) -> str:
        return f"/v1.0/users/{quote(user, safe='@.')}"

    async def user(self, user: str) -> dict[str, Any]:
        return dict((await self.request("GET", self._path(user), params={"$select": SELECT})).json())

    async def set_account_enabled(self, user: str, enabled: bool) -> None:
        await self.request("PATCH", self._path(user), json={"accountEnabled": enabled})

    async def revoke_sign_in_sessions(self, user: str) -> None:
        """IRREVERSIBLE. Retrying is harmless (it only moves the validity time forward again)."""
        await self.request("POST", f"{self._path(user)}/revokeSignInSessions", idempotent=True)
