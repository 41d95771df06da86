"""Fake Slack: the Web API a chat bridge calls, and the Slack user who clicks in it.

Web API (documented contract, https://api.slack.com/methods): POST /api/METHOD with a bot token
(`Authorization: Bearer xoxb-...`). Failures are HTTP 200 with `{"ok": false, "error": CODE}`
(`invalid_auth`, `channel_not_found`, `no_text`, `message_not_found`, `invalid_trigger_id`,
`exchanged_trigger_id`, `expired_trigger_id`); rate limits are HTTP 429 with `Retry-After`.
- `chat.postMessage`: a message in a known channel; `ts` strictly increases per channel.
- `chat.update`: only an existing message of the channel.
- `views.open`: needs a `trigger_id` that an interaction issued less than 3 s ago (single use).

The user side (what Slack sends to the app's interactivity URL): a button click is a
`block_actions` payload, a modal submission a `view_submission` payload, each form-encoded as
`payload=<JSON>` and signed with the app's signing secret (`X-Slack-Signature`,
`X-Slack-Request-Timestamp`). `click` and `submit` build them from the fake's own messages and
views and POST them to the app, as Slack would.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

from connectors.fakes.base import FakeVendor, reply, route
from connectors.slack import signature

TRIGGER_TTL = 3.0  # seconds a trigger_id stays valid (Slack's documented limit)


def slack_error(error: str, status: int = 200) -> httpx.Response:
    return reply(status, {"ok": False, "error": error})


class FakeSlack(FakeVendor):
    name = "slack"
    token = "xoxb-fake-bot-token"
    signing_secret = "fake-signing-secret"

    def __init__(self, clock: Callable[[], float] = time.time, team_id: str = "T0FAKE") -> None:
        super().__init__()
        self.clock = clock
        self.team_id = team_id
        self.channels: dict[str, list[dict[str, Any]]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.trigger_ttl = TRIGGER_TTL
        self._triggers: dict[str, tuple[float, str]] = {}  # trigger id -> (issued at, user id)
        self._used_triggers: set[str] = set()
        self._seq = itertools.count(1)
        self._epoch = 1_764_320_000

    # ------------------------------------------------------------ state helpers

    def add_channel(self, channel: str) -> str:
        self.channels.setdefault(channel, [])
        return channel

    def messages(self, channel: str) -> list[dict[str, Any]]:
        return self.channels.get(channel, [])

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        for msg in self.channels.get(channel, []):
            if msg["ts"] == ts:
                return msg
        raise KeyError(f"no message {ts} in {channel}")

    def _ts(self) -> str:
        n = next(self._seq)
        return f"{self._epoch + n}.{n:06d}"

    def authorized(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> httpx.Response:
        return slack_error("invalid_auth")

    def not_found(self, path: str) -> httpx.Response:
        return slack_error("unknown_method", 404)

    def bad_request(self, message: str) -> httpx.Response:
        return slack_error(message)

    def fail_next(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None,
                  body: Any = None) -> None:
        """`fail_next(429, headers={"Retry-After": "1"})`: Slack's rate limit answer."""
        default = {"ok": False, "error": "ratelimited" if status == 429 else f"injected_{status}"}
        super().fail_next(status, times=times, headers=headers, body=body if body is not None else default)

    # ------------------------------------------------------------ Web API

    @route("POST", r"/api/chat\.postMessage")
    def post_message(self, request: httpx.Request, body: Any) -> httpx.Response:
        if not isinstance(body, dict) or not body.get("channel"):
            return slack_error("channel_not_found")
        channel = str(body["channel"])
        if channel not in self.channels:
            return slack_error("channel_not_found")
        if not body.get("text") and not body.get("blocks"):
            return slack_error("no_text")
        msg = {"type": "message", "ts": self._ts(), "text": str(body.get("text", "")),
               "blocks": body.get("blocks") or [], "bot_id": "B0FAKE", "edited": None}
        self.channels[channel].append(msg)
        return reply(200, {"ok": True, "channel": channel, "ts": msg["ts"], "message": msg})

    @route("POST", r"/api/chat\.update")
    def update_message(self, request: httpx.Request, body: Any) -> httpx.Response:
        if not isinstance(body, dict) or str(body.get("channel", "")) not in self.channels:
            return slack_error("channel_not_found")
        channel, ts = str(body["channel"]), str(body.get("ts", ""))
        try:
            msg = self.message(channel, ts)
        except KeyError:
            return slack_error("message_not_found")
        if not body.get("text") and not body.get("blocks"):
            return slack_error("no_text")
        msg["text"] = str(body.get("text", ""))
        if "blocks" in body:
            msg["blocks"] = body["blocks"] or []
        msg["edited"] = {"ts": self._ts()}
        return reply(200, {"ok": True, "channel": channel, "ts": ts, "text": msg["text"]})

    @route("POST", r"/api/views\.open")
    def open_view(self, request: httpx.Request, body: Any) -> httpx.Response:
        if not isinstance(body, dict):
            return slack_error("invalid_arguments")
        trigger = str(body.get("trigger_id", ""))
        if trigger in self._used_triggers:
            return slack_error("exchanged_trigger_id")
        issued = self._triggers.get(trigger)
        if issued is None:
            return slack_error("invalid_trigger_id")
        if self.clock() - issued[0] > self.trigger_ttl:
            return slack_error("expired_trigger_id")
        view = body.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                return slack_error("invalid_arguments")
        if not isinstance(view, dict) or view.get("type") != "modal" or not view.get("title"):
            return slack_error("invalid_arguments")
        self._used_triggers.add(trigger)
        del self._triggers[trigger]
        view_id = f"V{next(self._seq):08d}"
        opened = {**view, "id": view_id, "team_id": self.team_id, "user": issued[1], "state": {"values": {}}}
        self.views[view_id] = opened
        return reply(200, {"ok": True, "view": opened})

    # ------------------------------------------------------------ the Slack user

    def issue_trigger(self, user_id: str) -> str:
        trigger = f"{next(self._seq)}.{self.team_id}.{abs(hash(user_id)) % 10**8:08d}"
        self._triggers[trigger] = (self.clock(), user_id)
        return trigger

    def block_actions(self, user_id: str, channel: str, ts: str, action_id: str) -> dict[str, Any]:
        """The `block_actions` payload of `user_id` clicking the button `action_id` on a message."""
        msg = self.message(channel, ts)
        for block in msg["blocks"]:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    action = {"type": element.get("type", "button"), "action_id": action_id,
                              "block_id": block.get("block_id", ""), "value": element.get("value", ""),
                              "text": element.get("text"), "action_ts": f"{self.clock():.6f}"}
                    break
            else:
                continue
            break
        else:
            raise KeyError(f"message {ts} has no button {action_id!r}")
        return {
            "type": "block_actions", "team": {"id": self.team_id, "domain": "fake"},
            "user": {"id": user_id, "username": user_id.lower(), "team_id": self.team_id},
            "api_app_id": "A0FAKE", "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
            "trigger_id": self.issue_trigger(user_id), "channel": {"id": channel, "name": channel.lower()},
            "message": msg, "response_url": f"https://hooks.slack.invalid/actions/{ts}",
            "actions": [action],
        }

    def view_submission(self, user_id: str, view_id: str, values: dict[str, str]) -> dict[str, Any]:
        """The `view_submission` payload of `user_id` submitting the modal `view_id`, typing `values`
        ({block_id: text}) into its plain-text inputs; for a `static_select` or `radio_buttons` input the
        text is the value of the option chosen (Slack sends that option as `selected_option`; a value
        the input does not offer cannot be chosen: ValueError)."""
        view = self.views[view_id]
        state: dict[str, dict[str, Any]] = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            element = block.get("element", {})
            text = values.get(block["block_id"])
            kind = element.get("type", "plain_text_input")
            if kind in ("static_select", "radio_buttons"):  # the chosen option, as Slack sends it
                options = {o.get("value"): o for o in element.get("options", [])}
                if text is not None and text not in options:
                    raise ValueError(f"{text!r} is not an option of {block['block_id']!r}: {sorted(options)}")
                state[block["block_id"]] = {element.get("action_id", ""): {
                    "type": kind, "selected_option": options[text] if text is not None else None}}
                continue
            state[block["block_id"]] = {element.get("action_id", ""): {"type": kind, "value": text}}
        submitted = {**view, "state": {"values": state}}
        return {"type": "view_submission", "team": {"id": self.team_id, "domain": "fake"},
                "user": {"id": user_id, "username": user_id.lower(), "team_id": self.team_id},
                "api_app_id": "A0FAKE", "trigger_id": self.issue_trigger(user_id), "view": submitted}

    def signed_request(self, payload: dict[str, Any], *, secret: str | None = None,
                       timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers Slack sends to the interactivity URL (form-encoded `payload=`, signed)."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        return body, {"Content-Type": "application/x-www-form-urlencoded",
                      "X-Slack-Request-Timestamp": ts,
                      "X-Slack-Signature": signature(secret or self.signing_secret, ts, body),
                      "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}

    async def send(self, url: str, payload: dict[str, Any], *, secret: str | None = None,
                   timestamp: int | None = None) -> httpx.Response:
        body, headers = self.signed_request(payload, secret=secret, timestamp=timestamp)
        async with httpx.AsyncClient(timeout=60) as http:
            return await http.post(url, content=body, headers=headers)

    async def click(self, url: str, user_id: str, channel: str, ts: str, action_id: str) -> httpx.Response:
        """`user_id` clicks a button of a message; Slack POSTs the signed `block_actions` to `url`."""
        return await self.send(url, self.block_actions(user_id, channel, ts, action_id))

    async def submit(self, url: str, user_id: str, view_id: str, values: dict[str, str]) -> httpx.Response:
        """`user_id` submits the modal `view_id`; Slack POSTs the signed `view_submission` to `url`."""
        return await self.send(url, self.view_submission(user_id, view_id, values))

    def last_view_for(self, user_id: str) -> dict[str, Any]:
        """The modal most recently opened for `user_id`."""
        for view in reversed(list(self.views.values())):
            if view["user"] == user_id:
                return view
        raise KeyError(f"no modal was opened for {user_id}")
