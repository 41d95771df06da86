"""The chat bridge's HTTP side: Slack's interactivity endpoint, `POST /slack/interactions`.

What reaches the bridge from the outside comes in here, and only here. The HTTP server takes a
request only with a strict Content-Length (a number, at most MAX_BODY, each Slack header once); a
client that stops sending is dropped after SOCKET_TIMEOUT and a body that trickles in after
BODY_DEADLINE. Slack's signature is checked first (401 and nothing else on a bad or stale one) and
each exact signed request is taken once (a replay inside Slack's 5-minute window is 401). Then the
interaction is routed: a button click opens its modal (the reason; for Close with verdict also the
grade), the modal's submission is the decision, handed to the bridge on its event loop
(`SlackBridge.decide`, `close_case`, `request_rollback`, signoff/chat/bridge.py).
A validly signed payload of the wrong shape is a 400, never a 500; `GET /healthz` says it is up.
Nothing here decides: the case workflow does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs

from connectors.http import ConnectorError, Secret
from connectors.slack import MAX_SKEW_SECONDS, signature_refusal
from policies.engine import Policy
from policies.loader import load_policy
from signoff.chat.messages import (
    APPROVE_ACTION,
    CLOSE_ACTION,
    CLOSE_CALLBACK,
    GRADE_ACTION,
    GRADE_BLOCK,
    MODAL_CALLBACK,
    REASON_ACTION,
    REASON_BLOCK,
    REJECT_ACTION,
    ROLLBACK_ACTION,
    ROLLBACK_CALLBACK,
    result_modal,
)

log = logging.getLogger("signoff.chat")
T = TypeVar("T")

INTERACTIONS_PATH = "/slack/interactions"
MAX_BODY = 1 << 20  # Slack's interaction payloads are far smaller
ANSWER_TIMEOUT = 20.0  # seconds a request thread waits for the Temporal side
SOCKET_TIMEOUT = 10.0  # seconds one read from a client may block (a silent client is dropped)
BODY_DEADLINE = 15.0  # seconds to receive a whole body (a client trickling bytes is dropped)
SLACK_HEADERS = ("x-slack-signature", "x-slack-request-timestamp", "content-length")


class Decisions(Protocol):
    """What the endpoint asks of the bridge (SlackBridge): who may act, the modal, the decision."""

    def team_refusal(self, policy: Policy, team_id: str | None) -> str | None: ...

    async def open_reason_modal(self, trigger_id: str, case_id: str, step: str, decision: str,
                                channel: str, ts: str) -> None: ...

    async def decide(self, *, user_id: str, case_id: str, step: str, decision: str, reason: str,
                     view_id: str, team_id: str | None = None) -> tuple[bool, str]: ...

    async def open_case_modal(self, trigger_id: str, case_id: str, kind: str, channel: str, ts: str) -> None: ...

    async def close_case(self, *, user_id: str, case_id: str, grade: str, reason: str, view_id: str,
                         team_id: str | None = None) -> tuple[bool, str]: ...

    async def request_rollback(self, *, user_id: str, case_id: str, reason: str, view_id: str,
                               team_id: str | None = None) -> tuple[bool, str]: ...


class InteractionEndpoint:
    """Checks and routes the requests Slack sends; runs in the HTTP server's threads and hands the
    work that talks to Temporal or Slack to the bridge's event loop (`loop`, set while serving)."""

    def __init__(self, bridge: Decisions, signing_secret: Secret | str) -> None:
        self.bridge = bridge
        self.secret = signing_secret
        self.loop: asyncio.AbstractEventLoop | None = None
        self.refused_requests = 0  # requests refused for their Slack signature (401) or as replays
        # Signatures of the requests already taken, until they are stale anyway: a signed request
        # captured on the wire and sent again inside Slack's 5-minute window is refused (401).
        self.seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None, "the bridge is not serving"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=ANSWER_TIMEOUT)

    def handle_interaction(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        """(HTTP status, JSON answer) for one request Slack sent; runs in a server thread."""
        refusal = signature_refusal(self.secret, timestamp=headers.get("x-slack-request-timestamp"),
                                    sig=headers.get("x-slack-signature"), body=body)
        if refusal is None:
            refusal = self._replay_refusal(headers["x-slack-signature"])
        if refusal:
            self.refused_requests += 1
            log.warning("refused a request to the interactivity endpoint: %s", refusal)
            return 401, {"error": refusal}
        bad = 400, {"error": "expected a form-encoded `payload` with Slack's interaction JSON"}
        try:
            fields = parse_qs(body.decode(), strict_parsing=False, max_num_fields=50)
            payload = json.loads(fields["payload"][0])
        except (KeyError, IndexError, ValueError, UnicodeDecodeError, RecursionError):
            return bad
        if not isinstance(payload, dict):
            return bad
        try:
            if payload.get("type") == "block_actions":
                return self._on_click(payload)
            if payload.get("type") == "view_submission":
                return self._on_submit(payload)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # signed by Slack, but not its shape
            log.warning("malformed %s payload: %s", payload.get("type"), exc)
            return 400, {"error": f"malformed {payload.get('type')} payload"}
        return 200, None

    def _replay_refusal(self, sig: str) -> str | None:
        """Each signed request is taken once: the same signature again (a replay) is refused."""
        now = time.monotonic()
        with self._seen_lock:
            for old in [s for s, at in self.seen.items() if now - at > 2 * MAX_SKEW_SECONDS]:
                del self.seen[old]
            if sig in self.seen:
                return "replayed request: this exact signed request was already received"
            self.seen[sig] = now
        return None

    def _on_click(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        for action in payload.get("actions") or []:
            action_id = action.get("action_id")
            decision = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}.get(action_id)
            case_kind = {CLOSE_ACTION: "close", ROLLBACK_ACTION: "rollback"}.get(action_id)
            if decision is None and case_kind is None:
                continue
            team_refusal = self.bridge.team_refusal(load_policy(), _user_team(payload))
            if team_refusal:  # no modal for a user who could not decide anyway
                log.warning("no modal for Slack user %s: %s", (payload.get("user") or {}).get("id"), team_refusal)
                return 200, None
            try:
                target = json.loads(action.get("value") or "")
                container = payload.get("container") or {}
                channel, ts = str(container.get("channel_id", "")), str(container.get("message_ts", ""))
                if decision is not None:
                    self._on_loop(self.bridge.open_reason_modal(
                        str(payload["trigger_id"]), str(target["case"]), str(target["step"]), decision, channel, ts))
                else:
                    self._on_loop(self.bridge.open_case_modal(
                        str(payload["trigger_id"]), str(target["case"]), str(case_kind), channel, ts))
            except (KeyError, ValueError, TypeError) as exc:
                return 400, {"error": f"malformed button payload: {exc}"}
            except ConnectorError as exc:
                log.warning("could not open the modal: %s", exc)
            return 200, None
        return 200, None

    def _on_submit(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        view = payload.get("view") or {}
        if view.get("callback_id") in (CLOSE_CALLBACK, ROLLBACK_CALLBACK):
            return self._on_case_submit(payload, view)
        if view.get("callback_id") != MODAL_CALLBACK:
            return 200, None
        try:
            meta = json.loads(view.get("private_metadata") or "")
            values = (view.get("state") or {}).get("values") or {}
            reason = str(((values.get(REASON_BLOCK) or {}).get(REASON_ACTION) or {}).get("value") or "")
            user_id = str(payload["user"]["id"])
            case_id, step, decision = str(meta["case"]), str(meta["step"]), str(meta["decision"])
        except (KeyError, ValueError, TypeError) as exc:
            return 400, {"error": f"malformed view submission: {exc}"}
        if not reason.strip():
            return 200, {"response_action": "errors", "errors": {REASON_BLOCK: "a reason is required"}}
        try:
            accepted, text = self._on_loop(self.bridge.decide(user_id=user_id, case_id=case_id, step=step,
                                                              decision=decision, reason=reason,
                                                              view_id=str(view.get("id", "")),
                                                              team_id=_user_team(payload)))
        except TimeoutError:
            return 200, {"response_action": "errors",
                         "errors": {REASON_BLOCK: "Temporal did not answer in time: the decision may still apply; "
                                                  "submit again to see (it is never counted twice)"}}
        return _answer(accepted, text)

    def _on_case_submit(self, payload: dict[str, Any], view: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """The verdict modal (grade and reason) or the rollback modal (reason) submitted."""
        try:
            meta = json.loads(view.get("private_metadata") or "")
            values = (view.get("state") or {}).get("values") or {}
            reason = str(((values.get(REASON_BLOCK) or {}).get(REASON_ACTION) or {}).get("value") or "")
            selected = ((values.get(GRADE_BLOCK) or {}).get(GRADE_ACTION) or {}).get("selected_option") or {}
            grade = str(selected.get("value") or "")
            user_id = str(payload["user"]["id"])
            case_id = str(meta["case"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return 400, {"error": f"malformed view submission: {exc}"}
        closing = view.get("callback_id") == CLOSE_CALLBACK
        errors: dict[str, str] = {}
        if closing and not grade:
            errors[GRADE_BLOCK] = "choose a grade"
        if not reason.strip():
            errors[REASON_BLOCK] = "a reason is required"
        if errors:
            return 200, {"response_action": "errors", "errors": errors}
        view_id, team_id = str(view.get("id", "")), _user_team(payload)
        try:
            if closing:
                accepted, text = self._on_loop(self.bridge.close_case(
                    user_id=user_id, case_id=case_id, grade=grade, reason=reason, view_id=view_id, team_id=team_id))
            else:
                accepted, text = self._on_loop(self.bridge.request_rollback(
                    user_id=user_id, case_id=case_id, reason=reason, view_id=view_id, team_id=team_id))
        except TimeoutError:
            return 200, {"response_action": "errors",
                         "errors": {REASON_BLOCK: "Temporal did not answer in time: the request may still apply; "
                                                  "submit again to see (it is never counted twice)"}}
        return _answer(accepted, text)


def _answer(accepted: bool, text: str) -> tuple[int, dict[str, Any]]:
    """The answer to a submitted modal: the refusal shown on its reason field, or the outcome in its place."""
    if not accepted:
        return 200, {"response_action": "errors", "errors": {REASON_BLOCK: f"Refused: {text}"[:1900]}}
    return 200, {"response_action": "update", "view": result_modal(text)}


def _user_team(payload: dict[str, Any]) -> str | None:
    """The Slack workspace the acting user belongs to: `user.team_id`, else `team.id`.

    In a Slack Connect channel shared with another organisation, `team.id` is the workspace the
    message lives in while `user.team_id` is the clicking user's own: the user's is the one to check.
    """
    user = payload.get("user") or {}
    team = payload.get("team") or {}
    value = user.get("team_id") or team.get("id")
    return str(value) if value else None


def http_server(endpoint: InteractionEndpoint, host: str, port: int, *, socket_timeout: float = SOCKET_TIMEOUT,
                body_deadline: float = BODY_DEADLINE) -> ThreadingHTTPServer:
    """The HTTP server in front of `endpoint` (not started: call `serve_forever` in a thread)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "signoff-chat-bridge"
        timeout = socket_timeout  # a client that stops sending is dropped

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?", 1)[0] != INTERACTIONS_PATH:
                self._answer(404, {"error": f"not found; Slack's interactivity URL is {INTERACTIONS_PATH}"})
                return
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                if name.lower() in SLACK_HEADERS and name.lower() in headers:
                    self._answer(400, {"error": f"{name} given more than once"})
                    return
                headers[name.lower()] = value
            raw_length = headers.get("content-length", "0").strip() or "0"
            if not (raw_length.isascii() and raw_length.isdigit()):
                self._answer(400, {"error": "Content-Length is not a number"})
                return
            length = int(raw_length)
            if length > MAX_BODY:
                self._answer(413, {"error": "request too large"})
                return
            body = self._read_body(length)
            if body is None:
                self._answer(408, {"error": "the body did not arrive in time"})
                return
            try:
                status, answer = endpoint.handle_interaction(headers, body)
            except Exception:  # noqa: BLE001 - one bad request must not stop the bridge
                log.exception("interaction failed")
                status, answer = 500, {"error": "internal error; see the bridge's log"}
            self._answer(status, answer)

        def _read_body(self, length: int) -> bytes | None:
            """`length` bytes, or None when they do not all arrive within `body_deadline`."""
            deadline = time.monotonic() + body_deadline
            chunks: list[bytes] = []
            left = length
            try:
                while left > 0:
                    if time.monotonic() > deadline:
                        return None
                    chunk = self.rfile.read1(min(left, 65536))
                    if not chunk:
                        return None
                    chunks.append(chunk)
                    left -= len(chunk)
            except TimeoutError:
                return None
            return b"".join(chunks)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/healthz":
                self._answer(200, {"ok": True})
            else:
                self._answer(404, {"error": "not found"})

        def _answer(self, status: int, answer: dict[str, Any] | None) -> None:
            data = json.dumps(answer).encode() if answer is not None else b""
            self.send_response(status)
            if answer is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
