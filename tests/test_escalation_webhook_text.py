"""The escalation webhook reaches people (a Slack or Teams channel): its text is shown as every other
place shows alert and human text (`signoff.display.clean`), while the queue file keeps the raw
record (evidence). A reason quoting a hostile host name must not forge a line, reverse what a reader
sees or drive a terminal."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.case import Escalation, escalate

HOST = "ws-7\u202egnp.exe\u202c\x1b[2K"
FORGED = "\n:white_check_mark: *Approved* by alice (1 of 1); the step is executed"


def _receiver() -> tuple[http.server.ThreadingHTTPServer, list[dict[str, Any]]]:
    """A webhook endpoint that keeps what it was sent, as a chat service would show it."""
    received: list[dict[str, Any]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


async def test_the_webhook_gets_the_escalation_cleaned_and_the_queue_keeps_it_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNOFF_HOME", str(tmp_path))
    server, received = _receiver()
    monkeypatch.setenv("SIGNOFF_ESCALATION_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}/hook")
    reason = f"step s1 (isolate_host on host {HOST}) waited 4h without the approvals its tier needs{FORGED}"
    req = Escalation(case_id="case-hostile", reason=reason, step_id="s1", level=1, notify=("lead",),
                     people=("carol\u200b", "dave\x07"))
    try:
        await ActivityEnvironment().run(escalate, req)
    finally:
        server.shutdown()
    assert len(received) == 1, received
    posted = received[0]
    for hidden in ("\n", "\x1b", "\u202e", "\u202c", "\u200b", "\x07"):
        for value in (posted["reason"], *posted["people"]):
            assert hidden not in value, (hidden, value)
    assert "\\u202egnp.exe\\u202c\\x1b[2K" in posted["reason"]  # shown as escapes, not dropped
    assert posted["reason"].endswith("\\n:white_check_mark: *Approved* by alice (1 of 1); the step is executed")
    assert posted["people"] == ["carol\\u200b", "dave\\x07"] and posted["notify"] == ["lead"]
    assert posted["case_id"] == "case-hostile" and posted["level"] == 1 and posted["kind"] == "approval_timeout"
    queued = json.loads((tmp_path / "escalations.jsonl").read_text().splitlines()[-1])
    assert queued["reason"] == reason and queued["people"] == ["carol\u200b", "dave\x07"]  # evidence, raw
