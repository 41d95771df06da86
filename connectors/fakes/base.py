"""The shared machinery of vendor fakes: routing, auth check, recorded calls, injected faults."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx

SPECS = Path(__file__).parent / "specs"
Handler = Callable[..., httpx.Response]


def spec_path(name: str) -> Path:
    return SPECS / f"{name}.yaml"


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    """Mark a fake method as the handler of `method` on paths matching `pattern` (named groups → kwargs)."""

    def mark(fn: Handler) -> Handler:
        fn._route = (method.upper(), re.compile(f"^{pattern}$"))  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str]
    body: Any


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


class FakeVendor:
    """Base of a fake. Subclasses declare routes with `@route` and check auth in `authorized`."""

    name: ClassVar[str]
    # Valid credentials; tests and contract runs use these (no real secret is ever involved).
    token: ClassVar[str] = "fake-token"

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._faults: deque[httpx.Response] = deque()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for attr in dir(type(self)):
            fn = getattr(self, attr)
            spec = getattr(fn, "_route", None)
            if spec:
                self._routes.append((spec[0], spec[1], fn))

    # ------------------------------------------------------------ test controls

    def fail_next(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None,
                  body: Any = None) -> None:
        """Answer the next `times` API calls (token requests excluded) with this status."""
        for _ in range(times):
            self._faults.append(reply(status, body if body is not None else {"error": f"injected {status}"},
                                      headers))

    def count(self, method: str, path_fragment: str) -> int:
        return sum(1 for c in self.calls if c.method == method and path_fragment in c.path)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    # ------------------------------------------------------------ dispatch

    def is_token_request(self, request: httpx.Request) -> bool:
        return False

    def authorized(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> httpx.Response:
        return reply(401, {"errors": [{"code": 401, "message": "access denied, authorization failed"}]})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = _body(request)
        self.calls.append(Call(request.method, path, dict(request.url.params), body))
        token_call = self.is_token_request(request)
        if self._faults and not token_call:
            return self._faults.popleft()
        if not token_call and not self.authorized(request):
            return self.unauthorized()
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match:
                if method == request.method:
                    try:
                        return handler(request, body, **match.groupdict())
                    except BadRequest as exc:
                        return self.bad_request(str(exc))
                allowed.append(method)
        if allowed:
            return reply(405, {"error": "method not allowed"}, {"Allow": ", ".join(allowed)})
        return self.not_found(path)

    def not_found(self, path: str) -> httpx.Response:
        return reply(404, {"errors": [{"code": 404, "message": f"not found: {path}"}]})

    def bad_request(self, message: str) -> httpx.Response:
        return reply(400, {"errors": [{"code": 400, "message": message}]})


class BadRequest(Exception):
    """Raised by a handler for a request the vendor would reject with 400."""


def _body(request: httpx.Request) -> Any:
    content = request.content
    if not content:
        return None
    ctype = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" in ctype:
        return dict(parse_qsl(content.decode(), keep_blank_values=True))
    try:
        return json.loads(content)
    except ValueError:
        return content.decode(errors="replace")


def need(body: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    """Read `body[key]`, raising BadRequest unless it is present with the right JSON type."""
    if not isinstance(body, dict) or key not in body or not isinstance(body[key], kind):
        raise BadRequest(f"'{key}' is required")
    value = body[key]
    if isinstance(value, bool) and kind in (int, (int, float)):
        raise BadRequest(f"'{key}' must be a number")
    return value
