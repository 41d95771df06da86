"""What every vendor client shares: credentials, auth flows, retries, typed errors.

Connectors know vendor APIs and nothing about cases. Each one is a small `VendorClient` over an
`httpx.AsyncClient` whose transport can be injected (tests pass a fake's `httpx.MockTransport`).

Errors are typed so the layer above can decide without parsing text:
- `RetryableConnectorError`: 429, 5xx, network trouble. Carries `retry_after` (seconds) when the
  vendor said how long to wait.
- `NonRetryableConnectorError`: 400/401/403/404/409..., bad configuration. The message says what
  to fix, e.g. which credential environment variable to check.

Secrets come from `SIGNOFF_<VENDOR>_<NAME>` or a file named by `SIGNOFF_<VENDOR>_<NAME>_FILE`;
they live in `Secret` objects whose repr is masked, and are never logged nor put in messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

log = logging.getLogger("signoff.connectors")


# ---------------------------------------------------------------- errors


class ConnectorError(Exception):
    """A vendor call failed. `status` is the HTTP status when there was a response."""

    def __init__(
        self, message: str, *, vendor: str = "", status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.vendor = vendor
        self.status = status
        self.retry_after = retry_after


class RetryableConnectorError(ConnectorError):
    """Try again later (rate limit, vendor outage, network). `retry_after` is a hint in seconds."""


class NonRetryableConnectorError(ConnectorError):
    """Retrying the same call will fail the same way: fix the configuration or the request."""


class NotFoundError(NonRetryableConnectorError):
    """The vendor does not know the object (wrong id, or it was deleted)."""


class ConfigurationError(NonRetryableConnectorError):
    """A required setting or credential is missing."""


# ---------------------------------------------------------------- credentials


class Secret:
    """A credential value. Masked in repr/str so it cannot leak through logs or f-strings by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def env_name(vendor: str, name: str) -> str:
    return f"SIGNOFF_{vendor.upper()}_{name.upper()}"


def setting(vendor: str, name: str, default: str | None = None) -> str | None:
    """A non-secret setting (base URL, tenant id): `SIGNOFF_<VENDOR>_<NAME>`, else `default`."""
    value = os.environ.get(env_name(vendor, name), "").strip()
    return value or default


def require_setting(vendor: str, name: str) -> str:
    value = setting(vendor, name)
    if value is None:
        raise ConfigurationError(
            f"{vendor}: {env_name(vendor, name)} is not set; set it to use the {vendor} connector",
            vendor=vendor,
        )
    return value


def secret(vendor: str, name: str) -> Secret | None:
    """`SIGNOFF_<VENDOR>_<NAME>`, or the contents of the file named by `SIGNOFF_<VENDOR>_<NAME>_FILE`."""
    var = env_name(vendor, name)
    value = os.environ.get(var, "").strip()
    if value:
        return Secret(value)
    path = os.environ.get(f"{var}_FILE", "").strip()
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"{vendor}: cannot read {var}_FILE ({path}): {exc.strerror}; fix the path or its permissions",
                vendor=vendor,
            ) from None
        if text:
            return Secret(text)
    return None


def require_secret(vendor: str, name: str) -> Secret:
    value = secret(vendor, name)
    if value is None:
        var = env_name(vendor, name)
        raise ConfigurationError(
            f"{vendor}: credential missing; set {var} or {var}_FILE (a file holding it)", vendor=vendor
        )
    return value


def configured(vendor: str, *names: str) -> bool:
    """True when every named credential/setting of the vendor is present (enrichers use this)."""
    return all(secret(vendor, n) is not None for n in names)


# ---------------------------------------------------------------- auth


class HeaderAuth(httpx.Auth):
    """A static credential in one header: `SSWS <token>`, `ApiToken <token>`, `x-apikey: <key>`..."""

    def __init__(self, header: str, value: Secret, prefix: str = "") -> None:
        self.header = header
        self._value = value
        self.prefix = prefix

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = f"{self.prefix}{self._value.reveal()}"
        yield request


