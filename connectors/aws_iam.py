"""AWS IAM access keys over the Query API, signed with a hand-written SigV4 `httpx.Auth`.

Actions: deactivate / reactivate a key (`UpdateAccessKey Status=Inactive|Active`), read its status
(`ListAccessKeys`), find its owner (`GetAccessKeyLastUsed`). Both directions are reversible.

Configuration: SIGNOFF_AWS_ACCESS_KEY_ID, SIGNOFF_AWS_SECRET_ACCESS_KEY (or _FILE variants),
optional SIGNOFF_AWS_SESSION_TOKEN, SIGNOFF_AWS_REGION (us-east-1: IAM is global and signed there),
SIGNOFF_AWS_IAM_ENDPOINT (default https://iam.amazonaws.com; tests point it at moto server).
"""

from __future__ import annotations

import hashlib
import hmac
import xml.etree.ElementTree as ET
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import quote

import httpx

from connectors.http import (
    ConnectorError,
    NonRetryableConnectorError,
    NotFoundError,
    RetryableConnectorError,
    Secret,
    VendorClient,
    require_secret,
    secret,
    setting,
)

VENDOR = "aws"
IAM_VERSION = "2010-05-08"
_NS = "{https://iam.amazonaws.com/doc/2010-05-08/}"


class SigV4Auth(httpx.Auth):
    """AWS Signature Version 4 for one service and region (header-based, the Query API form)."""

    requires_request_body = True

    def __init__(
        self, access_key_id: Secret, secret_access_key: Secret, region: str, service: str,
        session_token: Secret | None = None, clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._key_id = access_key_id
        self._secret = secret_access_key
        self._token = session_token
        self.region = region
        self.service = service
        self._clock = clock or (lambda: datetime.now(UTC))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request

    def sign(self, request: httpx.Request) -> None:
        now = self._clock()
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        request.headers["X-Amz-Date"] = amz_date
        if self._token is not None:
            request.headers["X-Amz-Security-Token"] = self._token.reveal()
        names = sorted(
            n for n in (k.lower() for k in request.headers)
            if n in ("host", "content-type") or n.startswith("x-amz-")
        )
        canonical_headers = "".join(f"{n}:{' '.join(request.headers[n].split())}\n" for n in names)
        signed = ";".join(names)
        query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in sorted(request.url.params.multi_items())
        )
        path = quote(request.url.path or "/", safe="/-_.~")
        canonical = "\n".join([
            request.method.upper(), path, query, canonical_headers, signed,
            hashlib.sha256(request.content).hexdigest(),
        ])
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self._secret.reveal()).encode()
        for part in (day, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._key_id.reveal()}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )


@dataclass(frozen=True)
class AccessKey:
    id: str
    user: str
    status: str  # "Active" | "Inactive"


class AwsIam(VendorClient):
    vendor = VENDOR
    credential_hint = "SIGNOFF_AWS_ACCESS_KEY_ID and SIGNOFF_AWS_SECRET_ACCESS_KEY (or their _FILE variants)"
    AUTH_CODES: ClassVar[frozenset[str]] = frozenset(
        {"InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature", "ExpiredToken",
         "UnrecognizedClientException", "MissingAuthenticationToken"}
    )

    @classmethod
    def from_env(cls, transport: httpx.AsyncBaseTransport | None = None) -> AwsIam:
        region = setting(VENDOR, "region", "us-east-1") or "us-east-1"
        auth = SigV4Auth(
            require_secret(VENDOR, "access_key_id"), require_secret(VENDOR, "secret_access_key"),
            region=region, service="iam", session_token=secret(VENDOR, "session_token"),
        )
        endpoint = setting(VENDOR, "iam_endpoint", "https://iam.amazonaws.com") or "https://iam.amazonaws.com"
        return cls(endpoint, auth, transport=transport)

    async def call(self, action: str, **params: str) -> ET.Element:
        form = {"Action": action, "Version": IAM_VERSION, **params}
        # IAM's Query API is idempotent for every call used here, so POSTs may be retried.
        response = await self.request("POST", "/", data=form, idempotent=True)
        return ET.fromstring(response.content)

    async def list_access_keys(self, user: str) -> list[AccessKey]:
        root = await self.call("ListAccessKeys", UserName=user)
        return [
            AccessKey(_text(m, "AccessKeyId"), _text(m, "UserName") or user, _text(m, "Status"))
            for m in root.iter(f"{_NS}member")
        ]

    async def key_owner(self, key_id: str) -> str:
        root = await self.call("GetAccessKeyLastUsed", AccessKeyId=key_id)
        user = next((e.text for e in root.iter(f"{_NS}UserName") if e.text), None)
        if not user:
            raise NotFoundError(f"aws: no IAM user owns access key {key_id}", vendor=VENDOR)
        return user

    async def access_key(self, key_id: str, user: str | None = None) -> AccessKey:
        owner = user or await self.key_owner(key_id)
        for key in await self.list_access_keys(owner):
            if key.id == key_id:
                return key
        raise NotFoundError(f"aws: access key {key_id} is not a key of IAM user {owner}", vendor=VENDOR)

    async def set_access_key_status(self, key_id: str, status: str, user: str | None = None) -> None:
        if status not in ("Active", "Inactive"):
            raise NonRetryableConnectorError(f"aws: access key status must be Active or Inactive, not {status!r}",
                                             vendor=VENDOR)
        params = {"AccessKeyId": key_id, "Status": status}
        if user:
            params["UserName"] = user
        await self.call("UpdateAccessKey", **params)

    def error_for(self, method: str, path: str, response: httpx.Response) -> ConnectorError:
        code, message = _aws_error(response)
        status = response.status_code
        where = f"aws: IAM answered HTTP {status} {code}: {message}".rstrip(": ")
        if code in self.AUTH_CODES:
            return NonRetryableConnectorError(f"{where}; check {self.credential_hint}", vendor=VENDOR, status=status)
        if code in ("Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable"):
            return RetryableConnectorError(where, vendor=VENDOR, status=status)
        if code == "NoSuchEntity" or status == 404:
            return NotFoundError(f"{where}; check the user name / access key id", vendor=VENDOR, status=status)
        if code in ("AccessDenied", "AccessDeniedException"):
            return NonRetryableConnectorError(
                f"{where}; the caller needs iam:UpdateAccessKey, iam:ListAccessKeys, iam:GetAccessKeyLastUsed",
                vendor=VENDOR, status=status,
            )
        return super().error_for(method, path, response)


def _text(node: ET.Element, tag: str) -> str:
    found = node.find(f"{_NS}{tag}")
    return (found.text or "") if found is not None else ""


def _aws_error(response: httpx.Response) -> tuple[str, str]:
    try:
        root = ET.fromstring(response.content)
    except ET.ParseError:
        return "", response.text[:160]
    code = next((e.text or "" for e in root.iter() if e.tag.endswith("Code")), "")
    message = next((e.text or "" for e in root.iter() if e.tag.endswith("Message")), "")
    return code, message
