"""QA5, low-severity CLI findings: each test is one finding (what the command did, what it should do).

Real dev server and worker where a case or an ingest is involved; the CLI runs as a user runs it
(its own process) where exit codes and stdout/stderr matter.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signoff.models import CaseStatus
from signoff.worker import build_worker
from tests.auditkit import acli, address_of
from tests.casekit import alert, awaiting, case_input, start_case, wait_for
from tests.test_audit import _trail
from tests.test_qa_ingest_listing import _env, _guide_csv, _row, _signoff, _unique_org
from workflows.case import CaseWorkflow

REPO = Path(__file__).resolve().parent.parent


def _free_address() -> str:
    """A local address nothing listens on (no server answers there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _plain_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SIGNOFF_HOME"}
    env.update(COLUMNS="200", PYTHONPATH=str(REPO), **extra)
    return env


# ---------------------------------------------------------------- 1: cases --with-alerts without --json


async def test_with_alerts_without_json_is_refused_in_one_line(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """`signoff cases --with-alerts` printed the table and silently ignored --with-alerts."""
    code, out, err = await _signoff("cases", "--with-alerts", "--limit", "1",
                                    env=_env(dev_env, task_queue, tmp_path / "home"))
    assert code == 1, (out, err)
    assert "--with-alerts" in err and "add --json" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert out == ""  # refused before any listing
    code, out, err = await _signoff("cases", "--with-alerts", "--json", "--limit", "1",
                                    env=_env(dev_env, task_queue, tmp_path / "home"))
    assert code == 0, err


# ---------------------------------------------------------------- 2: stop where nothing was started


async def test_stop_where_nothing_was_started_says_so_and_how_to_find_the_home(tmp_path: Path) -> None:
    """`signoff stop` in a directory where nothing was started exited 0 and said little."""
    code, out, err = await _signoff("stop", env=_plain_env(TEMPORAL_ADDRESS=_free_address()), cwd=tmp_path)
    assert code == 0  # stopping nothing is not an error (cleanup scripts, a second stop)
    assert "nothing was started from this SIGNOFF_HOME" in out and str(tmp_path / ".signoff") in out, out
    assert "SIGNOFF_HOME=" in err and "signoff demo" in err, err
    assert not (tmp_path / ".signoff").exists()  # stopping creates no state directory

    home = tmp_path / "no-such-home"
    code, out, err = await _signoff("stop", env=_plain_env(TEMPORAL_ADDRESS=_free_address(), SIGNOFF_HOME=str(home)),
                                    cwd=tmp_path)
    assert code == 0
    assert f"nothing was started from this SIGNOFF_HOME ({home} does not exist)" in out, out
    assert "SIGNOFF_HOME=" in err, err


# ---------------------------------------------------------------- 3: verify a file that is no trail


def _verify(path: Path) -> Any:
    from signoff.cli import app

    return CliRunner().invoke(app, ["audit", "verify", str(path)], env={"COLUMNS": "300"})


def test_verify_of_a_file_that_is_no_trail_says_so_and_is_not_recorded(tmp_path: Path, signoff_home: Path) -> None:
    """An empty file, or someone else's JSON Lines, was reported TAMPERED, and the governance report then
    showed that as the last verification."""
    from signoff.audit import last_verification

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_trail()) + "\n")
    _verify(good)
    before = last_verification()
    assert before is not None and before["file"] == str(good)

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    other = tmp_path / "events.jsonl"
    other.write_text('{"user": "alice", "action": "login"}\n{"user": "bob", "action": "logout"}\nnot json\n')
    for path in (empty, other):
        result = _verify(path)
        assert result.exit_code == 1, result.output
        assert "not an audit trail export (no audit_header" in result.stderr, result.output
        assert "TAMPERED" not in result.output
        assert last_verification() == before  # not recorded as a verification result

    # A real trail with one edited record is still TAMPERED, and recorded.
    lines = _trail()
    lines[3] = lines[3].replace("reason 2", "reason two")
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines) + "\n")
    result = _verify(edited)
    assert result.exit_code == 1 and "TAMPERED" in result.output
    last = last_verification()
    assert last is not None and last["file"] == str(edited) and not last["ok"]
    # So is one whose header line was cut off: what is left is still a chain.
    headless = tmp_path / "headless.jsonl"
    headless.write_text("\n".join(_trail()[1:]) + "\n")
    result = _verify(headless)
    assert result.exit_code == 1 and "TAMPERED" in result.output


# ---------------------------------------------------------------- 4 and 5: dead letter only when needed; plurals


def test_a_dead_letter_without_rejects_leaves_no_file(signoff_home: Path) -> None:
    from signoff.ingest import DeadLetter

    dead = DeadLetter("clean.csv")
    dead.close()
    assert dead.path.name.endswith("-clean.csv.jsonl") and not dead.path.exists()