class OAuth2ClientCredentials(httpx.Auth):
    """OAuth 2.0 client-credentials with a cached token, refreshed early and once more on a 401.

    Used for CrowdStrike (`/oauth2/token`), Entra ID (MDE, Graph, Sentinel). The token request goes
    through the same transport as the API calls, so a fake serves both.
    """

    requires_response_body = True
    refresh_margin = 60.0

    def __init__(
        self, token_url: str, client_id: str, client_secret: Secret, scope: str | None = None,
        vendor: str = "", hint: str = "",
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.vendor = vendor
        self.hint = hint
        self._token: str | None = None
        self._expires_at = 0.0

    def _token_request(self) -> httpx.Request:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret.reveal(),
        }
        if self.scope:
            form["scope"] = self.scope
        return httpx.Request("POST", self.token_url, data=form, headers={"Accept": "application/json"})

    def _store(self, response: httpx.Response) -> None:
        if response.status_code in (400, 401, 403):
            raise NonRetryableConnectorError(
                f"{self.vendor}: the token endpoint refused the client credentials "
                f"(HTTP {response.status_code}); check {self.hint}",
                vendor=self.vendor, status=response.status_code,
            )
        if response.status_code >= 300:
            raise RetryableConnectorError(
                f"{self.vendor}: the token endpoint answered HTTP {response.status_code}",
                vendor=self.vendor, status=response.status_code, retry_after=retry_after_seconds(response),
            )
        body = response.json()
        self._token = str(body["access_token"])
        self._expires_at = time.monotonic() + float(body.get("expires_in", 1800))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None or time.monotonic() > self._expires_at - self.refresh_margin:
            self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:  # revoked or expired early: one fresh token, one more try
            self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request


