"""Slack: post and update messages, open modals (Web API, bot token); check Slack's request signatures.

Knows Slack's API and nothing about cases (the chat bridge, signoff/chat/, does the rest).

- `chat.postMessage`, `chat.update`, `views.open`: POST https://slack.com/api/METHOD with a JSON body
  and `Authorization: Bearer xoxb-...`. Slack answers HTTP 200 with `{"ok": false, "error": "..."}`
  for most failures: raised as `SlackApiError` (its `error` is Slack's code, e.g. `channel_not_found`).
  HTTP 429 carries `Retry-After` (seconds): waited and retried (connectors/http.py).
- `verify_signature`: Slack signs every request it sends to an app (interactivity, slash commands):
  `X-Slack-Signature` = "v0=" + hex HMAC-SHA256(signing secret, "v0:{X-Slack-Request-Timestamp}:{raw body}").
  Requests whose timestamp is more than 5 minutes off are refused (replays).

Configuration: SIGNOFF_SLACK_BOT_TOKEN (or _FILE), SIGNOFF_SLACK_SIGNING_SECRET (or _FILE),
SIGNOFF_SLACK_API_URL (default https://slack.com/api; a test stand-in elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import httpx

from connectors.http import (
    HeaderAuth,
    NonRetryableConnectorError,
    Secret,
    VendorClient,
    require_secret,
    setting,
)

VENDOR = "slack"
API_URL = "https://slack.com/api"
SIGNATURE_VERSION = "v0"
MAX_SKEW_SECONDS = 300  # Slack's own advice: refuse requests more than five minutes old (or ahead)
MAX_TIMESTAMP_DIGITS = 12  # epoch seconds until the year 33658


class SlackApiError(NonRetryableConnectorError):
    """Slack answered `{"ok": false, "error": CODE}`. `error` is Slack's code."""

    def __init__(self, method: str, error: str, detail: str = "") -> None:
        hint = _HINTS.get(error, "")
        super().__init__(f"slack: {method} failed: {error}" + (f" ({detail})" if detail else "")
                         + (f"; {hint}" if hint else ""), vendor=VENDOR, status=200)
        self.method = method
        self.error = error


_HINTS = {
    "invalid_auth": "check SIGNOFF_SLACK_BOT_TOKEN (or _FILE): Slack does not accept the bot token",
    "not_authed": "set SIGNOFF_SLACK_BOT_TOKEN (or _FILE)",
    "channel_not_found": "check the channel id, and invite the app to the channel",
    "not_in_channel": "invite the app to the channel (/invite @app)",
    "missing_scope": "add the chat:write scope to the app and reinstall it",
    "expired_trigger_id": "the button click is more than 3 seconds old; click again",
    "invalid_trigger_id": "the trigger id was used already or never issued; click again",
    "message_not_found": "the message was deleted",
}


class Slack(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_SLACK_BOT_TOKEN (or SIGNOFF_SLACK_BOT_TOKEN_FILE)"

    def __init__(self, token: Secret, base_url: str = API_URL, **kwargs: Any) -> None:
        super().__init__(base_url, HeaderAuth("Authorization", token, "Bearer "), **kwargs)

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> Slack:
        return cls(require_secret(VENDOR, "bot_token"), setting(VENDOR, "api_url", API_URL) or API_URL,
                   transport=transport)

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """One Web API method with a JSON body; Slack's `ok: false` becomes `SlackApiError`."""
        response = await self.request("POST", f"/{method}", json=body,
                                      headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            answer = response.json()
        except ValueError:
            raise NonRetryableConnectorError(f"slack: {method} answered a body that is not JSON",
                                             vendor=VENDOR, status=response.status_code) from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = str(answer.get("error", "unknown_error")) if isinstance(answer, dict) else "unknown_error"
            detail = ", ".join(str(m) for m in (answer.get("response_metadata") or {}).get("messages", [])) \
                if isinstance(answer, dict) else ""
            raise SlackApiError(method, error, detail)
        return answer

    async def post_message(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """`chat.postMessage`: returns Slack's answer (`channel`, `ts` identify the message)."""
        body: dict[str, Any] = {"channel": channel, "text": text}
        if blocks is not None:
            body["blocks"] = blocks
        return await self.call("chat.postMessage", body)

    async def update_message(self, channel: str, ts: str, text: str,
                             blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """`chat.update` of the message `ts` in `channel`."""
        body: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            body["blocks"] = blocks
        return await self.call("chat.update", body)

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> dict[str, Any]:
        """`views.open`: a modal, answering an interaction's `trigger_id` (valid 3 s, once)."""
        return await self.call("views.open", {"trigger_id": trigger_id, "view": view})


def signing_secret() -> Secret:
    """SIGNOFF_SLACK_SIGNING_SECRET (or _FILE): the app's signing secret (Basic Information page)."""
    return require_secret(VENDOR, "signing_secret")


def signature(secret: Secret | str, timestamp: str, body: bytes) -> str:
    """Slack's `X-Slack-Signature` for `body` sent at `timestamp`."""
    key = secret.reveal() if isinstance(secret, Secret) else secret
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(key.encode(), base, hashlib.sha256).hexdigest()


def signature_refusal(secret: Secret | str, *, timestamp: str | None, sig: str | None, body: bytes,
                      now: float | None = None, max_skew: float = MAX_SKEW_SECONDS) -> str | None:
    """Why a request claiming to come from Slack must be refused, or None when Slack signed it.

    `timestamp` and `sig` are the `X-Slack-Request-Timestamp` and `X-Slack-Signature` headers;
    `body` is the raw request body, exactly as received.
    """
    if not timestamp or not sig:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    # Slack sends plain epoch seconds. Anything else (signs, spaces, `_`, non-ASCII digits, hundreds of
    # digits that overflow a float) is refused here, before any arithmetic.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
        return "X-Slack-Request-Timestamp is not a number"
    if not (sig.isascii() and sig.startswith(f"{SIGNATURE_VERSION}=")):
        return "bad signature: X-Slack-Signature is not like 'v0=<hex>'"
    sent = int(timestamp)
    now = time.time() if now is None else now
    if abs(now - sent) > max_skew:
        return f"stale request: its timestamp is {abs(now - sent):.0f} s off (more than {max_skew:.0f} s)"
    if not hmac.compare_digest(signature(secret, timestamp, body).encode(), sig.encode()):
        return "bad signature: the request was not signed with this app's signing secret"
    return None


def verify_signature(secret: Secret | str, *, timestamp: str | None, sig: str | None, body: bytes,
                     now: float | None = None) -> bool:
    return signature_refusal(secret, timestamp=timestamp, sig=sig, body=body, now=now) is None