async def test_a_clean_ingest_writes_no_dead_letter_file(
        dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path) -> None:
    """Every `signoff ingest` created a dead-letter file, empty when nothing was rejected; and a one-case
    ingest said "1 records: ... 1 cases opened"."""
    home = tmp_path / "home"
    env = _env(dev_env, task_queue, home)
    org = _unique_org()
    data = _guide_csv(tmp_path / "one.csv", [_row(org, 1, 11, 1)])
    code, out, err = await _signoff("ingest", str(data), "--format", "guide", "--json", env=env)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rejected"] == 0 and summary["cases_opened"] == 1
    # The key stays a path (SPEC), where the file would be; no file is written.
    dead = Path(summary["dead_letter"])
    assert dead.parent == home / "dead-letter" and dead.suffix == ".jsonl"
    assert not dead.exists() and not (home / "dead-letter").exists()

    again = _guide_csv(tmp_path / "two.csv", [_row(org, 2, 21, 2)])
    code, out, err = await _signoff("ingest", str(again), "--format", "guide", env=env)
    assert code == 0, err
    assert "1 record: 1 accepted, 0 rejected" in out and "1 case opened" in out, out
    assert "no rejected records" in out, out
    assert not (home / "dead-letter").exists()

    # A rejected record still gets its file, with the reason.
    bad = _row(org, 3, 31, 3)
    bad["OrgId"] = ""
    mixed = _guide_csv(tmp_path / "mixed.csv", [_row(org, 4, 41, 4), bad])
    code, out, err = await _signoff("ingest", str(mixed), "--format", "guide", "--json", env=env)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rejected"] == 1
    assert len(Path(summary["dead_letter"]).read_text().splitlines()) == 1
    for incident in (1, 2, 4):  # no worker polls this queue
        await dev_env.client.get_workflow_handle(f"guide-{org}-{incident}").terminate("test done")


def test_plural() -> None:
    from signoff.cli._common import plural

    assert (plural(1, "case"), plural(0, "case"), plural(2, "history", "histories")) == \
        ("1 case", "0 cases", "2 histories")


def test_demo_summary_says_one_case_and_no_rejected_records() -> None:
    from signoff.cli._common import out
    from signoff.cli.run import _print_demo

    ingest = {"records": 1, "source": "one.csv", "accepted": 1, "rejected": 0, "dead_letter": "/h/dead-letter/x.jsonl",
              "duplicates": 0, "cases_opened": 1, "cases_updated": 0}
    with out.capture() as captured:
        _print_demo({"ingest": ingest, "statuses": {"awaiting_verdict": 1}, "examples": []})
    text = captured.get()
    assert "Ingested 1 alert from one.csv" in text and "1 case opened" in text, text
    assert "no rejected records" in text and "x.jsonl" not in text, text


# ---------------------------------------------------------------- 6 and 7: show names the requester; explain a malformed signal


async def _waiting_case(dev_env: WorkflowEnvironment, task_queue: str) -> Any:
    """A compromised_account case opened by bob, waiting for approval of disable_account."""
    inp = case_input(requested_by="bob")
    handle = await start_case(dev_env.client, task_queue, inp, alert("p1", ("account", f"u-{inp.case_id}")))
    await wait_for(handle, awaiting("disable_account"), "disable_account waiting", attempts=2400)
    return handle


async def test_show_names_the_requester(dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """`signoff show` said "(not the case's requester)" without naming them."""
    async with build_worker(dev_env.client, task_queue):
        handle = await _waiting_case(dev_env, task_queue)
        shown = await acli(address_of(dev_env.client), "show", handle.id, env={"COLUMNS": "400"})
        await handle.terminate("test done")
    assert shown.exit_code == 0, shown.output
    assert "(not bob, the case's requester)" in shown.stdout, shown.stdout


async def test_explain_renders_a_malformed_signal_with_what_was_sent(
        dev_env: WorkflowEnvironment, task_queue: str) -> None:
    """`signoff explain` rendered a signal sent as `{"oops": 1}` as "approve of step None by None"."""
    address = address_of(dev_env.client)
    async with build_worker(dev_env.client, task_queue):
        handle = await _waiting_case(dev_env, task_queue)
        await handle.signal("approve_signal", {"oops": 1})
        await handle.signal("approve_signal", {"oops": "x" * 500, "token": "secret.token.value"})
        await wait_for(handle, lambda v: len(v.refusals) >= 2, "both signals refused", attempts=2400)
        explained = await acli(address, "explain", handle.id, env={"COLUMNS": "400"})
        as_json = await acli(address, "explain", handle.id, "--json")
        assert (await handle.query(CaseWorkflow.status)).status == CaseStatus.awaiting_approval
        await handle.terminate("test done")
    assert explained.exit_code == 0, explained.output
    text = explained.stdout
    assert 'malformed approve signal (sent {"oops": 1}): refused (malformed approval' in text, text
    assert "step None by None" not in text and "of step None" not in text, text
    assert 'malformed signal, sent: {"oops": 1}' in text, text  # the approvals section too
    clipped = [line for line in text.splitlines() if "xxxx" in line]
    assert len(clipped) == 2 and all("..." in line and "x" * 200 not in line for line in clipped), clipped
    assert "secret.token" not in text
    ex = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert [a["malformed"] for a in ex["approvals"] if a["malformed"]][0] == '{"oops": 1}'