# ---------------------------------------------------------------- retries


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """`Retry-After` (seconds or HTTP date), or CrowdStrike's `X-RateLimit-RetryAfter` (epoch seconds)."""
    now = time.time() if now is None else now
    value = response.headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - now)
    # CrowdStrike: X-RateLimit-RetryAfter; Okta: X-Rate-Limit-Reset (epoch seconds, or a delay)
    for header in ("X-RateLimit-RetryAfter", "X-Rate-Limit-Reset"):
        value = response.headers.get(header)
        if value and value.strip().isdigit():
            number = float(value)
            return max(0.0, number - now) if number > 1e9 else number
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """In-call retries. Waits longer than `max_wait` are not slept here: they are raised as
    `RetryableConnectorError(retry_after=...)` so the caller (a Temporal activity) retries later."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_wait: float = 30.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2)


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TRANSPORTS: dict[str, httpx.AsyncBaseTransport] = {}


def use_transport(vendor: str, transport: httpx.AsyncBaseTransport | None) -> None:
    """Route every client of `vendor` built without an explicit transport through `transport`
    (a fake's MockTransport in tests and demos; None removes the override)."""
    if transport is None:
        _TRANSPORTS.pop(vendor, None)
    else:
        _TRANSPORTS[vendor] = transport
Sleep = Callable[[float], Awaitable[None]]


class VendorClient:
    """Base of every vendor client: one `httpx.AsyncClient`, retries, error mapping, safe logging."""

    vendor: ClassVar[str] = "vendor"
    # What to check when the vendor rejects the credential (env var names, never values).
    credential_hint: ClassVar[str] = ""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._sleep: Sleep = sleep or asyncio.sleep
        self.http = httpx.AsyncClient(
            base_url=base_url, auth=auth, transport=transport or _TRANSPORTS.get(self.vendor), timeout=timeout,
            headers={"User-Agent": "signoff-connector/0.1", **(headers or {})},
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> VendorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        allow: Iterable[int] = (),
    ) -> httpx.Response:
        """Send one call; retry 429 always, 5xx and network errors when the call is idempotent.

        `allow` lists non-2xx statuses the caller handles itself (e.g. 404 meaning "absent").
        """
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
        allowed = set(allow)
        last: ConnectorError | None = None
        for attempt in range(self.retry.attempts):
            try:
                response = await self.http.request(
                    method, path, params=params, json=json, data=data, headers=headers
                )
            except ConnectorError:
                raise  # from an auth flow (token endpoint)
            except httpx.TransportError as exc:
                last = RetryableConnectorError(
                    f"{self.vendor}: {method} {path} failed before a response ({type(exc).__name__}); "
                    f"check the network path to {self.http.base_url}",
                    vendor=self.vendor,
                )
                if not (idempotent or isinstance(exc, httpx.ConnectError)):
                    raise last from None
                await self._sleep(self.retry.backoff(attempt))
                continue
            log.debug("%s %s %s -> %s", self.vendor, method, path, response.status_code)
            if response.is_success or response.status_code in allowed:
                return response
            if response.status_code in RETRY_STATUSES and (response.status_code == 429 or idempotent):
                wait = retry_after_seconds(response)
                last = RetryableConnectorError(
                    f"{self.vendor}: {method} {path} answered HTTP {response.status_code}"
                    + (" (rate limited)" if response.status_code == 429 else " (vendor side error)")
                    + (f"; retry after {wait:.0f}s" if wait is not None else ""),
                    vendor=self.vendor, status=response.status_code, retry_after=wait,
                )
                if wait is not None and wait > self.retry.max_wait:
                    raise last
                if attempt + 1 < self.retry.attempts:
                    await self._sleep(wait if wait is not None else self.retry.backoff(attempt))
                continue
            raise self.error_for(method, path, response)
        assert last is not None
        raise last

    def error_for(self, method: str, path: str, response: httpx.Response) -> ConnectorError:
        status = response.status_code
        detail = self.vendor_message(response)
        where = f"{self.vendor}: {method} {path} answered HTTP {status}"
        if detail:
            where += f" ({detail})"
        if status == 401:
            return NonRetryableConnectorError(
                f"{where}: the credential was rejected; check {self.credential_hint or 'the credential'}",
                vendor=self.vendor, status=status,
            )
        if status == 403:
            return NonRetryableConnectorError(
                f"{where}: the credential lacks a permission this call needs; "
                f"grant it to the account behind {self.credential_hint or 'the credential'}",
                vendor=self.vendor, status=status,
            )
        if status == 404:
            return NotFoundError(f"{where}: the object does not exist; check the id", vendor=self.vendor,
                                 status=status)
        if status >= 500:
            return RetryableConnectorError(where, vendor=self.vendor, status=status)
        return NonRetryableConnectorError(f"{where}: the vendor refused the request", vendor=self.vendor,
                                          status=status)

    @staticmethod
    def vendor_message(response: httpx.Response) -> str:
        """A short, credential-free excerpt of the vendor's error body."""
        try:
            body = response.json()
        except ValueError:
            return response.text[:160].strip()
        return _first_message(body)[:240]


def _first_message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("errorSummary", "message", "error_description", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
        for key in ("errors", "error", "messages"):
            if key in body:
                found = _first_message(body[key])
                if found:
                    return found
        if isinstance(body.get("code"), str):
            return body["code"]
    if isinstance(body, list) and body:
        return _first_message(body[0])
    if isinstance(body, str):
        return body
    return ""



ENTRA_LOGIN_URL = "https://login.microsoftonline.com"


def entra_app_from_env(vendor: str, default_url: str) -> tuple[str, str, str, Secret]:
    """(base URL, token URL, client id, client secret) of a Microsoft Entra app registration.

    From `SIGNOFF_<VENDOR>_TENANT_ID`, `_CLIENT_ID`, `_CLIENT_SECRET` (or `_FILE`), and optionally
    `_BASE_URL` / `_LOGIN_URL` (sovereign clouds, test stand-ins).
    """
    tenant = require_setting(vendor, "tenant_id")
    login = setting(vendor, "login_url", ENTRA_LOGIN_URL) or ENTRA_LOGIN_URL
    return (
        setting(vendor, "base_url", default_url) or default_url,
        f"{login.rstrip('/')}/{tenant}/oauth2/v2.0/token",
        require_secret(vendor, "client_id").reveal(),
        require_secret(vendor, "client_secret"),
    )
